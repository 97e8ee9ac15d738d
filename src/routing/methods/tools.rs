//! `tools/call`: the gateway's own tool, or the gate, then the owning
//! upstream (as a task when asked), then the result cap.

use opentelemetry::KeyValue;
use opentelemetry::trace::SpanKind;

use crate::error::CallError;
use crate::protocol::{self, encode};
use crate::routing::core::{Core, LIST_SECRET_NAMES, Rq, related};
use crate::routing::gate::{Answer, ToolRef};
use crate::routing::outcome::Outcome;
use crate::routing::{catalog, tasks};
use crate::security::access::Kind;
use crate::telemetry::Span;
use crate::upstream::{Request, State};

/// `tools/call`.
pub(crate) async fn call(core: &Core, rq: &Rq<'_>, out: &mut Outcome) -> Result<String, CallError> {
    let (id, caller) = (rq.id, rq.caller);
    let invalid = |m: &str| CallError::protocol(protocol::INVALID_PARAMS, m);
    let params = rq.params.ok_or_else(|| invalid("tools/call needs params"))?;
    let mut obj = params.object().ok_or_else(|| invalid("tools/call params must be an object"))?;
    let name = obj.str("name").ok_or_else(|| invalid("tools/call needs a string `name`"))?;
    // What the client asked for, for the audit record and the log,
    // whatever becomes of the call.
    out.name = Some(name.clone());
    if name == LIST_SECRET_NAMES && core.builtin_listed(caller) {
        return Ok(list_secret_names(core, id));
    }
    // A task-augmented call needs a session to bind the task to. Refused
    // before the catalog and the gate: it says nothing about the tool, and
    // a call refused here spends no rate-limit token and enters no history.
    let task = obj.contains("task");
    if task && caller.peer.is_none() {
        return Err(CallError::protocol(protocol::INVALID_REQUEST, "Tasks need a session"));
    }
    if let Some(log) = &core.telemetry.audit {
        let args = obj.get("arguments");
        out.arguments_hmac = Some(log.keyed_digest(args.map_or(&b"null"[..], |a| a.text().as_bytes())));
        out.arguments = args.and_then(|a| log.arguments(a.raw()));
    }
    let found = core
        .published
        .load()
        .get(&name)
        .map(|t| (t.upstream, t.original.clone(), t.hints, t.key.clone(), t.bare, t.quarantined));
    let Some((i, original, hints, key, bare, quarantined)) = found else {
        // Counted against the upstream whose namespace it is (down, or the
        // tool is gone), when there is one.
        out.upstream = name
            .split_once(catalog::SEPARATOR)
            .and_then(|(ns, _)| core.upstreams.find(ns))
            .map(|i| core.upstreams.get(i).label());
        return Err(core.unknown(Kind::Tool, &name, caller));
    };
    let ident = crate::security::Ident { key: &key, bare: bare.then_some(&*original) };
    let upstream = core.upstreams.get(i);
    let spec = upstream.spec_full();
    let local = match &spec.transport {
        crate::config::TransportSpec::Stdio { cwd, .. } => Some(cwd.as_path()),
        _ => None,
    };
    let arguments = obj.get("arguments");
    let tool = ToolRef { ident, quarantined };
    match core.gate.check_tool(caller, &name, tool, upstream.id(), arguments, local).await {
        Ok(admitted) => {
            out.policy.extend(admitted.policy);
            out.tags = admitted.tags;
        }
        Err(refusal) => {
            out.policy.extend(refusal.policy);
            out.tags = refusal.tags;
            return Err(match refusal.answer {
                Answer::AsUnknown => {
                    let err = core.unknown(Kind::Tool, &name, caller);
                    core.hide(caller, i, Some(&original), refusal.reason, out, err)
                }
                Answer::Told(err) => core.deny(caller, i, Some(&original), refusal.reason, out, err),
            });
        }
    }
    let cap = core.gate.result_cap(ident);
    let upstream = &*core.upstreams.instance_of(i, upstream, caller.peer).await;
    // A task-augmented call only to an upstream that runs tools as tasks
    // (one that does not would ignore `task` and answer a plain result the
    // client does not expect). Known only once the instance is ready, so
    // after the gate: this refusal has spent the call's token.
    if task
        && let State::Ready(r) = &*upstream.state()
        && !r.has_capability("tasks.requests.tools.call")
    {
        return Err(CallError::protocol(
            protocol::INVALID_PARAMS,
            format!("{name} cannot run as a task: upstream `{}` does not support tasks", upstream.id()),
        ));
    }
    out.upstream = Some(upstream.label());
    out.tool = Some(original.clone());
    obj.set_str("name", &original);
    let (progress, relay) = related(&mut obj, caller, upstream);
    let params = obj.to_checked();
    let route = match rq.span.is_on() {
        true => rq.span.child(
            "route",
            SpanKind::Internal,
            vec![
                KeyValue::new("mcp_gateway.upstream", upstream.id().to_owned()),
                KeyValue::new("gen_ai.tool.name", original.to_string()),
            ],
        ),
        false => Span::NONE,
    };
    let req = Request {
        method: "tools/call",
        params: Some(params.checked()),
        tool: Some(&original),
        hints,
        progress: progress.as_deref(),
        relay: relay.as_ref(),
        span: &route,
        timeout: None,
    };
    let called = upstream.call(req).await;
    out.class = called.class;
    out.attempts = called.attempts;
    route.set(|| KeyValue::new("mcp_gateway.attempts", i64::from(called.attempts)));
    route.outcome(called.class, || match &called.result {
        Err(e) => e.message.clone(),
        Ok(_) => "failed".into(),
    });
    route.end();
    let reply = called.result?;
    if task
        && let (Some(peer), Some(result)) = (caller.peer, reply.result_object())
        && let Some((created, original)) = tasks::expose_created(result, upstream.id())
    {
        // Its result comes with `tasks/result`, under the same cap.
        core.tasks.insert(peer.id, i, upstream.id(), &original, cap);
        return Ok(encode::result(id, &created));
    }
    if let Some(capped) = core.capped(id, cap, &reply, i, Some(&original), caller, out) {
        return capped;
    }
    Ok(core.reply_with(id, i, &reply, |_, _| None))
}

/// `gateway__list_secret_names`: the names in the secrets file.
fn list_secret_names(core: &Core, id: &serde_json::value::RawValue) -> String {
    let names = serde_json::to_string(&core.config().secret_names).expect("strings serialize");
    let result = serde_json::json!({
        "content": [{ "type": "text", "text": names }],
        "structuredContent": { "names": core.config().secret_names },
    });
    let result = serde_json::value::to_raw_value(&result).expect("valid");
    encode::result(id, &result)
}
