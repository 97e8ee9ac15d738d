//! The `mcp-gateway` command: parse flags, load config, run. Thin on
//! purpose; everything else is in the library.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context as _;
use clap::{Parser, Subcommand};
use mcp_gateway::config::Config;
use mcp_gateway::telemetry::Telemetry;
use mcp_gateway::upstream::State;
use mcp_gateway::{Gateway, downstream};

/// Exit code for a bad config (`EX_USAGE` from sysexits.h).
const EX_USAGE: u8 = 64;

#[derive(Parser)]
#[command(name = "mcp-gateway", version, about = "One MCP endpoint in front of many MCP servers")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Serve Streamable HTTP at http://<listen>/mcp.
    Serve {
        /// Config file.
        #[arg(long, short, default_value = "gateway.toml", env = "MCP_GATEWAY_CONFIG")]
        config: PathBuf,
        /// Listen address; overrides `gateway.listen`.
        #[arg(long)]
        listen: Option<SocketAddr>,
    },
    /// Serve one client over stdin/stdout (for hosts that launch a command).
    Stdio {
        /// Config file.
        #[arg(long, short, default_value = "gateway.toml", env = "MCP_GATEWAY_CONFIG")]
        config: PathBuf,
    },
    /// Validate the config and exit (64 when it is invalid).
    Check {
        /// Config file.
        #[arg(long, short, default_value = "gateway.toml", env = "MCP_GATEWAY_CONFIG")]
        config: PathBuf,
    },
    /// Start the upstreams, print the merged tool catalog, and exit; or
    /// review pinned tool definitions (`pending`, `approve`).
    Tools {
        /// Config file.
        #[arg(long, short, default_value = "gateway.toml", env = "MCP_GATEWAY_CONFIG", global = true)]
        config: PathBuf,
        /// Give up waiting for upstreams after this many seconds
        /// (default: the longest `startup_timeout`).
        #[arg(long)]
        wait: Option<u64>,
        #[command(subcommand)]
        action: Option<ToolsAction>,
    },
    /// Sequence rules: validate a rules file, or replay an audit log.
    Rules {
        #[command(subcommand)]
        command: RulesCommand,
    },
    /// Credentials: `auth hash-key` prints the `sha256` of a client's API
    /// key; `auth login | logout | tokens` manage the gateway's own OAuth
    /// tokens for upstreams.
    Auth {
        #[command(subcommand)]
        command: AuthCommand,
    },
}

#[derive(Subcommand)]
enum ToolsAction {
    /// Lists tools held because their definition changed, with what changed.
    Pending,
    /// Accepts the changed definition of these tools (a running gateway
    /// picks it up within seconds).
    Approve {
        /// Exposed tool names.
        names: Vec<String>,
        /// Every pending tool.
        #[arg(long, conflicts_with = "names")]
        all: bool,
    },
}

