//! A 2025 client, a 2026-07-28 upstream: the upstream's input-required
//! result is asked of the client as the 2025 server requests it stands for
//! (sampling, elicitation in form or URL mode, roots), on the call's own
//! stream or the session's, and the call is sent again with the answers
//! (`inputResponses`) and the upstream's `requestState`, byte for byte,
//! until it completes or `[bridge] max_rounds` is spent.

use std::sync::Arc;

use opentelemetry::KeyValue;
use tokio::sync::mpsc;

use super::{Bridges, Call, Direction};
use crate::config::BridgeSection;
use crate::error::{CallError, ErrorClass};
use crate::protocol::{self, Checked, CheckedBox, Members, Message};
use crate::routing::peer::Peer;
use crate::upstream::Called;

/// Most input requests in one input-required result.
const MAX_INPUTS: usize = 16;

/// Whether `reply` is an input-required result.
pub(crate) fn is_input_required(reply: &Message) -> bool {
    reply.result_member("resultType").and_then(|t| t.str()).as_deref() == Some("input_required")
}

/// Who the exchange asks, and what it may hold.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Client<'a> {
    /// The 2025 session.
    pub(crate) peer: &'a Arc<Peer>,
    /// The call's own stream, when it has one.
    pub(crate) stream: Option<&'a mpsc::Sender<String>>,
    /// The upstream's configured roots: the answer to `roots/list` for a
    /// client that declared no roots of its own.
    pub(crate) roots: &'a [String],
}

/// Sends `call`; when its upstream answers input-required and the caller
/// is a 2025 `client`, asks the client and sends it again ([`drive`]).
pub(crate) async fn send(call: &Call, client: Option<Client<'_>>, limits: &BridgeSection, bridges: &Bridges) -> Called {
    let first = call.send(Some(call.params.checked())).await;
    match (&first.result, client) {
        (Ok(r), Some(client)) if is_input_required(r) => drive(first, call, client, limits, bridges).await,
        _ => first,
    }
}

/// Answers `first` (an input-required result of `call`) with `client`,
/// round after round, and returns how the call ended.
async fn drive(first: Called, call: &Call, client: Client<'_>, limits: &BridgeSection, bridges: &Bridges) -> Called {
    let Some(mut slot) = bridges.admit(&client.peer.principal.identity, Direction::ToLegacy, limits) else {
        return failed(
            first.attempts,
            CallError::new(
                ErrorClass::Overloaded,
                Some(call.upstream.id()),
                "Too many exchanges are being bridged between protocol versions; try again",
            ),
        );
    };
    let (mut reply, mut attempts) = match first.result {
        Ok(r) => (r, first.attempts),
        Err(e) => return failed(first.attempts, e),
    };
    let mut rounds = 0;
    loop {
        if !is_input_required(&reply) {
            slot.outcome = "completed";
            let class = crate::error::classify_reply(&reply);
            return Called { result: Ok(reply), class, attempts };
        }
        rounds += 1;
        if rounds > limits.max_rounds {
            slot.outcome = "too_many_rounds";
            tracing::warn!(upstream = %call.upstream.id(), rounds = limits.max_rounds, "An upstream kept asking for input; gave up.");
            let m = format!(
                "upstream `{}` asked for input more than {} times (bridge.max_rounds)",
                call.upstream.id(),
                limits.max_rounds
            );
            return failed(attempts, CallError::new(ErrorClass::Protocol, Some(call.upstream.id()), m));
        }
        bridges.count(Direction::ToLegacy, "asked");
        let span = super::span(&call.span, Direction::ToLegacy, rounds);
        let answered = answer(&reply, call.upstream.id(), client, limits).await;
        // What the client was asked and did not answer (a timeout, a
        // refusal of another input) is not waited for any more.
        client.peer.forget_unheard_asks();
        span.set(|| KeyValue::new("mcp_gateway.bridge.outcome", answered.as_ref().err().map_or("answered", |e| e.0)));
        span.end();
        let answers = match answered {
            Ok(a) => a,
            Err((outcome, e)) => {
                slot.outcome = outcome;
                tracing::info!(upstream = %call.upstream.id(), outcome, error = %e.message, "A bridged input-required result could not be answered.");
                return failed(attempts, e);
            }
        };
        let state = reply.result_member("requestState").map(Checked::to_box);
        let Some(params) = retry_params(&call.params, &answers, state.as_ref()) else {
            return failed(
                attempts,
                CallError::protocol(protocol::INVALID_PARAMS, "tools/call params must be an object"),
            );
        };
        let again = call.send(Some(params.checked())).await;
        attempts += again.attempts;
        reply = match again.result {
            Ok(r) => r,
            Err(e) => {
                slot.outcome = "failed";
                return failed(attempts, e);
            }
        };
    }
}

fn failed(attempts: u32, e: CallError) -> Called {
    Called { class: Some(e.class), result: Err(e), attempts }
}

