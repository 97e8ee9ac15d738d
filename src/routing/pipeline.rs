//! The request pipeline: one request in, one reply out. Around the method
//! family that answers it: the in-flight count (for drain), the session's
//! in-flight registration (for `notifications/cancelled`), the server span,
//! secret masking of the reply, and then the metrics and audit record of
//! the [`Outcome`] the family handed back.

use std::sync::atomic::{AtomicUsize, Ordering};

use opentelemetry::KeyValue;

use super::caller::Caller;
use super::core::{Core, Rq};
use super::methods;
use super::outcome::Outcome;
use crate::error::{CallError, ErrorClass};
use crate::protocol::{self, Checked, Message, Reply};
use crate::telemetry::Span;
use crate::telemetry::audit::{self, Record};
use crate::telemetry::metrics::{DurationLabels, MethodLabels, RequestLabels, UpstreamLabels};
use crate::telemetry::metrics::{class_label, method_label};

/// Most characters of a requested name or URI an audit record keeps.
const AUDIT_NAME_MAX_CHARS: usize = 1024;

/// Requests being handled now (for graceful drain).
#[derive(Debug, Default)]
pub(crate) struct InFlight(AtomicUsize);

impl InFlight {
    /// How many.
    pub(crate) fn now(&self) -> usize {
        self.0.load(Ordering::Acquire)
    }

    fn enter(&self) -> Entered<'_> {
        self.0.fetch_add(1, Ordering::AcqRel);
        Entered(&self.0)
    }
}

/// Counts a request in flight until dropped.
struct Entered<'a>(&'a AtomicUsize);

impl Drop for Entered<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

/// A handled request: the reply (none when the client cancelled it) and
/// what handling it came to.
#[derive(Debug)]
pub(crate) struct Handled {
    /// The reply to send, masked.
    pub(crate) reply: Option<Reply>,
    /// For the metrics and the audit record.
    pub(crate) outcome: Outcome,
}

/// Handles one request (not `initialize`) and returns the reply, or `None`
/// when the client cancelled it (`notifications/cancelled`): the spec says
/// a cancelled request gets no reply. Counted, traced and audited.
pub(crate) async fn handle(
    core: &Core,
    in_flight: &InFlight,
    msg: &protocol::Request,
    caller: &Caller<'_>,
) -> Option<Reply> {
    let _entered = in_flight.enter();
    let started = tokio::time::Instant::now();
    let span = server_span(core, msg, caller);
    let handled = run(core, msg, caller, &span).await;
    let reply_bytes = handled.reply.as_ref().map_or(0, Reply::len);
    // The JSON-RPC code of an error reply (a prefix compare for a result;
    // a spliced reply is a result).
    let code = handled.reply.as_ref().and_then(Reply::text).and_then(|r| protocol::modern::error_code(r, msg.id()));
    if let Some(code) = code.filter(|_| span.is_on()) {
        span.set(|| KeyValue::new("rpc.response.status_code", code.to_string()));
    }
    standard(core, msg, caller, &handled.outcome, started, code);
    record(core, msg, caller, &span, handled.outcome, started, reply_bytes);
    span.end();
    handled.reply
}

/// The request through its method family, cancellable by the client.
async fn run(core: &Core, msg: &protocol::Request, caller: &Caller<'_>, span: &Span) -> Handled {
    let id = msg.id();
    let mut outcome = Outcome::default();
    // Stateless requests on HTTP share their principal's peer, so their ids
    // need not be unique; closing the response stream cancels them, not
    // `notifications/cancelled` (2026-07-28 transports).
    let registers = caller.era == protocol::Era::Legacy || caller.transport != protocol::Transport::Http;
    let call = match caller.peer.filter(|_| registers).map(|p| p.start_call(id)) {
        Some(None) => {
            let e = CallError::protocol(
                protocol::INVALID_REQUEST,
                format!("Request id {} is already in flight", protocol::echo(id.get())),
            );
            outcome.class = Some(e.class);
            span.outcome(Some(e.class), || e.message.clone());
            return Handled { reply: Some(e.to_response(id).into()), outcome };
        }
        Some(Some(c)) => Some(c),
        None => None,
    };
    let rq = Rq { id, params: msg.params(), caller, span };
    let dispatch = methods::dispatch(core, msg.method(), &rq, &mut outcome);
    let result = match &call {
        Some(c) => tokio::select! {
            r = dispatch => Some(r),
            // Dropping the dispatch drops the upstream call, which sends
            // its own notifications/cancelled upstream.
            () = c.token.cancelled() => None,
        },
        None => Some(dispatch.await),
    };
    drop(call);
    let reply = match result {
        Some(Ok(reply)) => {
            // An error the family answered with, or a tool's result with
            // `isError: true` (`tool_error`): `error.type` and an error
            // status, as the conventions ask.
            if let Some(class) = outcome.class {
                span.outcome(Some(class), || match class {
                    ErrorClass::ToolError => "the tool's result has isError: true".into(),
                    _ => class.as_str().into(),
                });
            }
            Some(reply)
        }
        Some(Err(e)) => {
            tracing::debug!(method = %protocol::echo(msg.method()), class = %e.class, "Request failed: {}.", e.message);
            // A refusal hidden as "unknown" stays `policy` for metrics and
            // audit; everything else is what the client is told.
            if outcome.class != Some(ErrorClass::Policy) {
                outcome.class = Some(e.class);
            }
            if let Some(reason) = e.refused {
                outcome.policy.push(format!("reply_refused:{reason}"));
            }
            outcome.cause = e.cause;
            span.outcome(outcome.class, || e.message.clone());
            Some(e.to_response(id).into())
        }
        None => {
            tracing::debug!(method = %protocol::echo(msg.method()), "Request cancelled by the client.");
            outcome.cancelled = true;
            span.set(|| KeyValue::new("error.type", "cancelled"));
            None
        }
    };
    let reply = reply.map(|r| mask(core, r, &mut outcome));
    let reply = match caller.era {
        protocol::Era::Legacy => reply,
        protocol::Era::Modern => reply.map(|r| modern(core, msg.method(), id, r)),
    };
    Handled { reply, outcome }
}

