//! `gateway.toml`: serde structs that map one-to-one to the file (docs/design.md
//! D11), and [`Config::load`], which validates them into a checked config.
//!
//! Unknown keys are errors (`deny_unknown_fields`): a mistyped resilience key
//! must not silently do nothing. Every error names the file, the line and
//! the key.
//!
//! Architecture Invariant: this module imports nothing from the rest of the
//! crate but [`crate::protocol`]-free helpers; values from the secrets file
//! are only ever held in [`Resolved`] strings whose `Debug` is redacted.

mod error;
mod file;
mod filter;
mod secrets;
mod security;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use globset::Glob;

pub use error::ConfigError;
pub use file::{
    AdminSection, AuditSection, BreakerSection, FileConfig, GatewaySection, HealthSection, Isolation, LogFormat,
    OtlpProtocol, ResponseMode, RetrySection, TracesSection, TransportKind, UpstreamSection,
};
pub use filter::{ToolFilter, ToolMatcher};
pub use secrets::{MASK, Redactor, Resolved, Secrets};
pub use security::{
    AccessSection, ApiKeySection, ArgumentRule, AuthMode, AuthSection, JwtSection, LimitsSection, OAuthGrant,
    OAuthSection, OversizeAction, PinningSection, QuarantineMode, RateSection, ResultCap, RulesSection,
    TokenEndpointAuth,
};

/// Name of the environment variable that overrides `gateway.secrets_file`.
pub const ENV_FILE_VAR: &str = "MCP_GATEWAY_ENV_FILE";

/// A validated configuration.
#[derive(Debug, Clone)]
pub struct Config {
    /// The file it was loaded from.
    pub path: PathBuf,
    /// Listener and downstream settings.
    pub gateway: GatewaySection,
    /// Upstreams in id order (the catalog's deterministic order).
    pub upstreams: Vec<UpstreamSpec>,
    /// Masks secret values in text the gateway forwards (upstream stderr).
    pub redactor: Redactor,
    /// `/metrics` on a separate listener.
    pub admin: AdminSection,
    /// OTLP traces.
    pub traces: Traces,
    /// The audit log (its `path` resolved against the config file).
    pub audit: AuditSection,
    /// Client authentication (`resource` filled in, paths resolved).
    pub auth: AuthSection,
    /// `[[access]]` entries, in file order (globs checked).
    pub access: Vec<AccessSection>,
    /// Tool pinning (`file` resolved).
    pub pinning: PinningSection,
    /// Sequence rules (`file` resolved).
    pub rules: RulesSection,
    /// Rate limits and result caps (globs checked).
    pub limits: LimitsSection,
    /// Names in the secrets file (never values), sorted.
    pub secret_names: Vec<String>,
    /// The key of the audit log's argument digests
    /// (`MCP_GATEWAY_AUDIT_KEY` in the secrets file), when set.
    pub audit_key: Option<AuditKey>,
}

/// `[traces]`, with secrets in headers resolved.
#[derive(Debug, Clone, Default)]
pub struct Traces {
    /// The collector's base URL (see [`TracesSection::endpoint`]).
    pub endpoint: Option<String>,
    /// HTTP/protobuf or gRPC; `None`: from the environment.
    pub protocol: Option<OtlpProtocol>,
    /// `service.name`.
    pub service_name: String,
    /// Share of new traces sampled.
    pub sample_ratio: Option<f64>,
    /// Headers for the collector.
    pub headers: BTreeMap<String, Resolved>,
}

/// One validated upstream.
#[derive(Debug, Clone)]
pub struct UpstreamSpec {
    /// `[a-z0-9-]{1,32}`: the namespace prefix of its tools.
    pub id: String,
    /// How to reach it.
    pub transport: TransportSpec,
    /// Expose its tools as `<id>__<tool>` (true) or unprefixed.
    pub prefix: bool,
    /// Which of its tools are exposed.
    pub tools: ToolMatcher,
    /// Deadline for the `initialize` handshake.
    pub startup_timeout: Duration,
    /// Longest wait between two starts of a down upstream.
    pub restart_max_delay: Duration,
    /// Up this long, the upstream is stable again (delays reset, a crash
    /// loop clears).
    pub stable_after: Duration,
    /// Deadline for one request.
    pub request_timeout: Duration,
    /// Per-tool deadlines (longest matching pattern wins).
    pub tool_timeouts: ToolTimeouts,
    /// Hard maximum a call may reach when progress extends its deadline.
    pub max_request_timeout: Duration,
    /// Tools whose calls may be retried (operator's word, D6).
    pub idempotent_tools: ToolMatcher,
    /// Whether tool annotations of this upstream are believed.
    pub trusted: bool,
    /// URIs answered to the upstream's `roots/list`.
    pub roots: Vec<String>,
    /// Shared by every session, or one connection per session.
    pub isolation: Isolation,
    /// Bulkhead: calls in flight at once.
    pub max_concurrency: usize,
    /// Bulkhead: calls waiting for a slot.
    pub max_queue: usize,
    /// Retry policy.
    pub retry: RetrySection,
    /// Circuit breaker.
    pub breaker: BreakerSection,
    /// Health pings.
    pub health: HealthSection,
    /// The gateway's own OAuth credential for it (http upstreams only).
    pub oauth: Option<std::sync::Arc<OAuthSpec>>,
}

