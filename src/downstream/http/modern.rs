//! MCP 2026-07-28 on `/mcp`, beside the 2025 sessions (docs/design.md D13).
//!
//! A POST is modern when its `MCP-Protocol-Version` header names a modern
//! revision, its `_meta` names any revision, or it is `server/discover` or
//! `subscriptions/listen`; everything else is a 2025 request of a session
//! (an `initialize` still opens one). A modern request is checked whole
//! before anything runs ([`check`]): `_meta` with the version and the
//! client capabilities (`-32602`, capped like `initialize`'s), the version
//! header present and equal to `_meta`'s (`-32020`), a revision served
//! (`-32022` with `data.supported`), `Mcp-Method` and `Mcp-Name` equal to
//! the body as the strict scan read it (`-32020`). All with HTTP 400; a
//! method the era does not have is 404 with `-32601`.
//!
//! Stateless requests get the security of sessions: each runs as its
//! principal's *stateless peer*, one per principal on a replica (the
//! session table's entry `stateless <hash>`), with the principal's grants,
//! rate limits and audit identity, and one rule history: a rule scoped to
//! "session" applies per principal to stateless traffic (shared across
//! replicas with `[redis]`, under a key every replica derives alike). A
//! client cannot start afresh by leaving out a session id.

use super::*;

/// Whether `msg`, with `headers`, is a modern request (see the module's
/// doc).
pub(super) fn is_modern(headers: &HeaderMap, msg: &protocol::Request) -> bool {
    // A name made once: looking a header up by `&str` parses the name.
    const VERSION: header::HeaderName = header::HeaderName::from_static(VERSION_HEADER);
    let header = headers.get(VERSION).and_then(|v| protocol::modern::header_value(v.as_bytes()));
    header.is_some_and(|v| protocol::modern::is_modern(&v))
        || matches!(msg.method(), "server/discover" | "subscriptions/listen")
        || protocol::modern::meta_version(msg.params()).is_some()
}

/// A 400 with a JSON-RPC error, counted by `reason` and logged.
fn refuse(app: &App, reason: &'static str, id: &protocol::RawValue, code: i64, message: &str) -> Response {
    app.rejected(reason);
    tracing::debug!(reason, code, "Refused a 2026-07-28 request: {message}");
    rpc_error(StatusCode::BAD_REQUEST, Some(id), code, message)
}

/// The checks of a modern request, before anything runs (see the module's
/// doc), in the order the specification's validation lists them.
#[allow(clippy::result_large_err)]
pub(super) fn check(
    app: &App,
    headers: &HeaderMap,
    msg: &protocol::Request,
    principal: &Principal,
) -> Result<(), Response> {
    use protocol::modern;
    let id = msg.id();
    let params = msg.params();
    let cap = app.gateway.config_now().gateway.max_client_capabilities_bytes;
    let version = match modern::check_meta(params, cap) {
        Ok(v) => v,
        Err(e) => {
            return Err(refuse(app, e.reason(), id, protocol::INVALID_PARAMS, &e.to_string()));
        }
    };
    let header = headers.get(VERSION_HEADER).map(|v| modern::header_value(v.as_bytes()));
    match header {
        None => {
            let msg = "Header mismatch: the MCP-Protocol-Version header is required";
            return Err(refuse(app, "header_mismatch", id, protocol::HEADER_MISMATCH, msg));
        }
        Some(Some(h)) if h == version => {}
        Some(h) => {
            let msg = format!(
                "Header mismatch: MCP-Protocol-Version header value '{}' does not match body value '{}'",
                protocol::echo(h.as_deref().unwrap_or("(invalid)")),
                protocol::echo(&version)
            );
            return Err(refuse(app, "header_mismatch", id, protocol::HEADER_MISMATCH, &msg));
        }
    }
    if !modern::is_modern(&version) {
        app.rejected("protocol_version");
        let reply = modern::unsupported_version(Some(id), &version);
        return Err((StatusCode::BAD_REQUEST, json_headers(), reply).into_response());
    }
    mirrored(app, headers, modern::METHOD_HEADER, "Mcp-Method", id, Some(msg.method()))?;
    if let Some(member) = modern::named_member(msg.method()) {
        let body = params.and_then(|p| p.get(member)).and_then(protocol::Checked::str);
        mirrored(app, headers, modern::NAME_HEADER, "Mcp-Name", id, body.as_deref())?;
        if msg.method() == "tools/call"
            && let Some(name) = body
        {
            params_mirrored(app, headers, id, &name, params, principal)?;
        }
    }
    Ok(())
}