/// A reply as the 2026-07-28 era has it: `resultType` on results, cache
/// hints on lists and reads, `-32602` for a missing resource.
fn modern(core: &Core, method: &str, id: &protocol::RawValue, reply: Reply) -> Reply {
    use crate::upstream::ListKind;
    use protocol::modern::{self, Completion};
    let kind = match method {
        "tools/list" => Some(ListKind::Tools),
        "prompts/list" => Some(ListKind::Prompts),
        "resources/list" | "resources/read" => Some(ListKind::Resources),
        "resources/templates/list" => Some(ListKind::Templates),
        _ => None,
    };
    let how = match kind {
        // The gateway's own TTL, or the shortest a modern upstream gave
        // for that list (a merged list is as fresh as its stalest part).
        Some(kind) => {
            let own = u64::try_from(core.config().gateway.list_ttl.as_millis()).unwrap_or(u64::MAX);
            let ttl_ms = core.upstreams.all().iter().filter_map(|u| u.list_ttl(kind)).fold(own, u64::min);
            Completion::List { ttl_ms }
        }
        None => Completion::Plain,
    };
    match reply {
        Reply::Text(reply) => Reply::Text(modern::complete(modern::modern_error(reply, id), id, how)),
        // A forwarded result (never an error), completed in its parts.
        spliced if how == Completion::Plain => spliced.complete_plain(id),
        spliced => Reply::Text(modern::complete(spliced.into_string(), id, how)),
    }
}

/// Masks secret values (the secrets file's) in a reply to the client:
/// results, errors and lists alike, whatever the upstream put there. A
/// spliced reply is searched in place and stays spliced when nothing
/// matches; one that holds a value is copied into one text and masked.
fn mask(core: &Core, reply: Reply, out: &mut Outcome) -> Reply {
    let redactor = &core.mask();
    if redactor.is_empty() {
        return reply;
    }
    let reply = match reply {
        Reply::Text(text) => text,
        spliced if !redactor.finds_in(&spliced.parts()) => return spliced,
        spliced => spliced.into_string(),
    };
    Reply::Text(mask_text(core, redactor, reply, out))
}

/// [`mask`] of one text.
fn mask_text(core: &Core, redactor: &crate::config::Redactor, reply: String, out: &mut Outcome) -> String {
    let (masked, n) = redactor.redact_counted(&reply);
    let masked = match masked {
        std::borrow::Cow::Borrowed(_) => return reply,
        std::borrow::Cow::Owned(m) => m,
    };
    let upstream = out.upstream.clone().unwrap_or_else(|| core.no_label.clone());
    core.telemetry
        .metrics
        .secrets_masked
        .get_or_create(&UpstreamLabels { upstream: upstream.clone() })
        .inc_by(n as u64);
    tracing::warn!(upstream = %upstream, masked = n, "Masked secret values in a reply.");
    out.policy.push(format!("secrets:masked:{n}"));
    masked
}

