//! What a checked `[upstreams.<id>]` becomes: [`UpstreamSpec`], with its
//! transport's `${NAME}` references expanded, globs compiled and defaults
//! that depend on other keys filled in.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use globset::Glob;

use super::error::ConfigError;
use super::filter::ToolMatcher;
use super::secrets::{Expander, Resolved};
use super::security::{OAuthGrant, OAuthSection, TokenEndpointAuth};
use super::upstream::{
    BreakerSection, HealthSection, Isolation, RetrySection, StderrLevel, TransportKind, UpstreamSection,
};

/// One validated upstream.
///
/// Its settings that need no resolving (`prefix`, the timeouts, `retry`,
/// …) are those of [`UpstreamSection`] (see it for their meaning and
/// defaults); `UpstreamSpec::new` takes the section apart whole, so a key
/// added there and forgotten here does not compile.
#[derive(Debug, Clone, PartialEq)]
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
    /// Which protocol era to speak to it.
    pub protocol: super::upstream::UpstreamProtocol,
    /// How a reload replaces it.
    pub replace: super::upstream::Replace,
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
    pub oauth: Option<Arc<OAuthSpec>>,
}

/// A validated `[upstreams.<id>.oauth]`.
#[derive(Debug, Clone, PartialEq)]
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

/// How an upstream is reached, with secrets resolved.
#[derive(Debug, Clone, PartialEq)]
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
        /// The level its stderr lines are logged at.
        stderr_level: StderrLevel,
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

/// Per-tool deadlines: glob → duration, longest pattern first.
#[derive(Debug, Clone, Default)]
pub struct ToolTimeouts {
    rules: Vec<(globset::GlobMatcher, Duration)>,
}

impl PartialEq for ToolTimeouts {
    fn eq(&self, other: &Self) -> bool {
        let globs = |t: &Self| t.rules.iter().map(|(g, d)| (g.glob().glob().to_owned(), *d)).collect::<Vec<_>>();
        globs(self) == globs(other)
    }
}

/// A `tool_timeouts` entry that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum ToolTimeoutsError {
    /// The pattern is not a glob.
    #[error("invalid glob `{pattern}`: {error}")]
    Glob {
        /// The pattern as written.
        pattern: String,
        /// globset's reason.
        error: globset::Error,
    },
    /// A zero deadline.
    #[error("`{pattern}`: must be greater than zero")]
    Zero {
        /// The pattern as written.
        pattern: String,
    },
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

/// Upstream ids are `[a-z0-9-]{1,32}`: without `_`, the first `_` of an
/// exposed name always ends the namespace.
pub fn valid_id(id: &str) -> bool {
    (1..=32).contains(&id.len()) && id.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
}

// === impl UpstreamSpec ===

