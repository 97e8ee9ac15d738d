//! `subscriptions/listen` (2026-07-28): the long-lived stream of the change
//! notifications a modern client opts in to, which replaces the 2025 GET
//! stream and `resources/subscribe`.
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

/// Most resource URIs one listen stream may subscribe to.
const MAX_URIS: usize = crate::routing::peer::MAX_SUBSCRIPTIONS;

/// What a listen stream passes on.
#[derive(Debug, Default)]
struct Filter {
    tools: bool,
    prompts: bool,
    resources: bool,
    uris: Vec<String>,
}

impl Filter {
    fn passes(&self, method: &str) -> bool {
        match method {
            "notifications/tools/list_changed" => self.tools,
            "notifications/prompts/list_changed" => self.prompts,
            "notifications/resources/list_changed" => self.resources,
            // Only the URIs it subscribed to are ever sent.
            "notifications/resources/updated" => !self.uris.is_empty(),
            _ => false,
        }
    }

    /// The `notifications` member of the acknowledgement: what is honoured.
    fn honoured(&self) -> serde_json::Value {
        let mut out = serde_json::Map::new();
        for (on, name) in [
            (self.tools, "toolsListChanged"),
            (self.prompts, "promptsListChanged"),
            (self.resources, "resourcesListChanged"),
        ] {
            if on {
                out.insert(name.into(), true.into());
            }
        }
        if !self.uris.is_empty() {
            out.insert("resourceSubscriptions".into(), self.uris.clone().into());
        }
        out.into()
    }
}

/// Answers `subscriptions/listen` with its stream.
pub(super) async fn listen(app: Arc<App>, principal: Arc<Principal>, msg: protocol::Request, held: Held) -> Response {
    drop(held);
    let id = msg.id();
    let filter = msg.params().and_then(|p| p.get("notifications")).and_then(protocol::Checked::object);
    let Some(filter) = filter else {
        app.rejected("modern_meta");
        return rpc_error(
            StatusCode::BAD_REQUEST,
            Some(id),
            protocol::INVALID_PARAMS,
            "Invalid params: subscriptions/listen takes a notifications filter (an object)",
        );
    };
    let on = |name: &str| filter.get(name).is_some_and(protocol::Checked::is_true);
    let uris: Vec<String> = filter
        .get("resourceSubscriptions")
        .and_then(protocol::Checked::items)
        .map(|items| items.into_iter().filter_map(|u| u.str().map(|s| s.into_owned())).collect())
        .unwrap_or_default();
    if uris.len() > MAX_URIS {
        app.rejected("subscriptions");
        let msg = format!("Invalid params: at most {MAX_URIS} resourceSubscriptions per listen stream");
        return rpc_error(StatusCode::BAD_REQUEST, Some(id), protocol::INVALID_PARAMS, &msg);
    }
    let mut filter = Filter {
        tools: on("toolsListChanged"),
        prompts: on("promptsListChanged"),
        resources: on("resourcesListChanged"),
        uris: Vec::new(),
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
    // Each URI as a `resources/subscribe` of this peer: the same policy
    // and bounds; one it may not see is left out of the acknowledgement.
    for uri in uris {
        let params = serde_json::json!({ "uri": uri });
        let text = format!(r#"{{"jsonrpc":"2.0","id":0,"method":"resources/subscribe","params":{params}}}"#);
        let Ok(Ok(Classified::Request(sub))) =
            app.gateway.parse(Transport::Http, text.as_bytes()).map(Message::classify)
        else {
            continue;
        };
        let caller = Caller {
            transport: Transport::Http,
            session: None,
            traceparent: None,
            peer: Some(&session.client.peer),
            stream: None,
            era: protocol::Era::Legacy,
        };
        let reply = app.gateway.handle(&sub, &caller).await.unwrap_or_default();
        if protocol::modern::error_code(&reply, sub.id()).is_none() {
            filter.uris.push(uri);
        }
    }
    let taken = session.outbox.locked().take();
    let Some(outbox) = taken else {
        return rpc_error(StatusCode::CONFLICT, Some(id), protocol::INTERNAL_ERROR, "The listen stream is gone");
    };
    let meta = serde_json::json!({ protocol::modern::META_SUBSCRIPTION: serde_json::from_str::<serde_json::Value>(id.get()).unwrap_or_default() });
    let ack = serde_json::json!({
        "jsonrpc": "2.0",
        "method": "notifications/subscriptions/acknowledged",
        "params": { "notifications": filter.honoured(), "_meta": meta },
    });
    let end = serde_json::json!({
        "jsonrpc": "2.0",
        "id": serde_json::from_str::<serde_json::Value>(id.get()).unwrap_or_default(),
        "result": { "_meta": meta, "resultType": "complete" },
    });
    tracing::debug!(principal = %principal.identity, "A 2026-07-28 listen stream opened.");
    struct Listening {
        session: Arc<Session>,
        app: Arc<App>,
        outbox: tokio::sync::mpsc::Receiver<String>,
        ack: Option<String>,
        end: Option<String>,
        filter: Filter,
        meta: serde_json::Value,
    }
    impl Drop for Listening {
        fn drop(&mut self) {
            // The peer goes with its stream (its subscriptions end too).
            self.app.sessions.remove(&self.session.id);
        }
    }
    let state = Listening {
        session,
        app: app.clone(),
        outbox,
        ack: Some(ack.to_string()),
        end: Some(end.to_string()),
        filter,
        meta,
    };
    let shutdown = app.shutdown.clone();
    let events = futures_util::stream::unfold(state, move |mut st| {
        let shutdown = shutdown.clone();
        async move {
            if let Some(ack) = st.ack.take() {
                return Some((Ok::<_, std::convert::Infallible>(event(ack)), st));
            }
            loop {
                tokio::select! {
                    m = st.outbox.recv() => {
                        let m = m?;
                        if let Some(m) = tagged(&m, &st.filter, &st.meta) {
                            return Some((Ok(event(m)), st));
                        }
                    }
                    () = tokio::time::sleep(KEEPALIVE) => {
                        // A listening client is not idle.
                        st.session.touch();
                        return Some((Ok(Bytes::from_static(b": keep-alive\n\n")), st));
                    }
                    () = shutdown.cancelled() => {
                        let end = st.end.take()?;
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

fn event(m: String) -> Bytes {
    Bytes::from(super::super::session::sse_event(None, m))
}

/// `m` (a notification the peer was sent) as the listen stream sends it:
/// with the subscription's id in `_meta`; `None` when the filter leaves it
/// out.
fn tagged(m: &str, filter: &Filter, meta: &serde_json::Value) -> Option<String> {
    let mut v: serde_json::Value = serde_json::from_str(m).ok()?;
    let method = v.get("method")?.as_str()?;
    if !filter.passes(method) {
        return None;
    }
    if !v.get("params").is_some_and(serde_json::Value::is_object) {
        v["params"] = serde_json::json!({});
    }
    v["params"]["_meta"] = meta.clone();
    Some(v.to_string())
}
