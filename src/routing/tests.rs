//! What the components' unit tests share: a [`Core`] built without its
//! background tasks, sessions, catalogs, and a small MCP server in the
//! test's own runtime (Streamable HTTP on 127.0.0.1, JSON replies only).

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::mpsc;

use super::catalog::{Catalog, Source};
use super::core::Core;
use super::ix::UpstreamIx;
use super::peer::Peer;
use crate::config::{Config, ToolMatcher};
use crate::protocol::{self, CheckedBox};
use crate::security::access::Grants;
use crate::security::auth::{Principal, Via};
use crate::telemetry::Telemetry;
use crate::upstream::Lists;

/// A stdio command no system has: the upstream fails to start at once
/// (no process is made) and is `Down`.
pub(crate) const NO_SUCH_COMMAND: &str = "/nonexistent/mcp-gateway-unit-test-server";

/// `[upstreams.<id>]` of an upstream that never starts, with `extra` keys.
pub(crate) fn down(id: &str, extra: &str) -> String {
    format!("[upstreams.{id}]\ncommand = {NO_SUCH_COMMAND:?}\n{extra}\n")
}

/// `src` as a config file in `dir` (relative paths resolve there).
pub(crate) fn config_in(dir: &std::path::Path, src: &str) -> Config {
    Config::from_str(src, &dir.join("gateway.toml"), &BTreeMap::new()).expect("the test config is valid")
}

/// The components over `config`, its upstreams started, but none of the
/// background tasks (`refresh`, `notes`): a test drives those itself.
pub(crate) fn core_of(config: Config) -> Arc<Core> {
    // Nobody routes the upstreams' notes here; a test feeds `notes_loop`.
    let (notes, _) = mpsc::channel(1);
    Core::start(config, Telemetry::metrics_only(), &reqwest::Client::new(), &notes)
}

/// [`core_of`] a config from `src` (no file of its own needed).
pub(crate) fn core(src: &str) -> Arc<Core> {
    core_of(Config::from_str(src, std::path::Path::new("gateway.toml"), &BTreeMap::new()).expect("valid"))
}

/// An API-key principal named `name`.
pub(crate) fn principal(name: &str) -> Principal {
    Principal::new(name, Via::ApiKey, Box::new([]), Box::new([]))
}

/// Registers a session of `principal` with `core` (the grants the gate
/// gives it, or `grants`); returns it and its stream.
pub(crate) fn session(
    core: &Core,
    principal: Principal,
    grants: Option<Arc<Grants>>,
) -> (Arc<Peer>, mpsc::Receiver<String>) {
    let (tx, rx) = mpsc::channel(64);
    let principal = Arc::new(principal);
    let grants = grants.unwrap_or_else(|| core.gate.grants_of(&principal));
    let metrics = core.telemetry.metrics.clone();
    let redactor = core.config().redactor.clone();
    let peer = core.sessions.register(|id| Peer::new(id, tx, None, metrics, principal, grants, redactor));
    (peer, rx)
}

/// Every message queued on a session's stream now, parsed.
pub(crate) fn drain(rx: &mut mpsc::Receiver<String>) -> Vec<serde_json::Value> {
    std::iter::from_fn(|| rx.try_recv().ok()).map(|m| serde_json::from_str(&m).expect("JSON")).collect()
}

/// The `method`s of `messages`.
pub(crate) fn methods(messages: &[serde_json::Value]) -> Vec<&str> {
    messages.iter().map(|m| m["method"].as_str().unwrap_or("")).collect()
}

/// Scanned JSON.
pub(crate) fn checked(text: &str) -> CheckedBox {
    CheckedBox::parse(text, &protocol::Limits::default()).expect("valid JSON")
}