/// The span of a client request: a child of the client's trace context
/// (the `traceparent` header, else `params._meta.traceparent`).
fn server_span(core: &Core, msg: &Message, caller: &Caller<'_>) -> Span {
    let tracer = &core.telemetry.tracer;
    if !tracer.enabled() {
        return Span::NONE;
    }
    // Names a client made up are cut short, like in error messages.
    let method = protocol::echo(msg.method());
    let params = msg.params().and_then(Checked::object);
    let member = |m: &str| params.as_ref().and_then(|p| p.str(m)).map(|v| protocol::echo(&v).into_owned());
    // The span's target (OpenTelemetry MCP conventions): the tool or the
    // prompt; never a resource URI, which goes in an attribute only.
    let (tool, prompt, uri) = match &*method {
        "tools/call" => (member("name"), None, None),
        "prompts/get" => (None, member("name"), None),
        "resources/read" | "resources/subscribe" | "resources/unsubscribe" => (None, None, member("uri")),
        _ => (None, None, None),
    };
    let from_meta =
        || params.as_ref()?.get("_meta")?.get(crate::telemetry::trace::TRACEPARENT)?.str().map(|t| t.into_owned());
    let traceparent = caller.traceparent.map(str::to_owned).or_else(from_meta);
    let name = match tool.as_ref().or(prompt.as_ref()) {
        Some(t) => format!("{method} {t}"),
        None => method.clone().into_owned(),
    };
    let mut attrs = vec![
        KeyValue::new("mcp.method.name", method.into_owned()),
        KeyValue::new("network.transport", caller.transport.network()),
    ];
    if let Some(v) = version_of(caller) {
        attrs.push(KeyValue::new("mcp.protocol.version", v));
    }
    if let Some(id) = &msg.id {
        attrs.push(KeyValue::new("jsonrpc.request.id", id.get().trim_matches('"').to_owned()));
    }
    // A 2026-07-28 request stands alone: no session, whatever it carried.
    if let Some(s) = caller.session.filter(|_| caller.era == protocol::Era::Legacy) {
        attrs.push(KeyValue::new("mcp.session.id", audit::SessionDigest::of(s).to_string()));
    }
    if let Some(t) = tool {
        attrs.push(KeyValue::new("gen_ai.tool.name", t));
        attrs.push(KeyValue::new("gen_ai.operation.name", "execute_tool"));
    }
    if let Some(p) = prompt {
        attrs.push(KeyValue::new("gen_ai.prompt.name", p));
    }
    if let Some(u) = uri {
        attrs.push(KeyValue::new("mcp.resource.uri", u));
    }
    tracer.server_span(name, traceparent.as_deref(), attrs)
}

/// `mcp.server.operation.duration` of one handled request (when the
/// standard metrics are on): bounded attributes only.
fn standard(
    core: &Core,
    msg: &Message,
    caller: &Caller<'_>,
    out: &Outcome,
    started: tokio::time::Instant,
    code: Option<i64>,
) {
    let standard = &core.telemetry.metrics.standard;
    if !standard.enabled() {
        return;
    }
    let op = crate::telemetry::standard::Op {
        method: method_label(msg.method()),
        version: version_of(caller),
        error: if out.cancelled { Some("cancelled") } else { out.class.map(ErrorClass::as_str) },
        status: code.map(crate::telemetry::standard::status_label),
        tool: out.tool.as_ref(),
        upstream: out.upstream.as_ref(),
        transport: caller.transport.network(),
    };
    standard.server_operation(started.elapsed(), &op);
}

/// `mcp.protocol.version` of a request: 2026-07-28 for a stateless one, a
/// 2025 session's own revision.
fn version_of(caller: &Caller<'_>) -> Option<&'static str> {
    match caller.era {
        protocol::Era::Modern => Some(protocol::modern::MODERN_VERSION),
        protocol::Era::Legacy => caller.peer.and_then(|p| p.version.get().copied()),
    }
}

/// Metrics and the audit record of one handled request.
fn record(
    core: &Core,
    msg: &Message,
    caller: &Caller<'_>,
    span: &Span,
    out: Outcome,
    started: tokio::time::Instant,
    reply_bytes: usize,
) {
    let elapsed = started.elapsed();
    let m = &core.telemetry.metrics;
    let method = method_label(msg.method());
    let upstream = out.upstream.clone().unwrap_or_else(|| core.no_label.clone());
    let tool = out.tool.clone().unwrap_or_else(|| core.no_label.clone());
    let class = if out.cancelled { "cancelled" } else { class_label(out.class) };
    m.requests.get_or_create(&RequestLabels { upstream: upstream.clone(), method, tool: tool.clone(), class }).inc();
    m.request_duration
        .get_or_create(&DurationLabels { upstream: upstream.clone(), method, tool })
        .observe(elapsed.as_secs_f64());
    let sizes = MethodLabels { upstream, method };
    m.request_bytes.get_or_create(&sizes).observe(msg.params().map_or(0, |p| p.text().len()) as f64);
    m.response_bytes.get_or_create(&sizes).observe(reply_bytes as f64);
    let Some(log) = &core.telemetry.audit else { return };
    // What can read or change data is audited; lists and pings would drown
    // the log.
    if !matches!(method, "tools/call" | "prompts/get" | "resources/read") {
        return;
    }
    log.record(Record {
        time: audit::Stamp::of(started),
        session: caller.session.map(audit::SessionDigest::of),
        principal: caller.peer.map(|p| p.principal.identity.to_string()),
        transport: caller.transport.as_str(),
        method,
        // What the client asked for, bounded: a URI can be megabytes.
        name: out.name.map(|n| protocol::cut(&n, AUDIT_NAME_MAX_CHARS).into_owned()),
        upstream: out.upstream,
        tool: out.tool,
        arguments_hmac: out.arguments_hmac,
        arguments: out.arguments,
        class,
        cause: out.cause.map(ErrorClass::as_str),
        is_error: out.class == Some(ErrorClass::ToolError),
        latency_ms: elapsed.as_secs_f64() * 1000.0,
        attempts: out.attempts,
        trace_id: span.trace_id(),
        policy: out.policy,
        tags: out.tags,
    });
}

#[cfg(test)]
mod tests;
