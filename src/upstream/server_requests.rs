//! Requests the upstream sends the gateway: `ping`, `roots/list`, and
//! sampling and elicitation relayed to the client whose call they came
//! with; what the gateway declares it can answer.

use super::inbox::{Held, Hold};
use super::*;

impl Upstream {
    /// Answers requests the upstream sends us: `ping`; `roots/list` from
    /// the config (the connection serves every client, so no client's
    /// roots); sampling and elicitation go to the client whose call they
    /// came with, and are refused when no call can be told (a stdio or GET
    /// stream message on a shared connection: the gateway never guesses).
    pub(super) fn answer(&self, conn: &Arc<Connection>, m: Message, related: Option<(Arc<dyn Relay>, Arc<Hold>)>) {
        let Some(id) = m.id.clone() else { return };
        let (relay, hold) = related.unzip();
        let mut responder = Responder { conn: conn.clone(), id, upstream: self.label.clone(), held: None };
        // A session's own connection: everything it asks is that client's.
        if let Some(isolated) = &self.isolated
            && m.method() != "ping"
        {
            return isolated.relay.request(m, responder);
        }
        match (m.method(), relay) {
            ("ping", _) => {
                let body = encode::result(&responder.id, &RawValue::from_string("{}".into()).expect("valid"));
                responder.send(body);
            }
            ("roots/list", _) => {
                let roots: Vec<_> = self.spec().roots.iter().map(|r| serde_json::json!({ "uri": r })).collect();
                let result = serde_json::value::to_raw_value(&serde_json::json!({ "roots": roots })).expect("valid");
                let body = encode::result(&responder.id, &result);
                responder.send(body);
            }
            ("sampling/createMessage" | "elicitation/create", Some(relay)) => {
                // The call's deadline waits while its client answers.
                responder.held = hold.map(Held::new);
                relay.request(m, responder)
            }
            (other, _) => {
                let other = crate::protocol::echo(other);
                tracing::warn!(upstream = %self.id(), method = %other, "Refused a request from the upstream that no client call can be tied to.");
                responder.error(crate::protocol::METHOD_NOT_FOUND, &format!("Method not found: {other}"));
            }
        }
    }

    /// What the gateway declares to the upstream: roots when the config
    /// gives some; sampling and elicitation only where a request can be
    /// tied to the call that caused it (on that call's Streamable HTTP
    /// response stream).
    pub(super) fn client_capabilities(&self) -> Box<RawValue> {
        if let Some(isolated) = &self.isolated {
            return isolated.capabilities.clone();
        }
        let mut caps = serde_json::Map::new();
        if self.spec().isolation == crate::config::Isolation::PerSession {
            // The catalog connection of a per-session upstream: it declares
            // all a session's own connection may, so servers that list tools
            // by capability (server-everything) list them all. Calls never
            // go over it; its own requests get what a shared one's get.
            caps.insert("roots".into(), serde_json::json!({}));
            caps.insert("sampling".into(), serde_json::json!({}));
            caps.insert("elicitation".into(), serde_json::json!({ "form": {}, "url": {} }));
            return serde_json::value::to_raw_value(&caps).expect("valid");
        }
        if !self.spec().roots.is_empty() {
            caps.insert("roots".into(), serde_json::json!({}));
        }
        if matches!(self.spec().transport, TransportSpec::Http { .. }) {
            caps.insert("sampling".into(), serde_json::json!({}));
            caps.insert("elicitation".into(), serde_json::json!({ "form": {}, "url": {} }));
        }
        serde_json::value::to_raw_value(&caps).expect("valid")
    }
}

/// Answers one request an upstream sent, under the upstream's own id.
#[derive(Debug)]
pub struct Responder {
    conn: Arc<Connection>,
    id: Box<RawValue>,
    upstream: Name,
    /// Holds the deadline of the call the request came with until answered.
    held: Option<Held>,
}

impl Responder {
    /// The upstream that asked.
    pub fn upstream(&self) -> &Name {
        &self.upstream
    }

    /// The upstream's id of the request, raw.
    pub fn id(&self) -> &RawValue {
        &self.id
    }

    /// Relays a client's response (its `result` or `error`).
    pub fn reply(self, response: &Message) {
        let body = match (response.result_raw(), response.error()) {
            (Some(r), _) => encode::forward(&self.id, r),
            (None, Some(e)) => encode::raw_error(&self.id, e.raw()),
            (None, None) => encode::error(Some(&self.id), crate::protocol::INTERNAL_ERROR, "empty response", None),
        };
        self.send(body);
    }

    /// Answers with `result` (a client's input response, bridged).
    pub fn result(self, result: &RawValue) {
        let body = encode::result(&self.id, result);
        self.send(body);
    }

    /// Answers with a JSON-RPC error.
    pub fn error(self, code: i64, message: &str) {
        let body = encode::error(Some(&self.id), code, message, None);
        self.send(body);
    }

    fn send(self, body: String) {
        tokio::spawn(async move { self.conn.respond(body).await });
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use serde_json::json;

    use super::super::tests::{Frozen, NO_SUCH_COMMAND, conn, fixture, spec, start};

    /// What `body`'s upstream declares, as JSON.
    async fn declared(body: &str) -> serde_json::Value {
        let h = start(spec(body));
        let caps = serde_json::from_str(h.up.client_capabilities().get()).unwrap();
        h.up.shutdown().await;
        caps
    }

    #[tokio::test(start_paused = true)]
    async fn the_gateway_declares_only_what_it_can_answer() {
        let stdio = format!("command = {NO_SUCH_COMMAND:?}");
        let relayed = json!({ "sampling": {}, "elicitation": { "form": {}, "url": {} } });
        assert_eq!(declared(&stdio).await, json!({}));
        assert_eq!(declared(&format!("{stdio}\nroots = [\"file:///srv\"]")).await, json!({ "roots": {} }));
        // Only a Streamable HTTP call stream ties a request to its call.
        assert_eq!(declared("url = \"http://127.0.0.1:9/mcp\"").await, relayed);
        let mut all = relayed;
        all["roots"] = json!({});
        assert_eq!(declared(&format!("{stdio}\nisolation = \"per-session\"")).await, all);
    }

    #[tokio::test(start_paused = true)]
    async fn the_upstreams_requests_are_answered_or_refused() {
        let _frozen = Frozen::new();
        let h = start(fixture("roots = [\"file:///srv\"]\nhealth.interval = \"0s\""));
        let ready = h.ready(1).await;
        let reply = conn(&ready).request("test/ask", None, Duration::from_secs(5)).await.expect("answered");
        let answers = reply.result().and_then(|r| r.get("answers")).and_then(|a| a.value()).expect("answers");
        assert_eq!(
            answers,
            json!([
                { "jsonrpc": "2.0", "id": "r1", "result": {} },
                { "jsonrpc": "2.0", "id": "r2", "result": { "roots": [{ "uri": "file:///srv" }] } },
                // A shared stdio connection cannot tell whose call it is.
                { "jsonrpc": "2.0", "id": "r3", "error": { "code": -32601, "message": "Method not found: sampling/createMessage" } },
            ])
        );
        h.stop().await;
    }
}
