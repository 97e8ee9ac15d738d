//! The serde structs of `gateway.toml`, key by key.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

use super::filter::ToolFilter;

/// The whole file.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    /// `[gateway]`: the listener and downstream behaviour.
    #[serde(default)]
    pub gateway: GatewaySection,
    /// `[upstreams.<id>]`: the MCP servers behind the gateway.
    #[serde(default)]
    pub upstreams: BTreeMap<String, UpstreamSection>,
    /// `[admin]`: a separate listener for `/metrics`.
    #[serde(default)]
    pub admin: AdminSection,
    /// `[traces]`: OpenTelemetry traces over OTLP.
    #[serde(default)]
    pub traces: TracesSection,
    /// `[audit]`: the audit log.
    #[serde(default)]
    pub audit: AuditSection,
    /// `[auth]`: client authentication.
    #[serde(default)]
    pub auth: super::security::AuthSection,
    /// `[[access]]`: per principal or group, what may be seen and called.
    #[serde(default)]
    pub access: Vec<super::security::AccessSection>,
    /// `[pinning]`: tool definitions pinned by hash.
    #[serde(default)]
    pub pinning: super::security::PinningSection,
    /// `[rules]`: sequence rules.
    #[serde(default)]
    pub rules: super::security::RulesSection,
    /// `[limits]`: rate limits and result caps.
    #[serde(default)]
    pub limits: super::security::LimitsSection,
}

/// `[admin]`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AdminSection {
    /// Serve `/metrics` here instead of on `gateway.listen` (with
    /// `/healthz` and `/readyz`, which stay on the main listener too), e.g.
    /// to keep it off the port clients reach; the only way to scrape
    /// `mcp-gateway stdio`. Default: none.
    pub listen: Option<SocketAddr>,
}

/// `[traces]`: off unless `endpoint` (or `OTEL_EXPORTER_OTLP_ENDPOINT` /
/// `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`) is set. The other standard
/// `OTEL_*` variables apply (`OTEL_SERVICE_NAME`, `OTEL_TRACES_SAMPLER`,
/// `OTEL_BSP_*`, `OTEL_EXPORTER_OTLP_HEADERS`, `OTEL_SDK_DISABLED`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TracesSection {
    /// The collector's base URL, e.g. `http://127.0.0.1:4318` (HTTP:
    /// `/v1/traces` is appended) or `http://127.0.0.1:4317` (gRPC).
    /// Overrides the environment. Default: none.
    pub endpoint: Option<String>,
    /// `http/protobuf` or `grpc` (needs the `otlp-grpc` build feature).
    /// Default: `OTEL_EXPORTER_OTLP_(TRACES_)PROTOCOL`, else
    /// `http/protobuf`.
    pub protocol: Option<OtlpProtocol>,
    /// `service.name` of the spans (`OTEL_SERVICE_NAME` wins). Default
    /// `mcp-gateway`.
    pub service_name: String,
    /// Share of new traces sampled, 0 to 1; a client's sampled flag is
    /// always followed. Default: all (or `OTEL_TRACES_SAMPLER`).
    pub sample_ratio: Option<f64>,
    /// Headers sent to the collector (values may use `${NAME}`).
    pub headers: BTreeMap<String, String>,
}

/// The OTLP transport.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
pub enum OtlpProtocol {
    /// Protobuf over HTTP (port 4318).
    #[default]
    #[serde(rename = "http/protobuf")]
    HttpProtobuf,
    /// gRPC (port 4317).
    #[serde(rename = "grpc")]
    Grpc,
}

/// `[audit]`: one JSON line per routed call (schema in docs/observability.md).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AuditSection {
    /// The file, relative to this config file. Default: none (no audit
    /// log).
    pub path: Option<PathBuf>,
    /// Rotate when the file would pass this size, in bytes. Default
    /// 104857600 (100 MiB).
    pub max_file_bytes: u64,
    /// Rotated files kept (`audit.jsonl.1` is the newest). Default 5.
    pub max_files: u32,
    /// Write argument values (with secret values masked); otherwise only
    /// their SHA-256. Default `false`.
    pub include_arguments: bool,
    /// Records waiting for the writer; when full, records are dropped and
    /// counted rather than slowing calls down. Default 8192.
    pub queue: usize,
}

