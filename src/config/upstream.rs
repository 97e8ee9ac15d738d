//! `[upstreams.<id>]` and its `retry`, `breaker` and `health` sections: the
//! serde structs, key by key, and their `validate()`. What a checked
//! upstream becomes is in `spec.rs`.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

use super::error::ConfigError;
use super::filter::{ToolFilter, ToolMatcher};
use super::spec::ToolTimeouts;

/// `[upstreams.<id>]`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UpstreamSection {
    /// `stdio`, `http` (Streamable HTTP) or `sse` (legacy HTTP+SSE).
    /// Default: `stdio` when `command` is set, `http` when `url` is set.
    #[serde(default)]
    pub transport: Option<TransportKind>,
    /// stdio: program to run.
    #[serde(default)]
    pub command: Option<String>,
    /// stdio: its arguments; `${NAME}` is replaced from the secrets file.
    #[serde(default)]
    pub args: Vec<String>,
    /// stdio: extra environment variables (values may use `${NAME}`). The
    /// child inherits the gateway's environment too.
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    /// stdio: working directory, relative to this file. Default: this file's
    /// folder.
    #[serde(default)]
    pub cwd: Option<PathBuf>,
    /// stdio: wait this long after closing stdin, then after SIGTERM, before
    /// escalating. Default `2s`.
    #[serde(default = "default_grace", with = "humantime_serde")]
    pub shutdown_grace: Duration,
    /// stdio: the level each line the child writes to stderr is logged at
    /// (target `mcp_gateway::upstream::stderr`); see [`StderrLevel`].
    /// Default `info`.
    #[serde(default)]
    pub stderr_level: StderrLevel,
    /// http/sse: the endpoint URL (may use `${NAME}`).
    #[serde(default)]
    pub url: Option<String>,
    /// http/sse: static headers (values may use `${NAME}`).
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    /// Expose tools as `<id>__<tool>` (default) or, with `false`, unprefixed.
    /// An unprefixed name that collides with another exposed name is
    /// refused (never shadowed) and logged.
    #[serde(default = "yes")]
    pub prefix: bool,
    /// Tool allow/deny globs over the upstream's own tool names.
    #[serde(default)]
    pub tools: ToolFilter,
    /// Deadline for `initialize`. A slow upstream never delays the others.
    /// Default `60s`.
    #[serde(default = "default_startup", with = "humantime_serde")]
    pub startup_timeout: Duration,
    /// Longest wait between two starts (or connection attempts) of a
    /// down upstream; the wait doubles from 0.5 s up to it. Default `30s`
    /// for stdio (a crashing process should not spin), `5s` for http and
    /// sse (a server that is not up yet is picked up soon after it is).
    #[serde(default, with = "humantime_serde")]
    pub restart_max_delay: Option<Duration>,
    /// Up this long, an upstream counts as stable again: its restart delay
    /// starts over and a crash loop (`crash_loop`,
    /// `mcp_gateway_upstream_crash_looping`) clears. Default `60s`.
    #[serde(default = "default_stable_after", with = "humantime_serde")]
    pub stable_after: Duration,
    /// Deadline for one request to this upstream, shared by its retries.
    /// Default `60s`.
    #[serde(default = "default_request", with = "humantime_serde")]
    pub request_timeout: Duration,
    /// Per-tool deadlines over the upstream's own tool names, as globs, e.g.
    /// `{ "export_*" = "5m" }`. When several match, the longest pattern wins.
    #[serde(default)]
    pub tool_timeouts: BTreeMap<String, humantime_serde::Serde<Duration>>,
    /// Progress notifications extend a call's deadline (by its timeout from
    /// the last progress) up to this hard maximum since the call began.
    /// Default: `10m`, or the longest timeout above if that is longer.
    #[serde(default, with = "humantime_serde")]
    pub max_request_timeout: Option<Duration>,
    /// Globs over the upstream's tool names whose calls are safe to retry
    /// (docs/design.md D6). Default: none.
    #[serde(default)]
    pub idempotent_tools: Vec<String>,
    /// Trust this upstream's tool annotations: `readOnlyHint` or
    /// `idempotentHint` then make a tool retryable. Default `false`.
    #[serde(default)]
    pub trusted: bool,
    /// What the gateway answers when this upstream asks `roots/list`: these
    /// URIs (e.g. `file:///srv/data`). The upstream serves every client, so
    /// one client's roots are never shown to it. Empty (the default): the
    /// gateway declares no `roots` capability to it.
    #[serde(default)]
    pub roots: Vec<String>,
    /// `shared` (default) or `per-session`; see [`Isolation`].
    #[serde(default)]
    pub isolation: Isolation,
    /// Which protocol era to speak to it: `auto` (default), `legacy` or
    /// `modern`; see [`UpstreamProtocol`].
    #[serde(default)]
    pub protocol: UpstreamProtocol,
    /// How a reload replaces it when it changed: `make-before-break`
    /// (default) or `break-before-make`; see [`Replace`].
    #[serde(default)]
    pub replace: Replace,
    /// Most calls in flight to this upstream at once (bulkhead). Default 64.
    #[serde(default = "default_concurrency")]
    pub max_concurrency: usize,
    /// Most calls waiting for a slot; one more is refused at once with
    /// class `overloaded`. Default 256.
    #[serde(default = "default_queue")]
    pub max_queue: usize,
    /// `[upstreams.<id>.retry]`: when and how often to retry.
    #[serde(default)]
    pub retry: RetrySection,
    /// `[upstreams.<id>.breaker]`: the circuit breaker.
    #[serde(default)]
    pub breaker: BreakerSection,
    /// `[upstreams.<id>.health]`: periodic pings.
    #[serde(default)]
    pub health: HealthSection,
    /// `[upstreams.<id>.oauth]`: the gateway's own OAuth 2.1 credential for
    /// this (http) upstream. Default: none (static `headers` only).
    #[serde(default)]
    pub oauth: Option<super::security::OAuthSection>,
    /// `false` keeps the section but does not start the upstream.
    #[serde(default = "yes")]
    pub enabled: bool,
}

