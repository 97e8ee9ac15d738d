//! The standard MCP metrics of the OpenTelemetry GenAI/MCP semantic
//! conventions, sent over OTLP beside the Prometheus families (which stay:
//! dashboards and alerts use them).
//!
//! Four histograms, in seconds, with the conventions' bucket boundaries:
//! `mcp.server.operation.duration` (each client request the gateway
//! answers), `mcp.client.operation.duration` (each request the gateway
//! sends an upstream), `mcp.server.session.duration` (a 2025 client
//! session's life; a stateless 2026-07-28 request has no session) and
//! `mcp.client.session.duration` (an upstream connection's life, from its
//! handshake to its end).
//!
//! Off unless `[traces] metrics = true` and an endpoint is known; then
//! a disabled [`Standard`] is a `None` and the request path pays one branch.
//! On, recording is a histogram update in the SDK (a read lock and a hash
//! of the attribute set); the `PeriodicReader`'s own thread collects and
//! exports, so the request path never waits on the collector.
//!
//! Attribute values are bounded like Prometheus labels (docs/design.md
//! D8): methods from a fixed list else `other`, tool names only from the
//! catalog, JSON-RPC codes from a fixed list else `_OTHER`, protocol
//! versions the gateway speaks. Never a resource URI, a session id or
//! what a client typed.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use opentelemetry::KeyValue;
use opentelemetry::metrics::{Histogram, MeterProvider as _};
use opentelemetry_otlp::{WithExportConfig, WithHttpConfig};
use opentelemetry_sdk::error::OTelSdkResult;
use opentelemetry_sdk::metrics::data::ResourceMetrics;
use opentelemetry_sdk::metrics::exporter::PushMetricExporter;
use opentelemetry_sdk::metrics::{PeriodicReader, SdkMeterProvider, Temporality};

use super::LogPace;
use super::metrics::Name;
use crate::config::{OtlpProtocol, Traces};

/// The conventions' bucket boundaries for all four histograms.
const BOUNDARIES: [f64; 14] = [0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0];

/// Why the OTLP metrics exporter could not start.
#[derive(Debug, thiserror::Error)]
#[error("cannot start the OTLP metrics exporter: {0}")]
pub struct MetricsError(String);

/// The four standard histograms, or nothing when they are off. Cheap to
/// clone (one `Arc`).
#[derive(Debug, Clone, Default)]
pub struct Standard(Option<Arc<Inner>>);

#[derive(Debug)]
struct Inner {
    provider: SdkMeterProvider,
    server_operation: Histogram<f64>,
    client_operation: Histogram<f64>,
    server_session: Histogram<f64>,
    client_session: Histogram<f64>,
}

/// One operation (a request answered or sent), as its attributes say it.
#[derive(Debug, Clone, Copy, Default)]
pub struct Op<'a> {
    /// `mcp.method.name`, from [`super::metrics::method_label`].
    pub method: &'static str,
    /// `mcp.protocol.version`, when known (see [`version_label`]).
    pub version: Option<&'static str>,
    /// `error.type`: the gateway's error class, `tool_error` for a result
    /// with `isError: true`, `cancelled`; `None` on success.
    pub error: Option<&'static str>,
    /// `rpc.response.status_code`, from [`status_label`].
    pub status: Option<&'static str>,
    /// `gen_ai.tool.name`: the upstream's own name, from the catalog.
    pub tool: Option<&'a Name>,
    /// `mcp_gateway.upstream`: the upstream's configured id.
    pub upstream: Option<&'a Name>,
    /// `network.transport`: `tcp` or `pipe`.
    pub transport: &'static str,
}

/// The most attributes one record carries.
const MAX_ATTRS: usize = 8;

/// An attribute set built on the stack (no allocation: keys and most
/// values are `'static`, names are shared `Arc`s).
struct Attrs {
    kv: [KeyValue; MAX_ATTRS],
    n: usize,
}