/// The client's answers to every input request of `reply`, as
/// `inputResponses` members (key, raw result). The error says which
/// outcome to count.
async fn answer(
    reply: &Message,
    upstream: &str,
    client: Client<'_>,
    limits: &BridgeSection,
) -> Result<Vec<(String, CheckedBox)>, (&'static str, CallError)> {
    let bad = |m: String| ("invalid", CallError::new(ErrorClass::Protocol, Some(upstream), m));
    let requests = reply.result_member("inputRequests").and_then(|r| r.object());
    let Some(requests) = requests else {
        return Err(bad(format!("upstream `{upstream}` asked for input without inputRequests")));
    };
    let keys: Vec<String> = requests.names().map(str::to_owned).collect();
    if keys.is_empty() || keys.len() > MAX_INPUTS {
        return Err(bad(format!(
            "upstream `{upstream}` asked for {} inputs (1 to {MAX_INPUTS} are bridged)",
            keys.len()
        )));
    }
    // Every request is checked before the client is asked anything: a call
    // that cannot be answered whole shows the user nothing.
    let mut answers = Vec::with_capacity(keys.len());
    let mut asks = Vec::new();
    for key in keys {
        let req = requests.get(&key).and_then(|r| r.object());
        let method = req.as_ref().and_then(|r| r.str("method"));
        let (Some(req), Some(method)) = (req, method) else {
            let key = protocol::echo(&key);
            return Err(bad(format!("upstream `{upstream}` sent input request `{key}` without a method")));
        };
        let params = req.get("params");
        if !matches!(method.as_str(), "sampling/createMessage" | "elicitation/create" | "roots/list") {
            return Err(bad(format!(
                "upstream `{upstream}` asked for `{}`, which is not bridged",
                protocol::echo(&method)
            )));
        }
        if !client.peer.supports(&method, params) {
            if method == "roots/list" {
                let roots: Vec<_> = client.roots.iter().map(|r| serde_json::json!({ "uri": r })).collect();
                answers.push((key, CheckedBox::from_value(&serde_json::json!({ "roots": roots }))));
                continue;
            }
            let capability = if method == "sampling/createMessage" { "sampling" } else { "elicitation" };
            let m = format!(
                "upstream `{upstream}` needs the client to answer {method}, and this session did not declare the `{capability}` capability{}",
                if method == "elicitation/create"
                    && params.and_then(|p| p.get("mode")).and_then(|m| m.str()).as_deref() == Some("url")
                {
                    " with URL mode"
                } else {
                    ""
                },
            );
            return Err(("undeclared", CallError::protocol(protocol::INVALID_REQUEST, m)));
        }
        let params = to_2025(&method, params);
        asks.push((key, method, params));
    }
    let mut waits = Vec::with_capacity(asks.len());
    for (key, method, params) in asks {
        let Some(rx) = client.peer.ask(&method, params.raw(), client.stream) else {
            return Err((
                "client_gone",
                CallError::new(ErrorClass::Overloaded, Some(upstream), "The client's queue is full"),
            ));
        };
        waits.push((key, method, rx));
    }
    let all = futures_util::future::join_all(
        waits.into_iter().map(|(key, method, rx)| async move { (key, method, rx.await) }),
    );
    let Ok(got) = tokio::time::timeout(limits.answer_timeout, all).await else {
        let m = format!(
            "The client did not answer upstream `{upstream}`'s request for input in time (bridge.answer_timeout)"
        );
        return Err(("timeout", CallError::new(ErrorClass::Timeout, Some(upstream), m)));
    };
    for (key, method, answer) in got {
        match answer {
            Ok(Some(result)) if result.checked().object().is_some() => answers.push((key, result)),
            Ok(_) => {
                let m = format!("The client refused upstream `{upstream}`'s {method} request");
                return Err(("client_error", CallError::protocol(protocol::INVALID_REQUEST, m)));
            }
            Err(_) => {
                let m = "The client went away before answering".to_owned();
                return Err(("client_gone", CallError::new(ErrorClass::Transport, Some(upstream), m)));
            }
        }
    }
    Ok(answers)
}

/// A 2026-07-28 input request's params as its 2025 request needs them: a
/// URL-mode elicitation gets the `elicitationId` 2025-11-25 requires and
/// 2026-07-28 does not send.
fn to_2025(method: &str, params: Option<Checked<'_>>) -> CheckedBox {
    let Some(mut obj) = params.and_then(Checked::object) else {
        return CheckedBox::from_value(&serde_json::json!({}));
    };
    if method == "elicitation/create" && obj.str("mode").as_deref() == Some("url") && !obj.contains("elicitationId") {
        obj.set_str("elicitationId", &format!("mcpgw-{:032x}", super::state::exchange_id()));
    }
    obj.to_checked()
}

/// The call's params with `inputResponses` and the upstream's
/// `requestState` (as it came) set.
fn retry_params(
    params: &CheckedBox,
    answers: &[(String, CheckedBox)],
    state: Option<&CheckedBox>,
) -> Option<CheckedBox> {
    let mut obj = params.checked().object()?;
    let mut responses = Members::new();
    for (key, result) in answers {
        responses.set(key, result.clone());
    }
    obj.set("inputResponses", responses.to_checked());
    match state {
        Some(s) => obj.set("requestState", s.clone()),
        None => {
            obj.remove("requestState");
        }
    }
    Some(obj.to_checked())
}
