//! `tasks/get`, `tasks/result`, `tasks/cancel` and `tasks/list`: only on
//! the caller's session's own tasks, under the upstream's ids, answered
//! with the ids the client knows.

use serde_json::value::RawValue;

use crate::error::CallError;
use crate::protocol::{self, CheckedBox, encode};
use crate::routing::core::{Core, Rq};
use crate::routing::outcome::Outcome;
use crate::routing::{catalog, params, tasks};
use crate::upstream::Request;

/// Which of the three requests about one task.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Ask {
    /// `tasks/get`.
    Get,
    /// `tasks/result`.
    Result,
    /// `tasks/cancel`.
    Cancel,
    /// `tasks/update` (2026-07-28 tasks extension: answers to a task's
    /// input requests).
    Update,
}

impl Ask {
    fn method(self) -> &'static str {
        match self {
            Ask::Get => "tasks/get",
            Ask::Result => "tasks/result",
            Ask::Cancel => "tasks/cancel",
            Ask::Update => "tasks/update",
        }
    }
}

/// `tasks/get`, `tasks/result` or `tasks/cancel`.
pub(crate) async fn one(core: &Core, rq: &Rq<'_>, ask: Ask, out: &mut Outcome) -> Result<String, CallError> {
    let peer = rq.caller.peer.ok_or_else(|| CallError::protocol(protocol::INVALID_REQUEST, "Tasks need a session"))?;
    let (mut obj, task_id) = params::named(rq.params, "taskId")?;
    // Another session's task is as unknown as one that never was.
    let (i, original, cap) = core.tasks.get(peer.id, &task_id).ok_or_else(|| {
        CallError::protocol(protocol::INVALID_PARAMS, format!("Unknown task: {}", protocol::echo(&task_id)))
    })?;
    obj.set_str("taskId", &original);
    // `tasks/result` waits for the task to end: as long as the gateway
    // waits for anything from this upstream.
    let timeout = (ask == Ask::Result).then(|| core.upstreams.get(i).spec().max_request_timeout);
    let reply = core.forward_raw(rq, ask.method(), i, obj, out, timeout).await?.reply;
    if ask == Ask::Result
        && let Some(capped) = core.capped(rq.id, cap, &reply, i, None, rq.caller, out)
    {
        return capped;
    }
    let owner = core.upstreams.get(i);
    let up = owner.id();
    // The tasks extension inlines a finished task's result in `tasks/get`
    // (and may in `tasks/update`'s answer): capped as `tasks/result` is.
    if let (protocol::Era::Modern, Some(cap), Some(task)) = (rq.caller.era, cap, reply.result())
        && let Some(inner) = task.get("result")
        && let Some(cut) = core.cap_raw(cap, inner.raw().into(), i, None, rq.caller, out)?
        && let Some(exposed) = tasks::expose_task(task, up)
        && let Some(mut obj) = exposed.checked().object()
        && let Some(cut) = CheckedBox::parse(cut.get(), &core.config().json_limits())
    {
        obj.set("result", cut);
        return Ok(encode::result(rq.id, &obj.to_raw()));
    }
    Ok(core.reply_with(rq.id, i, &reply, |_, r| match ask {
        Ask::Result => {
            r.result_raw()?.text().contains(tasks::RELATED_TASK).then(|| r.result_object())??;
            tasks::expose_related_of(r.result_object()?, up)
        }
        Ask::Get | Ask::Cancel | Ask::Update => tasks::expose_task(r.result()?, up).map(CheckedBox::into_raw),
    }))
}

/// `tasks/list`: the caller's own tasks, across upstreams, each as its
/// upstream's `tasks/get` tells it now. Asking per task (not the
/// upstream's `tasks/list`) costs the session's own tasks only, and never
/// reads other clients' tasks on a shared connection.
pub(crate) async fn list(core: &Core, rq: &Rq<'_>) -> Result<String, CallError> {
    let caller = rq.caller;
    let peer = caller.peer.ok_or_else(|| CallError::protocol(protocol::INVALID_REQUEST, "Tasks need a session"))?;
    let after = params::cursor(rq.params)?
        .map(|c| catalog::decode_tagged_cursor(tasks::CURSOR_TAG, &c))
        .transpose()
        .map_err(|e| CallError::protocol(protocol::INVALID_PARAMS, e.to_string()))?;
    let (page, more) = core.tasks.page(peer.id, after.as_deref(), core.config().gateway.page_size);
    let gets = page.iter().map(|(exposed, i, original)| async move {
        let params = CheckedBox::from_value(&serde_json::json!({ "taskId": &**original }));
        let upstream = core.upstreams.instance(*i, caller.peer).await;
        let called = upstream.call(Request::method("tasks/get", Some(params.checked()))).await;
        (exposed, *i, called.result)
    });
    let mut body = String::from(r#"{"tasks":["#);
    let mut first = true;
    for (exposed, i, result) in futures_util::future::join_all(gets).await {
        let owner = core.upstreams.get(i);
        let upstream = owner.id();
        let task = match result {
            Ok(reply) if reply.result().is_some() => reply.result().and_then(|r| tasks::expose_task(r, upstream)),
            Ok(_) => {
                // The upstream no longer knows it (its ttl passed).
                tracing::debug!(upstream, "A task expired upstream; forgetting it.");
                core.tasks.forget(peer.id, exposed);
                None
            }
            Err(e) => {
                tracing::warn!(upstream, error = %e.message, "tasks/get failed while listing tasks; leaving the task out.");
                None
            }
        };
        if let Some(t) = task {
            if !first {
                body.push(',');
            }
            first = false;
            body.push_str(t.text());
        }
    }
    body.push(']');
    if let (true, Some((last, _, _))) = (more, page.last()) {
        body.push_str(r#","nextCursor":"#);
        body.push_str(
            &serde_json::to_string(&catalog::encode_tagged_cursor(tasks::CURSOR_TAG, last)).expect("a string"),
        );
    }
    body.push('}');
    Ok(encode::result(rq.id, &RawValue::from_string(body).expect("valid JSON built above")))
}