/// A validated `[upstreams.<id>.oauth]`.
#[derive(Debug, Clone)]
pub struct OAuthSpec {
    /// The upstream's id.
    pub upstream: String,
    /// Which grant.
    pub grant: OAuthGrant,
    /// A pre-registered client id.
    pub client_id: Option<String>,
    /// Its secret.
    pub client_secret: Option<Resolved>,
    /// How the secret is sent.
    pub token_endpoint_auth: TokenEndpointAuth,
    /// Scopes to ask for (empty: discovered).
    pub scopes: Vec<String>,
    /// The canonical resource URI (RFC 8707).
    pub resource: String,
    /// The MCP endpoint (for discovery).
    pub url: String,
    /// The issuer, when configured (skips RFC 9728 discovery).
    pub authorization_server: Option<String>,
    /// One token per client principal.
    pub per_principal: bool,
    /// Login callback port (0: any).
    pub redirect_port: u16,
    /// The token store (`gateway.token_file`, resolved).
    pub token_file: PathBuf,
}

/// The canonical form of a resource URI (RFC 8707 §2, MCP authorization):
/// scheme and host lower-cased (the URL parser does that), no fragment or
/// query, no trailing slash.
pub fn canonical_resource(url: &reqwest::Url) -> String {
    let mut u = url.clone();
    u.set_fragment(None);
    u.set_query(None);
    u.as_str().trim_end_matches('/').to_owned()
}

/// Per-tool deadlines: glob → duration, longest pattern first.
#[derive(Debug, Clone, Default)]
pub struct ToolTimeouts {
    rules: Vec<(globset::GlobMatcher, Duration)>,
}

/// How an upstream is reached, with secrets resolved.
#[derive(Debug, Clone)]
pub enum TransportSpec {
    /// A child process speaking newline-delimited JSON-RPC.
    Stdio {
        /// Program to run (looked up in `PATH`).
        command: String,
        /// Its arguments.
        args: Vec<Resolved>,
        /// Extra environment variables.
        env: BTreeMap<String, Resolved>,
        /// Working directory (defaults to the config file's folder).
        cwd: PathBuf,
        /// How long to wait after closing stdin, and again after SIGTERM.
        shutdown_grace: Duration,
    },
    /// Streamable HTTP (2025-03-26 and later).
    Http {
        /// The MCP endpoint.
        url: Resolved,
        /// Static headers sent on every request.
        headers: BTreeMap<String, Resolved>,
    },
    /// Legacy HTTP+SSE (2024-11-05): GET the SSE URL, POST to its endpoint.
    Sse {
        /// The SSE endpoint.
        url: Resolved,
        /// Static headers sent on every request.
        headers: BTreeMap<String, Resolved>,
    },
}

impl TransportSpec {
    /// `network.transport` of OpenTelemetry: `pipe` or `tcp`.
    pub fn network(&self) -> &'static str {
        match self {
            TransportSpec::Stdio { .. } => "pipe",
            TransportSpec::Http { .. } | TransportSpec::Sse { .. } => "tcp",
        }
    }
}

/// The secrets-file name of the audit log's digest key.
pub const AUDIT_KEY_VAR: &str = "MCP_GATEWAY_AUDIT_KEY";

/// A key for the audit log's keyed digests: at least 32 bytes. Its `Debug`
/// shows nothing of it.
#[derive(Clone, PartialEq, Eq)]
pub struct AuditKey(Vec<u8>);

impl std::fmt::Debug for AuditKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("AuditKey(***)")
    }
}

impl AuditKey {
    /// A key from its base64 text (standard alphabet, padded or not).
    pub fn decode(text: &str) -> Result<Self, String> {
        use base64::Engine as _;
        let text = text.trim().trim_end_matches('=');
        let bytes = base64::engine::general_purpose::STANDARD_NO_PAD
            .decode(text)
            .map_err(|_| "is not base64 (make one with `openssl rand -base64 32`)".to_owned())?;
        if bytes.len() < 32 {
            return Err(format!("is {} bytes; it must be at least 32", bytes.len()));
        }
        Ok(AuditKey(bytes))
    }

