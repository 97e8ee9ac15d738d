//! The legacy HTTP+SSE transport (2024-11-05): GET `/sse` opens a session
//! whose first event names its POST endpoint; POSTs to `/messages` get 202
//! and every answer comes on the stream. The session ends with the stream.

use super::*;

/// A legacy HTTP+SSE session: its stream carries every message to the
/// client, replies included.
#[derive(Debug)]
pub(super) struct LegacySession {
    out: tokio::sync::mpsc::Sender<String>,
    /// Who opened it; only they may post to it.
    principal: Arc<Principal>,
    /// Registered with the gateway at `initialize`.
    client: std::sync::Mutex<Option<Arc<crate::routing::Client>>>,
    /// Its place in its principal's sessions.
    _quota: Held,
}

/// GET `/sse`: a legacy session; the stream's first event is the endpoint
/// to POST to.
pub(super) async fn get_sse(State(app): State<Arc<App>>, Extension(principal): Extension<Arc<Principal>>) -> Response {
    let quota = match app.take_session(&principal) {
        Ok(q) => q,
        Err(r) => return *r,
    };
    let (out, rx) = tokio::sync::mpsc::channel::<String>(crate::routing::peer::QUEUE);
    let id = super::super::session::random_id::<32>();
    {
        let mut legacy = app.legacy.locked();
        if legacy.len() + app.sessions.len() >= app.gateway.config().gateway.max_sessions {
            drop(legacy);
            app.too_many_sessions();
            return rpc_error(StatusCode::SERVICE_UNAVAILABLE, None, protocol::INVALID_REQUEST, "Too many sessions");
        }
        let session = LegacySession { out, principal, client: Default::default(), _quota: quota };
        legacy.insert(id.clone(), Arc::new(session));
        app.legacy_gauge(legacy.len());
    }
    tracing::debug!("Legacy HTTP+SSE session opened.");
    let endpoint = Bytes::from(format!("event: endpoint\ndata: /messages?sessionId={id}\n\n"));
    let state = LegacyStream { app, id, rx, endpoint: Some(endpoint) };
    let stream = futures_util::stream::unfold(state, |mut st| async move {
        if let Some(e) = st.endpoint.take() {
            return Some((Ok::<_, std::convert::Infallible>(e), st));
        }
        tokio::select! {
            m = st.rx.recv() => Some((Ok(Bytes::from(super::super::session::sse_event(None, m?))), st)),
            () = tokio::time::sleep(KEEPALIVE) => Some((Ok(Bytes::from_static(b": keep-alive\n\n")), st)),
            () = st.app.shutdown.cancelled() => None,
        }
    });
    sse_response(Body::from_stream(stream))
}

/// A legacy session's stream; the session ends when it is dropped.
pub(super) struct LegacyStream {
    app: Arc<App>,
    id: String,
    rx: tokio::sync::mpsc::Receiver<String>,
    endpoint: Option<Bytes>,
}

impl Drop for LegacyStream {
    fn drop(&mut self) {
        let gone = {
            let mut legacy = self.app.legacy.locked();
            let gone = legacy.remove(&self.id);
            self.app.legacy_gauge(legacy.len());
            gone
        };
        let client = gone.and_then(|s| s.client.locked().take());
        if let Some(c) = client {
            c.peer.close();
        }
        tracing::debug!("Legacy HTTP+SSE session closed.");
    }
}

#[derive(Debug, serde::Deserialize)]
pub(super) struct LegacyQuery {
    #[serde(rename = "sessionId")]
    session_id: String,
}

/// POST `/messages?sessionId=…`: 202 at once; the answer goes on the
/// session's stream.
pub(super) async fn post_messages(
    State(app): State<Arc<App>>,
    Extension(principal): Extension<Arc<Principal>>,
    query: Result<axum::extract::Query<LegacyQuery>, axum::extract::rejection::QueryRejection>,
    request: Request,
) -> Response {
    let (parts, body) = request.into_parts();
    let headers = &parts.headers;
    let Ok(axum::extract::Query(q)) = query else {
        let r = rpc_error(StatusCode::BAD_REQUEST, None, protocol::INVALID_REQUEST, "sessionId is required");
        return refused_unread(parts.version, body.into_data_stream(), r);
    };
    let session = app.legacy.locked().get(&q.session_id).cloned();
    let session = session.filter(|s| app.same_principal(&s.principal, &principal));
    let Some(session) = session else {
        let r = rpc_error(StatusCode::NOT_FOUND, None, protocol::INVALID_REQUEST, "Session not found");
        return refused_unread(parts.version, body.into_data_stream(), r);
    };
    let (msg, held) = match app.read_message(parts.version, body, &principal).await {
        Ok(m) => m,
        Err(r) => return r,
    };
    let client = session.client.locked().clone();
    match (msg.classify(), client) {
        (Ok(Classified::Request(msg)), _) if msg.method() == "initialize" => {
            let reply = match app.gateway.initialize(Transport::Http, msg.id(), msg.params(), &session.principal) {
                Ok(initialized) => initialized.reply,
                Err(refusal) => {
                    app.rejected("capabilities_too_large");
                    send_legacy(&session, refusal.reply);
                    return (StatusCode::ACCEPTED, "Accepted").into_response();
                }
            };
            let client = Arc::new(app.gateway.connect(session.out.clone(), msg.params(), session.principal.clone()));
            if let Some(old) = session.client.locked().replace(client) {
                old.peer.close();
            }
            send_legacy(&session, reply);
        }
        (Ok(Classified::Request(msg)), Some(client)) => {
            let gateway = app.gateway.clone();
            let traceparent = headers.get(TRACEPARENT).and_then(|v| v.to_str().ok()).map(str::to_owned);
            tokio::spawn(async move {
                let caller = Caller {
                    transport: Transport::Http,
                    session: Some(&q.session_id),
                    traceparent: traceparent.as_deref(),
                    peer: Some(&client.peer),
                    stream: None,
                    era: crate::protocol::Era::Legacy,
                };
                let reply = gateway.handle(&msg, &caller).await;
                drop(held);
                if let Some(reply) = reply {
                    // Waits for room: a reply is never dropped, and a client
                    // that does not read holds only its own calls.
                    let _ = session.out.send(reply).await;
                }
            });
        }
        (Ok(Classified::Request(msg)), None) => {
            send_legacy(
                &session,
                encode::error(Some(msg.id()), protocol::INVALID_REQUEST, "Send initialize first", None),
            );
        }
        (Ok(Classified::Notification(msg)), Some(c)) => app.gateway.notify(&msg, &c.peer),
        (Ok(Classified::Response(msg)), Some(c)) => app.gateway.respond(&msg, &c.peer),
        (Ok(_), None) => {}
        (Err(e), _) => return (StatusCode::BAD_REQUEST, json_headers(), e.to_response()).into_response(),
    }
    (StatusCode::ACCEPTED, "Accepted").into_response()
}

/// Queues a message on a legacy session's stream without waiting.
pub(super) fn send_legacy(session: &LegacySession, msg: String) {
    if session.out.try_send(msg).is_err() {
        tracing::debug!("Dropped a reply: the legacy session's queue is full.");
    }
}
