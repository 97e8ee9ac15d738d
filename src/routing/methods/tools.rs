//! `tools/call`: the gateway's own tool, or the gate, then the owning
//! upstream (as a task when asked), then the result cap.

use opentelemetry::KeyValue;
use opentelemetry::trace::SpanKind;

use crate::error::CallError;
use crate::error::ErrorClass;
use crate::protocol::{self, Reply, encode};
use crate::routing::bridge::to_modern::{Started, Step};
use crate::routing::bridge::{self, Direction, Exchange};
use crate::routing::core::{Core, LIST_SECRET_NAMES, Rq, related};
use crate::routing::gate::{Answer, ToolRef};
use crate::routing::outcome::Outcome;
use crate::routing::{catalog, tasks};
use crate::security::DenyReason;
use crate::security::access::Kind;
use crate::telemetry::Span;
use crate::upstream::State;

/// `tools/call`.
pub(crate) async fn call(core: &Core, rq: &Rq<'_>, out: &mut Outcome) -> Result<Reply, CallError> {
    let (id, caller) = (rq.id, rq.caller);
    let invalid = |m: &str| CallError::protocol(protocol::INVALID_PARAMS, m);
    let params = rq.params.ok_or_else(|| invalid("tools/call needs params"))?;
    let mut obj = params.object().ok_or_else(|| invalid("tools/call params must be an object"))?;
    let name = obj.str("name").ok_or_else(|| invalid("tools/call needs a string `name`"))?;
    // What the client asked for, for the audit record and the log,
    // whatever becomes of the call.
    out.name = Some(name.clone());
    if name == LIST_SECRET_NAMES && core.builtin_listed(caller) {
        return Ok(list_secret_names(core, id).into());
    }
    // A task-augmented call needs a session to bind the task to. Refused
    // before the catalog and the gate: it says nothing about the tool, and
    // a call refused here spends no rate-limit token and enters no history.
    // (2026-07-28 has no `task` member: the server decides, and a modern
    // client's `task` is ignored, as the tasks extension says.)
    let task = obj.contains("task") && caller.era == protocol::Era::Legacy;
    if task && caller.peer.is_none() {
        return Err(CallError::protocol(protocol::INVALID_REQUEST, "Tasks need a session"));
    }
    if let Some(log) = &core.telemetry.audit {
        let args = obj.get("arguments");
        out.arguments_hmac = Some(log.keyed_digest(args.map_or(&b"null"[..], |a| a.text().as_bytes())));
        out.arguments = args.and_then(|a| log.arguments(a.raw()));
    }
    // A 2026-07-28 client's retry of a call the gateway bridged (its
    // state is ours): the call is already under way upstream.
    if caller.era == protocol::Era::Modern
        && let Some(state) = obj.str("requestState")
        && state.starts_with(bridge::state::PREFIX)
    {
        // Boxed: its future would otherwise grow every call's.
        return Box::pin(resume(core, rq, out, &name, &state)).await;
    }
    let mut found = lookup(core, &name);
    if let Some(f) = &found
        && let Some(listed) = f.listed
        // Only a caller who may see the tool waits for it; the gate
        // refuses the others below, as for any tool.
        && core.gate.grants(caller).allows(Kind::Tool, f.ident())
    {
        found = wait_for_first_start(core, f.upstream, &name, listed, out).await?;
    }
    let Some(Found { upstream: i, original, hints, key, bare, quarantined, listed, mirrored }) = found else {
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
    // A 2026-07-28 client's retry confirming a call a `confirm` rule
    // stopped: the rule lets it through if the answer allows it.
    let confirmed = match caller.era {
        protocol::Era::Modern => confirmation(core, rq, &mut obj, &name)
            .map_err(|e| core.deny(caller, i, Some(&original), DenyReason::Rule, out, e))?,
        protocol::Era::Legacy => None,
    };
    // A 2026-07-28 client's retry continuing its 2026-07-28 upstream's
    // input-required exchange (a state the gateway wrapped for this very
    // call) passed the limits and rules on its first leg.
    let continued = caller.era == protocol::Era::Modern
        && confirmed.is_none()
        && obj.str("requestState").is_some_and(|state| {
            let args = obj.get("arguments").map_or(&b"null"[..], |a| a.text().as_bytes());
            let b = bridge::through::binding(&caller.principal_id(), upstream.id(), "tools/call", &original, args);
            core.bridges.continues(&state, &b)
        });
    let arguments = obj.get("arguments");
    let tool = ToolRef { ident, quarantined, confirmed: confirmed.as_deref(), continued };
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
                // A modern client that can be asked is asked to confirm.
                Answer::Confirm { rule, ask, err } => {
                    let caps = client_capabilities(rq.params);
                    if !protocol::declares(
                        caps.as_ref().map(protocol::CheckedBox::checked),
                        "elicitation/create",
                        Some(ask.checked()),
                    ) {
                        return Err(core.deny(caller, i, Some(&original), refusal.reason, out, err));
                    }
                    let binding =
                        bridge::through::confirm_binding(&caller.principal_id(), &name, arguments_text(rq.params));
                    let wait = core.config().bridge.answer_timeout;
                    let Some(asked) = core.bridges.ask_confirmation(&binding, &rule, &ask, wait) else {
                        return Err(core.deny(caller, i, Some(&original), refusal.reason, out, err));
                    };
                    return Ok(encode::result(id, &asked).into());
                }
            });
        }
    }
    // Never a call on a cached definition: one that did not wait was
    // refused above unless a reload opened the tool to this caller since.
    if listed.is_some() {
        let upstream = core.upstreams.get(i);
        out.upstream = Some(upstream.label());
        return Err(upstream.unavailable(&upstream.state()));
    }
    let cap = core.gate.result_cap(ident);
    let upstream = core.upstreams.instance_of(i, upstream, caller.peer).await;
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
    let modern = matches!(&*upstream.state(), State::Ready(r) if r.era() == protocol::Era::Modern);
    // 2026-07-28 has no `task` member; one left in would make a 2025
    // upstream start a task no one tracks.
    if caller.era == protocol::Era::Modern {
        obj.remove("task");
    }
    crate::routing::core::era_meta(&mut obj, caller.era, modern);
    match (modern, caller.era, caller.peer) {
        // A 2025 upstream mints no request state: one that is not ours
        // continues nothing it knows.
        (false, protocol::Era::Modern, _) if obj.contains("requestState") || obj.contains("inputResponses") => {
            return Err(invalid("requestState was not issued by this gateway, and the tool's server issues none"));
        }
        // A 2026-07-28 upstream is told what the 2025 client can answer:
        // the gateway asks it for the upstream (bridge::to_legacy).
        (true, protocol::Era::Legacy, Some(peer)) => {
            let caps = peer.relayable();
            crate::routing::core::set_client_capabilities(&mut obj, &caps, !upstream.spec().roots.is_empty());
        }
        _ => {}
    }
    // Both 2026-07-28: the upstream's state travels wrapped for this caller.
    let wrap = (modern && caller.era == protocol::Era::Modern).then(|| {
        let args = obj.get("arguments").map_or(&b"null"[..], |a| a.text().as_bytes());
        bridge::through::binding(&caller.principal_id(), upstream.id(), "tools/call", &original, args)
    });
    if let Some(b) = &wrap {
        core.bridges.unwrap_state(&mut obj, b)?;
    }
    let (progress, relay) = related(&mut obj, caller, &upstream);
    let params = obj.to_checked();
    // A 2026-07-28 upstream gets the parameters its tool marks with
    // `x-mcp-header` as `Mcp-Param-*` headers too, from the arguments it
    // is sent (the client's own headers were checked against them).
    let args =
        (modern && !mirrored.is_empty()).then(|| obj.get("arguments").and_then(protocol::Checked::value)).flatten();
    let mirrored: Vec<(String, String)> = match args {
        Some(args) => mirrored
            .iter()
            .filter_map(|h| Some((h.name.clone(), protocol::modern::param_value(&args, &h.path)?)))
            .collect(),
        None => Vec::new(),
    };
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
    // A 2026-07-28 client cannot be sent a 2025 upstream's server requests:
    // they come back to it as input-required results (its HTTP upstream's
    // arrive on the call's stream; a stdio one's are refused, as always).
    let bridged = caller.era == protocol::Era::Modern && !modern && upstream.spec().transport.network() == "tcp";
    let (relay, events) = match bridged {
        true => {
            let (relay, events) = bridge::to_modern::relay(relay);
            (Some(relay), Some(events))
        }
        false => (relay, None),
    };
    let call = bridge::Call {
        method: "tools/call",
        timeout: None,
        upstream: upstream.clone(),
        params,
        tool: Some(original.clone()),
        hints,
        progress,
        relay,
        span: route,
        mirrored,
    };
    let called = match events {
        None if !modern || caller.era == protocol::Era::Modern => call.run().await,
        // A 2025 client, a 2026-07-28 upstream: input-required results are
        // asked of the client as 2025 requests.
        None => {
            let spec = upstream.spec();
            let client =
                caller.peer.map(|peer| bridge::to_legacy::Client { peer, stream: caller.stream, roots: &spec.roots });
            let limits = core.config().bridge.clone();
            // Boxed, as the rare paths below: their futures would
            // otherwise grow every call's (copied where it is boxed).
            let called = Box::pin(bridge::to_legacy::send(&call, client, &limits, &core.bridges)).await;
            call.end(&called);
            called
        }
        Some(events) => {
            let caps = client_capabilities(rq.params);
            match Box::pin(bridge::to_modern::start(Box::pin(call.run()), events, caps.as_ref())).await {
                Started::Done(called) => called,
                Started::Asked { call, events, asked } => {
                    let binding = bridge::state::binding(&caller.principal_id(), &name, arguments_text(rq.params));
                    let limits = core.config().bridge.clone();
                    // Nothing is parked while the gateway drains: a parked
                    // call would be lost with it.
                    let slot = match core.draining.is_cancelled() {
                        true => None,
                        false => core.bridges.admit(&caller.principal_id(), Direction::ToModern, &limits),
                    };
                    let Some(slot) = slot else {
                        // The upstream is told, the call cancelled: nothing
                        // waits on what could not be bridged.
                        call.abort();
                        bridge::to_modern::refuse_all(asked, "The client cannot be asked now");
                        let why = match core.draining.is_cancelled() {
                            true => "The gateway is shutting down: call the tool again",
                            false => "Too many calls wait for their clients' input: try again",
                        };
                        return Err(CallError::new(ErrorClass::Overloaded, Some(upstream.id()), why));
                    };
                    let parts = bridge::to_modern::Parts { binding, upstream: upstream.clone(), ix: i, original, cap };
                    let ex = Exchange::new(slot, call, events, asked, parts);
                    return ask(core, rq, ex, &limits).map(Reply::from);
                }
            }
        }
    };
    finish(core, rq, out, called, i, &upstream, &original, cap, task, wrap)
}

