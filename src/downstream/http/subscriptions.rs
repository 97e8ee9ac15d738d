//! `subscriptions/listen` (2026-07-28) on HTTP: the long-lived stream of
//! the change notifications a modern client opts in to, which replaces the
//! 2025 GET stream and `resources/subscribe` (the filter and tagging are
//! `downstream/subscription.rs`, shared with stdio).
//!
//! Each listen stream is a peer of its own in the session table (`listen
//! <random>`): the catalog task and the upstreams' `resources/updated` reach
//! it like any session, counted against the principal's
//! `max_sessions_per_principal` and `max_sessions`. Its resource
//! subscriptions go through the pipeline as `resources/subscribe` would,
//! so policy applies to them. The stream sends
//! `notifications/subscriptions/acknowledged` first, then only what the
//! filter asked for, each with `_meta["io.modelcontextprotocol/subscriptionId"]`
//! (the listen request's id); it ends when the client closes it, the
//! session table lets it go, or the gateway stops (then with a result).

use super::*;
use crate::downstream::subscription::{Filter, Listening};

/// Answers `subscriptions/listen` with its stream.
pub(super) async fn listen(app: Arc<App>, principal: Arc<Principal>, msg: protocol::Request, held: Held) -> Response {
    drop(held);
    let id = msg.id();
    let (mut filter, uris) = match Filter::of(msg.params()) {
        Ok(f) => f,
        Err(e) => {
            app.rejected("listen_filter");
            return rpc_error(StatusCode::BAD_REQUEST, Some(id), protocol::INVALID_PARAMS, &e.to_string());
        }
    };
    let quota = match app.take_session(&principal) {
        Ok(q) => q,
        Err(r) => return *r,
    };
    let (tx, outbox) = tokio::sync::mpsc::channel(crate::routing::peer::QUEUE);
    let client = app.gateway.connect(tx, None, principal.clone());
    let sid = format!("listen {}", super::super::session::random_id::<16>());
    let legacy = app.legacy.locked().len();
    let version = protocol::modern::MODERN_VERSION.to_owned();
    let Ok(session) = app.sessions.create(sid, version, client, outbox, quota, legacy) else {
        app.too_many_sessions();
        let e = crate::error::CallError::new(crate::error::ErrorClass::Overloaded, None, "Too many sessions");
        return (StatusCode::SERVICE_UNAVAILABLE, json_headers(), e.to_response(id)).into_response();
    };
    session.touch();
    // From here the peer goes with this request: a client that leaves
    // while its subscriptions are made takes it along.
    let gone = Gone { app: app.clone(), id: session.id.clone() };
    filter.subscribe(&app.gateway, &session.client.peer, Transport::Http, uris).await;
    let taken = session.outbox.locked().take();
    let Some(outbox) = taken else {
        return rpc_error(StatusCode::CONFLICT, Some(id), protocol::INTERNAL_ERROR, "The listen stream is gone");
    };
    let listening = Listening::new(id, filter);
    tracing::debug!(principal = %principal.identity, "A 2026-07-28 listen stream opened.");
    struct Stream {
        session: Arc<Session>,
        _gone: Gone,
        outbox: tokio::sync::mpsc::Receiver<String>,
        listening: Listening,
        acked: bool,
        ended: bool,
        /// When a keep-alive is due: reset only by bytes sent, so messages
        /// the filter drops never starve it.
        beat: tokio::time::Instant,
    }
    let beat = tokio::time::Instant::now() + KEEPALIVE;
    let state = Stream { session, _gone: gone, outbox, listening, acked: false, ended: false, beat };
    let shutdown = app.shutdown.clone();
    let events = futures_util::stream::unfold(state, move |mut st| {
        let shutdown = shutdown.clone();
        async move {
            if st.ended {
                return None;
            }
            if !st.acked {
                st.acked = true;
                let ack = st.listening.ack();
                return Some((Ok::<_, std::convert::Infallible>(event(ack)), st));
            }
            loop {
                tokio::select! {
                    m = st.outbox.recv() => {
                        if let Some(m) = st.listening.tagged(&m?) {
                            st.beat = tokio::time::Instant::now() + KEEPALIVE;
                            st.session.touch();
                            return Some((Ok(event(m)), st));
                        }
                    }
                    () = tokio::time::sleep_until(st.beat) => {
                        // A listening client is not idle.
                        st.beat = tokio::time::Instant::now() + KEEPALIVE;
                        st.session.touch();
                        return Some((Ok(Bytes::from_static(b": keep-alive\n\n")), st));
                    }
                    () = shutdown.cancelled(), if !st.ended => {
                        st.ended = true;
                        let end = st.listening.end();
                        return Some((Ok(event(end)), st));
                    }
                    () = st.session.closed.cancelled() => return None,
                }
            }
        }
    });
    let mut resp = sse_response(Body::from_stream(events));
    resp.headers_mut().insert("x-accel-buffering", HeaderValue::from_static("no"));
    resp
}

/// Removes a listen stream's peer from the session table when dropped
/// (its subscriptions end with it).
struct Gone {
    app: Arc<App>,
    id: String,
}

impl Drop for Gone {
    fn drop(&mut self) {
        self.app.sessions.remove(&self.id);
    }
}

fn event(m: String) -> Bytes {
    Bytes::from(super::super::session::sse_event(None, m))
}
