//! The serde structs of `gateway.toml`, key by key: the whole file and the
//! `[gateway]`, `[admin]`, `[traces]` and `[audit]` sections, each with its
//! `validate()`. `[upstreams.<id>]` is in `upstream.rs`, the security
//! sections in `security.rs`.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

use super::error::ConfigError;
use super::secrets::{Expander, Resolved};
use super::upstream::UpstreamSection;

/// The whole file.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
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
    /// `[redis]`: the state replicas share. None: all state in process.
    #[serde(default)]
    pub redis: Option<super::redis::RedisSection>,
    /// `[bridge]`: bounds of the exchanges bridged between the eras.
    #[serde(default)]
    pub bridge: super::bridge::BridgeSection,
}

/// `[admin]`.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AdminSection {
    /// Serve `/metrics` here instead of on `gateway.listen`, with
    /// `/healthz`, `/readyz`, `/status` and the `/ui` page (which stay on
    /// the main listener too), e.g. to keep them off the port clients
    /// reach; the only way to scrape or watch `mcp-gateway stdio`.
    /// Default: none.
    pub listen: Option<SocketAddr>,
}

/// `[traces]`: off unless `endpoint` (or `OTEL_EXPORTER_OTLP_ENDPOINT` /
/// `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`) is set. The other standard
/// `OTEL_*` variables apply (`OTEL_SERVICE_NAME`, `OTEL_TRACES_SAMPLER`,
/// `OTEL_BSP_*`, `OTEL_EXPORTER_OTLP_HEADERS`, `OTEL_SDK_DISABLED`).
/// `metrics` sends the standard MCP metrics to the same collector.
#[derive(Debug, Clone, PartialEq, Deserialize)]
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
    /// Also send the standard MCP metrics (`mcp.server.operation.duration`
    /// and the others of the OpenTelemetry MCP conventions) to the same
    /// collector (`/v1/metrics`). Default `false`.
    pub metrics: bool,
    /// How often those metrics are sent. Default 60 s.
    #[serde(with = "humantime_serde")]
    pub metrics_interval: Duration,
}

/// `[traces]`, with secrets in headers resolved.
#[derive(Debug, Clone, Default, PartialEq)]
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
    /// Send the standard MCP metrics over OTLP too.
    pub metrics: bool,
    /// How often they are sent.
    pub metrics_interval: Duration,
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
#[derive(Debug, Clone, PartialEq, Deserialize)]
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
            metrics: false,
            metrics_interval: Duration::from_secs(60),
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
#[derive(Debug, Clone, PartialEq, Deserialize)]
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
    /// How long a 2026-07-28 client may keep a list the gateway answers
    /// (`ttlMs`, always with `cacheScope: "private"`: a list depends on
    /// who asks). A modern upstream's shorter TTL wins. Default `0s`: the
    /// gateway's lists change with upstream restarts and policy reloads,
    /// and `subscriptions/listen` tells clients when they do.
    #[serde(with = "humantime_serde")]
    pub list_ttl: Duration,
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
    /// Keep every upstream's last good `tools/list` on disk
    /// (`catalog_cache`), so after a restart or a reload the tools of an
    /// upstream still on its first start are listed at once and a call to
    /// one waits for it (`startup_call_wait`). Default `true`.
    pub warm_start: bool,
    /// The warm-start cache file (relative to the config file; written
    /// 0600 by an atomic rename). Default `catalog-cache.json` beside the
    /// pin store (`[pinning] file`), else beside the config file.
    pub catalog_cache: Option<PathBuf>,
    /// How long a call to a tool listed from the warm-start cache waits
    /// for its upstream's first start before it fails; it is then checked
    /// against the live definition. Default `30s`.
    #[serde(with = "humantime_serde")]
    pub startup_call_wait: Duration,
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
    /// On SIGTERM or Ctrl-C, before it stops accepting, the gateway keeps
    /// serving new connections for this long while `/readyz` answers 503,
    /// so a load balancer's health check takes the replica out first and
    /// sends it nothing more (a connection it refuses or closes unread
    /// would fail a client's request at the balancer). Set it to the
    /// balancer's check interval × failures to mark down, plus a margin.
    /// Default `0s` (stop accepting at once: one replica, no balancer).
    #[serde(with = "humantime_serde")]
    pub drain_delay: Duration,
    /// Expose the built-in tool `gateway__list_secret_names`, which lists
    /// the secrets file's names (never values), as PyAirbyte's server does.
    /// Default `false`.
    pub list_secret_names: bool,
    /// Reload when the config file or the secrets file changes (a watch on
    /// their folders, so a ConfigMap's symlink swap is seen). `false`
    /// reloads only on SIGHUP and `mcp-gateway reload`. Default `true`.
    pub watch_config: bool,
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
            list_ttl: Duration::ZERO,
            max_connections: 1024,
            connection_idle_timeout: Duration::from_secs(30),
            max_inflight_request_bytes: 256 * 1024 * 1024,
            max_inflight_request_bytes_per_principal: 64 * 1024 * 1024,
            startup_list_wait: Duration::from_secs(5),
            warm_start: true,
            catalog_cache: None,
            startup_call_wait: Duration::from_secs(30),
            log_format: LogFormat::Human,
            log_level: "info".into(),
            drain_timeout: Duration::from_secs(10),
            drain_delay: Duration::ZERO,
            list_secret_names: false,
            watch_config: true,
        }
    }
}

