//! Why bytes are not a message, and the error reply that says so.

use serde_json::value::RawValue;

use super::super::encode;
use super::super::scan::Ambiguous;

/// Why bytes are not a valid JSON-RPC message.
#[derive(Debug, thiserror::Error)]
pub enum ParseError {
    /// Not JSON at all (-32700).
    #[error("parse error: {0}")]
    Json(#[source] serde_json::Error),
    /// Not UTF-8, so not JSON text either (-32700).
    #[error("parse error: invalid UTF-8 at byte {}", .0.valid_up_to())]
    Utf8(#[source] std::str::Utf8Error),
    /// JSON, but not a JSON-RPC 2.0 message (-32600). Carries the id when
    /// one could be read, so the error can still be correlated.
    #[error("invalid request: {reason}")]
    Invalid {
        /// What is wrong, for the peer.
        reason: &'static str,
        /// The request's id, if it had a usable one.
        id: Option<Box<RawValue>>,
    },
    /// JSON that parsers would read differently (docs/design.md D12): refused
    /// (-32600) before anything looks at it.
    #[error("invalid request: {ambiguous}")]
    Ambiguous {
        /// What and where.
        ambiguous: Ambiguous,
        /// The request's id (the envelope itself was unambiguous).
        id: Option<Box<RawValue>>,
    },
}

// === impl ParseError ===

impl ParseError {
    /// The JSON-RPC error code this failure answers with.
    pub fn code(&self) -> i64 {
        match self {
            ParseError::Json(_) | ParseError::Utf8(_) => super::super::PARSE_ERROR,
            ParseError::Invalid { .. } | ParseError::Ambiguous { .. } => super::super::INVALID_REQUEST,
        }
    }

    /// The id to answer with (`null` when unknown).
    pub fn id(&self) -> Option<&RawValue> {
        match self {
            ParseError::Json(_) | ParseError::Utf8(_) => None,
            ParseError::Invalid { id, .. } | ParseError::Ambiguous { id, .. } => id.as_deref(),
        }
    }

    /// The `reason` label of the refusal metrics.
    pub fn reason(&self) -> &'static str {
        match self {
            ParseError::Json(_) => "json",
            ParseError::Utf8(_) => "utf8",
            ParseError::Invalid { .. } => "invalid",
            ParseError::Ambiguous { ambiguous, .. } => ambiguous.reason.as_str(),
        }
    }

    /// What was ambiguous, when that is why.
    pub fn ambiguous(&self) -> Option<&Ambiguous> {
        match self {
            ParseError::Ambiguous { ambiguous, .. } => Some(ambiguous),
            _ => None,
        }
    }

    /// The error response for this failure.
    pub fn to_response(&self) -> String {
        let message = match self {
            ParseError::Json(e) => format!("Parse error: {e}"),
            ParseError::Utf8(e) => format!("Parse error: invalid UTF-8 at byte {}", e.valid_up_to()),
            ParseError::Invalid { reason, .. } => format!("Invalid request: {reason}"),
            ParseError::Ambiguous { ambiguous, .. } => format!("Invalid request: {ambiguous}"),
        };
        let data = self
            .ambiguous()
            .map(|a| serde_json::json!({ "class": "protocol", "reason": a.reason.as_str(), "path": a.path }));
        encode::error(self.id(), self.code(), &message, data.as_ref())
    }
}