impl Attrs {
    fn new() -> Self {
        Attrs { kv: std::array::from_fn(|_| KeyValue::new("", "")), n: 0 }
    }

    fn push(&mut self, kv: KeyValue) {
        self.kv[self.n] = kv;
        self.n += 1;
    }

    fn as_slice(&self) -> &[KeyValue] {
        &self.kv[..self.n]
    }
}

impl Op<'_> {
    fn attributes(&self) -> Attrs {
        let mut a = Attrs::new();
        a.push(KeyValue::new("mcp.method.name", self.method));
        if let Some(v) = self.version {
            a.push(KeyValue::new("mcp.protocol.version", v));
        }
        if let Some(e) = self.error {
            a.push(KeyValue::new("error.type", e));
        }
        if let Some(s) = self.status {
            a.push(KeyValue::new("rpc.response.status_code", s));
        }
        if let Some(t) = self.tool {
            a.push(KeyValue::new("gen_ai.tool.name", t.clone()));
        }
        if self.method == "tools/call" {
            a.push(KeyValue::new("gen_ai.operation.name", "execute_tool"));
        }
        if let Some(u) = self.upstream {
            a.push(KeyValue::new("mcp_gateway.upstream", u.clone()));
        }
        a.push(KeyValue::new("network.transport", self.transport));
        a
    }
}

/// Which side of a session.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Side {
    Server,
    Client,
}

/// A session being timed: its duration is recorded when this is dropped
/// (or [`Life::end`]ed).
#[derive(Debug)]
pub struct Life {
    inner: Arc<Inner>,
    side: Side,
    started: Instant,
    version: Option<&'static str>,
    transport: &'static str,
    upstream: Option<Name>,
    error: Option<&'static str>,
}

impl Life {
    /// Ends the session now; `error` (an error class) when it ended by a
    /// failure rather than being closed.
    pub fn end(mut self, error: Option<&'static str>) {
        self.error = error;
    }
}

impl Drop for Life {
    fn drop(&mut self) {
        let mut a = Attrs::new();
        if let Some(v) = self.version {
            a.push(KeyValue::new("mcp.protocol.version", v));
        }
        if let Some(e) = self.error {
            a.push(KeyValue::new("error.type", e));
        }
        if let Some(u) = &self.upstream {
            a.push(KeyValue::new("mcp_gateway.upstream", u.clone()));
        }
        a.push(KeyValue::new("network.transport", self.transport));
        let h = match self.side {
            Side::Server => &self.inner.server_session,
            Side::Client => &self.inner.client_session,
        };
        h.record(self.started.elapsed().as_secs_f64(), a.as_slice());
    }
}

// === impl Standard ===

impl Standard {
    /// Off.
    pub fn disabled() -> Self {
        Standard(None)
    }

