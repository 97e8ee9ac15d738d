//! An OTLP/HTTP receiver on 127.0.0.1:0: decodes every
//! `ExportTraceServiceRequest` (protobuf) the gateway posts to
//! `/v1/traces` and every `ExportMetricsServiceRequest` it posts to
//! `/v1/metrics`, and keeps the spans and histogram points for assertions.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::any_value::Value as Any;
use opentelemetry_proto::tonic::metrics::v1::metric::Data;
use prost::Message as _;

/// One received span, flattened.
#[derive(Debug, Clone)]
pub struct SpanRecord {
    pub trace_id: String,
    pub span_id: String,
    /// Empty for a root span.
    pub parent_span_id: String,
    pub name: String,
    /// 1 internal, 2 server, 3 client (OTLP `SpanKind`).
    pub kind: i32,
    pub attributes: HashMap<String, String>,
    /// 2 = error (OTLP `StatusCode`).
    pub status_code: i32,
    /// The resource's `service.name`.
    pub service: String,
}

/// One histogram data point received, flattened.
#[derive(Debug, Clone)]
pub struct PointRecord {
    /// The metric's name.
    pub name: String,
    pub unit: String,
    pub attributes: HashMap<String, String>,
    pub count: u64,
    pub sum: f64,
    /// Upper bounds of the buckets.
    pub bounds: Vec<f64>,
    /// 1 delta, 2 cumulative (OTLP `AggregationTemporality`).
    pub temporality: i32,
    /// The resource's `service.name`.
    pub service: String,
}

/// The receiver; stops with the test's runtime.
pub struct OtlpReceiver {
    pub addr: SocketAddr,
    spans: Arc<Mutex<Vec<SpanRecord>>>,
    points: Arc<Mutex<Vec<PointRecord>>>,
    /// Content types of the posts received.
    content_types: Arc<Mutex<Vec<String>>>,
}

impl OtlpReceiver {
    pub async fn start() -> OtlpReceiver {
        let spans = Arc::new(Mutex::new(Vec::new()));
        let content_types = Arc::new(Mutex::new(Vec::new()));
        let points = Arc::new(Mutex::new(Vec::new()));
        let (s, c) = (spans.clone(), content_types.clone());
        let (p, pc) = (points.clone(), content_types.clone());
        let app = axum::Router::new()
            .route(
                "/v1/metrics",
                axum::routing::post(move |headers: axum::http::HeaderMap, body: axum::body::Bytes| {
                    let (p, c) = (p.clone(), pc.clone());
                    async move {
                        let ct = headers.get("content-type").and_then(|v| v.to_str().ok()).unwrap_or("").to_owned();
                        c.lock().unwrap().push(ct);
                        let req =
                            ExportMetricsServiceRequest::decode(body).expect("a protobuf ExportMetricsServiceRequest");
                        p.lock().unwrap().extend(flatten_metrics(req));
                        ([("content-type", "application/x-protobuf")], Vec::<u8>::new())
                    }
                }),
            )
            .route(
                "/v1/traces",
                axum::routing::post(move |headers: axum::http::HeaderMap, body: axum::body::Bytes| {
                    let (s, c) = (s.clone(), c.clone());
                    async move {
                        let ct = headers.get("content-type").and_then(|v| v.to_str().ok()).unwrap_or("").to_owned();
                        c.lock().unwrap().push(ct);
                        let req =
                            ExportTraceServiceRequest::decode(body).expect("a protobuf ExportTraceServiceRequest");
                        s.lock().unwrap().extend(flatten(req));
                        // An empty ExportTraceServiceResponse.
                        ([("content-type", "application/x-protobuf")], Vec::<u8>::new())
                    }
                }),
            );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        OtlpReceiver { addr, spans, points, content_types }
    }

    /// Every histogram point received so far (cumulative exports repeat a
    /// series; the last one of a series has its totals).
    pub fn points(&self) -> Vec<PointRecord> {
        self.points.lock().unwrap().clone()
    }

    /// The points of the metric `name`, the last export of each series.
    pub fn latest(&self, name: &str) -> Vec<PointRecord> {
        let mut by_series: Vec<PointRecord> = Vec::new();
        for p in self.points().into_iter().filter(|p| p.name == name) {
            let mut key: Vec<_> = p.attributes.iter().collect();
            key.sort();
            let same = by_series.iter().position(|q| {
                let mut k: Vec<_> = q.attributes.iter().collect();
                k.sort();
                k == key
            });
            match same {
                Some(i) => by_series[i] = p,
                None => by_series.push(p),
            }
        }
        by_series
    }

    /// The base URL to configure as `[traces] endpoint`.
    pub fn endpoint(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn spans(&self) -> Vec<SpanRecord> {
        self.spans.lock().unwrap().clone()
    }

    pub fn content_types(&self) -> Vec<String> {
        self.content_types.lock().unwrap().clone()
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn text(v: &Option<opentelemetry_proto::tonic::common::v1::AnyValue>) -> String {
    match v.as_ref().and_then(|v| v.value.as_ref()) {
        Some(Any::StringValue(s)) => s.clone(),
        Some(Any::IntValue(i)) => i.to_string(),
        Some(Any::BoolValue(b)) => b.to_string(),
        Some(Any::DoubleValue(d)) => d.to_string(),
        other => format!("{other:?}"),
    }
}

fn flatten(req: ExportTraceServiceRequest) -> Vec<SpanRecord> {
    let mut out = Vec::new();
    for rs in req.resource_spans {
        let service = rs
            .resource
            .as_ref()
            .and_then(|r| r.attributes.iter().find(|a| a.key == "service.name"))
            .map(|a| text(&a.value))
            .unwrap_or_default();
        for ss in rs.scope_spans {
            for s in ss.spans {
                out.push(SpanRecord {
                    trace_id: hex(&s.trace_id),
                    span_id: hex(&s.span_id),
                    parent_span_id: hex(&s.parent_span_id),
                    name: s.name,
                    kind: s.kind,
                    attributes: s.attributes.iter().map(|a| (a.key.clone(), text(&a.value))).collect(),
                    status_code: s.status.map_or(0, |st| st.code),
                    service: service.clone(),
                });
            }
        }
    }
    out
}

fn flatten_metrics(req: ExportMetricsServiceRequest) -> Vec<PointRecord> {
    let mut out = Vec::new();
    for rm in req.resource_metrics {
        let service = rm
            .resource
            .as_ref()
            .and_then(|r| r.attributes.iter().find(|a| a.key == "service.name"))
            .map(|a| text(&a.value))
            .unwrap_or_default();
        for sm in rm.scope_metrics {
            for m in sm.metrics {
                let Some(Data::Histogram(h)) = m.data else { continue };
                for dp in h.data_points {
                    out.push(PointRecord {
                        name: m.name.clone(),
                        unit: m.unit.clone(),
                        attributes: dp.attributes.iter().map(|a| (a.key.clone(), text(&a.value))).collect(),
                        count: dp.count,
                        sum: dp.sum.unwrap_or_default(),
                        bounds: dp.explicit_bounds.clone(),
                        temporality: h.aggregation_temporality,
                        service: service.clone(),
                    });
                }
            }
        }
    }
    out
}
