//! JSON-RPC 2.0 over raw JSON (design.md D1).
//!
//! The gateway parses the envelope (`jsonrpc`, `id`, `method`) and keeps
//! `params`, `result` and `error` as [`RawValue`]s that are forwarded
//! byte-for-byte. Only the fields the gateway routes on are ever looked at,
//! through [`RawObject`], which preserves key order and every unknown member.
//!
//! Architecture Invariant: this module imports nothing from the rest of the
//! crate.

mod codes;
pub mod framing;
mod message;
mod raw_object;

pub use codes::*;
pub use message::{Message, MessageKind, ParseError, encode};
pub use raw_object::RawObject;
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
    match text.char_indices().nth(ECHO_MAX_CHARS) {
        None => std::borrow::Cow::Borrowed(text),
        Some((at, _)) => std::borrow::Cow::Owned(format!("{}…", &text[..at])),
    }
}

/// Whether `version` is a protocol revision the gateway can speak.
pub fn is_supported_version(version: &str) -> bool {
    SUPPORTED_VERSIONS.contains(&version)
}

#[cfg(test)]
mod tests {
    use super::*;

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