    /// Starts the exporter when `[traces] metrics` is on, an endpoint is
    /// known (the file's, or `OTEL_EXPORTER_OTLP_(METRICS_)ENDPOINT`), and
    /// neither `OTEL_SDK_DISABLED=true` nor `OTEL_METRICS_EXPORTER=none`.
    pub fn from_config(cfg: &Traces) -> Result<Self, MetricsError> {
        let env = |k: &str| std::env::var(k).ok().filter(|v| !v.trim().is_empty());
        if !cfg.metrics
            || env("OTEL_SDK_DISABLED").is_some_and(|v| v.eq_ignore_ascii_case("true"))
            || env("OTEL_METRICS_EXPORTER").is_some_and(|v| v.eq_ignore_ascii_case("none"))
        {
            return Ok(Self::disabled());
        }
        let from_env =
            env("OTEL_EXPORTER_OTLP_METRICS_ENDPOINT").is_some() || env("OTEL_EXPORTER_OTLP_ENDPOINT").is_some();
        if cfg.endpoint.is_none() && !from_env {
            tracing::warn!("`[traces] metrics` is on but no endpoint is set; the standard MCP metrics are off.");
            return Ok(Self::disabled());
        }
        let exporter = Logged { inner: build_exporter(cfg)?, log: LogPace::default() };
        let reader = PeriodicReader::builder(exporter).with_interval(cfg.metrics_interval).build();
        let provider =
            SdkMeterProvider::builder().with_reader(reader).with_resource(super::trace::resource(cfg)).build();
        let meter = provider.meter("mcp-gateway");
        let histogram = |name: &'static str, description: &'static str| {
            meter
                .f64_histogram(name)
                .with_unit("s")
                .with_description(description)
                .with_boundaries(BOUNDARIES.to_vec())
                .build()
        };
        Ok(Standard(Some(Arc::new(Inner {
            server_operation: histogram(
                "mcp.server.operation.duration",
                "MCP request duration as observed on the receiver from the time it was received until the result is sent",
            ),
            client_operation: histogram(
                "mcp.client.operation.duration",
                "The duration of the MCP request as observed on the sender from the time it was sent until the response is received",
            ),
            server_session: histogram(
                "mcp.server.session.duration",
                "The duration of the MCP session as observed on the MCP server",
            ),
            client_session: histogram(
                "mcp.client.session.duration",
                "The duration of the MCP session as observed on the MCP client",
            ),
            provider,
        }))))
    }

    /// Whether the metrics are sent at all.
    pub fn enabled(&self) -> bool {
        self.0.is_some()
    }

    /// A client request answered (`mcp.server.operation.duration`).
    pub fn server_operation(&self, elapsed: Duration, op: &Op<'_>) {
        if let Some(i) = &self.0 {
            i.server_operation.record(elapsed.as_secs_f64(), op.attributes().as_slice());
        }
    }

    /// A request to an upstream answered, or given up
    /// (`mcp.client.operation.duration`).
    pub fn client_operation(&self, elapsed: Duration, op: &Op<'_>) {
        if let Some(i) = &self.0 {
            i.client_operation.record(elapsed.as_secs_f64(), op.attributes().as_slice());
        }
    }

    /// A 2025 client session begins (`mcp.server.session.duration` when
    /// the [`Life`] ends).
    pub fn server_session(&self, version: Option<&'static str>, transport: &'static str) -> Option<Life> {
        self.life(Side::Server, version, transport, None)
    }

    /// An upstream connection is up (`mcp.client.session.duration` when
    /// the [`Life`] ends).
    pub fn client_session(
        &self,
        upstream: &Name,
        version: Option<&'static str>,
        transport: &'static str,
    ) -> Option<Life> {
        self.life(Side::Client, version, transport, Some(upstream.clone()))
    }

    fn life(
        &self,
        side: Side,
        version: Option<&'static str>,
        transport: &'static str,
        upstream: Option<Name>,
    ) -> Option<Life> {
        let inner = self.0.clone()?;
        Some(Life { inner, side, started: Instant::now(), version, transport, upstream, error: None })
    }

    /// Sends what was recorded since the last export and stops the reader
    /// (blocking: call it off the async workers).
    pub fn shutdown(&self) {
        if let Some(i) = &self.0
            && let Err(e) = i.provider.shutdown()
        {
            tracing::warn!(error = %e, "Metrics exporter did not shut down cleanly.");
        }
    }
}

/// `mcp.protocol.version`: a revision the gateway speaks, as a `'static`
/// value; `None` for anything else.
pub fn version_label(version: &str) -> Option<&'static str> {
    crate::protocol::SUPPORTED_VERSIONS
        .iter()
        .chain(crate::protocol::modern::MODERN_VERSIONS)
        .find(|v| **v == version)
        .copied()
}