/// Checks that header `name` is there, well formed, and says what the
/// body says (`body`; a body without the member has nothing to match).
#[allow(clippy::result_large_err)]
fn mirrored(
    app: &App,
    headers: &HeaderMap,
    name: &str,
    shown: &str,
    id: &protocol::RawValue,
    body: Option<&str>,
) -> Result<(), Response> {
    let mut values = headers.get_all(name).iter();
    let (Some(value), None) = (values.next(), values.next()) else {
        let msg = format!("Header mismatch: exactly one {shown} header is required");
        return Err(refuse(app, "header_mismatch", id, protocol::HEADER_MISMATCH, &msg));
    };
    let Some(value) = protocol::modern::header_value(value.as_bytes()) else {
        let msg = format!("Header mismatch: the {shown} header has invalid characters or Base64");
        return Err(refuse(app, "header_mismatch", id, protocol::HEADER_MISMATCH, &msg));
    };
    if Some(&*value) != body {
        let msg = format!(
            "Header mismatch: {shown} header value '{}' does not match body value '{}'",
            protocol::echo(&value),
            protocol::echo(body.unwrap_or("(none)"))
        );
        return Err(refuse(app, "header_mismatch", id, protocol::HEADER_MISMATCH, &msg));
    }
    Ok(())
}

/// Checks the `Mcp-Param-*` headers of a call against its arguments, for
/// the parameters the tool (as the caller may see it) mirrors: exactly one
/// header when the argument is there and none when it is not, well formed,
/// and equal to it (integers as integers: `42.0` is `42`, but no rounding).
/// A tool the caller may not see mirrors nothing here: the gate answers
/// for it, as for any unknown tool.
#[allow(clippy::result_large_err)]
fn params_mirrored(
    app: &App,
    headers: &HeaderMap,
    id: &protocol::RawValue,
    tool: &str,
    params: Option<protocol::Checked<'_>>,
    principal: &Principal,
) -> Result<(), Response> {
    let mirrored = app.gateway.mirrored_for(principal, tool);
    if mirrored.is_empty() {
        return Ok(());
    }
    let args = params.and_then(|p| p.get("arguments")).and_then(protocol::Checked::value).unwrap_or_default();
    for h in mirrored.iter() {
        let header = format!("{}{}", protocol::modern::PARAM_HEADER_PREFIX, h.name.to_ascii_lowercase());
        let mut copies = headers.get_all(&header).iter();
        let sent = match (copies.next(), copies.next()) {
            (Some(_), Some(_)) => Some(None),
            (Some(v), None) => Some(protocol::modern::header_value(v.as_bytes())),
            (None, _) => None,
        };
        let shown = format!("Mcp-Param-{}", h.name);
        let msg = match (protocol::modern::param_value(&args, &h.path), sent) {
            (_, Some(None)) => {
                format!("Header mismatch: the {shown} header is sent twice or has invalid characters or Base64")
            }
            (Some(_), None) => format!("Header mismatch: the {shown} header is required (the argument is present)"),
            (None, Some(Some(_))) => format!("Header mismatch: the {shown} header is sent but the argument is absent"),
            (Some(want), Some(Some(got))) if !same_value(&want, &got, h.integer) => format!(
                "Header mismatch: {shown} header value '{}' does not match body value '{}'",
                protocol::echo(&got),
                protocol::echo(&want)
            ),
            _ => continue,
        };
        return Err(refuse(app, "header_mismatch", id, protocol::HEADER_MISMATCH, &msg));
    }
    Ok(())
}

/// Whether a header says what the body says. An integer parameter's body
/// value is its exact decimal text; the header may add `.0…` but must
/// name the same integer, digit for digit (no float rounding: an
/// intermediary routing on it must see what runs).
fn same_value(body: &str, header: &str, integer: bool) -> bool {
    if body == header {
        return true;
    }
    if !integer {
        return false;
    }
    let whole = match header.split_once('.') {
        Some((w, frac)) if !frac.is_empty() && frac.bytes().all(|b| b == b'0') => w,
        Some(_) => return false,
        None => header,
    };
    let digits = whole.strip_prefix('-').unwrap_or(whole);
    !digits.is_empty()
        && digits.bytes().all(|b| b.is_ascii_digit())
        && whole.parse::<i128>().ok() == body.parse::<i128>().ok()
}