/// `[upstreams.<id>.retry]` (docs/design.md D6). Only safe calls are retried:
/// not delivered, read methods, or idempotent tools.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RetrySection {
    /// Most attempts per call, the first included; 1 disables retries.
    /// Default 5.
    pub attempts: u32,
    /// Ceiling of the first backoff delay; each retry doubles it (full
    /// jitter: the delay is uniform between zero and the ceiling). Default
    /// `100ms`.
    #[serde(with = "humantime_serde")]
    pub initial_delay: Duration,
    /// Largest backoff ceiling. Default `2s`.
    #[serde(with = "humantime_serde")]
    pub max_delay: Duration,
    /// Retries may add at most this share of the calls as extra load (retry
    /// budget, 0 to 1). Default 0.2.
    pub budget_ratio: f64,
    /// Retries allowed per second whatever the traffic, so a quiet upstream
    /// can still be retried. Default 5.
    pub budget_min_per_second: f64,
}

/// `[upstreams.<id>.breaker]` (docs/design.md D7).
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct BreakerSection {
    /// `false` turns the breaker off. Default `true`.
    pub enabled: bool,
    /// Opens after this many failures in a row. Default 5.
    pub consecutive_failures: u32,
    /// Opens when at least this share of the last `window` calls failed
    /// (0 to 1)... Default 0.5.
    pub failure_rate: f64,
    /// ...counting the last this many calls... Default 20.
    pub window: u32,
    /// ...once at least this many are in the window. Default 10.
    pub min_calls: u32,
    /// How long it stays open before probing; doubles on each trip in a
    /// row. Default `5s`.
    #[serde(with = "humantime_serde")]
    pub cooldown: Duration,
    /// Largest cooldown. Default `60s`.
    #[serde(with = "humantime_serde")]
    pub max_cooldown: Duration,
    /// Calls admitted at once while half-open; that many successes close
    /// it, one failure opens it again. Default 1.
    pub half_open_probes: u32,
    /// Also keep a breaker per tool, so one failing tool is cut off while
    /// the upstream's other tools keep serving. Default `false`.
    pub per_tool: bool,
}