/// A tool list of `names`.
pub(crate) fn tool_defs(names: &[&str]) -> Arc<[CheckedBox]> {
    names.iter().map(|n| checked(&format!(r#"{{"name":"{n}","inputSchema":{{"type":"object"}}}}"#))).collect()
}

/// A catalog of `lists` per upstream (index, id), as `catalog_loop`
/// would build it from ready upstreams (prefixed unless `core`'s spec
/// says otherwise).
pub(crate) fn catalog(core: &Core, lists: &[(usize, &Lists)]) -> Catalog {
    let all = ToolMatcher::all();
    let table = core.upstreams.now();
    let sources: Vec<Source<'_>> = lists
        .iter()
        .map(|&(i, lists)| {
            let u = &table[UpstreamIx::new(i)];
            Source {
                upstream: UpstreamIx::new(i),
                id: u.id(),
                prefix: u.spec().prefix,
                filter: &all,
                lists,
                hidden: false,
                hidden_tools: &[],
                cached: false,
            }
        })
        .collect();
    let namespaces: Vec<&str> = table.all().map(|u| u.id()).collect();
    Catalog::build(&sources, 128, &namespaces)
}

/// Polls `done` until it holds; fails the test after 10 s. For tests on
/// real time (with the network), not paused.
pub(crate) async fn eventually(what: &str, done: impl Fn() -> bool) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while !done() {
        assert!(tokio::time::Instant::now() < deadline, "timed out waiting until {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// An MCP server on 127.0.0.1 in the test's runtime: it answers
/// `initialize` with `capabilities`, each list method from `lists` (by the
/// list's key), a method named in `replies` ([`Mock::with_replies`]) with
/// that result, and anything else with `{}`; it records every method it
/// is sent, and its params. It stops with the runtime.
#[derive(Debug, Clone)]
pub(crate) struct Mock {
    /// Its endpoint.
    pub(crate) url: String,
    seen: Arc<Mutex<Vec<(String, serde_json::Value)>>>,
}

#[derive(Debug)]
struct MockState {
    capabilities: serde_json::Value,
    lists: serde_json::Value,
    replies: serde_json::Value,
    seen: Arc<Mutex<Vec<(String, serde_json::Value)>>>,
}

impl Mock {
    pub(crate) async fn start(capabilities: serde_json::Value, lists: serde_json::Value) -> Mock {
        Self::with_replies(capabilities, lists, serde_json::json!({})).await
    }

    /// [`Mock::start`], answering each method `replies` names with the
    /// result it gives that method.
    pub(crate) async fn with_replies(
        capabilities: serde_json::Value,
        lists: serde_json::Value,
        replies: serde_json::Value,
    ) -> Mock {
        use axum::routing::post;
        let seen = Arc::new(Mutex::new(Vec::new()));
        let state = Arc::new(MockState { capabilities, lists, replies, seen: seen.clone() });
        let app = axum::Router::new()
            .route(
                "/mcp",
                post(|axum::extract::State(m): axum::extract::State<Arc<MockState>>, body: String| async move {
                    Self::answer(&m, &body)
                })
                .get(|| async { axum::http::StatusCode::METHOD_NOT_ALLOWED })
                .delete(|| async { axum::http::StatusCode::OK }),
            )
            .with_state(state);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/mcp", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await });
        Mock { url, seen }
    }

    /// `[upstreams.<id>]` of this server, with `extra` keys.
    pub(crate) fn section(&self, id: &str, extra: &str) -> String {
        format!("[upstreams.{id}]\nurl = {:?}\n{extra}\n", self.url)
    }

    /// The methods it was sent, in order.
    pub(crate) fn seen(&self) -> Vec<String> {
        self.seen.lock().unwrap().iter().map(|(m, _)| m.clone()).collect()
    }

    /// The params of every `method` it was sent, in order (`null` when
    /// a message had none).
    pub(crate) fn params_of(&self, method: &str) -> Vec<serde_json::Value> {
        self.seen.lock().unwrap().iter().filter(|(m, _)| m == method).map(|(_, p)| p.clone()).collect()
    }

    fn answer(m: &MockState, body: &str) -> axum::response::Response {
        use axum::response::IntoResponse;
        let msg: serde_json::Value = serde_json::from_str(body).unwrap_or_default();
        let method = msg["method"].as_str().unwrap_or_default().to_owned();
        m.seen.lock().unwrap().push((method.clone(), msg.get("params").cloned().unwrap_or_default()));
        let Some(id) = msg.get("id") else { return axum::http::StatusCode::ACCEPTED.into_response() };
        let list =
            |key: &str| serde_json::json!({ key: m.lists.get(key).cloned().unwrap_or_else(|| serde_json::json!([])) });
        let result = match method.as_str() {
            "initialize" => serde_json::json!({
                "protocolVersion": protocol::LATEST_VERSION,
                "capabilities": m.capabilities,
                "serverInfo": { "name": "mock", "version": "0" },
            }),
            "tools/list" => list("tools"),
            "prompts/list" => list("prompts"),
            "resources/list" => list("resources"),
            "resources/templates/list" => list("resourceTemplates"),
            other => m.replies.get(other).cloned().unwrap_or_else(|| serde_json::json!({})),
        };
        let reply = serde_json::json!({ "jsonrpc": "2.0", "id": id, "result": result });
        ([(axum::http::header::CONTENT_TYPE, "application/json")], reply.to_string()).into_response()
    }
}

/// A request of `peer`'s session over HTTP (anonymous without one).
pub(crate) fn caller(peer: Option<&Arc<Peer>>) -> super::Caller<'_> {
    super::Caller {
        transport: protocol::Transport::Http,
        session: None,
        traceparent: None,
        peer,
        stream: None,
        era: protocol::Era::Legacy,
    }
}
