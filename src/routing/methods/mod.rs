//! The MCP methods the gateway serves, one file per family (as mini-redis
//! has `cmd/`): each takes the [`Core`] and one request and returns the
//! reply or the error; [`dispatch`] picks the family by method name.
//!
//! Architecture Invariant: families never call each other and never hold
//! a catalog snapshot across an upstream call; what they share lives in
//! [`crate::routing::core`].

pub(crate) mod completion;
pub(crate) mod lists;
pub(crate) mod logging;
pub(crate) mod prompts;
pub(crate) mod resources;
pub(crate) mod tasks;
pub(crate) mod tools;

use crate::error::CallError;
use crate::protocol::{self, encode};
use crate::routing::core::{Core, Rq};
use crate::routing::outcome::Outcome;
use crate::routing::params;
use crate::upstream::ListKind;

/// Handles one request (not `initialize`) by its method.
pub(crate) async fn dispatch(core: &Core, method: &str, rq: &Rq<'_>, out: &mut Outcome) -> Result<String, CallError> {
    match method {
        "ping" => Ok(encode::result(rq.id, &params::empty())),
        "tools/list" => lists::page(core, rq, ListKind::Tools).await,
        "prompts/list" => lists::page(core, rq, ListKind::Prompts).await,
        "resources/list" => lists::page(core, rq, ListKind::Resources).await,
        "resources/templates/list" => lists::page(core, rq, ListKind::Templates).await,
        "tools/call" => tools::call(core, rq, out).await,
        "prompts/get" => prompts::get(core, rq, out).await,
        "resources/read" => resources::read(core, rq, out).await,
        "resources/subscribe" => resources::subscribe(core, rq).await,
        "resources/unsubscribe" => resources::unsubscribe(core, rq).await,
        "completion/complete" => completion::complete(core, rq, out).await,
        "logging/setLevel" => logging::set_level(core, rq).await,
        "tasks/get" => tasks::one(core, rq, tasks::Ask::Get, out).await,
        "tasks/result" => tasks::one(core, rq, tasks::Ask::Result, out).await,
        "tasks/cancel" => tasks::one(core, rq, tasks::Ask::Cancel, out).await,
        "tasks/list" => tasks::list(core, rq).await,
        // 2026-07-28 probe: -32601 makes modern clients fall back to
        // `initialize` (docs/design.md D2).
        other => {
            Err(CallError::protocol(protocol::METHOD_NOT_FOUND, format!("Method not found: {}", protocol::echo(other))))
        }
    }
}

#[cfg(test)]
mod tests;