/// `[upstreams.<id>.health]`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HealthSection {
    /// Ping the upstream this often (`0s`: never). Pings feed the breaker
    /// and probe it when its cooldown ends. Default `30s`.
    #[serde(with = "humantime_serde")]
    pub interval: Duration,
    /// A ping unanswered for this long fails. Default `5s`.
    #[serde(with = "humantime_serde")]
    pub timeout: Duration,
    /// After this many failed pings in a row the connection is dropped and
    /// re-established (stdio: the process is restarted). 0: never. Default 3.
    pub failures_to_restart: u32,
}

impl Default for RetrySection {
    fn default() -> Self {
        RetrySection {
            attempts: 5,
            initial_delay: Duration::from_millis(100),
            max_delay: Duration::from_secs(2),
            budget_ratio: 0.2,
            budget_min_per_second: 5.0,
        }
    }
}

impl Default for BreakerSection {
    fn default() -> Self {
        BreakerSection {
            enabled: true,
            consecutive_failures: 5,
            failure_rate: 0.5,
            window: 20,
            min_calls: 10,
            cooldown: Duration::from_secs(5),
            max_cooldown: Duration::from_secs(60),
            half_open_probes: 1,
            per_tool: false,
        }
    }
}

impl Default for HealthSection {
    fn default() -> Self {
        HealthSection { interval: Duration::from_secs(30), timeout: Duration::from_secs(5), failures_to_restart: 3 }
    }
}

/// How an upstream's connections are shared between client sessions.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Isolation {
    /// One connection serves every session (the default): server requests
    /// are relayed only when their call is known (a Streamable HTTP call
    /// stream), and `roots/list` is answered from `roots`.
    #[default]
    Shared,
    /// Each session that calls it gets a connection of its own, started on
    /// its first call with that client's capabilities and closed with the
    /// session: sampling, elicitation and `roots/list` go to that client.
    PerSession,
}

/// Which protocol era the gateway speaks to an upstream (docs/design.md
/// D13).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum UpstreamProtocol {
    /// `initialize` first (what nearly every server speaks, and what a
    /// legacy stdio server is not left waiting on); when it is refused,
    /// `server/discover`, so a 2026-07-28-only server is served, not marked
    /// down. An upstream once found modern is asked `server/discover`
    /// first on its next starts (while the gateway runs).
    #[default]
    Auto,
    /// `initialize` only (2024-11-05 … 2025-11-25).
    Legacy,
    /// `server/discover` first, `initialize` when it is refused: a
    /// dual-era server is then spoken to in 2026-07-28 (requests carry
    /// `_meta`; input-required results pass to modern clients).
    Modern,
}

/// How a reload replaces a changed upstream.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Replace {
    /// The new one starts beside the old; it takes new calls once ready,
    /// and the old one drains its calls in flight and stops (the default).
    #[default]
    MakeBeforeBreak,
    /// The old one drains and stops first, then the new one starts: for
    /// servers that cannot run twice at once (two `airbyte-mcp` in one
    /// `cwd` share a DuckDB file; two OAuth clients rotating one refresh
    /// token invalidate each other). Its tools are gone in between.
    BreakBeforeMake,
}