// === impl FileConfig ===

impl FileConfig {
    /// Checks every section, in file order, through its own `validate()`:
    /// all that can be checked before the secrets file is read and
    /// `${NAME}` expanded. Errors are not located in the file yet.
    pub fn validate(&self) -> Result<(), ConfigError> {
        self.gateway.validate().map_err(|e| e.under(&["gateway"]))?;
        for (id, u) in &self.upstreams {
            if !super::valid_id(id) {
                return Err(ConfigError::new(
                    &["upstreams", id],
                    format!(
                        "upstream id `{id}` must match [a-z0-9-]{{1,32}} (no `_`: it separates namespace and tool)"
                    ),
                ));
            }
            // A disabled upstream is kept as written, unchecked.
            if u.enabled {
                u.validate().map_err(|e| e.under(&["upstreams", id]))?;
            }
        }
        self.traces.validate().map_err(|e| e.under(&["traces"]))?;
        self.audit.validate().map_err(|e| e.under(&["audit"]))?;
        self.auth.validate(self.gateway.listen).map_err(|e| e.under(&["auth"]))?;
        for (i, a) in self.access.iter().enumerate() {
            a.validate().map_err(|e| e.under(&["access", &i.to_string()]))?;
        }
        self.limits.validate().map_err(|e| e.under(&["limits"]))?;
        self.bridge.validate().map_err(|e| e.under(&["bridge"]))?;
        if let Some(r) = &self.redis {
            r.validate().map_err(|e| e.under(&["redis"]))?;
        }
        if let Some(id) = self.upstreams.keys().find(|id| *id == super::BUILTIN_NAMESPACE) {
            return Err(ConfigError::new(
                &["upstreams", id],
                format!("`{}` is reserved for the gateway's own tools", super::BUILTIN_NAMESPACE),
            ));
        }
        self.rules.validate().map_err(|e| e.under(&["rules"]))
    }
}

// === impl GatewaySection ===