    /// A new random key.
    pub fn generate() -> Self {
        let mut bytes = vec![0u8; 32];
        getrandom::fill(&mut bytes).expect("the OS has randomness");
        AuditKey(bytes)
    }

    /// Its base64 text.
    pub fn encode(&self) -> String {
        use base64::Engine as _;
        base64::engine::general_purpose::STANDARD.encode(&self.0)
    }

    /// The key's bytes.
    pub fn bytes(&self) -> &[u8] {
        &self.0
    }
}

// === impl Config ===

impl Config {
    /// Reads, parses and validates `path`.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let src = std::fs::read_to_string(path).map_err(|e| ConfigError::io(path, &e))?;
        Self::from_str(&src, path)
    }

    /// Parses and validates `src`, reporting errors against `path`.
    pub fn from_str(src: &str, path: &Path) -> Result<Config, ConfigError> {
        let file: FileConfig = toml::from_str(src).map_err(|e| ConfigError::syntax(path, src, &e))?;
        let at = |keys: &[&str], msg: String| ConfigError::at(path, src, keys, msg);
        let base = path.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));

        let env_file = std::env::var_os(ENV_FILE_VAR).map(PathBuf::from);
        let secrets = match (&env_file, &file.gateway.secrets_file) {
            (Some(p), _) => {
                Secrets::load(p).map_err(|e| ConfigError::plain(format!("{ENV_FILE_VAR}={}: {e}", p.display())))?
            }
            (None, Some(p)) => {
                let p = base.join(p);
                Secrets::load(&p).map_err(|e| at(&["gateway", "secrets_file"], e))?
            }
            (None, None) => Secrets::default(),
        };

        let g = &file.gateway;
        if g.max_message_bytes < 1024 {
            return Err(at(&["gateway", "max_message_bytes"], "must be at least 1024".into()));
        }
        if g.max_sessions == 0 {
            return Err(at(&["gateway", "max_sessions"], "must be at least 1".into()));
        }
        if g.max_sessions_per_principal == 0 {
            return Err(at(&["gateway", "max_sessions_per_principal"], "must be at least 1".into()));
        }
        if g.max_client_capabilities_bytes < 256 {
            return Err(at(&["gateway", "max_client_capabilities_bytes"], "must be at least 256".into()));
        }
        if g.max_connections == 0 {
            return Err(at(&["gateway", "max_connections"], "must be at least 1".into()));
        }
        if g.connection_idle_timeout < Duration::from_secs(1) {
            return Err(at(&["gateway", "connection_idle_timeout"], "must be at least 1s".into()));
        }
        // A message of the largest size must fit in a principal's share,
        // and the share in the whole budget, or it could never be sent.
        if g.max_inflight_request_bytes_per_principal < g.max_message_bytes {
            return Err(at(
                &["gateway", "max_inflight_request_bytes_per_principal"],
                format!("must be at least max_message_bytes ({})", g.max_message_bytes),
            ));
        }
        if g.max_inflight_request_bytes < g.max_inflight_request_bytes_per_principal {
            return Err(at(
                &["gateway", "max_inflight_request_bytes"],
                "must be at least max_inflight_request_bytes_per_principal".into(),
            ));
        }
        if !(8..=1024).contains(&g.max_json_depth) {
            return Err(at(&["gateway", "max_json_depth"], "must be between 8 and 1024".into()));
        }
        if !(16..=1024).contains(&g.max_tool_name_length) {
            return Err(at(&["gateway", "max_tool_name_length"], "must be between 16 and 1024".into()));
        }

        let audit_key = match secrets.value(AUDIT_KEY_VAR) {
            None => None,
            Some(v) => Some(AuditKey::decode(v).map_err(|e| ConfigError::plain(format!("{AUDIT_KEY_VAR}: {e}")))?),
        };

        let token_file = base.join(&file.gateway.token_file);
        let mut upstreams = Vec::with_capacity(file.upstreams.len());
        for (id, u) in &file.upstreams {
            let key = |k: &'static str| vec!["upstreams", id.as_str(), k];
            if !valid_id(id) {
                return Err(at(
                    &["upstreams", id],
                    format!(
                        "upstream id `{id}` must match [a-z0-9-]{{1,32}} (no `_`: it separates namespace and tool)"
                    ),
                ));
            }
            if !u.enabled {
                continue;
            }
            let kind = match (u.transport, &u.command, &u.url) {
                (Some(k), _, _) => k,
                (None, Some(_), None) => TransportKind::Stdio,
                (None, None, Some(_)) => TransportKind::Http,
                (None, Some(_), Some(_)) => {
                    return Err(at(
                        &["upstreams", id],
                        "set either `command` (stdio) or `url` (http), not both".into(),
                    ));
                }
                (None, None, None) => {
                    return Err(at(&["upstreams", id], "missing `command` (stdio) or `url` (http or sse)".into()));
                }
            };
            let resolve = |v: &str, k: &[&str]| secrets.expand(v).map_err(|e| at(k, e));
            let resolve_map =
                |m: &BTreeMap<String, String>, field: &str| -> Result<BTreeMap<String, Resolved>, ConfigError> {
                    m.iter().map(|(k, v)| Ok((k.clone(), resolve(v, &["upstreams", id, field, k])?))).collect()
                };
            let transport = match kind {
                TransportKind::Stdio => {
                    let Some(command) = u.command.clone().filter(|c| !c.trim().is_empty()) else {
                        return Err(at(&key("command"), "a stdio upstream needs a non-empty `command`".into()));
                    };
                    if u.url.is_some() || !u.headers.is_empty() {
                        return Err(at(&key("url"), "`url` and `headers` are for http and sse upstreams".into()));
                    }
                    let args = u.args.iter().map(|a| resolve(a, &key("args"))).collect::<Result<_, _>>()?;
                    TransportSpec::Stdio {
                        command,
                        args,
                        env: resolve_map(&u.env, "env")?,
                        cwd: u.cwd.as_ref().map_or_else(|| base.to_path_buf(), |c| base.join(c)),
                        shutdown_grace: u.shutdown_grace,
                    }
                }
                TransportKind::Http | TransportKind::Sse => {
                    let Some(url) = &u.url else {
                        return Err(at(&key("url"), "an http or sse upstream needs `url`".into()));
                    };
                    if u.command.is_some() || !u.args.is_empty() || !u.env.is_empty() {
                        return Err(at(&key("command"), "`command`, `args` and `env` are for stdio upstreams".into()));
                    }
                    let url = resolve(url, &key("url"))?;
                    match reqwest::Url::parse(url.expose()) {
                        Ok(parsed) if matches!(parsed.scheme(), "http" | "https") => {}
                        _ => return Err(at(&key("url"), "must be an absolute http:// or https:// URL".into())),
                    }
                    let headers = resolve_map(&u.headers, "headers")?;
                    for (name, value) in &headers {
                        if reqwest::header::HeaderName::try_from(name.as_str()).is_err()
                            || reqwest::header::HeaderValue::try_from(value.expose()).is_err()
                        {
                            return Err(at(&["upstreams", id, "headers", name], "not a valid HTTP header".into()));
                        }
                    }
                    if kind == TransportKind::Http {
                        TransportSpec::Http { url, headers }
                    } else {
                        TransportSpec::Sse { url, headers }
                    }
                }
            };
            let oauth = match (&u.oauth, &transport) {
                (None, _) => None,
                (Some(o), TransportSpec::Http { url, .. }) => {
                    let spec = validate_oauth(id, o, url.expose(), token_file.clone(), &secrets)
                        .map_err(|(k, m)| at(&["upstreams", id, "oauth", k], m))?;
                    Some(std::sync::Arc::new(spec))
                }
                (Some(_), _) => {
                    return Err(at(
                        &["upstreams", id, "oauth"],
                        "`oauth` is for http (Streamable HTTP) upstreams".into(),
                    ));
                }
            };
            let tools = ToolMatcher::new(&u.tools).map_err(|e| at(&key("tools"), e))?;
            if u.restart_max_delay.is_some_and(|d| d < Duration::from_millis(500)) {
                return Err(at(&key("restart_max_delay"), "must be at least 500ms".into()));
            }
            for (k, d) in [
                ("startup_timeout", u.startup_timeout),
                ("request_timeout", u.request_timeout),
                ("stable_after", u.stable_after),
            ] {
                if d.is_zero() {
                    return Err(at(&key(k), "must be greater than zero".into()));
                }
            }
            let tool_timeouts = ToolTimeouts::new(&u.tool_timeouts).map_err(|e| at(&key("tool_timeouts"), e))?;
            let longest = tool_timeouts.longest().max(u.request_timeout);
            let max_request_timeout = match u.max_request_timeout {
                Some(m) if m < longest => {
                    return Err(at(
                        &key("max_request_timeout"),
                        format!("must be at least the longest request or tool timeout ({}s)", longest.as_secs_f64()),
                    ));
                }
                Some(m) => m,
                None => longest.max(Duration::from_secs(600)),
            };
            let idempotent_tools =
                ToolMatcher::only(&u.idempotent_tools).map_err(|e| at(&key("idempotent_tools"), e))?;
            if u.max_concurrency == 0 {
                return Err(at(&key("max_concurrency"), "must be at least 1".into()));
            }
            if let Some(bad) = u.roots.iter().find(|r| !r.starts_with("file://")) {
                return Err(at(&key("roots"), format!("{bad:?} is not a file:// URI (roots are file:// URIs)")));
            }
            validate_resilience(u).map_err(|(section, k, msg)| at(&["upstreams", id, section, k], msg.into()))?;
            upstreams.push(UpstreamSpec {
                id: id.clone(),
                transport,
                prefix: u.prefix,
                tools,
                startup_timeout: u.startup_timeout,
                restart_max_delay: u.restart_max_delay.unwrap_or(match kind {
                    TransportKind::Stdio => Duration::from_secs(30),
                    TransportKind::Http | TransportKind::Sse => Duration::from_secs(5),
                }),
                stable_after: u.stable_after,
                request_timeout: u.request_timeout,
                tool_timeouts,
                max_request_timeout,
                idempotent_tools,
                trusted: u.trusted,
                roots: u.roots.clone(),
                isolation: u.isolation,
                max_concurrency: u.max_concurrency,
                max_queue: u.max_queue,
                retry: u.retry.clone(),
                breaker: u.breaker.clone(),
                health: u.health.clone(),
                oauth,
            });
        }
        let traces = validate_traces(&file.traces, &secrets).map_err(|(k, m)| at(&k, m))?;
        let mut audit = file.audit.clone();
        if let Some(p) = &audit.path {
            audit.path = Some(base.join(p));
        }
        if audit.max_file_bytes < 1024 {
            return Err(at(&["audit", "max_file_bytes"], "must be at least 1024".into()));
        }
        if audit.queue == 0 {
            return Err(at(&["audit", "queue"], "must be at least 1".into()));
        }
        if let Err(e) = tracing_subscriber::EnvFilter::try_new(&file.gateway.log_level) {
            return Err(at(&["gateway", "log_level"], format!("not a valid filter: {e}")));
        }
        let at_key = |(k, m): KeyError| at(&k.iter().map(String::as_str).collect::<Vec<_>>(), m);
        let auth = validate_auth(&file, base).map_err(at_key)?;
        validate_access(&file.access).map_err(at_key)?;
        validate_limits(&file.limits).map_err(at_key)?;
        if let Some(id) = file.upstreams.keys().find(|id| *id == BUILTIN_NAMESPACE) {
            return Err(at(
                &["upstreams", id],
                format!("`{BUILTIN_NAMESPACE}` is reserved for the gateway's own tools"),
            ));
        }
        let mut pinning = file.pinning.clone();
        pinning.file = pinning.file.map(|p| base.join(p));
        let mut rules = file.rules.clone();
        rules.file = rules.file.map(|p| base.join(p));
        if rules.reload_interval.is_zero() {
            return Err(at(&["rules", "reload_interval"], "must be greater than zero".into()));
        }
        Ok(Config {
            path: path.to_path_buf(),
            // Paths relative to the config file are resolved here, once.
            gateway: GatewaySection { token_file, ..file.gateway },
            upstreams,
            redactor: secrets.redactor(),
            admin: file.admin,
            traces,
            audit,
            auth,
            access: file.access,
            pinning,
            rules,
            limits: file.limits,
            secret_names: secrets.names(),
            audit_key,
        })
    }

    /// What the strict scan of every message enforces (docs/design.md D12).
    pub fn json_limits(&self) -> crate::protocol::Limits {
        crate::protocol::Limits { max_depth: self.gateway.max_json_depth }
    }

    /// The listen address (`gateway.listen`).
    pub fn listen(&self) -> SocketAddr {
        self.gateway.listen
    }

    /// Refuses to serve unauthenticated clients on `addr` when it is not
    /// loopback and `[auth] mode = "none"` was not written out.
    pub fn check_exposure(&self, addr: SocketAddr) -> Result<(), ConfigError> {
        if self.auth.mode.is_none() && !addr.ip().is_loopback() {
            return Err(ConfigError::plain(format!(
                "{}: listening on {addr} (not loopback) without client authentication: configure \
                 [[auth.api_keys]] or [auth.jwt], or write `mode = \"none\"` in [auth] to accept anyone",
                self.path.display()
            )));
        }
        Ok(())
    }
}

