//! `mcp-gateway import FILE`: an agent host's MCP servers (Claude Desktop,
//! Claude Code, Cursor, VS Code) made upstreams of a gateway.toml, their
//! credentials moved to the secrets file as `${NAME}` references, and the
//! host entry that replaces them printed. The host's file is only read.
//! The conversion is the library's `import` module; this file decides
//! which files to write and writes them.
//!
//! Nothing is half-written: every file is staged beside its target, the
//! config is loaded through the gateway's own loader with the staged
//! secrets, and only then are both renamed into place. docs/import.md has
//! the rules and the choices made where the host formats are vague.

use std::collections::{BTreeMap, BTreeSet};
use std::ffi::OsString;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use mcp_gateway::config::{Config, ENV_FILE_VAR, Env, FileConfig, Secrets};
use mcp_gateway::import::{self, Host, HostFile, Piece, Plan, ReadError, Staged, Transport};

use super::args::{EX_USAGE, ImportArgs};
use super::{ProcessEnv, plural};

/// `--host`: the host that wrote the file.
#[derive(Clone, Copy, clap::ValueEnum)]
pub(crate) enum HostArg {
    /// `claude_desktop_config.json`.
    ClaudeDesktop,
    /// `.mcp.json`.
    ClaudeCode,
    /// Cursor's `mcp.json`.
    Cursor,
    /// `.vscode/mcp.json`.
    Vscode,
}

impl From<HostArg> for Host {
    fn from(h: HostArg) -> Host {
        match h {
            HostArg::ClaudeDesktop => Host::ClaudeDesktop,
            HostArg::ClaudeCode => Host::ClaudeCode,
            HostArg::Cursor => Host::Cursor,
            HostArg::Vscode => Host::Vscode,
        }
    }
}

/// Why an import wrote nothing. Messages name the file; none holds a
/// secret value.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ImportError {
    /// The host's file cannot be imported.
    #[error(transparent)]
    Host(#[from] ReadError),
    /// A file cannot be read.
    #[error("cannot read {}: {error}", path.display())]
    Read { path: PathBuf, error: std::io::Error },
    /// The config exists and neither `--into` nor `--force` was given.
    #[error("{} exists: merge the servers into it with --into, or replace it with --force", path.display())]
    Exists { path: PathBuf },
    /// `--into` a config that has some of the ids already.
    #[error("{} already has upstream {}: rename the server in the host's file or the upstream in the config; nothing was written", path.display(), ids.join(", "))]
    Clash { path: PathBuf, ids: Vec<String> },
    /// The secrets file holds some of the names with other values.
    #[error("{} already holds {} with another value; nothing was written", path.display(), names.join(", "))]
    SecretClash { path: PathBuf, names: Vec<String> },
    /// The config or secrets file to merge into cannot be used.
    #[error("cannot merge into {}: {what}", path.display())]
    Merge { path: PathBuf, what: String },
    /// The config as it would be written does not load (`path`: the
    /// host's file it came from).
    #[error("{}: the config as it would be written does not load ({error}); nothing was written", path.display())]
    Invalid { path: PathBuf, error: String },
    /// Writing failed.
    #[error("cannot write {}: {error}", path.display())]
    Write { path: PathBuf, error: std::io::Error },
}

impl ImportError {
    /// 64 when a file read is wrong (as for an invalid config), 1 when the
    /// import refuses to overwrite or clash, or cannot write.
    fn exit_code(&self) -> u8 {
        match self {
            ImportError::Host(_)
            | ImportError::Read { .. }
            | ImportError::Merge { .. }
            | ImportError::Invalid { .. } => EX_USAGE,
            ImportError::Exists { .. }
            | ImportError::Clash { .. }
            | ImportError::SecretClash { .. }
            | ImportError::Write { .. } => 1,
        }
    }
}

