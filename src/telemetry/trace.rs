//! OpenTelemetry traces (docs/design.md D8): one span per client request, one
//! for routing, one per upstream attempt, exported over OTLP.
//!
//! Off unless an endpoint is configured (`[traces] endpoint` or the
//! standard `OTEL_EXPORTER_OTLP_(TRACES_)ENDPOINT`); then a disabled
//! [`Span`] is a `None` and the request path pays one branch for it.
//!
//! The OpenTelemetry API is used directly rather than through
//! `tracing-opentelemetry`: the span tree crosses the gateway's own task
//! boundaries (downstream task → routing → the upstream's connection), and
//! passing a [`Span`] along with the request keeps its parent explicit,
//! with no span guard ever held across an `.await`.
//!
//! Attribute names follow the OpenTelemetry MCP and GenAI semantic
//! conventions (`mcp.method.name`, `gen_ai.tool.name`, `jsonrpc.request.id`,
//! `mcp.session.id`, `error.type`); the gateway's own ones start with
//! `mcp_gateway.`.

use std::borrow::Cow;
use std::collections::HashMap;

use opentelemetry::propagation::{Extractor, Injector, TextMapPropagator};
use opentelemetry::trace::{SpanKind, Status, TraceContextExt, Tracer as _, TracerProvider as _};
use opentelemetry::{Context, KeyValue};
use opentelemetry_otlp::{WithExportConfig, WithHttpConfig};
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::{SdkTracer, SdkTracerProvider};

use std::sync::Arc;

use opentelemetry_sdk::error::OTelSdkResult;
use opentelemetry_sdk::trace::{SpanData, SpanExporter};

use super::LogPace;
use super::metrics::{Metrics, Outcome};
use crate::config::{OtlpProtocol, Traces};
use crate::error::ErrorClass;

/// The W3C trace context header (and `_meta` key).
pub const TRACEPARENT: &str = "traceparent";

/// Why tracing could not start.
#[derive(Debug, thiserror::Error)]
#[error("cannot start the OTLP trace exporter: {0}")]
pub struct TraceError(String);

/// The tracer (or nothing, when traces are off).
#[derive(Debug, Clone, Default)]
pub struct Tracer {
    inner: Option<(SdkTracerProvider, SdkTracer)>,
}

/// A span in the gateway's tree, or nothing when traces are off. (A span
/// of an unsampled trace is kept: it records nothing but still carries the
/// context upstream.)
#[derive(Debug, Clone, Default)]
pub struct Span(Option<(Context, SdkTracer)>);

// === impl Tracer ===

impl Tracer {
    /// Traces off.
    pub fn disabled() -> Self {
        Tracer { inner: None }
    }

    /// Starts the exporter when an endpoint is configured (in the file or
    /// the environment) and `OTEL_SDK_DISABLED` is not `true`.
    pub fn from_config(cfg: &Traces, metrics: &Arc<Metrics>) -> Result<Self, TraceError> {
        let env = |k: &str| std::env::var(k).ok().filter(|v| !v.trim().is_empty());
        if env("OTEL_SDK_DISABLED").is_some_and(|v| v.eq_ignore_ascii_case("true"))
            || env("OTEL_TRACES_EXPORTER").is_some_and(|v| v.eq_ignore_ascii_case("none"))
        {
            return Ok(Self::disabled());
        }
        let from_env =
            env("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT").is_some() || env("OTEL_EXPORTER_OTLP_ENDPOINT").is_some();
        if cfg.endpoint.is_none() && !from_env {
            return Ok(Self::disabled());
        }
        let exporter = Counted { inner: build_exporter(cfg)?, metrics: metrics.clone(), log: LogPace::default() };
        for outcome in ["ok", "failed"] {
            let _ = metrics.trace_exports.get_or_create(&Outcome { outcome });
        }
        let mut provider = SdkTracerProvider::builder().with_batch_exporter(exporter).with_resource(resource(cfg));
        if let Some(ratio) = cfg.sample_ratio {
            provider = provider.with_sampler(opentelemetry_sdk::trace::Sampler::ParentBased(Box::new(
                opentelemetry_sdk::trace::Sampler::TraceIdRatioBased(ratio),
            )));
        }
        let provider = provider.build();
        let tracer = provider.tracer("mcp-gateway");
        Ok(Tracer { inner: Some((provider, tracer)) })
    }

    /// Whether spans are made at all.
    pub fn enabled(&self) -> bool {
        self.inner.is_some()
    }

