//! Streamable HTTP at `/mcp`: POST (one message; `initialize` makes a
//! session; requests answered as JSON or as an SSE stream through the
//! session's replay buffer), GET (the session's stream, resumable with
//! `Last-Event-ID`) and DELETE.

use super::*;

/// [`post_mcp`] boxed where it is made. Its future is about 8 KB (it
/// holds the whole routing pipeline down to the upstream call); unboxed,
/// every admission layer's response future moved it by value, and that
/// copy cost ~7,500 instructions per `tools/call` under
/// `scripts/callgrind-hop.sh`. Boxed here, the layers move a pointer.
pub(super) fn post_mcp_boxed(
    app: State<Arc<App>>,
    principal: Extension<Arc<Principal>>,
    request: Request,
) -> std::pin::Pin<Box<dyn std::future::Future<Output = Response> + Send>> {
    Box::pin(post_mcp(app, principal, request))
}

async fn post_mcp(
    State(app): State<Arc<App>>,
    Extension(principal): Extension<Arc<Principal>>,
    request: Request,
) -> Response {
    let (parts, body) = request.into_parts();
    let headers = &parts.headers;
    // Who the client is was settled by the layers, and what it sends is
    // checked on the headers alone: a client whose body would be refused
    // anyway is answered before a byte of its body is read.
    if !media::content_type_is(headers, "application", "json") {
        app.rejected("content_type");
        let r = rpc_error(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            None,
            protocol::INVALID_REQUEST,
            "Content-Type must be application/json",
        );
        return refused_unread(parts.version, body.into_data_stream(), r);
    }
    // The reply is JSON, or an SSE stream for a client that names
    // text/event-stream itself; no Accept at all takes either.
    // Both answers are taken here, so the parsed Accept is not kept across
    // the body's read (it would grow this future, which axum copies).
    let (takes_sse, acceptable) = match media::Accept::from_headers(headers) {
        Some(a) => {
            let sse = a.names("text", "event-stream");
            (sse, sse || a.allows("application", "json"))
        }
        None => (false, true),
    };
    if !acceptable {
        app.rejected("accept");
        let r = rpc_error(
            StatusCode::NOT_ACCEPTABLE,
            None,
            protocol::INVALID_REQUEST,
            "Accept must allow application/json or text/event-stream",
        );
        return refused_unread(parts.version, body.into_data_stream(), r);
    }
    let (msg, held) = match app.read_message(parts.version, body, &principal).await {
        Ok(m) => m,
        Err(r) => return r,
    };
    let sse = takes_sse && app.gateway.config_now().gateway.response_mode == ResponseMode::Sse;
    match msg.classify() {
        // 2026-07-28: stateless, checked whole first (modern.rs).
        Ok(Classified::Request(msg)) if modern::is_modern(headers, &msg) => {
            if let Err(r) = modern::check(&app, headers, &msg, &principal) {
                return r;
            }
            // Boxed: the 2026-07-28 path's future is larger than the 2025
            // one's, and inline it would make every call's future (which
            // axum boxes, copying it) that large.
            Box::pin(modern::serve(app, principal, headers, msg, held, takes_sse)).await
        }
        Ok(Classified::Request(msg)) if msg.method() == "initialize" => {
            let id = msg.id();
            let quota = match app.take_session(&principal) {
                Ok(q) => q,
                Err(r) => return *r,
            };
            let Initialized { reply, version } =
                match app.gateway.initialize(Transport::Http, id, msg.params(), &principal) {
                    Ok(r) => r,
                    Err(refusal) => {
                        app.rejected("capabilities_too_large");
                        return (StatusCode::BAD_REQUEST, json_headers(), refusal.reply).into_response();
                    }
                };
            let (tx, outbox) = tokio::sync::mpsc::channel(crate::routing::peer::QUEUE);
            let identity = principal.identity.clone();
            let client = app.gateway.connect(tx, msg.params(), principal);
            let capabilities = client.peer.relayable_capabilities();
            let claims = Claims::new(&identity, &version, capabilities.get(), unix_now());
            let token = app.keyring.load().seal(&claims);
            let legacy = app.legacy.locked().len();
            let Ok(session) = app.sessions.create(token, version, client, outbox, quota, legacy) else {
                app.too_many_sessions();
                let e = crate::error::CallError::new(crate::error::ErrorClass::Overloaded, None, "Too many sessions");
                return (StatusCode::SERVICE_UNAVAILABLE, json_headers(), e.to_response(id)).into_response();
            };
            if let Some(shared) = app.gateway.shared() {
                let key = crate::shared::key_hash(&session.id);
                let who = app.counted_as(&session.client.peer.principal);
                // Until its first use, a session holds its slot only as long
                // as this replica keeps an unused one.
                let open = app.open_args(false, crate::downstream::session::UNUSED_GRACE);
                match shared.open(key, who, open).await {
                    Ok(crate::shared::Opened::Open) => session.client.peer.set_shared_registered(),
                    Ok(crate::shared::Opened::Full(_)) => {
                        app.sessions.remove(&session.id);
                        let mut refused = *app.take_session_refused(&session.client.peer.principal);
                        *refused.status_mut() = StatusCode::TOO_MANY_REQUESTS;
                        return refused;
                    }
                    Ok(_) => {}
                    Err(e) => {
                        app.fallback("sessions", "local");
                        tracing::warn!(error = %e, "A session was opened without Redis: only this replica's count of the principal's sessions applies.");
                    }
                }
            }
            tracing::debug!(session_version = %session.version, "Downstream session created.");
            let mut resp = reply_response(reply, sse);
            resp.headers_mut()
                .insert(SESSION_HEADER, HeaderValue::from_str(&session.id).expect("a token is a valid header"));
            resp
        }
        Ok(Classified::Request(msg)) => {
            let session = match app.session(headers, Some(msg.id()), &principal).await {
                Ok(s) => s,
                Err(r) => return r,
            };
            session.touch();
            let traceparent = headers.get(TRACEPARENT).and_then(|v| v.to_str().ok()).map(str::to_owned);
            // A request that asks for progress is answered on a stream of its
            // own even in `json` mode, when the client takes one: on the
            // session's GET stream its progress would race its reply, and a
            // client drops progress that comes after the reply.
            if sse || (takes_sse && asks_for_progress(&msg)) {
                return streamed(app.gateway.clone(), session, msg, held, traceparent, app.shutdown.clone());
            }
            let caller = Caller {
                transport: Transport::Http,
                session: Some(&session.id),
                traceparent: traceparent.as_deref(),
                peer: Some(&session.client.peer),
                stream: None,
                era: crate::protocol::Era::Legacy,
            };
            let reply = app.gateway.handle_reply(&msg, &caller).await;
            // The request's bytes are held until its reply is in.
            drop(held);
            match reply {
                Some(reply) => json_reply(reply),
                // Cancelled: no reply (cancellation.mdx). A stream that
                // ends without one says that, when the client takes SSE.
                None if takes_sse => {
                    let mut resp = Response::new(Body::empty());
                    resp.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("text/event-stream"));
                    resp
                }
                None => rpc_error(StatusCode::OK, Some(msg.id()), REQUEST_CANCELLED, "Request cancelled"),
            }
        }
        // 2026-07-28 defines no notification a client sends over HTTP
        // (closing a stream cancels): one without a session is taken and
        // dropped.
        Ok(Classified::Notification(_))
            if !headers.contains_key(SESSION_HEADER)
                && headers
                    .get(VERSION_HEADER)
                    .and_then(|v| protocol::modern::header_value(v.as_bytes()))
                    .is_some_and(|v| protocol::modern::is_modern(&v)) =>
        {
            StatusCode::ACCEPTED.into_response()
        }
        Ok(Classified::Notification(msg)) => match app.session(headers, None, &principal).await {
            Ok(s) => {
                s.touch();
                app.gateway.notify(&msg, &s.client.peer);
                StatusCode::ACCEPTED.into_response()
            }
            Err(r) => r,
        },
        Ok(Classified::Response(msg)) => match app.session(headers, None, &principal).await {
            Ok(s) => {
                s.touch();
                app.gateway.respond(&msg, &s.client.peer);
                StatusCode::ACCEPTED.into_response()
            }
            Err(r) => r,
        },
        Err(e) => (StatusCode::BAD_REQUEST, json_headers(), e.to_response()).into_response(),
    }
}

