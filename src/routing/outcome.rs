//! What handling one request came to: what the metrics, the trace and the
//! audit record of it say.

use serde_json::value::RawValue;

use crate::error::ErrorClass;
use crate::telemetry::metrics::Name;

/// What handling a request came to. Each request has its own, owned by the
/// method family that handles it and handed back with the reply
/// ([`super::pipeline::Handled`]); nothing else writes it.
#[derive(Debug, Default)]
pub(crate) struct Outcome {
    /// The owning upstream, once routed.
    pub(crate) upstream: Option<Name>,
    /// The tool's own name, once routed.
    pub(crate) tool: Option<Name>,
    /// The name (or URI) the client asked for.
    pub(crate) name: Option<String>,
    /// How it failed, if it did.
    pub(crate) class: Option<ErrorClass>,
    /// What failed before the breaker opened (`breaker_open` after retries).
    pub(crate) cause: Option<ErrorClass>,
    /// Attempts made upstream.
    pub(crate) attempts: u32,
    /// `hmac-sha256:` of the arguments (tools/call, when audited).
    pub(crate) arguments_hmac: Option<crate::telemetry::audit::KeyedDigest>,
    /// The arguments themselves, when the audit log keeps them.
    pub(crate) arguments: Option<Box<RawValue>>,
    /// The client cancelled the request.
    pub(crate) cancelled: bool,
    /// Policy decisions taken (`<reason>:<decision>`), for the audit log.
    pub(crate) policy: Vec<String>,
    /// The tool's tags under the sequence rules (audit log, replay).
    pub(crate) tags: Vec<String>,
}
