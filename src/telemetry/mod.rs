//! Telemetry: Prometheus metrics, OpenTelemetry traces, the audit log and
//! log output (docs/design.md D8).
//!
//! Architecture Invariant: a leaf like `config` and `error`: every layer
//! records into it; it calls into none of them. Nothing here is global:
//! one [`Telemetry`] is made at start and handed to the gateway.

pub mod audit;
pub mod log;
pub mod metrics;
pub mod pace;
pub mod standard;
pub mod trace;

use std::sync::Arc;

pub use self::audit::{AuditLog, Record};
pub use self::metrics::Metrics;
pub use self::pace::LogPace;
pub use self::trace::{Span, Tracer};
use crate::config::Config;

/// Why telemetry could not start.
#[derive(Debug, thiserror::Error)]
pub enum TelemetryError {
    /// The audit log could not be opened.
    #[error(transparent)]
    Audit(#[from] audit::AuditError),
    /// The trace exporter could not be built.
    #[error(transparent)]
    Trace(#[from] trace::TraceError),
    /// The OTLP metrics exporter could not be built.
    #[error(transparent)]
    Metrics(#[from] standard::MetricsError),
}

/// Metrics, tracer and audit log, shared by every layer.
#[derive(Debug, Clone)]
pub struct Telemetry {
    /// The Prometheus metrics.
    pub metrics: Arc<Metrics>,
    /// The tracer (disabled unless configured).
    pub tracer: Tracer,
    /// The audit log, when `[audit] path` is set.
    pub audit: Option<Arc<AuditLog>>,
}

// === impl Telemetry ===

impl Telemetry {
    /// Metrics only: no traces, no audit log.
    pub fn metrics_only() -> Self {
        Telemetry { metrics: Arc::new(Metrics::new()), tracer: Tracer::disabled(), audit: None }
    }

    /// Everything the config asks for.
    pub fn from_config(config: &Config) -> Result<Self, TelemetryError> {
        let mut metrics = Metrics::new();
        metrics.standard = standard::Standard::from_config(&config.traces)?;
        let metrics = Arc::new(metrics);
        let tracer = Tracer::from_config(&config.traces, &metrics)?;
        let audit = match &config.audit.path {
            Some(path) => {
                metrics.init_audit();
                Some(Arc::new(AuditLog::open(
                    &config.audit,
                    path,
                    config.audit_key.clone(),
                    config.redactor.clone(),
                    metrics.clone(),
                )?))
            }
            None => None,
        };
        Ok(Telemetry { metrics, tracer, audit })
    }

    /// Flushes the trace and metrics exporters and the audit log
    /// (blocking).
    pub fn shutdown(&self) {
        self.tracer.shutdown();
        self.metrics.standard.shutdown();
        if let Some(a) = &self.audit {
            a.close();
        }
    }
}