impl GatewaySection {
    /// Checks the limits and the log filter; an error names a key of the
    /// section.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let at = |key: &str, msg: &str| Err(ConfigError::new(&[key], msg));
        if self.max_message_bytes < 1024 {
            return at("max_message_bytes", "must be at least 1024");
        }
        if self.max_sessions == 0 {
            return at("max_sessions", "must be at least 1");
        }
        if self.max_sessions_per_principal == 0 {
            return at("max_sessions_per_principal", "must be at least 1");
        }
        if self.max_client_capabilities_bytes < 256 {
            return at("max_client_capabilities_bytes", "must be at least 256");
        }
        if self.max_connections == 0 {
            return at("max_connections", "must be at least 1");
        }
        if self.connection_idle_timeout < Duration::from_secs(1) {
            return at("connection_idle_timeout", "must be at least 1s");
        }
        // A message of the largest size must fit in a principal's share,
        // and the share in the whole budget, or it could never be sent.
        if self.max_inflight_request_bytes_per_principal < self.max_message_bytes {
            return Err(ConfigError::new(
                &["max_inflight_request_bytes_per_principal"],
                format!("must be at least max_message_bytes ({})", self.max_message_bytes),
            ));
        }
        if self.max_inflight_request_bytes < self.max_inflight_request_bytes_per_principal {
            return at("max_inflight_request_bytes", "must be at least max_inflight_request_bytes_per_principal");
        }
        if !(8..=1024).contains(&self.max_json_depth) {
            return at("max_json_depth", "must be between 8 and 1024");
        }
        // A session token older than this is not rebuilt on another
        // replica (whole seconds), and a DELETE records its token until then.
        if self.session_idle_timeout < Duration::from_secs(1)
            || self.session_idle_timeout > Duration::from_secs(365 * 86_400)
        {
            return at("session_idle_timeout", "must be between 1s and 365d");
        }
        // A stop that waits minutes before it starts is a stuck deploy.
        if self.drain_delay > Duration::from_secs(300) {
            return at("drain_delay", "must be at most 5m");
        }
        // A call held longer than a host waits for its answer helps no one.
        if self.startup_call_wait > Duration::from_secs(600) {
            return at("startup_call_wait", "must be at most 10m");
        }
        if self.catalog_cache.as_ref().is_some_and(|p| p.as_os_str().is_empty()) {
            return at("catalog_cache", "must name a file (turn warm starts off with warm_start = false)");
        }
        if !(16..=1024).contains(&self.max_tool_name_length) {
            return at("max_tool_name_length", "must be between 16 and 1024");
        }
        if let Err(e) = tracing_subscriber::EnvFilter::try_new(&self.log_level) {
            return Err(ConfigError::new(&["log_level"], format!("not a valid filter: {e}")));
        }
        Ok(())
    }
}

// === impl TracesSection ===

impl TracesSection {
    /// Checks the endpoint, the ratio and the service name (headers are
    /// checked once expanded, by `TracesSection::resolve`); an error
    /// names a key of the section.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if let Some(e) = &self.endpoint {
            match reqwest::Url::parse(e) {
                Ok(u) if matches!(u.scheme(), "http" | "https") => {}
                _ => return Err(ConfigError::new(&["endpoint"], "must be an absolute http:// or https:// URL")),
            }
        }
        if self.sample_ratio.is_some_and(|r| !(0.0..=1.0).contains(&r)) {
            return Err(ConfigError::new(&["sample_ratio"], "must be between 0 and 1"));
        }
        if self.service_name.trim().is_empty() {
            return Err(ConfigError::new(&["service_name"], "must not be empty"));
        }
        if self.metrics_interval < Duration::from_millis(100) {
            return Err(ConfigError::new(&["metrics_interval"], "must be at least 100ms"));
        }
        Ok(())
    }

    /// The section with its header values expanded and checked; an error
    /// names a key of the section.
    pub(super) fn resolve(self, x: Expander<'_>) -> Result<Traces, ConfigError> {
        let mut headers = BTreeMap::new();
        for (k, v) in &self.headers {
            let value = x.expand(v, &["headers"])?;
            if reqwest::header::HeaderName::try_from(k.as_str()).is_err()
                || reqwest::header::HeaderValue::try_from(value.expose()).is_err()
            {
                return Err(ConfigError::new(&["headers"], format!("`{k}` is not a valid HTTP header")));
            }
            headers.insert(k.clone(), value);
        }
        Ok(Traces {
            endpoint: self.endpoint,
            protocol: self.protocol,
            service_name: self.service_name,
            sample_ratio: self.sample_ratio,
            headers,
            metrics: self.metrics,
            metrics_interval: self.metrics_interval,
        })
    }
}

// === impl AuditSection ===

impl AuditSection {
    /// Checks the rotation size and the queue; an error names a key of the
    /// section.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.max_file_bytes < 1024 {
            return Err(ConfigError::new(&["max_file_bytes"], "must be at least 1024"));
        }
        if self.queue == 0 {
            return Err(ConfigError::new(&["queue"], "must be at least 1"));
        }
        Ok(())
    }
}