/// The level a stdio upstream's stderr lines are logged at. Its lines carry
/// no level of their own that the gateway could trust, so one level is
/// chosen per upstream.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum StderrLevel {
    /// Not logged (still read, so the child never blocks on a full pipe).
    Off,
    /// `ERROR`.
    Error,
    /// `WARN`.
    Warn,
    /// `INFO` (the default): a server's stderr is where it says why it
    /// failed to start (npx's `command not found`, a Python traceback), and
    /// the gateway logs at `info` by default, so the most common start
    /// failure is visible without changing anything. Quiet a chatty server
    /// with `debug`.
    #[default]
    Info,
    /// `DEBUG`.
    Debug,
    /// `TRACE`.
    Trace,
}

/// Upstream transport.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TransportKind {
    /// Child process, newline-delimited JSON-RPC.
    Stdio,
    /// Streamable HTTP.
    Http,
    /// Legacy HTTP+SSE.
    Sse,
}

fn yes() -> bool {
    true
}
fn default_grace() -> Duration {
    Duration::from_secs(2)
}
fn default_stable_after() -> Duration {
    Duration::from_secs(60)
}
fn default_startup() -> Duration {
    Duration::from_secs(60)
}
fn default_request() -> Duration {
    Duration::from_secs(60)
}
fn default_concurrency() -> usize {
    64
}
fn default_queue() -> usize {
    256
}

// === impl UpstreamSection ===

impl UpstreamSection {
    /// Checks what can be checked before `${NAME}` is expanded; an error
    /// names a key within the upstream (its id is the caller's: the table
    /// key, checked with [`valid_id`](super::valid_id)).
    pub fn validate(&self) -> Result<(), ConfigError> {
        let kind = self.kind()?;
        match kind {
            TransportKind::Stdio => {
                if self.command.as_deref().is_none_or(|c| c.trim().is_empty()) {
                    return Err(ConfigError::new(&["command"], "a stdio upstream needs a non-empty `command`"));
                }
                if self.url.is_some() || !self.headers.is_empty() {
                    return Err(ConfigError::new(&["url"], "`url` and `headers` are for http and sse upstreams"));
                }
            }
            TransportKind::Http | TransportKind::Sse => {
                if self.url.is_none() {
                    return Err(ConfigError::new(&["url"], "an http or sse upstream needs `url`"));
                }
                if self.command.is_some() || !self.args.is_empty() || !self.env.is_empty() {
                    return Err(ConfigError::new(&["command"], "`command`, `args` and `env` are for stdio upstreams"));
                }
            }
        }
        match &self.oauth {
            None => {}
            Some(o) if kind == TransportKind::Http => o.validate().map_err(|e| e.under(&["oauth"]))?,
            Some(_) => return Err(ConfigError::new(&["oauth"], "`oauth` is for http (Streamable HTTP) upstreams")),
        }
        ToolMatcher::new(&self.tools).map_err(|e| ConfigError::new(&["tools"], e.to_string()))?;
        if self.restart_max_delay.is_some_and(|d| d < Duration::from_millis(500)) {
            return Err(ConfigError::new(&["restart_max_delay"], "must be at least 500ms"));
        }
        for (k, d) in [
            ("startup_timeout", self.startup_timeout),
            ("request_timeout", self.request_timeout),
            ("stable_after", self.stable_after),
        ] {
            if d.is_zero() {
                return Err(ConfigError::new(&[k], "must be greater than zero"));
            }
        }
        self.deadlines()?;
        ToolMatcher::only(&self.idempotent_tools)
            .map_err(|e| ConfigError::new(&["idempotent_tools"], e.to_string()))?;
        if self.max_concurrency == 0 {
            return Err(ConfigError::new(&["max_concurrency"], "must be at least 1"));
        }
        if let Some(bad) = self.roots.iter().find(|r| !r.starts_with("file://")) {
            return Err(ConfigError::new(&["roots"], format!("{bad:?} is not a file:// URI (roots are file:// URIs)")));
        }
        self.retry.validate().map_err(|e| e.under(&["retry"]))?;
        self.breaker.validate().map_err(|e| e.under(&["breaker"]))?;
        self.health.validate().map_err(|e| e.under(&["health"]))
    }

