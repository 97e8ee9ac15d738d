//! Error classes (docs/design.md D5): the one place where a failure is
//! classified.
//!
//! Every failure of a call gets exactly one [`ErrorClass`], whether the
//! gateway saw it (a transport error, a deadline, a full queue, an open
//! breaker) or the upstream reported it (a JSON-RPC error, a result with
//! `isError: true`, see [`classify_reply`]). The class decides:
//!
//! | class | retried (when safe, D6) | counts for the breaker | JSON-RPC code |
//! |---|---|---|---|
//! | `transport` | yes | yes | -32000 |
//! | `timeout` | yes | yes | -32001 |
//! | `overloaded` | yes | yes | -32003 |
//! | `upstream_internal` | yes | yes | upstream's (-32603 for ours) |
//! | `protocol` | no | no | upstream's (-32600 for ours) |
//! | `tool_error` | no | no | none: the result is forwarded |
//! | `policy` | no | no | -32005 |
//! | `breaker_open` | no | no | -32004 |
//!
//! and it is the `class` label of metrics. Messages name the upstream but
//! never carry internal detail such as arguments, secrets or OS error
//! strings of the gateway host.

use std::fmt;
use std::time::Duration;

use crate::protocol::{self, Checked, Members, Message};

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
    /// The upstream refused the gateway's credential (HTTP 401/403), or
    /// the gateway has none it may use (no login yet, refresh refused).
    /// A person must act; retrying would not help.
    UpstreamAuth,
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
    /// The request provably never reached the upstream (not written, or
    /// refused before processing: connect failure, HTTP 429/503), so even a
    /// non-idempotent call may be retried.
    pub not_delivered: bool,
    /// How long the upstream asked us to wait (`Retry-After`).
    pub retry_after: Option<Duration>,
    /// The upstream's reply was refused unread (docs/design.md D12: ambiguous
    /// or not JSON-RPC), for this reason. The call did reach the upstream,
    /// so it is never retried; the audit record says so.
    pub refused: Option<&'static str>,
    /// For `breaker_open` after retries: the class of the failure before
    /// (the breaker opened while the call was being retried).
    pub cause: Option<ErrorClass>,
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
            ErrorClass::UpstreamAuth => "upstream_auth",
        }
    }

    /// Whether a failure of this class may be retried at all; whether it is
    /// *safe* to retry a given call is the retry policy's question (D6).
    pub fn retryable(self) -> bool {
        matches!(
            self,
            ErrorClass::Transport | ErrorClass::Timeout | ErrorClass::Overloaded | ErrorClass::UpstreamInternal
        )
    }

    /// Whether a failure of this class says the upstream is sick, and so
    /// counts against its circuit breaker (D7). The caller's mistakes, tool
    /// errors and the gateway's own refusals do not.
    pub fn counts_for_breaker(self) -> bool {
        self.retryable()
    }

    /// Every class, for tables and metrics.
    pub const ALL: [ErrorClass; 9] = [
        ErrorClass::Transport,
        ErrorClass::Timeout,
        ErrorClass::Overloaded,
        ErrorClass::Protocol,
        ErrorClass::UpstreamInternal,
        ErrorClass::ToolError,
        ErrorClass::Policy,
        ErrorClass::BreakerOpen,
        ErrorClass::UpstreamAuth,
    ];

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
            ErrorClass::UpstreamAuth => -32006,
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
        CallError {
            class,
            upstream: upstream.map(str::to_owned),
            message: message.into(),
            code: class.default_code(),
            not_delivered: false,
            retry_after: None,
            refused: None,
            cause: None,
        }
    }

    /// Marks the request as never having reached the upstream.
    pub fn not_delivered(mut self) -> Self {
        self.not_delivered = true;
        self
    }

    /// A caller mistake with a specific protocol code (e.g. -32602).
    pub fn protocol(code: i64, message: impl Into<String>) -> Self {
        CallError { code, ..CallError::new(ErrorClass::Protocol, None, message) }
    }

    /// The JSON-RPC error response for request `id`.
    pub fn to_response(&self, id: &protocol::RawValue) -> String {
        self.encode(Some(id))
    }

    /// The error reply with `"id": null`: for a request refused before its
    /// id could be read (its body was not read).
    pub fn to_response_null(&self) -> String {
        self.encode(None)
    }

    fn encode(&self, id: Option<&protocol::RawValue>) -> String {
        let mut data = serde_json::json!({ "class": self.class.as_str() });
        if let Some(cause) = self.cause {
            data["cause"] = cause.as_str().into();
        }
        if let Some(u) = &self.upstream {
            data["upstream"] = serde_json::Value::String(u.clone());
        }
        protocol::encode::error(id, self.code, &self.message, Some(&data))
    }
}