/// `rpc.response.status_code`: the JSON-RPC codes MCP and the gateway use,
/// as themselves; any other `_OTHER` (an upstream must not be able to mint
/// attribute values).
pub fn status_label(code: i64) -> &'static str {
    const KNOWN: [(i64, &str); 19] = [
        (-32700, "-32700"),
        (-32600, "-32600"),
        (-32601, "-32601"),
        (-32602, "-32602"),
        (-32603, "-32603"),
        (-32000, "-32000"),
        (-32001, "-32001"),
        (-32002, "-32002"),
        (-32003, "-32003"),
        (-32004, "-32004"),
        (-32005, "-32005"),
        (-32006, "-32006"),
        (-32020, "-32020"),
        (-32021, "-32021"),
        (-32022, "-32022"),
        (-32042, "-32042"),
        (-32800, "-32800"),
        (-1, "-1"),
        (0, "0"),
    ];
    KNOWN.iter().find(|(c, _)| *c == code).map_or("_OTHER", |(_, s)| s)
}

fn build_exporter(cfg: &Traces) -> Result<opentelemetry_otlp::MetricExporter, MetricsError> {
    let err = |e: opentelemetry_otlp::ExporterBuildError| MetricsError(e.to_string());
    let protocol = super::trace::protocol(cfg).map_err(|e| MetricsError(e.to_string()))?;
    match protocol {
        OtlpProtocol::HttpProtobuf => {
            let headers: HashMap<String, String> =
                cfg.headers.iter().map(|(k, v)| (k.clone(), v.expose().to_owned())).collect();
            let mut b = opentelemetry_otlp::MetricExporter::builder()
                .with_temporality(Temporality::Cumulative)
                .with_http()
                .with_protocol(opentelemetry_otlp::Protocol::HttpBinary);
            if let Some(endpoint) = &cfg.endpoint {
                b = b.with_endpoint(metrics_url(endpoint));
            }
            if !headers.is_empty() {
                b = b.with_headers(headers);
            }
            b.build().map_err(err)
        }
        #[cfg(feature = "otlp-grpc")]
        OtlpProtocol::Grpc => {
            let mut b = opentelemetry_otlp::MetricExporter::builder().with_tonic();
            if let Some(endpoint) = &cfg.endpoint {
                b = b.with_endpoint(endpoint.clone());
            }
            b.build().map_err(err)
        }
        #[cfg(not(feature = "otlp-grpc"))]
        OtlpProtocol::Grpc => {
            Err(MetricsError("`protocol = \"grpc\"` needs the gateway built with `--features otlp-grpc`".into()))
        }
    }
}

/// The metrics URL of a collector's base URL (or of its traces URL).
fn metrics_url(endpoint: &str) -> String {
    let base = endpoint.trim_end_matches('/');
    let base = base.strip_suffix("/v1/traces").unwrap_or(base);
    if base.ends_with("/v1/metrics") { base.to_owned() } else { format!("{base}/v1/metrics") }
}

/// The exporter, with failed exports logged (at most one line a second): a
/// collector that is down must not go unnoticed, nor flood the log.
#[derive(Debug)]
struct Logged {
    inner: opentelemetry_otlp::MetricExporter,
    log: LogPace,
}

impl PushMetricExporter for Logged {
    async fn export(&self, metrics: &ResourceMetrics) -> OTelSdkResult {
        let result = self.inner.export(metrics).await;
        if let Err(e) = &result
            && self.log.ready()
        {
            tracing::warn!(error = %e, "Metrics export failed; this interval's data points are lost.");
        }
        result
    }

    fn force_flush(&self) -> OTelSdkResult {
        self.inner.force_flush()
    }

    fn shutdown_with_timeout(&self, timeout: Duration) -> OTelSdkResult {
        self.inner.shutdown_with_timeout(timeout)
    }