/// The namespace of the gateway's own tools (`gateway__…`); no upstream
/// may take it.
pub const BUILTIN_NAMESPACE: &str = "gateway";

type KeyError = (Vec<String>, String);

/// Checks `[auth]`, fills in `resource` and resolves the PEM path.
fn validate_auth(file: &FileConfig, base: &Path) -> Result<AuthSection, KeyError> {
    let mut auth = file.auth.clone();
    let key = |k: &[&str]| k.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>();
    let configured = !auth.api_keys.is_empty() || auth.jwt.is_some();
    match auth.mode {
        Some(AuthMode::None) if configured => {
            return Err((key(&["auth", "mode"]), "is \"none\" but api_keys or jwt are configured".into()));
        }
        Some(AuthMode::Required) if !configured => {
            return Err((key(&["auth", "mode"]), "is \"required\" but neither api_keys nor jwt is configured".into()));
        }
        None if !configured && !file.gateway.listen.ip().is_loopback() => {
            return Err((
                key(&["auth"]),
                format!(
                    "the gateway listens on {} (not loopback) without client authentication: configure \
                     [[auth.api_keys]] or [auth.jwt], or write `mode = \"none\"` to accept anyone",
                    file.gateway.listen
                ),
            ));
        }
        _ => {}
    }
    // `None` stays `None` (anonymous because the listener is loopback), so
    // a `--listen` elsewhere can still be refused (`Config::check_exposure`).
    if configured {
        auth.mode = Some(AuthMode::Required);
    }
    let resource = auth.resource.clone().unwrap_or_else(|| format!("http://{}/mcp", file.gateway.listen));
    match reqwest::Url::parse(&resource) {
        Ok(u) if matches!(u.scheme(), "http" | "https") && u.fragment().is_none() => {}
        _ => return Err((key(&["auth", "resource"]), "must be an absolute http(s) URL without a fragment".into())),
    }
    auth.resource = Some(resource.trim_end_matches('/').to_owned());
    let mut seen = std::collections::HashSet::new();
    for (i, k) in auth.api_keys.iter().enumerate() {
        let at = |f: &str| vec!["auth".to_owned(), "api_keys".to_owned(), i.to_string(), f.to_owned()];
        if k.principal.trim().is_empty() {
            return Err((at("principal"), "must not be empty".into()));
        }
        if k.principal.contains(':') {
            // `key:<name>` and `jwt:<sub>` name one kind of principal in
            // [[access]]; a `:` in a key's name would blur that.
            return Err((at("principal"), "must not contain `:`".into()));
        }
        if k.sha256.len() != 64 || !k.sha256.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err((at("sha256"), "must be 64 hex digits (`mcp-gateway auth hash-key` prints it)".into()));
        }
        if !seen.insert(k.sha256.to_ascii_lowercase()) {
            return Err((at("sha256"), "the same key is listed twice".into()));
        }
    }
    if let Some(jwt) = &mut auth.jwt {
        match (&jwt.jwks_url, &jwt.public_key_pem) {
            (Some(u), None) => {
                if !reqwest::Url::parse(u).is_ok_and(|u| matches!(u.scheme(), "http" | "https")) {
                    return Err((key(&["auth", "jwt", "jwks_url"]), "must be an absolute http(s) URL".into()));
                }
            }
            (None, Some(p)) => jwt.public_key_pem = Some(base.join(p)),
            _ => {
                return Err((key(&["auth", "jwt"]), "set exactly one of `jwks_url` and `public_key_pem`".into()));
            }
        }
        if jwt.issuer.is_empty() {
            return Err((key(&["auth", "jwt", "issuer"]), "must not be empty".into()));
        }
        for a in &jwt.algorithms {
            if !matches!(
                a.as_str(),
                "RS256" | "RS384" | "RS512" | "PS256" | "PS384" | "PS512" | "ES256" | "ES384" | "EdDSA"
            ) {
                return Err((
                    key(&["auth", "jwt", "algorithms"]),
                    format!("`{a}` is not an asymmetric JWS algorithm (RS*, PS*, ES256, ES384, EdDSA)"),
                ));
            }
        }
    }
    for h in &auth.sensitive_headers {
        if reqwest::header::HeaderName::try_from(h.as_str()).is_err() {
            return Err((key(&["auth", "sensitive_headers"]), format!("`{h}` is not a header name")));
        }
    }
    Ok(auth)
}