/// A 2026-07-28 client's retry of a call bridged to a 2025 upstream: the
/// state must be this gateway's, for this principal and this call (tool
/// and arguments), and its exchange still waiting. The caller must still
/// be granted the tool, and the tool not quarantined (a reload or a pin
/// change may have changed either meanwhile).
async fn resume(core: &Core, rq: &Rq<'_>, out: &mut Outcome, name: &str, state: &str) -> Result<Reply, CallError> {
    let caller = rq.caller;
    let binding = bridge::state::binding(&caller.principal_id(), name, arguments_text(rq.params));
    let (mut ex, _busy) =
        core.bridges.take(state, &binding).map_err(|e| CallError::protocol(protocol::INVALID_PARAMS, e.to_string()))?;
    out.upstream = Some(ex.upstream.label());
    out.tool = Some(ex.original.clone());
    // The caller must still be granted the very tool the call runs, and it
    // not quarantined since (a reload, a pin change): else the held call is
    // cancelled upstream (dropping the exchange does that), and the retry
    // refused like any call of a tool the caller may not see.
    let found = lookup(core, name).filter(|f| f.upstream == ex.ix && f.original == ex.original);
    let refusal = match &found {
        None => Some(DenyReason::Access),
        Some(f) if f.quarantined => Some(DenyReason::Quarantined),
        Some(f) => {
            let ident = crate::security::Ident { key: &f.key, bare: f.bare.then_some(&*f.original) };
            (!core.gate.grants(caller).allows(Kind::Tool, ident)).then_some(DenyReason::Access)
        }
    };
    if let Some(reason) = refusal {
        tracing::info!(upstream = %ex.upstream.id(), "A bridged call's tool is no longer open to its caller; cancelled upstream.");
        ex.slot.outcome = "revoked";
        let (i, original) = (ex.ix, ex.original.clone());
        drop(ex);
        let err = core.unknown(Kind::Tool, name, caller);
        return Err(core.hide(caller, i, Some(&original), reason, out, err));
    }
    let (upstream, i, original, cap, round) = (ex.upstream.clone(), ex.ix, ex.original.clone(), ex.cap, ex.round);
    let responses = rq.params.and_then(|p| p.get("inputResponses"));
    let caps = client_capabilities(rq.params);
    let limits = core.config().bridge.clone();
    match ex.resume(responses, caps.as_ref(), limits.max_rounds).await {
        Ok(Step::Done(called)) => {
            let span = bridge::span(rq.span, Direction::ToModern, round + 1);
            span.set(|| KeyValue::new("mcp_gateway.bridge.outcome", "completed"));
            span.end();
            finish(core, rq, out, called, i, &upstream, &original, cap, false, None)
        }
        Ok(Step::Ask(ex)) => ask(core, rq, ex, &limits).map(Reply::from),
        Ok(Step::Failed(e)) => Err(e),
        Err((ex, e)) => {
            // Its state is still good: the client may send it again.
            let _ = core.bridges.park(*ex, limits.answer_timeout);
            Err(e)
        }
    }
}