/// `mcp-gateway import`: prints what it did, or why it did nothing.
pub(crate) fn import(args: &ImportArgs) -> ExitCode {
    match run(args, &ProcessEnv) {
        Ok(report) => {
            print!("{report}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("mcp-gateway: import: {e}");
            ExitCode::from(e.exit_code())
        }
    }
}

/// The secrets file as it is and as it will be.
struct SecretsFile {
    path: PathBuf,
    /// Names it holds already (never values).
    known: BTreeSet<String>,
    /// Names this import adds.
    added: Vec<String>,
    /// Its text after the import, when it changes.
    text: Option<String>,
}

fn run(args: &ImportArgs, env: &dyn Env) -> Result<String, ImportError> {
    let mut file = HostFile::read(&args.file, args.host.map(Host::from), env)?;
    let servers = std::mem::take(&mut file.servers);
    let ignored: Vec<(String, Vec<String>)> =
        servers.iter().filter(|s| !s.ignored.is_empty()).map(|s| (s.name.clone(), s.ignored.clone())).collect();
    let plan = Plan::new(servers).map_err(|(server, e)| {
        ImportError::Host(ReadError::Server { path: file.path.clone(), server, what: e.to_string() })
    })?;
    let config_path = absolute(args.into.as_deref().unwrap_or(&args.output));
    let existing = existing(args, &config_path, &plan)?;
    let base = config_path.parent().unwrap_or(Path::new("/")).to_path_buf();

    // The secrets file, where the gateway will read it: the environment's
    // `MCP_GATEWAY_ENV_FILE`, the config's `secrets_file`, or a new
    // `secrets.env` beside the config (named in it).
    let needed = !plan.secrets.is_empty() || !file.inputs.is_empty();
    let named = existing.as_ref().and_then(|(_, s)| s.clone());
    let (secrets_path, add_key) = match (env.var_os(ENV_FILE_VAR), named) {
        (Some(p), _) => (Some(PathBuf::from(p)), false),
        (None, Some(p)) => (Some(base.join(p)), false),
        (None, None) => (needed.then(|| base.join("secrets.env")), needed),
    };
    let secrets = secrets_path.map(|p| secrets_file(p, &plan, &file)).transpose()?;
    let toml_text = config_text(&file, &plan, existing.map(|(text, _)| text), add_key);
    let check = Check { env, from: &file.path };
    put_in_place(&config_path, &toml_text, secrets.as_ref(), check)?;
    Ok(report(&file, &plan, &config_path, secrets.as_ref(), &ignored, env))
}

/// With `--into`, the config's text and `secrets_file`, once it is known
/// to parse and to have none of the plan's ids. Without it, `None`, and
/// an existing file is refused unless `--force`.
fn existing(
    args: &ImportArgs,
    config_path: &Path,
    plan: &Plan,
) -> Result<Option<(String, Option<PathBuf>)>, ImportError> {
    if args.into.is_none() {
        if config_path.exists() && !args.force {
            return Err(ImportError::Exists { path: config_path.to_owned() });
        }
        return Ok(None);
    }
    let text = std::fs::read_to_string(config_path)
        .map_err(|error| ImportError::Read { path: config_path.to_owned(), error })?;
    let parsed: FileConfig =
        toml::from_str(&text).map_err(|e| ImportError::Merge { path: config_path.to_owned(), what: e.to_string() })?;
    let clashes = plan.clashes(&parsed.upstreams.keys().cloned().collect());
    if !clashes.is_empty() {
        return Err(ImportError::Clash { path: config_path.to_owned(), ids: clashes });
    }
    Ok(Some((text, parsed.gateway.secrets_file)))
}

/// The config's new text: the existing one kept byte for byte with the
/// tables appended (and `secrets_file` added when `add_key`), or a new one.
fn config_text(file: &HostFile, plan: &Plan, existing: Option<String>, add_key: bool) -> String {
    let tables = import::upstreams(plan, &file.path);
    let origin = format!("# Imported by `mcp-gateway import` from {} ({}).\n", file.path.display(), file.host.label());
    match existing {
        Some(text) => {
            let text = if add_key { import::with_secrets_file(&text, "secrets.env") } else { text };
            let sep = if text.is_empty() || text.ends_with("\n\n") {
                ""
            } else if text.ends_with('\n') {
                "\n"
            } else {
                "\n\n"
            };
            format!("{text}{sep}{origin}\n{tables}")
        }
        None => {
            let gateway = if add_key { "[gateway]\nsecrets_file = \"secrets.env\"\n\n" } else { "" };
            format!("{origin}# Credentials are in the secrets file, referenced as ${{NAME}}.\n\n{gateway}{tables}")
        }
    }
}

/// What the config is checked with: the environment, and the host's file
/// an error names.
#[derive(Clone, Copy)]
struct Check<'a> {
    env: &'a dyn Env,
    from: &'a Path,
}