/// JSON-RPC code of a reply to a request the client cancelled, for a
/// client that takes only JSON (the LSP convention; MCP says to send
/// nothing, which a JSON POST cannot do).
pub(super) const REQUEST_CANCELLED: i64 = -32800;

/// Answers a request as an SSE stream: the messages about the call as they
/// come (progress, its log messages), then the reply. The call runs in its
/// own task and every event goes through the session's replay buffer, so a
/// client that loses the stream resumes it with a GET and `Last-Event-ID`.
/// Losing the stream does not cancel the call (transports.mdx: only
/// `notifications/cancelled` or the session's end does).
pub(super) fn streamed(
    gateway: Arc<Gateway>,
    session: Arc<Session>,
    msg: protocol::Request,
    held: Held,
    traceparent: Option<String>,
    shutdown: CancellationToken,
) -> Response {
    let stream = session.replay.open_stream();
    // Revisions from 2025-11-25 know priming events (SEP-1699); the
    // session's negotiated revision decides, as older clients may choke on
    // an event with empty data.
    if session.version.as_str() >= PRIMING_SINCE {
        session.replay.prime(stream, RECONNECT_AFTER);
    }
    let s = session.clone();
    tokio::spawn(async move {
        let (tx, mut rx) = tokio::sync::mpsc::channel::<String>(crate::routing::peer::QUEUE);
        let caller = Caller {
            transport: Transport::Http,
            session: Some(&s.id),
            traceparent: traceparent.as_deref(),
            peer: Some(&s.client.peer),
            stream: Some(&tx),
            era: crate::protocol::Era::Legacy,
        };
        let handled = gateway.handle(&msg, &caller);
        tokio::pin!(handled);
        let reply = loop {
            tokio::select! {
                biased;
                Some(m) = rx.recv() => drop(s.replay.record(stream, m)),
                r = &mut handled => break r,
            }
        };
        while let Ok(m) = rx.try_recv() {
            s.replay.record(stream, m);
        }
        drop(held);
        if let Some(reply) = reply {
            s.replay.record(stream, reply);
        }
        s.replay.end(stream);
    });
    sse_response(replay_body(session, stream, 0, shutdown))
}