/// Parks `ex` and answers its client with what it must answer (an error
/// when its time ran out meanwhile).
fn ask(core: &Core, rq: &Rq<'_>, ex: Exchange, limits: &crate::config::BridgeSection) -> Result<String, CallError> {
    core.bridges.count(Direction::ToModern, "asked");
    let span = bridge::span(rq.span, Direction::ToModern, ex.round + 1);
    span.set(|| KeyValue::new("mcp_gateway.upstream", ex.upstream.id().to_owned()));
    span.set(|| KeyValue::new("mcp_gateway.bridge.outcome", "input_required"));
    span.end();
    let (upstream, round) = (ex.upstream.label(), ex.round);
    let Some(result) = core.bridges.park(ex, limits.answer_timeout) else {
        let m = "The call waited too long for the client's input and was cancelled: call the tool again";
        return Err(CallError::new(ErrorClass::Timeout, Some(&upstream), m));
    };
    tracing::debug!(upstream = %upstream, round, "Asked a 2026-07-28 client for a 2025 upstream's input.");
    Ok(encode::result(rq.id, &result))
}

/// The rule a 2026-07-28 client's retry confirms its call for: its state
/// is a confirmation the gateway asked this principal for this call, and
/// its answer allows the call (both then leave the params). A state that
/// is not one is left for the upstream; an answer that does not allow the
/// call refuses it.
fn confirmation(
    core: &Core,
    rq: &Rq<'_>,
    obj: &mut protocol::Members<'_>,
    name: &str,
) -> Result<Option<String>, CallError> {
    let Some(state) = obj.str("requestState").filter(|s| s.starts_with(bridge::state::WRAPPED)) else {
        return Ok(None);
    };
    let binding = bridge::through::confirm_binding(&rq.caller.principal_id(), name, arguments_text(rq.params));
    let Some(rule) = core.bridges.confirmation(&state, &binding, &rq.caller.principal_id()) else { return Ok(None) };
    let answer = obj.get("inputResponses").and_then(|r| r.get("confirm"));
    if !crate::routing::gate::allows(answer) {
        let rule = rule.split('\0').next().unwrap_or_default();
        tracing::info!(rule = %rule, "A 2026-07-28 client did not confirm a call a rule stopped.");
        return Err(CallError::new(
            ErrorClass::Policy,
            None,
            format!("Refused by rule `{rule}`: the call was not confirmed"),
        ));
    }
    obj.remove("requestState");
    obj.remove("inputResponses");
    Ok(Some(rule))
}