/// Stages both files, loads the config as the gateway would (with the
/// staged secrets), and only then renames them into place.
fn put_in_place(config: &Path, text: &str, secrets: Option<&SecretsFile>, check: Check<'_>) -> Result<(), ImportError> {
    let failed = |path: &Path| {
        let path = path.to_owned();
        move |error| ImportError::Write { path, error }
    };
    let staged_secrets = match secrets {
        Some(SecretsFile { path, text: Some(text), .. }) => {
            Some((Staged::new(path, text, Some(0o600)).map_err(failed(path))?, path))
        }
        _ => None,
    };
    let env =
        CheckEnv { env: check.env, secrets: staged_secrets.as_ref().map(|(s, _)| s.path().as_os_str().to_owned()) };
    Config::from_str(text, config, &env)
        .map_err(|e| ImportError::Invalid { path: check.from.to_owned(), error: e.to_string() })?;
    let staged_config = Staged::new(config, text, None).map_err(failed(config))?;
    if let Some((s, path)) = staged_secrets {
        s.commit().map_err(failed(path))?;
    }
    staged_config.commit().map_err(failed(config))
}

/// The secrets file's new text: the plan's secrets it does not hold yet,
/// and a commented placeholder for each VS Code input to fill in. A name
/// it holds with another value is refused.
fn secrets_file(path: PathBuf, plan: &Plan, file: &HostFile) -> Result<SecretsFile, ImportError> {
    let (old_text, old) = if path.exists() {
        let text = std::fs::read_to_string(&path).map_err(|error| ImportError::Read { path: path.clone(), error })?;
        let old = Secrets::load(&path).map_err(|e| ImportError::Merge { path: path.clone(), what: e.to_string() })?;
        (text, old)
    } else {
        (String::new(), Secrets::default())
    };
    let clashes: Vec<String> =
        plan.secrets.iter().filter(|(n, v)| old.value(n).is_some_and(|o| o != *v)).map(|(n, _)| n.clone()).collect();
    if !clashes.is_empty() {
        return Err(ImportError::SecretClash { path, names: clashes });
    }
    let added: Vec<String> = plan.secrets.keys().filter(|n| old.value(n).is_none()).cloned().collect();
    let mut block = String::new();
    for name in &added {
        block.push_str(&import::secret_line(name, &plan.secrets[name]));
    }
    for (name, what) in file.inputs.iter().filter(|(n, _)| old.value(n).is_none()) {
        let what = what.replace(['\n', '\r'], " ");
        let _ = writeln!(block, "# {name}=    (to fill in: {} input, {what})", file.host.label());
    }
    let text = (!block.is_empty()).then(|| {
        let sep = if old_text.is_empty() || old_text.ends_with('\n') { "" } else { "\n" };
        format!("{old_text}{sep}# Added by `mcp-gateway import` from {}.\n{block}", file.path.display())
    });
    Ok(SecretsFile { path, known: old.names().into_iter().collect(), added, text })
}

/// The environment the check loads the config with: the staged secrets
/// file as `MCP_GATEWAY_ENV_FILE`, and a stand-in for every variable not
/// set, so a reference the user fills in later does not fail the check
/// (everything else about the file still must hold).
struct CheckEnv<'a> {
    env: &'a dyn Env,
    secrets: Option<OsString>,
}

impl Env for CheckEnv<'_> {
    fn var_os(&self, name: &str) -> Option<OsString> {
        if name == ENV_FILE_VAR {
            return self.secrets.clone().or_else(|| self.env.var_os(name));
        }
        // A URL, so `${BASE}/mcp` still parses as one.
        self.env.var_os(name).or_else(|| Some("http://localhost".into()))
    }
}

