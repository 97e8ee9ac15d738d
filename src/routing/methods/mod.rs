//! The MCP methods the gateway serves, one file per family (as mini-redis
//! has `cmd/`): each takes the [`Core`] and one request and returns the
//! reply or the error; [`dispatch`] picks the family by method name.
//!
//! Architecture Invariant: families never call each other and never hold
//! a catalog snapshot across an upstream call; what they share lives in
//! [`crate::routing::core`].

pub(crate) mod completion;
pub(crate) mod discover;
pub(crate) mod lists;
pub(crate) mod logging;
pub(crate) mod prompts;
pub(crate) mod resources;
pub(crate) mod tasks;
pub(crate) mod tools;

use crate::error::CallError;
use crate::protocol::{self, Reply, encode};
use crate::routing::core::{Core, Rq};
use crate::routing::outcome::Outcome;
use crate::routing::params;
use crate::upstream::ListKind;

/// Handles one request (not `initialize`) by its method.
pub(crate) async fn dispatch(core: &Core, method: &str, rq: &Rq<'_>, out: &mut Outcome) -> Result<Reply, CallError> {
    // The families that forward a result as it came may send it from the
    // upstream's message (a tool's result may be megabytes).
    match method {
        "tools/call" => tools::call(core, rq, out).await,
        "prompts/get" => prompts::get(core, rq, out).await,
        "completion/complete" => completion::complete(core, rq, out).await,
        _ => written(core, method, rq, out).await.map(Reply::from),
    }
}

/// The families whose replies the gateway writes.
async fn written(core: &Core, method: &str, rq: &Rq<'_>, out: &mut Outcome) -> Result<String, CallError> {
    if rq.caller.era == protocol::Era::Modern && !MODERN_METHODS.contains(&method) {
        return Err(not_found(method));
    }
    if rq.caller.era == protocol::Era::Modern && method.starts_with("tasks/") && !declares_tasks(rq) {
        // The extension's methods are for clients that declared it.
        out.class = Some(crate::error::ErrorClass::Protocol);
        let data = serde_json::json!({ "requiredCapabilities": { "extensions": { TASKS_EXTENSION: {} } } });
        let msg = format!("Missing required client capability: {TASKS_EXTENSION}");
        return Ok(encode::error(Some(rq.id), protocol::MISSING_REQUIRED_CLIENT_CAPABILITY, &msg, Some(&data)));
    }
    match method {
        "server/discover" => discover::discover(core, rq),
        "ping" => Ok(encode::result(rq.id, &params::empty())),
        "tools/list" => lists::page(core, rq, ListKind::Tools).await,
        "prompts/list" => lists::page(core, rq, ListKind::Prompts).await,
        "resources/list" => lists::page(core, rq, ListKind::Resources).await,
        "resources/templates/list" => lists::page(core, rq, ListKind::Templates).await,
        "resources/read" => resources::read(core, rq, out).await,
        "resources/subscribe" => resources::subscribe(core, rq).await,
        "resources/unsubscribe" => resources::unsubscribe(core, rq).await,
        "logging/setLevel" => logging::set_level(core, rq).await,
        "tasks/get" => tasks::one(core, rq, tasks::Ask::Get, out).await,
        "tasks/result" => tasks::one(core, rq, tasks::Ask::Result, out).await,
        "tasks/cancel" => tasks::one(core, rq, tasks::Ask::Cancel, out).await,
        "tasks/update" if rq.caller.era == protocol::Era::Modern => tasks::one(core, rq, tasks::Ask::Update, out).await,
        "tasks/list" => tasks::list(core, rq).await,
        other => Err(not_found(other)),
    }
}

/// The methods of 2026-07-28 the gateway serves here (`subscriptions/listen`
/// is the transport's: its answer is a stream). The session methods of 2025
/// (`initialize`, `ping`, `logging/setLevel`, `resources/subscribe`, the
/// 2025 `tasks/*`) are not found in the modern era.
const MODERN_METHODS: &[&str] = &[
    "server/discover",
    "tools/list",
    "tools/call",
    "prompts/list",
    "prompts/get",
    "resources/list",
    "resources/templates/list",
    "resources/read",
    "completion/complete",
    // The `io.modelcontextprotocol/tasks` extension.
    "tasks/get",
    "tasks/update",
    "tasks/cancel",
];

/// The tasks extension's identifier (2026-07-28).
const TASKS_EXTENSION: &str = "io.modelcontextprotocol/tasks";

/// Whether a modern request's client capabilities declare the tasks
/// extension.
fn declares_tasks(rq: &Rq<'_>) -> bool {
    protocol::modern::meta_capabilities(rq.params)
        .and_then(|c| c.get("extensions"))
        .and_then(|e| e.get(TASKS_EXTENSION))
        .is_some()
}

fn not_found(method: &str) -> CallError {
    CallError::protocol(protocol::METHOD_NOT_FOUND, format!("Method not found: {}", protocol::echo(method)))
}

#[cfg(test)]
mod tests;