/// The class of an upstream's JSON-RPC error code. The standard "caller's
/// fault" codes, MCP's "resource not found" (-32002) and the 2026-07-28
/// request errors (-32020 header mismatch, -32021 missing client
/// capability, -32022 unsupported version) are `protocol`: a client's
/// mistakes never open an upstream's breaker;
/// everything else (-32603, the server range -32000…-32099, application
/// codes) is the upstream failing: `upstream_internal`.
pub fn classify_rpc_code(code: i64) -> ErrorClass {
    match code {
        protocol::PARSE_ERROR | protocol::INVALID_REQUEST | protocol::METHOD_NOT_FOUND | protocol::INVALID_PARAMS => {
            ErrorClass::Protocol
        }
        RESOURCE_NOT_FOUND => ErrorClass::Protocol,
        protocol::HEADER_MISMATCH
        | protocol::MISSING_REQUIRED_CLIENT_CAPABILITY
        | protocol::UNSUPPORTED_PROTOCOL_VERSION => ErrorClass::Protocol,
        _ => ErrorClass::UpstreamInternal,
    }
}

/// An upstream's JSON-RPC error, relayed to the client for request `id`:
/// code, message and data as the upstream sent them (they may matter to
/// the client, e.g. URL elicitation's -32042 data), with `class` and
/// `upstream` added to `data` when it is absent or an object.
pub fn relay_error(id: &protocol::RawValue, error: Checked<'_>, upstream: &str) -> String {
    let Some(mut err) = error.object() else {
        return protocol::encode::raw_error(id, error.raw());
    };
    let code = error_code(&err);
    let class = code.map_or(ErrorClass::UpstreamInternal, classify_rpc_code);
    let data = match err.get("data") {
        None => Some(Members::new()),
        Some(d) => d.object(),
    };
    if let Some(mut data) = data {
        if !data.contains("class") {
            data.set_str("class", class.as_str());
        }
        if !data.contains("upstream") {
            data.set_str("upstream", upstream);
        }
        let data = data.to_checked();
        err.set("data", data);
    }
    protocol::encode::raw_error(id, &err.to_raw())
}

/// The numeric `code` of a JSON-RPC error object.
fn error_code(error: &Members<'_>) -> Option<i64> {
    error.get("code").and_then(|c| c.text().parse::<i64>().ok())
}

/// MCP's "resource not found" (server/resources.mdx).
const RESOURCE_NOT_FOUND: i64 = -32002;