#[derive(Subcommand)]
enum RulesCommand {
    /// Validates a rules file (exit 64 when invalid) and lists its rules,
    /// tags and warnings.
    Check {
        /// The rules file.
        file: PathBuf,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Reports which sessions and principals each rule would have hit in an
    /// audit log, as if every rule were in shadow mode.
    Replay {
        /// The audit log (JSON lines).
        audit: PathBuf,
        /// The rules file (default: `[rules] file` of the config).
        #[arg(long)]
        rules: Option<PathBuf>,
        /// Config file, for `[rules] file`.
        #[arg(long, short, default_value = "gateway.toml", env = "MCP_GATEWAY_CONFIG")]
        config: PathBuf,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
}

#[derive(Subcommand)]
enum AuthCommand {
    /// Reads an API key from stdin (or makes a random one with
    /// `--generate`) and prints its SHA-256 for `[[auth.api_keys]]`.
    HashKey {
        /// Make a new random key, print it once, then its hash.
        #[arg(long)]
        generate: bool,
    },
    /// Logs the gateway in to an OAuth upstream (authorization code with
    /// PKCE): prints a URL to open, receives the redirect on 127.0.0.1 and
    /// stores the tokens (0600) for running gateways to use and refresh.
    Login {
        /// The upstream id (`[upstreams.<id>.oauth]`).
        upstream: String,
        /// Store the token for this client principal (upstreams with
        /// `per_principal = true`): `key:NAME` (an API key), `jwt:SUB` (a
        /// JWT subject), or a bare name when only one of them can be meant.
        /// Without it, the gateway's own token.
        #[arg(long)]
        principal: Option<String>,
        /// Scopes to ask for, space-separated (default: configured, else
        /// discovered).
        #[arg(long)]
        scope: Option<String>,
        /// `login_hint` for the authorization server (who logs in).
        #[arg(long)]
        login_hint: Option<String>,
        /// Give up after this many seconds without the redirect.
        #[arg(long, default_value_t = 300)]
        timeout: u64,
        /// Config file.
        #[arg(long, short, default_value = "gateway.toml", env = "MCP_GATEWAY_CONFIG")]
        config: PathBuf,
    },
    /// Removes a stored upstream token and revokes it at the server.
    Logout {
        /// The upstream id.
        upstream: String,
        /// Whose token (default: the gateway's own).
        #[arg(long)]
        principal: Option<String>,
        /// Config file.
        #[arg(long, short, default_value = "gateway.toml", env = "MCP_GATEWAY_CONFIG")]
        config: PathBuf,
    },
    /// Lists stored upstream tokens: whose, scope, expiry (never values).
    Tokens {
        /// Config file.
        #[arg(long, short, default_value = "gateway.toml", env = "MCP_GATEWAY_CONFIG")]
        config: PathBuf,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    if let Command::Auth { command: AuthCommand::HashKey { generate } } = cli.command {
        return hash_key(generate);
    }
    if let Command::Rules { command } = cli.command {
        return rules(command);
    }
    let path = match &cli.command {
        Command::Rules { .. } | Command::Auth { command: AuthCommand::HashKey { .. } } => {
            unreachable!("handled above")
        }
        Command::Auth {
            command:
                AuthCommand::Login { config, .. } | AuthCommand::Logout { config, .. } | AuthCommand::Tokens { config },
        }
        | Command::Serve { config, .. }
        | Command::Stdio { config }
        | Command::Check { config }
        | Command::Tools { config, .. } => config,
    };
    let config = match Config::load(path) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("mcp-gateway: invalid config: {e}");
            return ExitCode::from(EX_USAGE);
        }
    };
    if let Command::Check { .. } = cli.command {
        println!("{}: ok ({}: {})", path.display(), plural(config.upstreams.len(), "upstream"), ids(&config));
        return ExitCode::SUCCESS;
    }
    mcp_gateway::telemetry::log::init(config.gateway.log_format, &config.gateway.log_level, config.redactor.clone());
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build().expect("tokio runtime starts");
    let result = rt.block_on(async {
        match cli.command {
            Command::Serve { listen, .. } => serve(config, listen).await,
            Command::Stdio { .. } => stdio(config).await,
            Command::Tools { wait, action: None, .. } => tools(config, wait).await,
            Command::Tools { action: Some(action), .. } => pins(&config, action),
            Command::Auth { command } => upstream_auth(&config, command).await,
            Command::Check { .. } | Command::Rules { .. } => unreachable!("handled above"),
        }
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("mcp-gateway: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// `mcp-gateway rules check | replay`.
fn rules(command: RulesCommand) -> ExitCode {
    use mcp_gateway::security::rules::{self, RuleSet};
    match command {
        RulesCommand::Check { file, json } => match rules::check(&file) {
            Ok(report) if json => {
                println!("{}", serde_json::to_string_pretty(&report).expect("serializes"));
                ExitCode::SUCCESS
            }
            Ok(report) => {
                println!("{}: ok ({})", report.file, plural(report.rules.len(), "rule"));
                for r in &report.rules {
                    let window = match r.window_seconds {
                        Some(s) => format!("{} calls, {s}s", r.window_calls),
                        None => format!("{} calls", r.window_calls),
                    };
                    println!("  {:<40} {:<8} {:<10} {} steps, window {window}", r.id, r.action, r.scope, r.steps);
                }
                for w in &report.warnings {
                    println!("warning: {w}");
                }
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("mcp-gateway: {e}");
                ExitCode::from(EX_USAGE)
            }
        },
        RulesCommand::Replay { audit, rules: file, config, json } => {
            let file = match file {
                Some(f) => f,
                None => match Config::load(&config).map(|c| c.rules.file) {
                    Ok(Some(f)) => f,
                    Ok(None) => {
                        eprintln!(
                            "mcp-gateway: no rules file: give --rules or set [rules] file in {}",
                            config.display()
                        );
                        return ExitCode::from(EX_USAGE);
                    }
                    Err(e) => {
                        eprintln!("mcp-gateway: invalid config: {e}");
                        return ExitCode::from(EX_USAGE);
                    }
                },
            };
            let set = match RuleSet::load(&file) {
                Ok(s) => s,
                Err(e) => {
                    eprintln!("mcp-gateway: {e}");
                    return ExitCode::from(EX_USAGE);
                }
            };
            let reader = match std::fs::File::open(&audit) {
                Ok(f) => std::io::BufReader::new(f),
                Err(e) => {
                    eprintln!("mcp-gateway: cannot read {}: {e}", audit.display());
                    return ExitCode::FAILURE;
                }
            };
            let report = match rules::replay(&set, reader) {
                Ok(r) => r,
                Err(e) => {
                    eprintln!("mcp-gateway: reading {}: {e}", audit.display());
                    return ExitCode::FAILURE;
                }
            };
            if json {
                println!("{}", serde_json::to_string_pretty(&report).expect("serializes"));
                return ExitCode::SUCCESS;
            }
            println!(
                "{}: {} evaluated ({} without arguments), {} unreadable lines",
                audit.display(),
                plural(report.calls as usize, "call"),
                report.without_arguments,
                report.invalid
            );
            for r in &report.rules {
                println!("  {:<40} {:<8} {:>6} hits", r.id, r.action, r.hits);
                for s in &r.sessions {
                    println!("      session {} : {} hits", s.id, s.hits);
                }
                for p in &r.principals {
                    println!("      principal {} : {} hits", p.id, p.hits);
                }
            }
            ExitCode::SUCCESS
        }
    }
}

/// `mcp-gateway auth hash-key`.
fn hash_key(generate: bool) -> ExitCode {
    use std::io::Read as _;
    let key = if generate {
        let mut bytes = [0u8; 24];
        if getrandom::fill(&mut bytes).is_err() {
            eprintln!("mcp-gateway: no randomness available");
            return ExitCode::FAILURE;
        }
        let key: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
        let key = format!("mgw_{key}");
        println!("key:    {key}   (give it to the client; it is not stored)");
        key
    } else {
        let mut key = String::new();
        if std::io::stdin().read_to_string(&mut key).is_err() || key.trim().is_empty() {
            eprintln!("mcp-gateway: give the key on stdin (or use --generate)");
            return ExitCode::from(EX_USAGE);
        }
        key
    };
    println!("sha256 = \"{}\"", mcp_gateway::security::auth::hash_key(&key));
    ExitCode::SUCCESS
}

/// `mcp-gateway auth login | logout | tokens`.
async fn upstream_auth(config: &Config, command: AuthCommand) -> anyhow::Result<()> {
    use mcp_gateway::oauth;
    let spec = |id: &str| {
        let u = config
            .upstreams
            .iter()
            .find(|u| u.id == id)
            .with_context(|| format!("no upstream `{id}` in the config"))?;
        u.oauth.clone().with_context(|| format!("upstream `{id}` has no [upstreams.{id}.oauth] section"))
    };
    let http = oauth::http_client();
    match command {
        AuthCommand::Login { upstream, principal, scope, login_hint, timeout, .. } => {
            let spec = spec(&upstream)?;
            if spec.grant != mcp_gateway::config::OAuthGrant::AuthorizationCode {
                anyhow::bail!("upstream `{upstream}` uses client credentials: the gateway gets its tokens itself");
            }
            if principal.is_some() && !spec.per_principal {
                anyhow::bail!("upstream `{upstream}` is not `per_principal`: log in without --principal");
            }
            // Tokens are kept by the principal's whole identity.
            let principal = principal
                .map(|p| mcp_gateway::security::auth::identity_for(&config.auth, &p))
                .transpose()
                .map_err(|e| anyhow::anyhow!("--principal: {e}"))?;
            let opts = oauth::LoginOptions {
                principal: principal.clone(),
                scopes: scope.as_deref().map(|s| s.split_whitespace().map(str::to_owned).collect()).unwrap_or_default(),
                login_hint,
                timeout: Duration::from_secs(timeout),
            };
            let out = oauth::login(&http, &spec, &opts, |url, redirect| {
                println!("Open this URL in a browser to log in to `{upstream}`:\n{url}");
                eprintln!("Waiting up to {timeout}s for the redirect to {redirect} …");
            })
            .await?;
            let who = principal.map_or_else(|| "the gateway".to_owned(), |p| format!("principal `{p}`"));
            let expires = out.expires_in.map_or_else(|| "no expiry given".to_owned(), |s| format!("expires in {s}s"));
            let refresh =
                if out.refreshable { "refreshable" } else { "no refresh token: log in again when it expires" };
            println!(
                "Logged in to `{upstream}` for {who} (scope {}; {expires}; {refresh}). Stored in {}.",
                out.scope.as_deref().unwrap_or("-"),
                out.file.display()
            );
            Ok(())
        }
        AuthCommand::Logout { upstream, principal, .. } => {
            let spec = spec(&upstream)?;
            let principal = principal
                .map(|p| mcp_gateway::security::auth::identity_for(&config.auth, &p))
                .transpose()
                .map_err(|e| anyhow::anyhow!("--principal: {e}"))?;
            if oauth::logout(&http, &spec, principal.as_deref()).await? {
                println!("Removed the token of `{upstream}` from {}.", spec.token_file.display());
            } else {
                println!("No token of `{upstream}` was stored.");
            }
            Ok(())
        }
        AuthCommand::Tokens { .. } => {
            let path = &config.gateway.token_file;
            let store = oauth::store::read(path)?;
            let now = oauth::store::now();
            let mut rows = Vec::new();
            for (id, entry) in &store.upstreams {
                let tokens = entry.shared.iter().map(|t| ("(gateway)".to_owned(), t));
                for (who, t) in tokens.chain(entry.principals.iter().map(|(p, t)| (p.clone(), t))) {
                    let expiry = match t.expires_at {
                        Some(e) if e > now => format!("in {}s", e - now),
                        Some(_) => "expired".to_owned(),
                        None => "-".to_owned(),
                    };
                    let refresh = if t.refresh_token.is_some() { "yes" } else { "no" };
                    rows.push([
                        format!("{id}  {who}"),
                        format!("{} {expiry}", t.scope.as_deref().unwrap_or("-")),
                        refresh.to_owned(),
                    ]);
                }
            }
            if rows.is_empty() {
                println!("No upstream tokens in {}.", path.display());
            } else {
                print_table(&["UPSTREAM  PRINCIPAL", "SCOPE EXPIRES", "REFRESH"], &rows);
            }
            Ok(())
        }
        AuthCommand::HashKey { .. } => unreachable!("handled before the config is read"),
    }
}

/// `mcp-gateway tools pending | approve`.
fn pins(config: &Config, action: ToolsAction) -> anyhow::Result<()> {
    use mcp_gateway::security::pins;
    let path = config.pinning.file.as_deref().context("tool pinning is off: set [pinning] file in the config")?;
    match action {
        ToolsAction::Pending => {
            let store = pins::read(path)?;
            let mut any = false;
            for (name, pin) in &store.tools {
                let Some(p) = &pin.pending else { continue };
                any = true;
                println!("{name} (upstream {}): changed", pin.upstream);
                for field in ["title", "description", "inputSchema", "outputSchema", "annotations"] {
                    let (was, now) = (pin.definition.get(field), p.definition.get(field));
                    if was != now {
                        let show = |v: Option<&serde_json::Value>| v.map_or("(none)".to_owned(), ToString::to_string);
                        println!("  {field}:\n    was: {}\n    now: {}", show(was), show(now));
                    }
                }
            }
            if !any {
                println!("Nothing pending ({} tools pinned).", store.tools.len());
            }
        }
        ToolsAction::Approve { names, all } => {
            if names.is_empty() && !all {
                anyhow::bail!("name the tools to approve, or use --all");
            }
            let approved = pins::approve(path, &names, all)?;
            println!("Approved {}: {}", plural(approved.len(), "tool"), approved.join(", "));
        }
    }
    Ok(())
}

fn plural(n: usize, noun: &str) -> String {
    if n == 1 { format!("1 {noun}") } else { format!("{n} {noun}s") }
}

fn ids(config: &Config) -> String {
    config.upstreams.iter().map(|u| u.id.as_str()).collect::<Vec<_>>().join(", ")
}

async fn serve(config: Config, listen: Option<SocketAddr>) -> anyhow::Result<()> {
    let signals = shutdown_signal();
    let addr = listen.unwrap_or(config.listen());
    config.check_exposure(addr)?;
    let listener = tokio::net::TcpListener::bind(addr).await.with_context(|| format!("cannot listen on {addr}"))?;
    let addr = listener.local_addr()?;
    let telemetry = Telemetry::from_config(&config)?;
    let gateway = Gateway::start(config, telemetry);
    tracing::info!(%addr, upstreams = gateway.upstreams().len(), "Listening on http://{addr}/mcp.");
    mcp_gateway::serve(listener, gateway.clone(), signals).await?;
    tracing::info!("Shutting down upstreams.");
    let stopping = tokio::time::Instant::now();
    gateway.shutdown().await;
    tracing::info!(elapsed_ms = stopping.elapsed().as_millis() as u64, "Stopped.");
    Ok(())
}

async fn stdio(config: Config) -> anyhow::Result<()> {
    let signals = shutdown_signal();
    let telemetry = Telemetry::from_config(&config)?;
    let gateway = Gateway::start(config, telemetry);
    let admin_stop = tokio_util::sync::CancellationToken::new();
    let _stop_admin = admin_stop.clone().drop_guard();
    mcp_gateway::serve_admin(&gateway, admin_stop).await?;
    let input = tokio::io::BufReader::new(tokio::io::stdin());
    let run = downstream::stdio::run(gateway.clone(), input, tokio::io::stdout());
    tokio::pin!(run);
    tokio::select! {
        r = &mut run => r?,
        () = signals => {
            // Calls in flight may finish (and be answered) within the drain time.
            let drain = gateway.config().gateway.drain_timeout;
            tokio::select! {
                _ = &mut run => {}
                _ = gateway.drain(drain) => {}
            }
        }
    }
    gateway.shutdown().await;
    Ok(())
}

async fn tools(config: Config, wait: Option<u64>) -> anyhow::Result<()> {
    let longest = config.upstreams.iter().map(|u| u.startup_timeout).max().unwrap_or_default();
    let wait = wait.map_or(longest + Duration::from_secs(1), Duration::from_secs);
    // Listing tools is not serving: no audit log, no traces.
    let gateway = Gateway::start(config, Telemetry::metrics_only());
    let started = tokio::time::Instant::now();
    let mut reported = vec![false; gateway.upstreams().len()];
    loop {
        for (i, u) in gateway.upstreams().iter().enumerate() {
            if reported[i] {
                continue;
            }
            let line = match &*u.state() {
                State::Ready(r) => {
                    format!("ready, offers {} tools, protocol {}", r.lists.tools.len(), r.protocol_version())
                }
                State::Down { reason, .. } => format!("FAILED: {reason}"),
                _ => continue,
            };
            reported[i] = true;
            eprintln!("{:>12}  {line} ({:.1}s)", u.id(), started.elapsed().as_secs_f64());
        }
        if reported.iter().all(|r| *r) || started.elapsed() >= wait {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    for (i, u) in gateway.upstreams().iter().enumerate() {
        if !reported[i] {
            eprintln!("{:>12}  still starting after {}s", u.id(), wait.as_secs());
        }
    }
    // The catalog task runs on its own; give it a moment to take the last change.
    tokio::time::sleep(Duration::from_millis(100)).await;
    let catalog = gateway.catalog();
    let rows: Vec<[String; 3]> = catalog
        .tools()
        .iter()
        .map(|t| [t.name.clone(), gateway.upstreams()[t.upstream].id().to_owned(), annotations(t.def.checked())])
        .collect();
    print_table(&["NAME", "UPSTREAM", "ANNOTATIONS"], &rows);
    let not_ready = gateway.upstreams().iter().filter(|u| !matches!(*u.state(), State::Ready(_))).count();
    println!("{} from {}", plural(rows.len(), "tool"), plural(gateway.upstreams().len(), "upstream"));
    gateway.shutdown().await;
    if not_ready > 0 {
        anyhow::bail!("{} not ready", plural(not_ready, "upstream"));
    }
    Ok(())
}

/// `read-only, destructive, idempotent, open-world` as declared (absent
/// hints are shown as the spec's defaults would read: nothing).
fn annotations(def: mcp_gateway::protocol::Checked<'_>) -> String {
    let v = def.value().unwrap_or_default();
    let a = &v["annotations"];
    let mut out = Vec::new();
    for (key, label) in [
        ("readOnlyHint", "read-only"),
        ("destructiveHint", "destructive"),
        ("idempotentHint", "idempotent"),
        ("openWorldHint", "open-world"),
    ] {
        if a[key] == serde_json::Value::Bool(true) {
            out.push(label);
        }
    }
    if out.is_empty() { "-".into() } else { out.join(", ") }
}

fn print_table(head: &[&str; 3], rows: &[[String; 3]]) {
    let mut w = head.map(str::len);
    for r in rows {
        for (i, c) in r.iter().enumerate() {
            w[i] = w[i].max(c.len());
        }
    }
    println!("{:<w0$}  {:<w1$}  {}", head[0], head[1], head[2], w0 = w[0], w1 = w[1]);
    for r in rows {
        println!("{:<w0$}  {:<w1$}  {}", r[0], r[1], r[2], w0 = w[0], w1 = w[1]);
    }
}

/// Resolves on SIGTERM or Ctrl-C. The handlers (SIGHUP's too) are
/// installed when this is called, not when it is first polled, so a signal
/// that comes early does not kill the process. SIGHUP (a reload, for most
/// daemons) is logged and ignored until the gateway can reload: the
/// default action would exit at once, dropping every session.
fn shutdown_signal() -> impl std::future::Future<Output = ()> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate()).expect("SIGTERM handler installs");
    let mut hup = signal(SignalKind::hangup()).expect("SIGHUP handler installs");
    async move {
        loop {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => break,
                _ = term.recv() => break,
                _ = hup.recv() => {
                    tracing::warn!("SIGHUP received: reloading the config is not supported yet; still serving with the config loaded at start.");
                }
            }
        }
        tracing::info!("Shutdown signal received.");
    }
}
