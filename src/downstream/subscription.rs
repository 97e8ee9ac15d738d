//! What a `subscriptions/listen` stream (2026-07-28) passes on, shared by
//! both transports: the client's filter, its resource subscriptions made
//! through the pipeline (so policy applies to them as to
//! `resources/subscribe`), and the notifications as the stream sends them,
//! each tagged with the subscription's id (the listen request's id).

use crate::protocol::{self, Checked, Classified, Message, Transport};
use crate::routing::{Caller, Gateway, Peer};

/// Most resource URIs one listen stream may subscribe to: each is a
/// `resources/subscribe` through the pipeline (and perhaps upstream) before
/// the stream opens, so one request cannot fan out far.
pub(crate) const MAX_URIS: usize = 64;

/// What a listen stream passes on.
#[derive(Debug, Default)]
pub(crate) struct Filter {
    tools: bool,
    prompts: bool,
    resources: bool,
    /// The URIs subscribed to (those policy allowed).
    uris: Vec<String>,
}

/// Why a `subscriptions/listen` is refused (`-32602`).
#[derive(Debug, thiserror::Error)]
pub(crate) enum FilterError {
    /// No `notifications` object.
    #[error("Invalid params: subscriptions/listen takes a notifications filter (an object)")]
    Missing,
    /// Too many URIs.
    #[error("Invalid params: at most {MAX_URIS} resourceSubscriptions per listen stream")]
    TooManyUris,
}

impl Filter {
    /// The filter of a listen request, and the URIs it asks for (not yet
    /// subscribed: see [`Filter::subscribe`]).
    pub(crate) fn of(params: Option<Checked<'_>>) -> Result<(Filter, Vec<String>), FilterError> {
        let filter =
            params.and_then(|p| p.get("notifications")).and_then(Checked::object).ok_or(FilterError::Missing)?;
        let on = |name: &str| filter.get(name).is_some_and(Checked::is_true);
        let mut uris: Vec<String> = filter
            .get("resourceSubscriptions")
            .and_then(Checked::items)
            .map(|items| items.into_iter().filter_map(|u| u.str().map(|s| s.into_owned())).collect())
            .unwrap_or_default();
        uris.sort_unstable();
        uris.dedup();
        if uris.len() > MAX_URIS {
            return Err(FilterError::TooManyUris);
        }
        let f = Filter {
            tools: on("toolsListChanged"),
            prompts: on("promptsListChanged"),
            resources: on("resourcesListChanged"),
            uris: Vec::new(),
        };
        Ok((f, uris))
    }