fn absolute(p: &Path) -> PathBuf {
    std::path::absolute(p).unwrap_or_else(|_| p.to_owned())
}

/// What was done, for the terminal: never a secret value.
fn report(
    file: &HostFile,
    plan: &Plan,
    config: &Path,
    secrets: Option<&SecretsFile>,
    ignored: &[(String, Vec<String>)],
    env: &dyn Env,
) -> String {
    let mut out = String::new();
    let n = plural(plan.upstreams.len(), "server");
    let _ =
        writeln!(out, "Imported {n} from {} ({}) into {}:", file.path.display(), file.host.label(), config.display());
    let width = plan.upstreams.iter().map(|u| u.id.len()).max().unwrap_or(0);
    for u in &plan.upstreams {
        let (kind, what) = match &u.transport {
            Transport::Stdio { command, .. } => ("stdio", command.clone()),
            Transport::Http { url, sse, .. } => (if *sse { "sse" } else { "http" }, import::text(url)),
        };
        let from = if u.from == u.id { String::new() } else { format!("  (from {:?})", u.from) };
        let off = if u.enabled { "" } else { "  (disabled)" };
        let _ = writeln!(out, "  {:width$}  {kind:5}  {what}{from}{off}", u.id);
    }
    for name in &file.skipped {
        let _ = writeln!(out, "Skipped {name:?}: it runs mcp-gateway itself.");
    }
    for (name, keys) in ignored {
        let _ = writeln!(out, "Ignored in {name:?} (the gateway has no such setting): {}", keys.join(", "));
    }
    if let Some(s) = secrets.filter(|s| !s.added.is_empty()) {
        let _ = writeln!(
            out,
            "Secrets: {} added to {} (mode 0600; values not shown): {}",
            plural(s.added.len(), "name"),
            s.path.display(),
            s.added.join(", ")
        );
    }
    let missing = undefined(file, plan, secrets, env);
    if !missing.is_empty() {
        let _ = writeln!(out, "Define before starting the gateway:");
        for (name, why) in &missing {
            let _ = writeln!(out, "  {name}: {why}");
        }
    }
    let names: Vec<String> = plan.upstreams.iter().map(|u| format!("{:?}", u.from)).collect();
    let exe = std::env::current_exe().unwrap_or_else(|_| PathBuf::from("mcp-gateway"));
    let _ = writeln!(
        out,
        "In {}, replace {} with this entry (the file was not changed):",
        file.path.display(),
        names.join(", ")
    );
    let _ = writeln!(out, "{}", import::host_entry(file.host, &exe, config));
    out
}

/// References nothing defines yet (neither the secrets file nor the
/// environment now), each with what to do: inputs to fill in, variables
/// to set.
fn undefined(file: &HostFile, plan: &Plan, secrets: Option<&SecretsFile>, env: &dyn Env) -> BTreeMap<String, String> {
    let mut known: BTreeSet<&str> = plan.secrets.keys().map(String::as_str).collect();
    known.extend(secrets.into_iter().flat_map(|s| s.known.iter().map(String::as_str)));
    let mut missing = BTreeMap::new();
    for name in plan.upstreams.iter().flat_map(|u| vars(&u.transport)) {
        if known.contains(name) || env.var_os(name).is_some() {
            continue;
        }
        let why = match (file.inputs.get(name), secrets) {
            (Some(what), Some(s)) => format!("{} input ({what}): fill it in {}", file.host.label(), s.path.display()),
            _ => "not set now: set it in the gateway's environment or the secrets file".to_owned(),
        };
        missing.insert(name.to_owned(), why);
    }
    missing
}

/// The `${NAME}` references of a transport.
fn vars(t: &Transport) -> impl Iterator<Item = &str> {
    let all: Vec<&Vec<Piece>> = match t {
        Transport::Stdio { args, env, .. } => args.iter().chain(env.values()).collect(),
        Transport::Http { url, headers, .. } => [url].into_iter().chain(headers.values()).collect(),
    };
    all.into_iter().flatten().filter_map(|p| match p {
        Piece::Var(n) => Some(n.as_str()),
        Piece::Text(_) => None,
    })
}