/// Checks the globs of `[[access]]`.
fn validate_access(access: &[AccessSection]) -> Result<(), KeyError> {
    for (i, a) in access.iter().enumerate() {
        let at = |f: &str| vec!["access".to_owned(), i.to_string(), f.to_owned()];
        if a.principals.is_empty() && a.groups.is_empty() {
            return Err((at("principals"), "an entry needs `principals` or `groups` (\"*\" for everyone)".into()));
        }
        for (f, filter) in [("tools", &a.tools), ("prompts", &a.prompts), ("resources", &a.resources)] {
            ToolMatcher::new(filter).map_err(|e| (at(f), e))?;
        }
        for r in &a.arguments {
            Glob::new(&r.tools).map_err(|e| (at("arguments"), format!("invalid glob `{}`: {e}", r.tools)))?;
            if r.argument.is_empty() || r.argument.iter().any(String::is_empty) {
                return Err((at("arguments"), "`argument` must name at least one argument".into()));
            }
            if r.prefix.is_empty() {
                return Err((at("arguments"), format!("`{}` needs at least one `prefix`", r.argument.join("`, `"))));
            }
        }
    }
    Ok(())
}

/// Checks the rates and globs of `[limits]`.
fn validate_limits(l: &LimitsSection) -> Result<(), KeyError> {
    let rate_ok = |r: &RateSection| r.rate.is_finite() && r.rate > 0.0 && r.burst != Some(0);
    if l.per_principal.as_ref().is_some_and(|r| !rate_ok(r)) {
        return Err((vec!["limits".into(), "per_principal".into()], "rate must be > 0 and burst ≥ 1".into()));
    }
    for (glob, r) in &l.tools {
        let at = || vec!["limits".to_owned(), "tools".to_owned(), glob.clone()];
        Glob::new(glob).map_err(|e| (at(), format!("invalid glob: {e}")))?;
        if !rate_ok(r) {
            return Err((at(), "rate must be > 0 and burst ≥ 1".into()));
        }
    }
    for (glob, c) in &l.results {
        let at = || vec!["limits".to_owned(), "results".to_owned(), glob.clone()];
        Glob::new(glob).map_err(|e| (at(), format!("invalid glob: {e}")))?;
        if c.max_bytes < 256 {
            return Err((at(), "max_bytes must be at least 256".into()));
        }
    }
    Ok(())
}

