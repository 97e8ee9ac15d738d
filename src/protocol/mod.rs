//! JSON-RPC 2.0 over raw JSON (docs/design.md D1, D12).
//!
//! The gateway parses the envelope (`jsonrpc`, `id`, `method`) and keeps
//! `params`, `result` and `error` as [`RawValue`]s that are forwarded
//! byte-for-byte. Before anything reads them, every message is scanned
//! ([`scan`]): one whose parts parsers would read differently (a member
//! name twice, nesting past the limit, a number out of range, a lone
//! surrogate) is refused. Members are then read only through [`Checked`]
//! views, which only this module hands out; [`Members`] reads one level of
//! an object, keeps order and every unknown member, and writes it back
//! with only the routed members replaced.
//!
//! Architecture Invariant: this module imports nothing from the rest of the
//! crate.

mod checked;
mod codes;
pub mod encode;
pub mod framing;
mod message;
pub mod modern;
mod reply;
pub mod scan;

pub use checked::{Checked, CheckedBox, Members};
pub use codes::*;
pub use message::{Classified, Envelope, Forward, Message, MessageKind, ParseError, Request, ResultCheck};
pub use modern::Era;
pub use reply::{Reply, SPLICE_FROM};
pub use scan::{Ambiguous, Limits, Reason};
pub use serde_json::value::RawValue;

/// Protocol revisions the gateway accepts, newest first. The first one is
/// what it offers to upstreams and answers to clients that ask for an
/// unknown revision.
pub const SUPPORTED_VERSIONS: &[&str] = &["2025-11-25", "2025-06-18", "2025-03-26", "2024-11-05"];

/// The revision the gateway speaks and offers.
pub const LATEST_VERSION: &str = SUPPORTED_VERSIONS[0];

/// Most characters of a client's text (a method, a name, a URI) that an
/// error message repeats; the rest is cut off (see [`echo`]).
pub const ECHO_MAX_CHARS: usize = 128;

/// `text` as an error message may repeat it: whole when it has at most
/// [`ECHO_MAX_CHARS`] characters, else its first ones and `…`. A client
/// that sends a 60 000-character method name gets a short error, and a log
/// line quoting it stays one line's worth.
pub fn echo(text: &str) -> std::borrow::Cow<'_, str> {
    cut(text, ECHO_MAX_CHARS)
}

/// `text` whole when it has at most `max` characters, else its first ones
/// and `…`.
pub fn cut(text: &str, max: usize) -> std::borrow::Cow<'_, str> {
    match text.char_indices().nth(max) {
        None => std::borrow::Cow::Borrowed(text),
        Some((at, _)) => std::borrow::Cow::Owned(format!("{}…", &text[..at])),
    }
}

/// How the gateway checks an upstream's reply to `method`: tool and prompt
/// results are forwarded unread but for a few members, so only those (and
/// the result's own member names) are scanned; everything else in full.
pub fn result_check(method: &str) -> ResultCheck {
    match method {
        "tools/call" | "tasks/result" => ResultCheck::Tool,
        "prompts/get" => ResultCheck::Prompt,
        _ => ResultCheck::Whole,
    }
}

/// Whether `version` is a protocol revision the gateway can speak.
pub fn is_supported_version(version: &str) -> bool {
    SUPPORTED_VERSIONS.contains(&version)
}

/// Whether `capabilities` (a client's, as declared) cover what `method`
/// (with `params`) needs: `sampling`, `roots`, or `elicitation` in the
/// requested mode (an empty `elicitation` object means form mode).
pub fn declares(capabilities: Option<Checked<'_>>, method: &str, params: Option<Checked<'_>>) -> bool {
    let Some(caps) = capabilities.and_then(|c| c.object()) else { return false };
    match method {
        "sampling/createMessage" => caps.contains("sampling"),
        "roots/list" => caps.contains("roots"),
        "elicitation/create" => {
            let Some(e) = caps.get("elicitation").and_then(Checked::object) else {
                return false;
            };
            let mode = params.and_then(|p| p.get("mode")).and_then(Checked::str);
            match mode.as_deref() {
                Some("url") => e.contains("url"),
                _ => e.contains("form") || !e.contains("url"),
            }
        }
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Design D12: outside this module, members are read only through
    /// `Checked`. A one-level raw reader (`RawObject`, gone), a `Message`
    /// built by hand (its parts would not have been scanned), or a parse
    /// of a result's unscanned text would each be a way around it.
    #[test]
    fn members_are_read_only_through_checked_views_outside_protocol() {
        let src = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
        let mut files = vec![src];
        let mut offenders = Vec::new();
        while let Some(path) = files.pop() {
            if path.is_dir() {
                if path.ends_with("protocol") {
                    continue;
                }
                files.extend(std::fs::read_dir(&path).unwrap().map(|e| e.unwrap().path()));
                continue;
            }
            if path.extension().is_none_or(|e| e != "rs") {
                continue;
            }
            let text = std::fs::read_to_string(&path).unwrap();
            for (n, line) in text.lines().enumerate() {
                let code = line.split("//").next().unwrap_or("");
                let bad = code.contains("RawObject")
                    || (code.contains("Message {") && !code.contains("fn "))
                    || (code.contains("result_raw()") && (code.contains("from_str") || code.contains("from_slice")));
                if bad {
                    offenders.push(format!("{}:{}: {}", path.display(), n + 1, line.trim()));
                }
            }
        }
        assert!(offenders.is_empty(), "raw member access outside protocol:\n{}", offenders.join("\n"));
    }

    #[test]
    fn echo_cuts_long_text_at_a_character() {
        assert_eq!(echo("tools/list"), "tools/list");
        let at_limit = "m".repeat(ECHO_MAX_CHARS);
        assert_eq!(echo(&at_limit), at_limit.as_str());
        let long = "é".repeat(60_000);
        let cut = echo(&long);
        assert_eq!(cut.chars().count(), ECHO_MAX_CHARS + 1);
        assert!(cut.starts_with(&"é".repeat(ECHO_MAX_CHARS)) && cut.ends_with('…'));
    }
}

/// How a client's message reached the gateway: the `transport` of logs,
/// traces, the audit log and metric labels.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Transport {
    /// HTTP: Streamable HTTP at `/mcp`, or the legacy `/sse` + `/messages`.
    Http,
    /// `mcp-gateway stdio`.
    Stdio,
    /// The gateway itself (its own audit events).
    Gateway,
}

impl Transport {
    /// The label: `http`, `stdio` or `gateway`.
    pub fn as_str(self) -> &'static str {
        match self {
            Transport::Http => "http",
            Transport::Stdio => "stdio",
            Transport::Gateway => "gateway",
        }
    }

    /// OpenTelemetry's `network.transport`: `pipe` or `tcp`.
    pub fn network(self) -> &'static str {
        match self {
            Transport::Stdio | Transport::Gateway => "pipe",
            Transport::Http => "tcp",
        }
    }
}
