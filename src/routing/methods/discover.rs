//! `server/discover` (2026-07-28): what the gateway serves, for a client
//! that asks before its first request or instead of `initialize`. The
//! capabilities are the gateway's own, as `initialize` answers them: it
//! serves every list and follows every upstream's changes, whoever is
//! behind it.

use crate::error::CallError;
use crate::protocol::{self, Era, encode};
use crate::routing::core::{Core, Rq};
use crate::security::auth::Principal;

/// The gateway's capabilities in `era`. Modern clients get no `logging`
/// (2026-07-28 sets the level per request in `_meta`) and no 2025 `tasks`
/// member (tasks are the `io.modelcontextprotocol/tasks` extension there).
pub(crate) fn capabilities(era: Era) -> serde_json::Value {
    let mut caps = serde_json::json!({
        // list_changed is real: it follows upstream changes, restarts and
        // outages.
        "tools": { "listChanged": true },
        "prompts": { "listChanged": true },
        "resources": { "subscribe": true, "listChanged": true },
        "completions": {},
    });
    if era == Era::Modern {
        // Tasks of upstreams that run them, bound to their principal.
        caps["extensions"] = serde_json::json!({ "io.modelcontextprotocol/tasks": {} });
    }
    if era == Era::Legacy {
        caps["logging"] = serde_json::json!({});
        // Served for upstreams that declare them; tasks are bound to the
        // session that created them (see routing/tasks.rs).
        caps["tasks"] = serde_json::json!({ "list": {}, "cancel": {}, "requests": { "tools": { "call": {} } } });
    }
    caps
}

/// The gateway's `serverInfo`.
pub(crate) fn server_info() -> serde_json::Value {
    serde_json::json!({ "name": "mcp-gateway", "version": env!("CARGO_PKG_VERSION") })
}

/// What the model is told about the gateway. Which servers are behind it
/// is for one from whom nothing is hidden; the others learn them from the
/// names they may see.
pub(crate) fn instructions(core: &Core, principal: &Principal) -> String {
    let ids: Vec<String> = match core.gate.grants_of(principal).is_open() {
        true => core.upstreams.all().iter().map(|u| u.id().to_owned()).collect(),
        false => Vec::new(),
    };
    match ids.is_empty() {
        true => "Tools of several MCP servers are exposed as <server>__<tool>.".to_owned(),
        false => format!("Tools of several MCP servers ({}) are exposed as <server>__<tool>.", ids.join(", ")),
    }
}

/// Answers `server/discover`: the modern revisions (the 2025 ones are
/// reached through `initialize`), the capabilities and the instructions.
/// It depends on who asks (the instructions), so its cache scope is
/// private, and it may change with a reload: a TTL of 0.
pub(crate) fn discover(core: &Core, rq: &Rq<'_>) -> Result<String, CallError> {
    let anonymous = Principal::anonymous();
    let principal = rq.caller.peer.map_or(&anonymous, |p| &*p.principal);
    let result = serde_json::json!({
        "supportedVersions": protocol::modern::MODERN_VERSIONS,
        "capabilities": capabilities(Era::Modern),
        "instructions": instructions(core, principal),
        "serverInfo": server_info(),
        "_meta": { "io.modelcontextprotocol/serverInfo": server_info() },
        "resultType": "complete",
        "ttlMs": 0,
        "cacheScope": "private",
    });
    let result = serde_json::value::to_raw_value(&result).expect("json! always serializes");
    Ok(encode::result(rq.id, &result))
}