pub(super) fn sse_response(body: Body) -> Response {
    let mut resp = Response::new(body);
    resp.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("text/event-stream"));
    resp.headers_mut().insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    resp
}

/// The events of request stream `stream` after event `after`, read from
/// the session's replay buffer as they come, until the stream ends.
pub(super) fn replay_body(session: Arc<Session>, stream: u64, after: u64, shutdown: CancellationToken) -> Body {
    struct Reader {
        session: Arc<Session>,
        stream: u64,
        last: u64,
        changed: tokio::sync::watch::Receiver<u64>,
        ready: std::collections::VecDeque<Bytes>,
        shutdown: CancellationToken,
    }
    let changed = session.replay.subscribe();
    let reader = Reader { session, stream, last: after, changed, ready: Default::default(), shutdown };
    let events = futures_util::stream::unfold(reader, |mut r| async move {
        loop {
            if let Some(b) = r.ready.pop_front() {
                return Some((Ok::<_, std::convert::Infallible>(b), r));
            }
            // Marked seen before reading, so no event slips between.
            r.changed.borrow_and_update();
            let found = r.session.replay.after(r.stream, r.last);
            if let Some((n, _)) = found.events.last() {
                r.last = *n;
            }
            r.ready.extend(found.events.into_iter().map(|(_, b)| b));
            if !r.ready.is_empty() {
                continue;
            }
            if found.ended {
                return None;
            }
            tokio::select! {
                c = r.changed.changed() => c.ok()?,
                () = tokio::time::sleep(KEEPALIVE) => return Some((Ok(Bytes::from_static(b": keep-alive\n\n")), r)),
                () = r.session.closed.cancelled() => return None,
                () = r.shutdown.cancelled() => return None,
            }
        }
    });
    Body::from_stream(events)
}