impl Default for TracesSection {
    fn default() -> Self {
        TracesSection {
            endpoint: None,
            protocol: None,
            service_name: "mcp-gateway".into(),
            sample_ratio: None,
            headers: BTreeMap::new(),
        }
    }
}

impl Default for AuditSection {
    fn default() -> Self {
        AuditSection {
            path: None,
            max_file_bytes: 100 * 1024 * 1024,
            max_files: 5,
            include_arguments: false,
            queue: 8192,
        }
    }
}

/// `[gateway]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct GatewaySection {
    /// Address of the HTTP listener (`/mcp`, `/healthz`, `/readyz`,
    /// `/status`). Default `127.0.0.1:8080`.
    pub listen: SocketAddr,
    /// dotenv file with the values of `${NAME}` references, relative to this
    /// file. Overridden by `MCP_GATEWAY_ENV_FILE`. Default: none.
    pub secrets_file: Option<PathBuf>,
    /// Where upstream OAuth tokens are kept (`mcp-gateway auth login`, and
    /// refreshed ones), relative to this file; written 0600. Default
    /// `tokens.json`.
    pub token_file: PathBuf,
    /// Largest JSON-RPC message accepted from a client or an upstream, in
    /// bytes. Default 16 MiB.
    pub max_message_bytes: usize,
    /// Deepest nesting of objects and arrays accepted in a message from a
    /// client or an upstream, counted from the message itself (a
    /// `tools/call` holding `params` holding `arguments` is three deep).
    /// Deeper messages are refused (docs/design.md D12). Default 64.
    pub max_json_depth: usize,
    /// Longest exposed tool name; longer names are shortened with a hash
    /// suffix. Default 128 (use 64 for hosts that need it).
    pub max_tool_name_length: usize,
    /// Allowed `Host` header values (host or host:port). Empty means the
    /// loopback names (`localhost`, `127.0.0.1`, `[::1]`) on any port.
    pub allowed_hosts: Vec<String>,
    /// Allowed `Origin` header values (exact, or with `*` as port, e.g.
    /// `http://localhost:*`). Requests without `Origin` are allowed. Empty
    /// means loopback origins only.
    pub allowed_origins: Vec<String>,
    /// Most entries in one page of `tools/list`, `prompts/list`,
    /// `resources/list` and `resources/templates/list`; more come with the
    /// gateway's own `nextCursor`. `0` puts every entry on one page.
    /// Default 200: large enough that a host which never follows cursors
    /// still sees a typical catalog whole.
    pub page_size: usize,
    /// How `/mcp` answers a request: `json` (one `application/json` body) or
    /// `sse` (a `text/event-stream` with one event). Default `json`.
    pub response_mode: ResponseMode,
    /// A downstream session unused for this long is closed. Default `1h`.
    #[serde(with = "humantime_serde")]
    pub session_idle_timeout: Duration,
    /// Most downstream sessions at once; more get HTTP 503. Default 10000.
    pub max_sessions: usize,
    /// Most sessions one principal may hold open at once (HTTP and legacy
    /// SSE together); more get HTTP 429. Without `[auth]` every client is
    /// the one principal `anonymous`, and only `max_sessions` applies.
    /// Default 256: well below `max_sessions`, and a quarter of
    /// `max_connections`, so one principal's GET streams cannot take every
    /// connection.
    pub max_sessions_per_principal: usize,
    /// Largest `capabilities` object a client may declare in `initialize`,
    /// in bytes of its JSON text. The session keeps it (raw: it is relayed
    /// to per-session upstreams); larger is refused (-32602) and no session
    /// is made. Default 64 KiB.
    pub max_client_capabilities_bytes: usize,
    /// Most client connections open at once on each listener (the main one
    /// and `admin.listen`); a connection over it is closed as soon as it is
    /// accepted. Default 1024.
    pub max_connections: usize,
    /// A client connection with no request under way for this long is
    /// closed: HTTP/1.1 between requests (and before the first), HTTP/2
    /// with no open stream (GOAWAY). An open SSE stream is a request under
    /// way. Default `30s`.
    #[serde(with = "humantime_serde")]
    pub connection_idle_timeout: Duration,
    /// Most bytes of client request bodies the gateway holds at once: read,
    /// being read (counted by their declared length) or being handled.
    /// More get HTTP 503 with `Retry-After`. Default 256 MiB.
    pub max_inflight_request_bytes: usize,
    /// Most of `max_inflight_request_bytes` one principal may hold, so one
    /// client cannot make the gateway refuse every other (not applied to
    /// `anonymous`). At least `max_message_bytes`. Default 64 MiB.
    pub max_inflight_request_bytes_per_principal: usize,
    /// The first `tools/list` calls after start wait up to this long (since
    /// the gateway started) for upstreams still on their first start, so a
    /// host that lists once and ignores `list_changed` sees their tools.
    /// Upstreams slower than this appear later, with `list_changed`. `0s`
    /// never waits. Default `5s`.
    #[serde(with = "humantime_serde")]
    pub startup_list_wait: Duration,
    /// Log output: `human` or `json`. Default `human`.
    pub log_format: LogFormat,
    /// Log filter, in `RUST_LOG` syntax (e.g. `info,mcp_gateway=debug`);
    /// `RUST_LOG` wins when set. Default `info`.
    pub log_level: String,
    /// On SIGTERM or Ctrl-C (and for `mcp-gateway stdio`, when stdin
    /// closes), calls in flight get this long to finish before the gateway
    /// stops its upstreams and exits. Default `10s`.
    #[serde(with = "humantime_serde")]
    pub drain_timeout: Duration,
    /// Expose the built-in tool `gateway__list_secret_names`, which lists
    /// the secrets file's names (never values), as PyAirbyte's server does.
    /// Default `false`.
    pub list_secret_names: bool,
}