    fn temporality(&self) -> Temporality {
        self.inner.temporality()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map(a: &Attrs) -> HashMap<String, String> {
        a.as_slice().iter().map(|kv| (kv.key.to_string(), kv.value.to_string())).collect()
    }

    #[test]
    fn a_tool_call_carries_the_conventions_attributes() {
        let tool: Name = Arc::from("read");
        let up: Name = Arc::from("fs");
        let op = Op {
            method: "tools/call",
            version: Some("2026-07-28"),
            error: Some("tool_error"),
            status: None,
            tool: Some(&tool),
            upstream: Some(&up),
            transport: "tcp",
        };
        let a = map(&op.attributes());
        assert_eq!(a["mcp.method.name"], "tools/call");
        assert_eq!(a["mcp.protocol.version"], "2026-07-28");
        assert_eq!(a["error.type"], "tool_error");
        assert_eq!(a["gen_ai.tool.name"], "read");
        assert_eq!(a["gen_ai.operation.name"], "execute_tool");
        assert_eq!(a["mcp_gateway.upstream"], "fs");
        assert_eq!(a["network.transport"], "tcp");
        assert!(!a.contains_key("rpc.response.status_code"));
        assert!(!a.contains_key("mcp.session.id") && !a.contains_key("mcp.resource.uri"));
    }

    #[test]
    fn other_methods_are_not_tool_executions() {
        let op = Op {
            method: "resources/read",
            status: Some("-32602"),
            error: Some("protocol"),
            transport: "pipe",
            ..Op::default()
        };
        let a = map(&op.attributes());
        assert_eq!(a["rpc.response.status_code"], "-32602");
        assert!(!a.contains_key("gen_ai.operation.name") && !a.contains_key("gen_ai.tool.name"));
        assert!(!a.contains_key("mcp.protocol.version"));
        assert_eq!(op.attributes().n, 4, "method, error, status, transport");
    }

    #[test]
    fn values_are_bounded() {
        assert_eq!(status_label(-32601), "-32601");
        assert_eq!(status_label(-31999), "_OTHER");
        assert_eq!(status_label(i64::MAX), "_OTHER");
        assert_eq!(version_label("2025-06-18"), Some("2025-06-18"));
        assert_eq!(version_label("2026-07-28"), Some("2026-07-28"));
        assert_eq!(version_label("1999-01-01"), None);
    }

    #[test]
    fn the_metrics_url_follows_the_collector_base() {
        assert_eq!(metrics_url("http://c:4318"), "http://c:4318/v1/metrics");
        assert_eq!(metrics_url("http://c:4318/"), "http://c:4318/v1/metrics");
        assert_eq!(metrics_url("http://c:4318/v1/traces"), "http://c:4318/v1/metrics");
        assert_eq!(metrics_url("http://c:4318/v1/metrics"), "http://c:4318/v1/metrics");
    }

    #[test]
    fn off_unless_asked() {
        let cfg = Traces { endpoint: Some("http://127.0.0.1:9".into()), ..Traces::default() };
        let s = Standard::from_config(&cfg).unwrap();
        assert!(!s.enabled());
        // Recording into a disabled one does nothing (and does not panic).
        s.server_operation(Duration::from_millis(1), &Op { method: "ping", transport: "tcp", ..Op::default() });
        assert!(s.server_session(None, "tcp").is_none());
    }

    #[test]
    fn on_with_an_endpoint_and_records_without_a_runtime() {
        let cfg = Traces {
            endpoint: Some("http://127.0.0.1:9".into()),
            metrics: true,
            metrics_interval: Duration::from_secs(3600),
            service_name: "t".into(),
            ..Traces::default()
        };
        let s = Standard::from_config(&cfg).unwrap();
        assert!(s.enabled());
        let up: Name = Arc::from("fs");
        s.client_operation(
            Duration::from_millis(3),
            &Op { method: "tools/list", upstream: Some(&up), transport: "pipe", ..Op::default() },
        );
        let life = s.client_session(&up, Some("2025-11-25"), "pipe").expect("on");
        life.end(Some("transport"));
        drop(s.server_session(Some("2025-06-18"), "tcp"));
    }
}