/// The first revision whose clients expect a priming event on a request's
/// SSE stream (an id and empty data).
pub(super) const PRIMING_SINCE: &str = "2025-11-25";

/// The `retry` of a priming event: how long a client that lost a request's
/// stream waits before it resumes it.
pub(super) const RECONNECT_AFTER: Duration = Duration::from_secs(1);

/// A comment line this often keeps idle streams open through proxies.
pub(super) const KEEPALIVE: Duration = Duration::from_secs(15);

pub(super) async fn get_mcp(
    State(app): State<Arc<App>>,
    Extension(principal): Extension<Arc<Principal>>,
    headers: HeaderMap,
) -> Response {
    // The stream is all a GET can get: text/event-stream must be named
    // (a wildcard is not enough, as the transport asks of clients).
    if !media::accept_names(&headers, "text", "event-stream") {
        return rpc_error(
            StatusCode::NOT_ACCEPTABLE,
            None,
            protocol::INVALID_REQUEST,
            "Accept must include text/event-stream",
        );
    }
    let session = match app.session(&headers, None, &principal).await {
        Ok(s) => s,
        Err(r) => return r,
    };
    // Resuming: a request stream is replayed here (and followed to its
    // end); the GET stream replays what it sent after the id, then goes on.
    let resume =
        headers.get("last-event-id").and_then(|v| v.to_str().ok()).and_then(super::super::session::parse_event_id);
    if let Some((stream, after)) = resume.filter(|(s, _)| *s != 0) {
        tracing::debug!(stream, after, "Resuming a request stream.");
        return sse_response(replay_body(session, stream, after, app.shutdown.clone()));
    }
    let taken = session.outbox.locked().take();
    let Some(outbox) = taken else {
        return rpc_error(
            StatusCode::CONFLICT,
            None,
            protocol::INVALID_REQUEST,
            "A stream is already open for this session",
        );
    };
    // What this stream sent after the client's last event and may have
    // lost; the queue then has everything not sent yet.
    let replayed = match resume {
        Some((_, after)) => session.replay.after(0, after).events.into_iter().map(|(_, b)| b).collect(),
        None => std::collections::VecDeque::new(),
    };
    let state = StreamState { outbox: Some(outbox), replayed, session, shutdown: app.shutdown.clone() };
    let stream = futures_util::stream::unfold(state, |mut st| async move {
        if let Some(b) = st.replayed.pop_front() {
            return Some((Ok::<_, std::convert::Infallible>(b), st));
        }
        let outbox = st.outbox.as_mut().expect("held until drop");
        tokio::select! {
            m = outbox.recv() => {
                let event = st.session.replay.record(0, m?);
                Some((Ok(event), st))
            }
            () = tokio::time::sleep(KEEPALIVE) => Some((Ok(Bytes::from_static(b": keep-alive\n\n")), st)),
            () = st.shutdown.cancelled() => None,
            () = st.session.closed.cancelled() => None,
        }
    });
    sse_response(Body::from_stream(stream))
}

/// The state of a GET stream; gives the session its queue back on drop, so
/// notifications wait for the next stream.
pub(super) struct StreamState {
    outbox: Option<tokio::sync::mpsc::Receiver<String>>,
    /// Events to send again first (`Last-Event-ID`).
    replayed: std::collections::VecDeque<Bytes>,
    session: Arc<Session>,
    shutdown: CancellationToken,
}

impl Drop for StreamState {
    fn drop(&mut self) {
        *self.session.outbox.locked() = self.outbox.take();
    }
}