/// Classifies an upstream's reply: `None` when it succeeded, else the class
/// of its failure: the error code's class, or `tool_error` for a result
/// with `isError: true`.
///
/// Cheap on the hot path: the scan of a tool result already found where
/// its `isError` is (protocol::ResultCheck).
pub fn classify_reply(reply: &Message) -> Option<ErrorClass> {
    if let Some(e) = reply.error() {
        let code = e.object().and_then(|o| error_code(&o));
        // An error without a numeric code is malformed: the upstream's fault.
        return Some(code.map_or(ErrorClass::UpstreamInternal, classify_rpc_code));
    }
    reply.result_member("isError").filter(|v| v.is_true()).map(|_| ErrorClass::ToolError)
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
            (ErrorClass::UpstreamAuth, "upstream_auth", -32006),
        ];
        for (class, label, code) in table {
            assert_eq!(class.as_str(), label);
            assert_eq!(class.default_code(), code);
        }
    }

    /// The D5 decision table: what each class means for retries and the
    /// breaker.
    #[test]
    fn class_decisions() {
        let table = [
            (ErrorClass::Transport, true, true),
            (ErrorClass::Timeout, true, true),
            (ErrorClass::Overloaded, true, true),
            (ErrorClass::UpstreamInternal, true, true),
            (ErrorClass::Protocol, false, false),
            (ErrorClass::ToolError, false, false),
            (ErrorClass::Policy, false, false),
            (ErrorClass::BreakerOpen, false, false),
            // A person must log in: retrying cannot help, and the server
            // is not sick.
            (ErrorClass::UpstreamAuth, false, false),
        ];
        assert_eq!(table.len(), ErrorClass::ALL.len());
        for (class, retry, breaker) in table {
            assert_eq!(class.retryable(), retry, "{class}");
            assert_eq!(class.counts_for_breaker(), breaker, "{class}");
        }
    }

    #[test]
    fn rpc_codes() {
        let table = [
            (-32700, ErrorClass::Protocol),
            (-32600, ErrorClass::Protocol),
            (-32601, ErrorClass::Protocol),
            (-32602, ErrorClass::Protocol),
            (-32002, ErrorClass::Protocol),
            (-32603, ErrorClass::UpstreamInternal),
            (-32000, ErrorClass::UpstreamInternal),
            (-32099, ErrorClass::UpstreamInternal),
            (-32042, ErrorClass::UpstreamInternal),
            (1, ErrorClass::UpstreamInternal),
        ];
        for (code, class) in table {
            assert_eq!(classify_rpc_code(code), class, "{code}");
        }
    }

    #[test]
    fn replies() {
        let table = [
            (r#"{"jsonrpc":"2.0","id":1,"result":{"content":[]}}"#, None),
            (r#"{"jsonrpc":"2.0","id":1,"result":{"content":[],"isError":false}}"#, None),
            (r#"{"jsonrpc":"2.0","id":1,"result":{"isError":true,"content":[]}}"#, Some(ErrorClass::ToolError)),
            // The word inside a text is not the member.
            (r#"{"jsonrpc":"2.0","id":1,"result":{"content":[{"type":"text","text":"\"isError\":true"}]}}"#, None),
            (r#"{"jsonrpc":"2.0","id":1,"error":{"code":-32602,"message":"bad"}}"#, Some(ErrorClass::Protocol)),
            (r#"{"jsonrpc":"2.0","id":1,"error":{"code":-32603,"message":"x"}}"#, Some(ErrorClass::UpstreamInternal)),
            (r#"{"jsonrpc":"2.0","id":1,"error":{"message":"no code"}}"#, Some(ErrorClass::UpstreamInternal)),
            // Spelled with escapes, it is the member all the same.
            (r#"{"jsonrpc":"2.0","id":1,"result":{"is\u0045rror":true,"content":[]}}"#, Some(ErrorClass::ToolError)),
        ];
        for (text, class) in table {
            // As an upstream's reply to tools/call is read: the result only
            // where the gateway reads it.
            let m = protocol::Envelope::parse(text.as_bytes())
                .unwrap()
                .check(&protocol::Limits::default(), protocol::ResultCheck::Tool)
                .unwrap();
            assert_eq!(classify_reply(&m), class, "{text}");
        }
    }

    #[test]
    fn relayed_errors_keep_their_code_message_and_data() {
        let id = protocol::RawValue::from_string("7".into()).unwrap();
        let relay = |e: &str| -> serde_json::Value {
            let reply = format!(r#"{{"jsonrpc":"2.0","id":1,"error":{e}}}"#);
            let m = Message::parse(reply.as_bytes(), &protocol::Limits::default()).unwrap();
            serde_json::from_str(&relay_error(&id, m.error().unwrap(), "db")).unwrap()
        };
        let v = relay(r#"{"code":-32602,"message":"Unknown tool: x"}"#);
        assert_eq!(v["error"]["code"], -32602);
        assert_eq!(v["error"]["message"], "Unknown tool: x");
        assert_eq!(v["error"]["data"], serde_json::json!({"class":"protocol","upstream":"db"}));
        let v = relay(r#"{"code":-32042,"message":"m","data":{"elicitations":[1],"class":"mine"}}"#);
        assert_eq!(v["error"]["data"], serde_json::json!({"elicitations":[1],"class":"mine","upstream":"db"}));
        let v = relay(r#"{"code":-32603,"message":"m","data":"trace"}"#);
        assert_eq!(v["error"]["data"], "trace");
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