/// The `clientCapabilities` a 2026-07-28 request declares.
fn client_capabilities(params: Option<protocol::Checked<'_>>) -> Option<protocol::CheckedBox> {
    let meta = params?.get("_meta")?;
    meta.get(protocol::modern::META_CAPABILITIES).map(protocol::Checked::to_box)
}

/// The text of a call's `arguments` (`null` when it has none), which a
/// bridged call's state is bound to.
fn arguments_text<'a>(params: Option<protocol::Checked<'a>>) -> &'a [u8] {
    params.and_then(|p| p.get("arguments")).map_or(&b"null"[..], |a| a.text().as_bytes())
}

/// The upstream's reply to a call, as the client gets it: a task's handle,
/// the result under its cap, or the result as it came.
#[allow(clippy::too_many_arguments)]
fn finish(
    core: &Core,
    rq: &Rq<'_>,
    out: &mut Outcome,
    called: crate::upstream::Called,
    i: crate::routing::ix::UpstreamIx,
    upstream: &crate::upstream::Upstream,
    original: &std::sync::Arc<str>,
    cap: Option<crate::config::ResultCap>,
    task: bool,
    wrap: Option<[u8; 32]>,
) -> Result<Reply, CallError> {
    let (id, caller) = (rq.id, rq.caller);
    out.class = called.class;
    out.attempts = called.attempts;
    let reply = called.result?;
    // A 2026-07-28 upstream's input-required result, its state wrapped.
    if let Some(b) = &wrap
        && let Some(result) = core.bridges.wrap_state(&reply, b, core.config().bridge.answer_timeout)?
    {
        return Ok(encode::result(id, &result).into());
    }
    if task
        && let (Some(peer), Some(result)) = (caller.peer, reply.result_object())
        && let Some((created, original)) = tasks::expose_created(result, upstream.id())
    {
        // Its result comes with `tasks/result`, under the same cap.
        core.tasks.insert(peer.id, i, upstream.id(), &original, cap);
        return Ok(encode::result(id, &created).into());
    }
    // The tasks extension (2026-07-28): the upstream made the call a task
    // (`resultType: "task"`, its id at the top). Bound to the caller's peer
    // like a 2025 task is to its session: a stateless peer is its
    // principal's, so the principal's later requests find it.
    // `resultType` first: reading the result's object reads all of it.
    if caller.era == protocol::Era::Modern
        && reply.result_member("resultType").and_then(|t| t.str()).as_deref() == Some("task")
        && let (Some(peer), Some(result)) = (caller.peer, reply.result_object())
        && let Some((created, original)) = tasks::expose_created_modern(result, upstream.id())
    {
        core.tasks.insert(peer.id, i, upstream.id(), &original, cap);
        return Ok(encode::result(id, &created).into());
    }
    if let Some(capped) = core.capped(id, cap, &reply, i, Some(original), caller, out) {
        return capped.map(Reply::from);
    }
    Ok(core.reply_owned(id, i, reply))
}