    /// Subscribes `peer` to each URI as `resources/subscribe` would (the
    /// same policy and bounds); one it may not see is left out of the
    /// filter, and so of the acknowledgement.
    pub(crate) async fn subscribe(
        &mut self,
        gateway: &Gateway,
        peer: &std::sync::Arc<Peer>,
        transport: Transport,
        uris: Vec<String>,
    ) {
        for uri in uris {
            let params = serde_json::json!({ "uri": uri });
            let text = format!(r#"{{"jsonrpc":"2.0","id":0,"method":"resources/subscribe","params":{params}}}"#);
            let Ok(Ok(Classified::Request(sub))) = gateway.parse(transport, text.as_bytes()).map(Message::classify)
            else {
                continue;
            };
            let caller = Caller {
                transport,
                session: None,
                traceparent: None,
                peer: Some(peer),
                stream: None,
                era: protocol::Era::Legacy,
            };
            let reply = gateway.handle(&sub, &caller).await.unwrap_or_default();
            if protocol::modern::error_code(&reply, sub.id()).is_none() {
                self.uris.push(uri);
            }
        }
    }

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

/// One listen stream's messages: the acknowledgement first, then what its
/// peer is sent and the filter passes, and the result that ends it.
#[derive(Debug)]
pub(crate) struct Listening {
    filter: Filter,
    meta: serde_json::Value,
    id: serde_json::Value,
}

impl Listening {
    /// The stream of listen request `id` (raw JSON) with `filter`.
    pub(crate) fn new(id: &protocol::RawValue, filter: Filter) -> Self {
        let id: serde_json::Value = serde_json::from_str(id.get()).unwrap_or_default();
        let meta = serde_json::json!({ protocol::modern::META_SUBSCRIPTION: &id });
        Listening { filter, meta, id }
    }

    /// `notifications/subscriptions/acknowledged`.
    pub(crate) fn ack(&self) -> String {
        serde_json::json!({
            "jsonrpc": "2.0",
            "method": "notifications/subscriptions/acknowledged",
            "params": { "notifications": self.filter.honoured(), "_meta": self.meta },
        })
        .to_string()
    }

    /// The result that ends the stream (the gateway stops).
    pub(crate) fn end(&self) -> String {
        serde_json::json!({
            "jsonrpc": "2.0",
            "id": self.id,
            "result": { "_meta": self.meta, "resultType": "complete" },
        })
        .to_string()
    }

    /// `m` (a notification the peer was sent) as the stream sends it: with
    /// the subscription's id in `_meta`; `None` when the filter leaves it
    /// out.
    pub(crate) fn tagged(&self, m: &str) -> Option<String> {
        let mut v: serde_json::Value = serde_json::from_str(m).ok()?;
        let method = v.get("method")?.as_str()?;
        if !self.filter.passes(method) {
            return None;
        }
        if !v.get("params").is_some_and(serde_json::Value::is_object) {
            v["params"] = serde_json::json!({});
        }
        v["params"]["_meta"] = self.meta.clone();
        Some(v.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn filter(text: &str) -> Result<(Filter, Vec<String>), FilterError> {
        let b = protocol::CheckedBox::parse(text, &protocol::Limits::default()).unwrap();
        Filter::of(Some(b.checked()))
    }

    #[test]
    fn a_stream_passes_only_what_it_opted_in_to_tagged_with_its_id() {
        let (f, uris) =
            filter(r#"{"notifications":{"toolsListChanged":true,"resourceSubscriptions":["a://1"]}}"#).unwrap();
        assert_eq!(uris, ["a://1"]);
        let id = protocol::RawValue::from_string(r#""L1""#.into()).unwrap();
        let l = Listening::new(&id, f);
        let ack: serde_json::Value = serde_json::from_str(&l.ack()).unwrap();
        assert_eq!(
            ack["params"]["notifications"],
            serde_json::json!({"toolsListChanged": true}),
            "no URI was subscribed"
        );
        assert_eq!(ack["params"]["_meta"]["io.modelcontextprotocol/subscriptionId"], "L1");
        let t = l.tagged(r#"{"jsonrpc":"2.0","method":"notifications/tools/list_changed"}"#).unwrap();
        assert!(t.contains(r#""io.modelcontextprotocol/subscriptionId":"L1""#), "{t}");
        assert!(l.tagged(r#"{"jsonrpc":"2.0","method":"notifications/prompts/list_changed"}"#).is_none());
        assert!(l.tagged(r#"{"jsonrpc":"2.0","method":"notifications/message","params":{}}"#).is_none());
        assert!(
            l.tagged(r#"{"jsonrpc":"2.0","method":"notifications/resources/updated","params":{"uri":"a://1"}}"#)
                .is_none()
        );
    }

    #[test]
    fn a_listen_without_a_filter_or_with_too_many_uris_is_refused() {
        assert!(matches!(filter(r#"{}"#), Err(FilterError::Missing)));
        let many: Vec<String> = (0..=MAX_URIS).map(|i| format!("a://{i}")).collect();
        let text = serde_json::json!({"notifications": {"resourceSubscriptions": many}}).to_string();
        assert!(matches!(filter(&text), Err(FilterError::TooManyUris)));
    }
}
