//! What a forwarded request carries of the protocol eras (docs/design.md
//! D13): the 2026-07-28 `_meta` members, and a 2025 client's capabilities
//! declared to a 2026-07-28 upstream.

use crate::protocol::{self, Checked, CheckedBox, Members};

/// The 2026-07-28 `_meta` members of a request's params go on only from a
/// modern client to a modern upstream: a 2025 upstream would refuse a body
/// naming another revision than its session's, and a 2025 client declares
/// nothing per request (what it sends there is not passed off as the
/// capabilities of a modern request). Found without parsing for nearly
/// every request.
pub(crate) fn era_meta(params: &mut Members<'_>, caller: protocol::Era, upstream_modern: bool) {
    if !(caller == protocol::Era::Modern && upstream_modern) {
        protocol::modern::strip_modern_meta(params);
    }
}

/// Declares `caps` (a 2025 client's relayable capabilities, and `roots`
/// when the gateway answers roots from its config) as the request's
/// 2026-07-28 `clientCapabilities`, for an upstream that asks for input.
pub(crate) fn set_client_capabilities(params: &mut Members<'_>, caps: &CheckedBox, config_roots: bool) {
    let mut declared = caps.checked().object().unwrap_or_default();
    if config_roots && !declared.contains("roots") {
        declared.set("roots", CheckedBox::from_value(&serde_json::json!({})));
    }
    let mut meta = params.get("_meta").and_then(Checked::object).unwrap_or_default();
    meta.set(protocol::modern::META_CAPABILITIES, declared.to_checked());
    let meta = meta.to_checked();
    params.set("_meta", meta);
}