/// Checks `[upstreams.<id>.oauth]`; errors name the key under it.
fn validate_oauth(
    id: &str,
    o: &OAuthSection,
    url: &str,
    token_file: PathBuf,
    secrets: &Secrets,
) -> Result<OAuthSpec, (&'static str, String)> {
    let parsed = reqwest::Url::parse(url).map_err(|e| ("resource", e.to_string()))?;
    let resource = match &o.resource {
        Some(r) => match reqwest::Url::parse(r) {
            Ok(u) if matches!(u.scheme(), "http" | "https") && u.fragment().is_none() => r.clone(),
            _ => return Err(("resource", "must be an absolute http(s) URI without a fragment".into())),
        },
        None => canonical_resource(&parsed),
    };
    if let Some(issuer) = &o.authorization_server {
        match reqwest::Url::parse(issuer) {
            Ok(u) if matches!(u.scheme(), "http" | "https") && u.query().is_none() && u.fragment().is_none() => {}
            _ => {
                return Err(("authorization_server", "must be an http(s) issuer URL without query or fragment".into()));
            }
        }
    }
    let client_secret =
        o.client_secret.as_deref().map(|s| secrets.expand(s)).transpose().map_err(|e| ("client_secret", e))?;
    if client_secret.is_some() && o.client_id.is_none() {
        return Err(("client_secret", "needs `client_id`".into()));
    }
    if o.client_id.as_deref().is_some_and(|c| c.trim().is_empty()) {
        return Err(("client_id", "must not be empty".into()));
    }
    if let Some(bad) = o.scopes.iter().find(|s| s.is_empty() || s.contains(char::is_whitespace)) {
        return Err(("scopes", format!("{bad:?} is not a scope (no spaces)")));
    }
    if o.grant == OAuthGrant::ClientCredentials {
        if o.client_id.is_none() || client_secret.is_none() {
            return Err(("grant", "`client_credentials` needs `client_id` and `client_secret`".into()));
        }
        if o.per_principal {
            return Err((
                "per_principal",
                "per-principal tokens come from `auth login`: use `grant = \"authorization_code\"`".into(),
            ));
        }
    }
    Ok(OAuthSpec {
        upstream: id.to_owned(),
        grant: o.grant,
        client_id: o.client_id.clone(),
        client_secret,
        token_endpoint_auth: o.token_endpoint_auth.unwrap_or(TokenEndpointAuth::ClientSecretBasic),
        scopes: o.scopes.clone(),
        resource,
        url: url.to_owned(),
        authorization_server: o.authorization_server.clone(),
        per_principal: o.per_principal,
        redirect_port: o.redirect_port,
        token_file,
    })
}

