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

/// Whether `version` is a protocol revision the gateway can speak.
pub fn is_supported_version(version: &str) -> bool {
    SUPPORTED_VERSIONS.contains(&version)
}