pub(super) async fn delete_mcp(
    State(app): State<Arc<App>>,
    Extension(principal): Extension<Arc<Principal>>,
    headers: HeaderMap,
) -> Response {
    // Its token is not rebuilt here for as long as it could be young
    // enough (another replica may still hold the session: design D10).
    let age = app.gateway.config_now().gateway.session_idle_timeout;
    let until = std::time::SystemTime::now().checked_add(age).unwrap_or(std::time::UNIX_EPOCH + age);
    // A session this replica never held is not rebuilt only to be ended:
    // its token, if it could be rebuilt here, is recorded as ended.
    let unseen = headers
        .get(SESSION_HEADER)
        .and_then(|v| v.to_str().ok())
        .filter(|sid| app.sessions.get(sid).is_none() && app.rebuildable(sid, &principal).is_some());
    if let Some(sid) = unseen {
        app.sessions.end(sid, until);
        return end_shared(&app, sid, &principal, age).await;
    }
    let session = match app.session(&headers, None, &principal).await {
        Ok(s) => s,
        Err(r) => return r,
    };
    app.sessions.remove_until(&session.id, until);
    end_shared(&app, &session.id, &principal, age).await
}

/// Ends a session on every replica (`[redis]`) and answers the DELETE.
/// Without an answer from Redis it is ended here (and written to Redis
/// once it answers), counted and logged (`McpGatewaySessionEndNotShared`);
/// with `on_unreachable.revocation = "closed"` the client is also told
/// (503, `Retry-After: 1`): no replica runs its calls meanwhile.
async fn end_shared(app: &App, sid: &str, principal: &Principal, keep: std::time::Duration) -> Response {
    let Some(shared) = app.gateway.shared() else { return StatusCode::OK.into_response() };
    let who = app.counted_as(principal);
    let Err(e) = shared.end(crate::shared::key_hash(sid), who, keep).await else {
        return StatusCode::OK.into_response();
    };
    if shared.on_unreachable().revocation == crate::config::Fallback::Closed {
        app.fallback("revocation", "refused");
        tracing::warn!(error = %e, "A session was ended on this replica; Redis cannot be reached, so every replica refuses its calls until it answers (on_unreachable.revocation = closed).");
        let msg = "Service Unavailable: the session is ended here, but the end cannot be shared now; retry the DELETE shortly";
        let mut r = rpc_error(StatusCode::SERVICE_UNAVAILABLE, None, protocol::INVALID_REQUEST, msg);
        r.headers_mut().insert(axum::http::header::RETRY_AFTER, axum::http::HeaderValue::from_static("1"));
        return r;
    }
    app.fallback("revocation", "local");
    tracing::error!(
        error = %e,
        "A session was ended on this replica only for now: Redis cannot be reached. It is recorded there once Redis answers (tried every 5 s); until then another replica may still serve it."
    );
    StatusCode::OK.into_response()
}

/// Whether a request carries `_meta.progressToken`. Most requests have
/// none, and every request passes here: the params are parsed only when
/// their text can hold one (the name as written, or any escape, which
/// could spell it).
pub(super) fn asks_for_progress(msg: &Message) -> bool {
    let Some(params) = msg.params() else { return false };
    let text = params.text().as_bytes();
    if memchr::memmem::find(text, b"progressToken").is_none() && memchr::memchr(b'\\', text).is_none() {
        return false;
    }
    params.get("_meta").and_then(|m| m.get("progressToken")).is_some_and(|t| !t.is_null())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn asks(text: &str) -> bool {
        asks_for_progress(&Message::parse(text.as_bytes(), &protocol::Limits::default()).unwrap())
    }

    #[test]
    fn a_progress_token_is_found_however_it_is_spelled() {
        let call = |params: &str| format!(r#"{{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{params}}}"#);
        assert!(asks(&call(r#"{"name":"t","_meta":{"progressToken":7}}"#)));
        assert!(asks(&call(r#"{"name":"t","_meta":{"progress\u0054oken":"a"}}"#)), "an escaped name");
        assert!(!asks(&call(r#"{"name":"t","_meta":{"progressToken":null}}"#)));
        assert!(!asks(&call(r#"{"name":"t","arguments":{"progressToken":1}}"#)), "not under _meta");
        assert!(!asks(&call(r#"{"name":"t","arguments":{"path":"C:\\x"}}"#)));
        assert!(!asks(r#"{"jsonrpc":"2.0","id":1,"method":"ping"}"#));
    }
}
