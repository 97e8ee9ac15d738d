//! A connection over real links: a scripted stdio server ([`SCRIPT`]) that
//! holds requests, answers them out of order and says when it was told to
//! cancel, and an HTTP server on 127.0.0.1 that forgets sessions. Where
//! deadlines matter time is paused and frozen ([`Frozen`]), so only the test
//! moves it; progress is handed to the inbox as the link's reader would.

use std::sync::atomic::{AtomicBool, AtomicU64};
use std::time::Duration;

use axum::http::{HeaderMap, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::json;
use tokio::sync::mpsc;

use super::super::inbox::Event;
use super::super::stdio::{Launch, StdioLink};
use super::super::tests::{Frozen, settle, spec};
use super::*;
use crate::config::{Redactor, TransportSpec};
use crate::telemetry::Metrics;

/// A stdio server (python3, standard library only):
/// - `initialize`: accepts the offered revision;
/// - `test/echo`: answers `{"id", "params"}` (what it received);
/// - `test/hold`: holds the request until `params.of` requests are held
///   (never, without `of`), then answers them last first with
///   `{"id", "tag"}`;
/// - `notifications/cancelled`: sends `test/cancelled` with the same params;
/// - the notification `test/exit`: exits.
const SCRIPT: &str = r#"
import json, sys

held = []

def send(m):
    sys.stdout.write(json.dumps(m) + "\n")
    sys.stdout.flush()

while True:
    line = sys.stdin.readline()
    if not line:
        break
    m = json.loads(line)
    method, i, p = m.get("method"), m.get("id"), m.get("params") or {}
    if method == "initialize":
        send({"jsonrpc": "2.0", "id": i, "result": {"protocolVersion": p["protocolVersion"], "capabilities": {}}})
    elif method == "test/echo":
        send({"jsonrpc": "2.0", "id": i, "result": {"id": i, "params": p}})
    elif method == "test/hold":
        held.append((i, p.get("tag")))
        if p.get("of") and len(held) >= p["of"]:
            for hi, tag in reversed(held):
                send({"jsonrpc": "2.0", "id": hi, "result": {"id": hi, "tag": tag}})
            held = []
    elif method == "notifications/cancelled":
        send({"jsonrpc": "2.0", "method": "test/cancelled", "params": p})
    elif method == "test/exit":
        sys.exit(0)
"#;

/// A connection to [`SCRIPT`] as upstream `x`, and the events its inbox
/// reports (read here, not by a supervisor).
fn scripted() -> (Arc<Connection>, mpsc::Receiver<Event>) {
    let spec = spec(&format!("command = \"python3\"\nargs = [\"-c\", '''{SCRIPT}''']"));
    let TransportSpec::Stdio { command, args, env, cwd, shutdown_grace, stderr_level } = &spec.transport else {
        unreachable!()
    };
    let (inbox, events) = inbox();
    let launch = Launch {
        command,
        args,
        env,
        cwd,
        grace: *shutdown_grace,
        max_bytes: 1 << 20,
        redactor: &Redactor::default(),
        stderr_level: *stderr_level,
        last_stderr: Default::default(),
    };
    let link = StdioLink::spawn(&launch, &inbox).expect("python3 starts");
    (Arc::new(Connection::new(inbox, Link::Stdio(Arc::new(link)), caps())), events)
}

fn inbox() -> (Arc<Inbox>, mpsc::Receiver<Event>) {
    let (tx, events) = mpsc::channel(8);
    (Inbox::new(Arc::from("x"), tx, protocol::Limits::default(), &Metrics::new()), events)
}

fn caps() -> Box<RawValue> {
    RawValue::from_string("{}".into()).expect("valid")
}

fn params(v: &serde_json::Value) -> CheckedBox {
    CheckedBox::from_value(v)
}

/// The reply's `result` as a value.
fn result(reply: Reply) -> serde_json::Value {
    let msg = reply.expect("a reply");
    serde_json::from_str(msg.result().expect("a result").text()).expect("JSON")
}

/// The next event, within an hour (of paused time, once a [`Frozen`] lets go).
async fn next_event(events: &mut mpsc::Receiver<Event>) -> Event {
    tokio::time::timeout(Duration::from_secs(3600), events.recv()).await.expect("an event").expect("open")
}

/// The params of the `test/cancelled` the server sends back.
async fn cancelled(events: &mut mpsc::Receiver<Event>) -> serde_json::Value {
    match next_event(events).await {
        Event::Notification(n) if n.method() == "test/cancelled" => {
            serde_json::from_str(n.params().expect("params").text()).expect("JSON")
        }
        other => panic!("not the echo of a cancellation: {other:?}"),
    }
}

/// Moves the frozen clock and lets the woken tasks run.
async fn advance(d: Duration) {
    tokio::time::advance(d).await;
    for _ in 0..20 {
        tokio::task::yield_now().await;
    }
}

fn progress(token: &str) -> String {
    format!(
        r#"{{"jsonrpc":"2.0","method":"notifications/progress","params":{{"progressToken":{token},"progress":1}}}}"#
    )
}

#[tokio::test]
async fn each_call_gets_its_own_reply_under_a_fresh_gateway_id() {
    let (c, _events) = scripted();
    let hold = |tag: &str| params(&json!({ "of": 3, "tag": tag }));
    let (a, b, d) = (hold("a"), hold("b"), hold("d"));
    let t = Duration::from_secs(60);
    let (ra, rb, rd) = tokio::join!(
        c.request("test/hold", Some(a.checked()), t),
        c.request("test/hold", Some(b.checked()), t),
        c.request("test/hold", Some(d.checked()), t),
    );
    // Answered last first; each caller still gets the one for its request.
    let got: Vec<_> = [ra, rb, rd].map(result).into_iter().collect();
    let tags: Vec<_> = got.iter().map(|r| r["tag"].as_str().expect("a tag").to_owned()).collect();
    assert_eq!(tags, ["a", "b", "d"]);
    let mut ids: Vec<_> = got.iter().map(|r| r["id"].as_u64().expect("a numeric id")).collect();
    ids.sort_unstable();
    assert_eq!(ids, [1, 2, 3], "the gateway numbers its requests itself");
    assert!(c.inbox.lock().is_empty(), "no call left pending");
    c.link.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn a_caller_that_goes_away_cancels_its_request_upstream() {
    let _frozen = Frozen::new();
    let (c, mut events) = scripted();
    let call = tokio::spawn({
        let c = c.clone();
        async move { c.request("test/hold", None, Duration::from_secs(60)).await }
    });
    assert!(settle(|| c.inbox.is_pending(1)).await, "the request was sent");
    call.abort();
    assert!(call.await.expect_err("aborted").is_cancelled());
    assert!(!c.inbox.is_pending(1), "the dropped call removed its entry");
    assert_eq!(cancelled(&mut events).await, json!({ "requestId": 1, "reason": "caller went away" }));
    c.link.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn a_call_without_a_reply_times_out_at_its_deadline_and_is_cancelled() {
    let _frozen = Frozen::new();
    let (c, mut events) = scripted();
    let call = tokio::spawn({
        let c = c.clone();
        async move { c.request("test/hold", None, Duration::from_secs(5)).await }
    });
    assert!(settle(|| c.inbox.is_pending(1)).await);
    advance(Duration::from_millis(4999)).await;
    assert!(!call.is_finished(), "the deadline is not yet");
    advance(Duration::from_millis(1)).await;
    assert!(call.is_finished(), "timed out at the deadline");
    let err = call.await.expect("ran").expect_err("timed out");
    assert_eq!((err.class, err.not_delivered), (ErrorClass::Timeout, false));
    assert_eq!(err.message, "upstream `x` did not answer test/hold within 5.0s");
    assert!(!c.inbox.is_pending(1));
    assert_eq!(cancelled(&mut events).await["requestId"], 1);
    c.link.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn progress_moves_the_deadline_but_never_past_the_hard_maximum() {
    let _frozen = Frozen::new();
    let (c, _events) = scripted();
    let t0 = Instant::now();
    let secs = Duration::from_secs;
    let clock = Clock { deadline: t0 + secs(10), extend: secs(10), hard: t0 + secs(25), started: t0 };
    let call = tokio::spawn({
        let c = c.clone();
        async move {
            let mut clock = clock;
            let related = Related { progress: Some("\"p1\""), relay: None, params: &[] };
            let reply = c.request_within("test/hold", None, &mut clock, related, None).await;
            (reply, clock)
        }
    });
    assert!(settle(|| c.inbox.is_pending(1)).await);
    // At 8s: the deadline becomes 18s.
    advance(secs(8)).await;
    c.inbox.deliver(progress("\"p1\"").as_bytes());
    advance(secs(9)).await;
    assert!(!call.is_finished(), "alive at 17s, past the first deadline");
    // At 17s: 27s would pass the hard maximum; 25s it is. Progress for
    // another token does nothing.
    c.inbox.deliver(progress("\"p1\"").as_bytes());
    advance(Duration::from_millis(7999)).await;
    c.inbox.deliver(progress("\"other\"").as_bytes());
    advance(Duration::ZERO).await;
    assert!(!call.is_finished(), "alive just before 25s");
    advance(Duration::from_millis(1)).await;
    assert!(call.is_finished(), "timed out at the hard maximum");
    let (reply, clock) = call.await.expect("ran");
    let err = reply.expect_err("timed out");
    assert_eq!(err.class, ErrorClass::Timeout);
    assert_eq!(err.message, "upstream `x` did not answer test/hold within 25.0s");
    assert_eq!(clock.deadline, t0 + secs(25), "the clock says where it ended (retries share it)");
    c.link.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn a_reply_after_its_call_timed_out_is_dropped_and_the_connection_serves_on() {
    let _frozen = Frozen::new();
    let (c, mut events) = scripted();
    let late = tokio::spawn({
        let c = c.clone();
        async move {
            c.request("test/hold", Some(params(&json!({ "of": 2, "tag": "late" })).checked()), Duration::from_secs(1))
                .await
        }
    });
    assert!(settle(|| c.inbox.is_pending(1)).await);
    advance(Duration::from_secs(1)).await;
    assert_eq!(late.await.expect("ran").expect_err("timed out").class, ErrorClass::Timeout);
    assert_eq!(cancelled(&mut events).await["requestId"], 1);
    // The server answers the second, then the first (id 1, given up).
    let b = params(&json!({ "of": 2, "tag": "b" }));
    let rb = c.request("test/hold", Some(b.checked()), Duration::from_secs(60)).await;
    assert_eq!(result(rb), json!({ "id": 2, "tag": "b" }));
    // Read after the stale reply: it was dropped, and nothing else broke.
    let e = params(&json!({ "n": 1 }));
    let re = c.request("test/echo", Some(e.checked()), Duration::from_secs(60)).await;
    assert_eq!(result(re), json!({ "id": 3, "params": { "n": 1 } }));
    assert!(c.inbox.lock().is_empty());
    c.link.shutdown().await;
}

#[tokio::test]
async fn over_stdio_the_trace_context_goes_in_params_meta() {
    let (c, _events) = scripted();
    let now = Instant::now();
    let mut clock = Clock {
        deadline: now + Duration::from_secs(60),
        extend: Duration::ZERO,
        hard: now + Duration::from_secs(60),
        started: now,
    };
    let p = params(&json!({ "a": 1, "_meta": { "progressToken": "t" } }));
    let tp = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01";
    let reply = c.request_within("test/echo", Some(p.checked()), &mut clock, Related::default(), Some(tp)).await;
    assert_eq!(result(reply)["params"], json!({ "a": 1, "_meta": { "progressToken": "t", "traceparent": tp } }));
    c.link.shutdown().await;
}

#[tokio::test]
async fn a_request_to_a_process_that_is_gone_fails_undelivered() {
    let (c, _events) = scripted();
    c.initialize(Duration::from_secs(60)).await.expect("initialized");
    c.notify("test/exit", None).await.expect("sent");
    tokio::time::timeout(Duration::from_secs(60), c.inbox.closed()).await.expect("closed");
    // Let the writer see the stop and let go of its queue.
    for _ in 0..100 {
        tokio::task::yield_now().await;
    }
    let err = c.request("test/echo", None, Duration::from_secs(60)).await.expect_err("gone");
    assert_eq!((err.class, err.not_delivered), (ErrorClass::Transport, true));
    assert_eq!(err.message, "upstream `x` is not running");
}

/// An MCP server over Streamable HTTP that numbers its sessions `s1`,
/// `s2`, … and forgets them as the test says.
#[derive(Debug, Default)]
struct Sessions {
    /// `initialize` requests seen.
    inits: AtomicU64,
    /// Sessions numbered below this are forgotten (404).
    live_from: AtomicU64,
    /// Every session is forgotten as soon as it is made.
    amnesiac: AtomicBool,
}

async fn serve_mcp(
    axum::extract::State(s): axum::extract::State<Arc<Sessions>>,
    method: Method,
    headers: HeaderMap,
    body: String,
) -> Response {
    if method != Method::POST {
        return StatusCode::METHOD_NOT_ALLOWED.into_response();
    }
    let m: serde_json::Value = serde_json::from_str(&body).expect("JSON");
    let session = headers.get("mcp-session-id").and_then(|v| v.to_str().ok()).map(str::to_owned);
    if m["method"] == "initialize" {
        let n = s.inits.fetch_add(1, Ordering::Relaxed) + 1;
        let result = json!({ "protocolVersion": m["params"]["protocolVersion"], "capabilities": {} });
        let reply = json!({ "jsonrpc": "2.0", "id": m["id"], "result": result });
        return (
            [("content-type", "application/json".to_owned()), ("mcp-session-id", format!("s{n}"))],
            reply.to_string(),
        )
            .into_response();
    }
    if m.get("id").is_none() {
        return StatusCode::ACCEPTED.into_response();
    }
    let number = session.as_deref().and_then(|s| s.strip_prefix('s')).and_then(|n| n.parse::<u64>().ok());
    if s.amnesiac.load(Ordering::Relaxed) || number.is_none_or(|n| n < s.live_from.load(Ordering::Relaxed)) {
        return StatusCode::NOT_FOUND.into_response();
    }
    let reply = json!({ "jsonrpc": "2.0", "id": m["id"], "result": { "session": session } });
    ([("content-type", "application/json")], reply.to_string()).into_response()
}

/// A connection to a [`Sessions`] server on 127.0.0.1, initialized (`s1`);
/// the server stops with the test's runtime.
async fn http(sessions: &Arc<Sessions>) -> Connection {
    let app = axum::Router::new().route("/mcp", axum::routing::any(serve_mcp)).with_state(sessions.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("a port");
    let url = format!("http://{}/mcp", listener.local_addr().expect("bound"));
    tokio::spawn(async move { axum::serve(listener, app).await });
    let client = reqwest::Client::builder().no_proxy().build().expect("a client");
    let link =
        super::super::http::HttpLink::new(client, url.parse().expect("a URL"), Default::default(), 1 << 20, None);
    let (inbox, _events) = inbox();
    let c = Connection::new(inbox, Link::Http(Arc::new(link)), caps());
    c.initialize(Duration::from_secs(60)).await.expect("initialized");
    c
}

#[tokio::test]
async fn an_expired_http_session_is_initialized_again_and_the_request_resent() {
    let sessions = Arc::new(Sessions::default());
    let c = http(&sessions).await;
    sessions.live_from.store(2, Ordering::Relaxed);
    let reply = c.request("test/which", None, Duration::from_secs(60)).await;
    assert_eq!(result(reply), json!({ "session": "s2" }));
    assert_eq!(sessions.inits.load(Ordering::Relaxed), 2);
    // The new session serves the next call without another handshake.
    result(c.request("test/which", None, Duration::from_secs(60)).await);
    assert_eq!(sessions.inits.load(Ordering::Relaxed), 2);
}

#[tokio::test]
async fn a_session_that_expires_again_at_once_is_initialized_only_once() {
    let sessions = Arc::new(Sessions::default());
    let c = http(&sessions).await;
    sessions.amnesiac.store(true, Ordering::Relaxed);
    let err = c.request("test/which", None, Duration::from_secs(60)).await.expect_err("expired twice");
    assert_eq!(err.class, ErrorClass::Transport);
    assert_eq!(err.message, "upstream `x`: session expired again right after re-initialize");
    assert_eq!(sessions.inits.load(Ordering::Relaxed), 2, "one handshake more, not a loop");
    assert!(c.inbox.lock().is_empty());
}

#[test]
fn a_modern_upstream_gets_the_meta_of_the_era() {
    let v = |b: Option<CheckedBox>| b.map(|b| serde_json::from_str::<serde_json::Value>(b.text()).unwrap());
    // A 2025 client's call to a modern upstream: the revision, no
    // capabilities promised, the gateway as the client; its own _meta kept.
    let call = params(&json!({"name":"t","_meta":{"progressToken":7}}));
    let m = v(modern_params(Some(call.checked()))).unwrap();
    let meta = &m["_meta"];
    assert_eq!(meta["io.modelcontextprotocol/protocolVersion"], "2026-07-28");
    assert_eq!(meta["io.modelcontextprotocol/clientCapabilities"], json!({}));
    assert_eq!(meta["io.modelcontextprotocol/clientInfo"]["name"], "mcp-gateway");
    assert_eq!(meta["progressToken"], 7);
    // A modern client's own capabilities go on as they are.
    let modern = json!({"name":"t","_meta":{"io.modelcontextprotocol/protocolVersion":"2026-07-28",
        "io.modelcontextprotocol/clientCapabilities":{"sampling":{}},"progressToken":1}});
    let m = v(modern_params(Some(params(&modern).checked()))).unwrap();
    assert_eq!(m["_meta"]["io.modelcontextprotocol/clientCapabilities"], json!({"sampling":{}}));
}

/// While one of a call's own server requests waits for the client (a
/// person answering an elicitation), the call's deadline does not run, up
/// to its hard maximum; the answer gives the call `extend` more from then.
#[tokio::test(start_paused = true)]
async fn a_call_waiting_for_its_client_keeps_its_deadline_until_the_hard_maximum() {
    use super::super::inbox::{Held, Hold};
    let start = Instant::now();
    let clock = |d: u64| Clock {
        deadline: start + Duration::from_secs(d),
        extend: Duration::from_secs(d),
        hard: start + Duration::from_secs(600),
        started: start,
    };
    let hold = Arc::new(Hold::default());
    // Held from the start, never answered: only the hard maximum ends it.
    let held = Held::new(hold.clone());
    let mut c = clock(60);
    let never = std::pin::pin!(std::future::pending::<()>());
    assert!(until(never, &mut c, None, Some(&hold)).await.is_none());
    assert_eq!(Instant::now() - start, Duration::from_secs(600));
    drop(held);

    // Answered at 100 s (past the 60 s deadline): 60 s more from then.
    let start = Instant::now();
    let mut c =
        Clock { deadline: start + Duration::from_secs(60), hard: start + Duration::from_secs(600), ..clock(60) };
    let h = hold.clone();
    let held = Held::new(hold.clone());
    tokio::spawn(async move {
        tokio::time::sleep(Duration::from_secs(100)).await;
        drop(held);
        drop(h);
    });
    let never = std::pin::pin!(std::future::pending::<()>());
    assert!(until(never, &mut c, None, Some(&hold)).await.is_none());
    assert_eq!(Instant::now() - start, Duration::from_secs(160));

    // Not held: the deadline as ever.
    let start = Instant::now();
    let mut c =
        Clock { deadline: start + Duration::from_secs(60), hard: start + Duration::from_secs(600), ..clock(60) };
    let never = std::pin::pin!(std::future::pending::<()>());
    assert!(until(never, &mut c, None, Some(&hold)).await.is_none());
    assert_eq!(Instant::now() - start, Duration::from_secs(60));
}