    /// The root span of a client request: a child of the client's
    /// `traceparent` when it sent one.
    pub fn server_span(&self, name: String, traceparent: Option<&str>, attrs: Vec<KeyValue>) -> Span {
        let Some((_, tracer)) = &self.inner else { return Span(None) };
        let parent = traceparent.map_or_else(Context::new, extract);
        let span = tracer
            .span_builder(name)
            .with_kind(SpanKind::Server)
            .with_attributes(attrs)
            .start_with_context(tracer, &parent);
        Span(Some((parent.with_span(span), tracer.clone())))
    }

    /// Sends what is buffered and stops the exporter (blocking: call it off
    /// the async workers).
    pub fn shutdown(&self) {
        if let Some((provider, _)) = &self.inner
            && let Err(e) = provider.shutdown()
        {
            tracing::warn!(error = %e, "Trace exporter did not shut down cleanly.");
        }
    }
}

/// The resource of the gateway's spans and metrics: `service.name` (from
/// the file unless `OTEL_SERVICE_NAME` is set, which wins as the spec says)
/// and `service.version`.
pub(super) fn resource(cfg: &Traces) -> opentelemetry_sdk::Resource {
    let mut resource = opentelemetry_sdk::Resource::builder();
    if std::env::var("OTEL_SERVICE_NAME").ok().filter(|v| !v.trim().is_empty()).is_none() {
        resource = resource.with_service_name(cfg.service_name.clone());
    }
    resource.with_attribute(KeyValue::new("service.version", env!("CARGO_PKG_VERSION"))).build()
}

fn build_exporter(cfg: &Traces) -> Result<opentelemetry_otlp::SpanExporter, TraceError> {
    let headers: HashMap<String, String> =
        cfg.headers.iter().map(|(k, v)| (k.clone(), v.expose().to_owned())).collect();
    let err = |e: opentelemetry_otlp::ExporterBuildError| TraceError(e.to_string());
    match protocol(cfg)? {
        OtlpProtocol::HttpProtobuf => {
            let mut b = opentelemetry_otlp::SpanExporter::builder()
                .with_http()
                .with_protocol(opentelemetry_otlp::Protocol::HttpBinary);
            if let Some(endpoint) = &cfg.endpoint {
                // Like OTEL_EXPORTER_OTLP_ENDPOINT: the collector's base URL.
                let endpoint = endpoint.trim_end_matches('/');
                let full = if endpoint.ends_with("/v1/traces") {
                    endpoint.to_owned()
                } else {
                    format!("{endpoint}/v1/traces")
                };
                b = b.with_endpoint(full);
            }
            if !headers.is_empty() {
                b = b.with_headers(headers);
            }
            b.build().map_err(err)
        }
        #[cfg(feature = "otlp-grpc")]
        OtlpProtocol::Grpc => {
            if !headers.is_empty() {
                return Err(TraceError(
                    "`[traces] headers` are for HTTP; with gRPC use OTEL_EXPORTER_OTLP_HEADERS".into(),
                ));
            }
            let mut b = opentelemetry_otlp::SpanExporter::builder().with_tonic();
            if let Some(endpoint) = &cfg.endpoint {
                b = b.with_endpoint(endpoint.clone());
            }
            b.build().map_err(err)
        }
        #[cfg(not(feature = "otlp-grpc"))]
        OtlpProtocol::Grpc => {
            Err(TraceError("`protocol = \"grpc\"` needs the gateway built with `--features otlp-grpc`".into()))
        }
    }
}

/// `[traces] protocol`, else `OTEL_EXPORTER_OTLP_TRACES_PROTOCOL` or
/// `OTEL_EXPORTER_OTLP_PROTOCOL`, else HTTP/protobuf.
pub(super) fn protocol(cfg: &Traces) -> Result<OtlpProtocol, TraceError> {
    if let Some(p) = cfg.protocol {
        return Ok(p);
    }
    let var = ["OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", "OTEL_EXPORTER_OTLP_PROTOCOL"]
        .into_iter()
        .find_map(|k| std::env::var(k).ok().filter(|v| !v.trim().is_empty()).map(|v| (k, v)));
    match var {
        None => Ok(OtlpProtocol::HttpProtobuf),
        Some((_, v)) if v.trim() == "http/protobuf" => Ok(OtlpProtocol::HttpProtobuf),
        Some((_, v)) if v.trim() == "grpc" => Ok(OtlpProtocol::Grpc),
        Some((k, v)) => Err(TraceError(format!("{k}={v} is not supported (use http/protobuf or grpc)"))),
    }
}