/// Checks `[traces]` and resolves its header values.
fn validate_traces(t: &TracesSection, secrets: &Secrets) -> Result<Traces, (Vec<&'static str>, String)> {
    if let Some(e) = &t.endpoint {
        match reqwest::Url::parse(e) {
            Ok(u) if matches!(u.scheme(), "http" | "https") => {}
            _ => return Err((vec!["traces", "endpoint"], "must be an absolute http:// or https:// URL".into())),
        }
    }
    if t.sample_ratio.is_some_and(|r| !(0.0..=1.0).contains(&r)) {
        return Err((vec!["traces", "sample_ratio"], "must be between 0 and 1".into()));
    }
    if t.service_name.trim().is_empty() {
        return Err((vec!["traces", "service_name"], "must not be empty".into()));
    }
    let mut headers = BTreeMap::new();
    for (k, v) in &t.headers {
        let value = secrets.expand(v).map_err(|e| (vec!["traces", "headers"], e))?;
        if reqwest::header::HeaderName::try_from(k.as_str()).is_err()
            || reqwest::header::HeaderValue::try_from(value.expose()).is_err()
        {
            return Err((vec!["traces", "headers"], format!("`{k}` is not a valid HTTP header")));
        }
        headers.insert(k.clone(), value);
    }
    Ok(Traces {
        endpoint: t.endpoint.clone(),
        protocol: t.protocol,
        service_name: t.service_name.clone(),
        sample_ratio: t.sample_ratio,
        headers,
    })
}