    /// The transport: as written, or `stdio` for a `command` and `http` for
    /// a `url`.
    pub(super) fn kind(&self) -> Result<TransportKind, ConfigError> {
        match (self.transport, &self.command, &self.url) {
            (Some(k), _, _) => Ok(k),
            (None, Some(_), None) => Ok(TransportKind::Stdio),
            (None, None, Some(_)) => Ok(TransportKind::Http),
            (None, Some(_), Some(_)) => {
                Err(ConfigError::new(&[], "set either `command` (stdio) or `url` (http), not both"))
            }
            (None, None, None) => Err(ConfigError::new(&[], "missing `command` (stdio) or `url` (http or sse)")),
        }
    }

    /// The per-tool deadlines, compiled, and the hard maximum: as written
    /// (at least the longest deadline), or `10m` or that longest.
    pub(super) fn deadlines(&self) -> Result<(ToolTimeouts, Duration), ConfigError> {
        let tool_timeouts =
            ToolTimeouts::new(&self.tool_timeouts).map_err(|e| ConfigError::new(&["tool_timeouts"], e.to_string()))?;
        let longest = tool_timeouts.longest().max(self.request_timeout);
        let max_request_timeout = match self.max_request_timeout {
            Some(m) if m < longest => {
                return Err(ConfigError::new(
                    &["max_request_timeout"],
                    format!("must be at least the longest request or tool timeout ({}s)", longest.as_secs_f64()),
                ));
            }
            Some(m) => m,
            None => longest.max(Duration::from_secs(600)),
        };
        Ok((tool_timeouts, max_request_timeout))
    }
}

/// The first check of `checks` that failed, as an error at its key.
fn first_failed(checks: &[(bool, &str, &'static str)]) -> Result<(), ConfigError> {
    match checks.iter().find(|c| c.0) {
        Some((_, key, msg)) => Err(ConfigError::new(&[key], *msg)),
        None => Ok(()),
    }
}

// === impl RetrySection ===

impl RetrySection {
    /// Checks the policy's numbers; an error names a key of the section.
    pub fn validate(&self) -> Result<(), ConfigError> {
        first_failed(&[
            (self.attempts == 0, "attempts", "must be at least 1"),
            (self.initial_delay.is_zero(), "initial_delay", "must be greater than zero"),
            (self.max_delay < self.initial_delay, "max_delay", "must be at least initial_delay"),
            (!(0.0..=1.0).contains(&self.budget_ratio), "budget_ratio", "must be between 0 and 1"),
            (
                self.budget_min_per_second.is_nan() || self.budget_min_per_second < 0.0,
                "budget_min_per_second",
                "must be zero or more",
            ),
        ])
    }
}

// === impl BreakerSection ===

impl BreakerSection {
    /// Checks the breaker's thresholds; an error names a key of the section.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let rate_ok = (0.0..=1.0).contains(&self.failure_rate) && self.failure_rate != 0.0;
        first_failed(&[
            (self.consecutive_failures == 0, "consecutive_failures", "must be at least 1"),
            (!rate_ok, "failure_rate", "must be above 0 and at most 1"),
            (self.window == 0 || self.window > 10_000, "window", "must be between 1 and 10000"),
            (self.min_calls == 0 || self.min_calls > self.window, "min_calls", "must be between 1 and window"),
            (self.cooldown.is_zero(), "cooldown", "must be greater than zero"),
            (self.max_cooldown < self.cooldown, "max_cooldown", "must be at least cooldown"),
            (self.half_open_probes == 0, "half_open_probes", "must be at least 1"),
        ])
    }
}

// === impl HealthSection ===

impl HealthSection {
    /// Checks the pings' timing; an error names a key of the section.
    pub fn validate(&self) -> Result<(), ConfigError> {
        // With pings off (`interval = "0s"`) the timeout is never used.
        first_failed(&[(!self.interval.is_zero() && self.timeout.is_zero(), "timeout", "must be greater than zero")])
    }
}
