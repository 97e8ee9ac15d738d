//! Error classes (design.md D5).
//!
//! Every failure the gateway reports for a call gets exactly one
//! [`ErrorClass`]. The class decides the JSON-RPC code the client sees, the
//! `data.class` member, and (with the resilience work) retry and breaker
//! accounting. Messages name the upstream but never carry internal detail
//! such as arguments, secrets or OS error strings of the gateway host.

use std::fmt;

use crate::protocol;

/// The class of a failure, as reported to clients in `error.data.class`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ErrorClass {
    /// The upstream could not be reached: not started, process exited,
    /// connection refused or reset, HTTP 5xx.
    Transport,
    /// The upstream did not answer within the deadline.
    Timeout,
    /// The upstream or the gateway refused for load (HTTP 429, queue full).
    Overloaded,
    /// The caller's request is wrong (-32700, -32600, -32601, -32602).
    Protocol,
    /// The upstream failed internally (-32603, -32000…-32099).
    UpstreamInternal,
    /// The tool ran and reported `isError: true`.
    ToolError,
    /// The gateway refused by policy.
    Policy,
    /// The upstream's circuit breaker is open.
    BreakerOpen,
}

/// A failure of a call, ready to be turned into a JSON-RPC error.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{message}")]
pub struct CallError {
    /// The class of the failure.
    pub class: ErrorClass,
    /// The upstream it concerns, if any.
    pub upstream: Option<String>,
    /// A message for the client. Never contains secrets or arguments.
    pub message: String,
    /// The JSON-RPC code to answer with.
    pub code: i64,
}

// === impl ErrorClass ===

impl ErrorClass {
    /// The label used in `data.class`, logs and metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorClass::Transport => "transport",
            ErrorClass::Timeout => "timeout",
            ErrorClass::Overloaded => "overloaded",
            ErrorClass::Protocol => "protocol",
            ErrorClass::UpstreamInternal => "upstream_internal",
            ErrorClass::ToolError => "tool_error",
            ErrorClass::Policy => "policy",
            ErrorClass::BreakerOpen => "breaker_open",
        }
    }

    /// The gateway's own JSON-RPC code for failures of this class. Codes in
    /// -32000…-32099 are "server error" in JSON-RPC; -32002 is avoided
    /// because MCP uses it for "resource not found".
    pub fn default_code(self) -> i64 {
        match self {
            ErrorClass::Transport => -32000,
            ErrorClass::Timeout => -32001,
            ErrorClass::Overloaded => -32003,
            ErrorClass::BreakerOpen => -32004,
            ErrorClass::Policy => -32005,
            ErrorClass::Protocol => protocol::INVALID_REQUEST,
            ErrorClass::UpstreamInternal | ErrorClass::ToolError => protocol::INTERNAL_ERROR,
        }
    }
}

impl fmt::Display for ErrorClass {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

// === impl CallError ===

impl CallError {
    /// A failure of `class` concerning `upstream`, with the class's code.
    pub fn new(class: ErrorClass, upstream: Option<&str>, message: impl Into<String>) -> Self {
        CallError { class, upstream: upstream.map(str::to_owned), message: message.into(), code: class.default_code() }
    }

    /// A caller mistake with a specific protocol code (e.g. -32602).
    pub fn protocol(code: i64, message: impl Into<String>) -> Self {
        CallError { code, ..CallError::new(ErrorClass::Protocol, None, message) }
    }

    /// The JSON-RPC error response for request `id`.
    pub fn to_response(&self, id: &protocol::RawValue) -> String {
        let mut data = serde_json::json!({ "class": self.class.as_str() });
        if let Some(u) = &self.upstream {
            data["upstream"] = serde_json::Value::String(u.clone());
        }
        protocol::encode::error(Some(id), self.code, &self.message, Some(&data))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn class_table() {
        let table = [
            (ErrorClass::Transport, "transport", -32000),
            (ErrorClass::Timeout, "timeout", -32001),
            (ErrorClass::Overloaded, "overloaded", -32003),
            (ErrorClass::Protocol, "protocol", -32600),
            (ErrorClass::UpstreamInternal, "upstream_internal", -32603),
            (ErrorClass::ToolError, "tool_error", -32603),
            (ErrorClass::Policy, "policy", -32005),
            (ErrorClass::BreakerOpen, "breaker_open", -32004),
        ];
        for (class, label, code) in table {
            assert_eq!(class.as_str(), label);
            assert_eq!(class.default_code(), code);
        }
    }

    #[test]
    fn response_names_class_and_upstream() {
        let id = protocol::RawValue::from_string("\"x\"".into()).unwrap();
        let e = CallError::new(ErrorClass::Transport, Some("fs"), "upstream `fs` is unavailable");
        let v: serde_json::Value = serde_json::from_str(&e.to_response(&id)).unwrap();
        assert_eq!(v["id"], "x");
        assert_eq!(v["error"]["code"], -32000);
        assert_eq!(v["error"]["data"]["class"], "transport");
        assert_eq!(v["error"]["data"]["upstream"], "fs");
    }
}