/// How `/mcp` answers requests.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ResponseMode {
    /// `application/json`.
    #[default]
    Json,
    /// `text/event-stream`.
    Sse,
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

/// Log output format.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Human-readable lines.
    #[default]
    Human,
    /// One JSON object per line.
    Json,
}

/// `[upstreams.<id>]`.
#[derive(Debug, Clone, Deserialize)]
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
#[derive(Debug, Clone, Deserialize)]
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
#[derive(Debug, Clone, Deserialize)]
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
#[derive(Debug, Clone, Deserialize)]
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

impl Default for GatewaySection {
    fn default() -> Self {
        GatewaySection {
            listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
            secrets_file: None,
            token_file: PathBuf::from("tokens.json"),
            max_message_bytes: 16 * 1024 * 1024,
            max_json_depth: crate::protocol::scan::DEFAULT_MAX_DEPTH,
            max_tool_name_length: 128,
            allowed_hosts: Vec::new(),
            allowed_origins: Vec::new(),
            page_size: 200,
            response_mode: ResponseMode::Json,
            session_idle_timeout: Duration::from_secs(3600),
            max_sessions: 10_000,
            max_sessions_per_principal: 256,
            max_client_capabilities_bytes: 64 * 1024,
            max_connections: 1024,
            connection_idle_timeout: Duration::from_secs(30),
            max_inflight_request_bytes: 256 * 1024 * 1024,
            max_inflight_request_bytes_per_principal: 64 * 1024 * 1024,
            startup_list_wait: Duration::from_secs(5),
            log_format: LogFormat::Human,
            log_level: "info".into(),
            drain_timeout: Duration::from_secs(10),
            list_secret_names: false,
        }
    }
}