/// What a call needs of its tool's catalog entry.
struct Found {
    upstream: crate::routing::ix::UpstreamIx,
    original: std::sync::Arc<str>,
    hints: crate::upstream::ToolHints,
    key: String,
    bare: bool,
    quarantined: bool,
    /// A hash of the definition listed, when it came from the warm-start
    /// cache (to tell whether the live one differs).
    listed: Option<u64>,
    /// Its parameters mirrored into headers (`x-mcp-header`; usually none).
    mirrored: std::sync::Arc<[protocol::modern::ParamHeader]>,
}

impl Found {
    fn ident(&self) -> crate::security::Ident<'_> {
        crate::security::Ident { key: &self.key, bare: self.bare.then_some(&*self.original) }
    }
}

/// The tool `name` in the catalog in force.
fn lookup(core: &Core, name: &str) -> Option<Found> {
    core.published.load().get(name).map(|t| Found {
        upstream: t.upstream,
        original: t.original.clone(),
        hints: t.hints,
        key: t.key.clone(),
        bare: t.bare,
        quarantined: t.quarantined,
        listed: t.cached.then(|| text_hash(t.def.text())),
        mirrored: t.mirrored.clone(),
    })
}

/// A tool listed from the warm-start cache: waits (at most
/// `startup_call_wait`, and not past the start of a drain) for its
/// upstream's first start to end and the catalog to show it, then looks
/// the tool up again, so the call is decided on the live definition under
/// its pins. An upstream still starting, or whose start failed, is
/// answered as unavailable; a tool that did not come back is unknown
/// (`None`). At most as many calls wait for one upstream as it would
/// queue (`max_concurrency + max_queue`); more fail at once.
async fn wait_for_first_start(
    core: &Core,
    i: crate::routing::ix::UpstreamIx,
    name: &str,
    listed: u64,
    out: &mut Outcome,
) -> Result<Option<Found>, CallError> {
    let upstream = core.upstreams.get(i);
    let counted = |outcome| {
        core.telemetry.metrics.warm_start_calls.get_or_create(&crate::telemetry::metrics::Outcome { outcome }).inc();
    };
    let most = {
        let spec = upstream.spec();
        spec.max_concurrency + spec.max_queue
    };
    let Some(_waiting) = core.warm.wait_for(upstream.id(), most) else {
        counted("overloaded");
        out.upstream = Some(upstream.label());
        return Err(CallError::new(
            crate::error::ErrorClass::Overloaded,
            Some(upstream.id()),
            format!("upstream `{}` is starting and {most} calls already wait for it; try again shortly", upstream.id()),
        )
        .not_delivered());
    };
    let deadline = tokio::time::Instant::now() + core.config().gateway.startup_call_wait;
    tokio::select! {
        () = upstream.wait_settled(deadline) => {}
        () = core.draining.cancelled() => {}
    }
    // Settled is set after the change it brought is counted: the catalog
    // built from this generation shows the start's outcome.
    let generation = core.changes.generation();
    let left = deadline.saturating_duration_since(tokio::time::Instant::now()).max(REBUILD_PATIENCE);
    core.published.wait_built(generation, left, &core.draining).await;
    let found = lookup(core, name);
    let state = upstream.state();
    let outcome = match &found {
        Some(f) if f.listed.is_some() => "timed_out",
        Some(_) => match core.published.load().get(name).is_some_and(|t| text_hash(t.def.text()) == listed) {
            true => "live",
            false => "changed",
        },
        None if matches!(&*state, State::Ready(_)) => "withdrawn",
        None if upstream.has_settled() => "failed_start",
        None => "timed_out",
    };
    counted(outcome);
    match outcome {
        "live" => tracing::debug!(tool = %name, "A call to a tool listed from the warm-start cache found it live."),
        "changed" => {
            tracing::info!(tool = %name, "A tool listed from the warm-start cache came back changed; the call goes by the live definition.")
        }
        _ => {
            tracing::warn!(tool = %name, upstream = %upstream.id(), outcome, "A call to a tool listed from the warm-start cache found no live tool.")
        }
    }
    if outcome == "timed_out" || outcome == "failed_start" {
        out.upstream = Some(upstream.label());
        return Err(match &*state {
            // Ready, but the catalog has not caught up: as good as starting.
            State::Ready(_) => CallError::new(
                crate::error::ErrorClass::Transport,
                Some(upstream.id()),
                format!("upstream `{}` is ready but its tools are not listed yet; try again shortly", upstream.id()),
            )
            .not_delivered(),
            other => upstream.unavailable(other),
        });
    }
    Ok(found)
}

/// A hash of a definition's text.
fn text_hash(text: &str) -> u64 {
    use std::hash::{BuildHasher as _, BuildHasherDefault};
    BuildHasherDefault::<std::collections::hash_map::DefaultHasher>::default().hash_one(text)
}

/// How long a call that waited gives the catalog to show its upstream's
/// start, even when `startup_call_wait` has passed.
const REBUILD_PATIENCE: std::time::Duration = std::time::Duration::from_secs(1);

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