/// Checks the retry, breaker and health sections; an error names the
/// section, the key and what is wrong.
fn validate_resilience(u: &UpstreamSection) -> Result<(), (&'static str, &'static str, &'static str)> {
    let (r, b, h) = (&u.retry, &u.breaker, &u.health);
    let share = |x: f64| (0.0..=1.0).contains(&x);
    let checks = [
        (r.attempts == 0, "retry", "attempts", "must be at least 1"),
        (r.initial_delay.is_zero(), "retry", "initial_delay", "must be greater than zero"),
        (r.max_delay < r.initial_delay, "retry", "max_delay", "must be at least initial_delay"),
        (!share(r.budget_ratio), "retry", "budget_ratio", "must be between 0 and 1"),
        (
            r.budget_min_per_second.is_nan() || r.budget_min_per_second < 0.0,
            "retry",
            "budget_min_per_second",
            "must be zero or more",
        ),
        (b.consecutive_failures == 0, "breaker", "consecutive_failures", "must be at least 1"),
        (!share(b.failure_rate) || b.failure_rate == 0.0, "breaker", "failure_rate", "must be above 0 and at most 1"),
        (b.window == 0 || b.window > 10_000, "breaker", "window", "must be between 1 and 10000"),
        (b.min_calls == 0 || b.min_calls > b.window, "breaker", "min_calls", "must be between 1 and window"),
        (b.cooldown.is_zero(), "breaker", "cooldown", "must be greater than zero"),
        (b.max_cooldown < b.cooldown, "breaker", "max_cooldown", "must be at least cooldown"),
        (b.half_open_probes == 0, "breaker", "half_open_probes", "must be at least 1"),
        (!h.interval.is_zero() && h.timeout.is_zero(), "health", "timeout", "must be greater than zero"),
    ];
    match checks.into_iter().find(|c| c.0) {
        Some((_, section, key, msg)) => Err((section, key, msg)),
        None => Ok(()),
    }
}

/// Upstream ids are `[a-z0-9-]{1,32}`: without `_`, the first `_` of an
/// exposed name always ends the namespace.
pub fn valid_id(id: &str) -> bool {
    (1..=32).contains(&id.len()) && id.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
}

// === impl ToolTimeouts ===

impl ToolTimeouts {
    fn new(map: &BTreeMap<String, humantime_serde::Serde<Duration>>) -> Result<Self, String> {
        let mut rules = Vec::with_capacity(map.len());
        for (pattern, d) in map {
            let glob = Glob::new(pattern).map_err(|e| format!("invalid glob `{pattern}`: {e}"))?;
            if d.is_zero() {
                return Err(format!("`{pattern}`: must be greater than zero"));
            }
            rules.push((glob.compile_matcher(), **d));
        }
        // Longest pattern first: the most specific rule wins.
        rules.sort_by_key(|(g, _)| std::cmp::Reverse(g.glob().glob().len()));
        Ok(ToolTimeouts { rules })
    }

    /// The deadline configured for `tool`, if any.
    pub fn get(&self, tool: &str) -> Option<Duration> {
        self.rules.iter().find(|(g, _)| g.is_match(tool)).map(|(_, d)| *d)
    }

    fn longest(&self) -> Duration {
        self.rules.iter().map(|(_, d)| *d).max().unwrap_or_default()
    }
}

#[cfg(test)]
mod tests;