/// The exporter, with every batch's outcome counted and failures logged
/// (at most one line a second): a collector that is down must not go
/// unnoticed, nor flood the log.
#[derive(Debug)]
struct Counted {
    inner: opentelemetry_otlp::SpanExporter,
    metrics: Arc<Metrics>,
    log: LogPace,
}

impl SpanExporter for Counted {
    async fn export(&self, batch: Vec<SpanData>) -> OTelSdkResult {
        let spans = batch.len() as u64;
        let result = self.inner.export(batch).await;
        let outcome = if result.is_ok() { "ok" } else { "failed" };
        self.metrics.trace_exports.get_or_create(&Outcome { outcome }).inc_by(spans);
        if let Err(e) = &result
            && self.log.ready()
        {
            tracing::warn!(spans, error = %e, "Trace export failed; spans lost.");
        }
        result
    }

    fn shutdown_with_timeout(&self, timeout: std::time::Duration) -> OTelSdkResult {
        self.inner.shutdown_with_timeout(timeout)
    }

    fn force_flush(&self) -> OTelSdkResult {
        self.inner.force_flush()
    }

    fn set_resource(&mut self, resource: &opentelemetry_sdk::Resource) {
        self.inner.set_resource(resource);
    }
}

/// A context from a `traceparent` value (invalid ones give an empty one).
fn extract(traceparent: &str) -> Context {
    struct One<'a>(&'a str);
    impl Extractor for One<'_> {
        fn get(&self, key: &str) -> Option<&str> {
            (key == TRACEPARENT).then_some(self.0)
        }
        fn keys(&self) -> Vec<&str> {
            vec![TRACEPARENT]
        }
    }
    TraceContextPropagator::new().extract(&One(traceparent))
}

// === impl Span ===

impl Span {
    /// No span.
    pub const NONE: Span = Span(None);

    /// Whether there is a span (traces are on).
    pub fn is_on(&self) -> bool {
        self.0.is_some()
    }

    /// A child span (none when this is none).
    pub fn child(&self, name: impl Into<Cow<'static, str>>, kind: SpanKind, attrs: Vec<KeyValue>) -> Span {
        let Some((cx, tracer)) = &self.0 else { return Span(None) };
        let span = tracer.span_builder(name).with_kind(kind).with_attributes(attrs).start_with_context(tracer, cx);
        Span(Some((cx.with_span(span), tracer.clone())))
    }

    /// Sets an attribute.
    pub fn set(&self, kv: impl FnOnce() -> KeyValue) {
        if let Some((cx, _)) = &self.0 {
            cx.span().set_attribute(kv());
        }
    }

    /// Records the outcome: `error.type` and an error status on failure.
    pub fn outcome(&self, class: Option<ErrorClass>, message: impl FnOnce() -> String) {
        let (Some((cx, _)), Some(class)) = (&self.0, class) else { return };
        let span = cx.span();
        span.set_attribute(KeyValue::new("error.type", class.as_str()));
        span.set_status(Status::error(message()));
    }

    /// The W3C `traceparent` of this span, to send upstream.
    pub fn traceparent(&self) -> Option<String> {
        let (cx, _) = self.0.as_ref()?;
        struct One(Option<String>);
        impl Injector for One {
            fn set(&mut self, key: &str, value: String) {
                if key == TRACEPARENT {
                    self.0 = Some(value);
                }
            }
        }
        let mut out = One(None);
        TraceContextPropagator::new().inject_context(cx, &mut out);
        out.0
    }

    /// The trace id (32 hex digits), when there is a valid one.
    pub fn trace_id(&self) -> Option<String> {
        let (cx, _) = self.0.as_ref()?;
        let span = cx.span();
        let sc = span.span_context();
        sc.is_valid().then(|| sc.trace_id().to_string())
    }

    /// Ends the span now (otherwise it ends when the last clone is dropped).
    pub fn end(self) {
        if let Some((cx, _)) = self.0 {
            cx.span().end();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_disabled_span_does_nothing() {
        let t = Tracer::disabled();
        let s = t.server_span(
            "tools/call x".into(),
            Some("00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"),
            vec![],
        );
        assert!(!s.is_on());
        assert!(s.child("route", SpanKind::Internal, vec![]).traceparent().is_none());
    }

    #[test]
    fn extracts_a_valid_traceparent_only() {
        let cx = extract("00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01");
        let sc = cx.span().span_context().clone();
        assert!(sc.is_valid());
        assert_eq!(format!("{:032x}", sc.trace_id()), "0af7651916cd43dd8448eb211c80319c");
        assert!(!extract("garbage").span().span_context().is_valid());
    }
}