impl UpstreamSpec {
    /// The spec of upstream `id` from its section, which
    /// [`UpstreamSection::validate`] accepted: `${NAME}` expanded, the URL
    /// and headers checked once expanded, paths resolved against `base`.
    /// An error names a key within the upstream.
    pub(super) fn new(
        id: &str,
        u: UpstreamSection,
        base: &Path,
        token_file: &Path,
        x: Expander<'_>,
    ) -> Result<Self, ConfigError> {
        let kind = u.kind()?;
        let tools = ToolMatcher::new(&u.tools).map_err(|e| ConfigError::new(&["tools"], e.to_string()))?;
        let (tool_timeouts, max_request_timeout) = u.deadlines()?;
        let idempotent_tools = ToolMatcher::only(&u.idempotent_tools)
            .map_err(|e| ConfigError::new(&["idempotent_tools"], e.to_string()))?;
        // Whole, so that every key of the section is used or said not to be.
        let UpstreamSection {
            transport: _,
            command,
            args,
            env,
            cwd,
            shutdown_grace,
            stderr_level,
            url,
            headers,
            prefix,
            tools: _,
            startup_timeout,
            restart_max_delay,
            stable_after,
            request_timeout,
            tool_timeouts: _,
            max_request_timeout: _,
            idempotent_tools: _,
            trusted,
            roots,
            isolation,
            protocol,
            replace,
            max_concurrency,
            max_queue,
            retry,
            breaker,
            health,
            oauth,
            enabled: _,
        } = u;
        // The endpoint as expanded, and parsed (for its canonical resource).
        let (transport, endpoint) = match (kind, command, url) {
            (TransportKind::Stdio, Some(command), _) => {
                let args = args.iter().map(|a| x.expand(a, &["args"])).collect::<Result<_, _>>()?;
                let env = x.expand_map(&env, "env")?;
                // Absolute: argument rules take a relative value from it.
                let cwd = super::paths::absolute(base, cwd.as_deref().unwrap_or(Path::new("")));
                (TransportSpec::Stdio { command, args, env, cwd, shutdown_grace, stderr_level }, None)
            }
            (TransportKind::Http | TransportKind::Sse, _, Some(url)) => {
                let url = x.expand(&url, &["url"])?;
                let parsed = match reqwest::Url::parse(url.expose()) {
                    Ok(parsed) if matches!(parsed.scheme(), "http" | "https") => parsed,
                    _ => return Err(ConfigError::new(&["url"], "must be an absolute http:// or https:// URL")),
                };
                let text = url.expose().to_owned();
                let headers = x.expand_map(&headers, "headers")?;
                for (name, value) in &headers {
                    if reqwest::header::HeaderName::try_from(name.as_str()).is_err()
                        || reqwest::header::HeaderValue::try_from(value.expose()).is_err()
                    {
                        return Err(ConfigError::new(&["headers", name], "not a valid HTTP header"));
                    }
                }
                let transport = if kind == TransportKind::Http {
                    TransportSpec::Http { url, headers }
                } else {
                    TransportSpec::Sse { url, headers }
                };
                (transport, Some((text, parsed)))
            }
            // `validate` refused these.
            (TransportKind::Stdio, None, _) => {
                return Err(ConfigError::new(&["command"], "a stdio upstream needs a non-empty `command`"));
            }
            (_, _, None) => return Err(ConfigError::new(&["url"], "an http or sse upstream needs `url`")),
        };
        let oauth = match (oauth, &endpoint) {
            (Some(o), Some((text, parsed))) => {
                let spec = OAuthSpec::new(id, o, text, parsed, token_file.to_path_buf(), x)
                    .map_err(|e| e.under(&["oauth"]))?;
                Some(Arc::new(spec))
            }
            _ => None,
        };
        Ok(UpstreamSpec {
            id: id.to_owned(),
            transport,
            prefix,
            tools,
            startup_timeout,
            restart_max_delay: restart_max_delay.unwrap_or(match kind {
                TransportKind::Stdio => Duration::from_secs(30),
                TransportKind::Http | TransportKind::Sse => Duration::from_secs(5),
            }),
            stable_after,
            request_timeout,
            tool_timeouts,
            max_request_timeout,
            idempotent_tools,
            trusted,
            roots,
            isolation,
            protocol,
            replace,
            max_concurrency,
            max_queue,
            retry,
            breaker,
            health,
            oauth,
        })
    }
}

// === impl OAuthSpec ===

impl OAuthSpec {
    /// The spec of a section [`OAuthSection::validate`] accepted, for the
    /// upstream `id` at `url` (as expanded; `parsed` is it parsed); an error
    /// names a key under `oauth`.
    fn new(
        id: &str,
        o: OAuthSection,
        url: &str,
        parsed: &reqwest::Url,
        token_file: PathBuf,
        x: Expander<'_>,
    ) -> Result<Self, ConfigError> {
        let client_secret = o.client_secret.as_deref().map(|s| x.expand(s, &["client_secret"])).transpose()?;
        Ok(OAuthSpec {
            upstream: id.to_owned(),
            grant: o.grant,
            client_id: o.client_id,
            client_secret,
            token_endpoint_auth: o.token_endpoint_auth.unwrap_or(TokenEndpointAuth::ClientSecretBasic),
            scopes: o.scopes,
            resource: o.resource.unwrap_or_else(|| canonical_resource(parsed)),
            url: url.to_owned(),
            authorization_server: o.authorization_server,
            per_principal: o.per_principal,
            redirect_port: o.redirect_port,
            token_file,
        })
    }
}

// === impl TransportSpec ===

impl TransportSpec {
    /// `network.transport` of OpenTelemetry: `pipe` or `tcp`.
    pub fn network(&self) -> &'static str {
        match self {
            TransportSpec::Stdio { .. } => "pipe",
            TransportSpec::Http { .. } | TransportSpec::Sse { .. } => "tcp",
        }
    }
}

// === impl ToolTimeouts ===

impl ToolTimeouts {
    pub(super) fn new(map: &BTreeMap<String, humantime_serde::Serde<Duration>>) -> Result<Self, ToolTimeoutsError> {
        let mut rules = Vec::with_capacity(map.len());
        for (pattern, d) in map {
            let glob =
                Glob::new(pattern).map_err(|error| ToolTimeoutsError::Glob { pattern: pattern.clone(), error })?;
            if d.is_zero() {
                return Err(ToolTimeoutsError::Zero { pattern: pattern.clone() });
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

    pub(super) fn longest(&self) -> Duration {
        self.rules.iter().map(|(_, d)| *d).max().unwrap_or_default()
    }
}