/// The session-table id of `principal`'s stateless peer: one per identity
/// *and* what its grants are computed from (how it was established, its
/// groups and scopes), so two credentials of one principal with other
/// groups never share a peer's grants. Never a session id a client could
/// send (it has a space).
fn stateless_id(principal: &Principal) -> String {
    let text = format!("{}\n{:?}\n{:?}\n{:?}", principal.identity, principal.via, principal.groups, principal.scopes);
    format!("stateless {}", hex(&crate::shared::key_hash(&text).0))
}

/// What a principal's stateless peers are known by in Redis: the identity
/// alone, the same on every replica, so its rule history is one whatever
/// credential (groups) each request came with.
fn shared_name(principal: &Principal) -> String {
    format!("stateless {}", hex(&crate::shared::key_hash(&principal.identity).0))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// `principal`'s stateless peer, made on its first modern request. It
/// takes one of the principal's `max_sessions_per_principal` places here
/// and goes like a session when idle for `session_idle_timeout`. It is
/// never ended by anyone (no client can name it): one that went is simply
/// made again.
#[allow(clippy::result_large_err)]
fn stateless_session(app: &App, principal: &Arc<Principal>, rq: &protocol::RawValue) -> Result<Arc<Session>, Response> {
    let id = stateless_id(principal);
    if let Some(s) = app.sessions.get(&id) {
        return Ok(s);
    }
    let quota = app.take_session(principal).map_err(|r| *r)?;
    // Its queue is never read: it is sent no notifications (refresh.rs);
    // the queue exists because a peer has one.
    let (tx, outbox) = tokio::sync::mpsc::channel(1);
    let client = app.gateway.connect(tx, None, principal.clone());
    client.peer.mark_stateless();
    // Named before the table names it (the first name given stays).
    client.peer.share_as(&shared_name(principal));
    let legacy = app.legacy.locked().len();
    let made =
        app.sessions.adopt_stateless(&id, protocol::modern::MODERN_VERSION.to_owned(), client, outbox, quota, legacy);
    match made {
        Ok(s) => {
            tracing::debug!(principal = %principal.identity, "A principal's stateless peer was made.");
            Ok(s)
        }
        Err(_) => {
            app.too_many_sessions();
            let e = crate::error::CallError::new(crate::error::ErrorClass::Overloaded, None, "Too many sessions");
            Err((StatusCode::SERVICE_UNAVAILABLE, json_headers(), e.to_response(rq)).into_response())
        }
    }
}

/// Serves one checked modern request.
pub(super) async fn serve(
    app: Arc<App>,
    principal: Arc<Principal>,
    headers: &HeaderMap,
    msg: protocol::Request,
    held: Held,
    takes_sse: bool,
) -> Response {
    if msg.method() == "subscriptions/listen" {
        return super::subscriptions::listen(app, principal, msg, held).await;
    }
    let session = match stateless_session(&app, &principal, msg.id()) {
        Ok(s) => s,
        Err(r) => return r,
    };
    session.touch();
    let traceparent = headers.get(TRACEPARENT).and_then(|v| v.to_str().ok()).map(str::to_owned);
    let sse =
        takes_sse && (app.gateway.config_now().gateway.response_mode == ResponseMode::Sse || asks_for_progress(&msg));
    if sse {
        return streamed(app.gateway.clone(), session, msg, held, traceparent).await;
    }
    let caller = Caller {
        transport: Transport::Http,
        session: None,
        traceparent: traceparent.as_deref(),
        peer: Some(&session.client.peer),
        stream: None,
        era: protocol::Era::Modern,
    };
    let reply = app.gateway.handle_reply(&msg, &caller).await;
    drop(held);
    match reply {
        Some(protocol::Reply::Text(reply)) => {
            let status = status_of(&reply, msg.id());
            (status, json_headers(), reply).into_response()
        }
        // A forwarded result, sent in its parts.
        Some(spliced) => json_reply(spliced),
        None => rpc_error(StatusCode::OK, Some(msg.id()), REQUEST_CANCELLED, "Request cancelled"),
    }
}

/// The HTTP status of a modern reply: 404 for a method not found, 400 for
/// the modern protocol errors, else 200 (streamable-http.mdx).
fn status_of(reply: &str, id: &protocol::RawValue) -> StatusCode {
    match protocol::modern::error_code(reply, id) {
        Some(protocol::METHOD_NOT_FOUND) => StatusCode::NOT_FOUND,
        Some(
            protocol::HEADER_MISMATCH
            | protocol::MISSING_REQUIRED_CLIENT_CAPABILITY
            | protocol::UNSUPPORTED_PROTOCOL_VERSION,
        ) => StatusCode::BAD_REQUEST,
        _ => StatusCode::OK,
    }
}

/// Whether the request asks for log messages (`_meta` log level): a modern
/// request gets none otherwise.
fn wants_logs(msg: &protocol::Request) -> bool {
    msg.params().and_then(|p| p.get("_meta")).and_then(|m| m.get("io.modelcontextprotocol/logLevel")).is_some()
}

/// A modern request answered as an SSE stream: the messages about the call
/// (progress; log messages only when asked for), then the reply. The call
/// runs inside the response body, so a client that closes the stream
/// cancels it (2026-07-28: no resumption, the close is the cancellation).
async fn streamed(
    gateway: Arc<Gateway>,
    session: Arc<Session>,
    msg: protocol::Request,
    held: Held,
    traceparent: Option<String>,
) -> Response {
    use futures_util::StreamExt as _;
    type Call = std::pin::Pin<Box<dyn std::future::Future<Output = Option<String>> + Send>>;
    let logs = wants_logs(&msg);
    let id = msg.id().to_owned();
    let (tx, rx) = tokio::sync::mpsc::channel::<String>(crate::routing::peer::QUEUE);
    let call: Call = Box::pin(async move {
        let caller = Caller {
            transport: Transport::Http,
            session: None,
            traceparent: traceparent.as_deref(),
            peer: Some(&session.client.peer),
            stream: Some(&tx),
            era: protocol::Era::Modern,
        };
        let reply = gateway.handle(&msg, &caller).await;
        drop(held);
        reply
    });
    enum State {
        Running(Call, tokio::sync::mpsc::Receiver<String>, tokio::time::Instant),
        Draining(Option<String>, tokio::sync::mpsc::Receiver<String>),
        Done,
    }
    /// What the stream yields: an event, or the final reply (kept as text
    /// until it is known whether it opens the response).
    enum Item {
        Event(Bytes),
        Reply(String),
    }
    let keep = move |m: &str| logs || !m.contains(r#""method":"notifications/message""#);
    let event = |m: String| Item::Event(Bytes::from(super::super::session::sse_event(None, m)));
    // A keep-alive is due KEEPALIVE after the last bytes sent: messages the
    // stream drops (log messages not asked for) never put it off.
    let first = State::Running(call, rx, tokio::time::Instant::now() + KEEPALIVE);
    let items = futures_util::stream::unfold(first, move |mut state| async move {
        loop {
            state = match state {
                State::Running(mut call, mut rx, beat) => {
                    tokio::select! {
                        biased;
                        Some(m) = rx.recv() => {
                            if keep(&m) {
                                let beat = tokio::time::Instant::now() + KEEPALIVE;
                                return Some((event(m), State::Running(call, rx, beat)));
                            }
                            State::Running(call, rx, beat)
                        }
                        reply = &mut call => State::Draining(reply, rx),
                        () = tokio::time::sleep_until(beat) => {
                            let beat = tokio::time::Instant::now() + KEEPALIVE;
                            return Some((Item::Event(Bytes::from_static(b": keep-alive\n\n")), State::Running(call, rx, beat)));
                        }
                    }
                }
                State::Draining(reply, mut rx) => match rx.try_recv() {
                    Ok(m) if keep(&m) => return Some((event(m), State::Draining(reply, rx))),
                    Ok(_) => State::Draining(reply, rx),
                    Err(_) => return Some((Item::Reply(reply?), State::Done)),
                },
                State::Done => return None,
            }
        }
    });
    let mut items = Box::pin(items);
    // The headers wait for the first thing to send: a reply that comes
    // first is an error the status must say (404, 400) or a result sent
    // as one event; anything before it opens the stream.
    let first = match items.next().await {
        Some(Item::Reply(reply)) if status_of(&reply, &id) != StatusCode::OK => {
            return (status_of(&reply, &id), json_headers(), reply).into_response();
        }
        Some(Item::Reply(reply)) => Bytes::from(super::super::session::sse_event(None, reply)),
        Some(Item::Event(b)) => b,
        // Cancelled before anything came.
        None => Bytes::new(),
    };
    let rest = items.map(|item| match item {
        Item::Event(b) => b,
        Item::Reply(r) => Bytes::from(super::super::session::sse_event(None, r)),
    });
    let events = futures_util::stream::once(async move { first }).chain(rest).map(Ok::<_, std::convert::Infallible>);
    let mut resp = sse_response(Body::from_stream(events));
    resp.headers_mut().insert("x-accel-buffering", HeaderValue::from_static("no"));
    resp
}
