//! What the upstream module's unit tests share (an upstream started from a
//! config snippet, a scripted stdio server, a frozen clock), and the tests of
//! `mod.rs` itself.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::atomic::Ordering;
use std::time::Duration;

use tokio::sync::mpsc;

use super::*;
use crate::config::Config;

/// A command no system has: its start fails at once, with no I/O.
pub(super) const NO_SUCH_COMMAND: &str = "/nonexistent/mcp-gateway-test-upstream";

/// A scripted MCP server on stdio (python3, standard library only). It
/// declares tools, prompts and resources, and serves:
/// - `tools/list` in three pages (`a`, `b` | `c` | `d`), following
///   `nextCursor`;
/// - `prompts/list` with a `nextCursor` that repeats (`first`, `again`);
/// - `resources/list`: error -32601; `resources/templates/list`: a result
///   whose `resourceTemplates` is not an array;
/// - `ping`, unless muted by `test/mute`;
/// - `test/change`: its tools become one page (`e`), and it says so;
/// - `test/note`: sends `notifications/resources/updated`;
/// - `test/ask`: asks the gateway `ping`, `roots/list` and
///   `sampling/createMessage`, and answers with the three responses;
/// - the notification `test/exit`: exits.
const FIXTURE: &str = r#"
import json, sys

pages = {None: ([{"name": "a"}, {"name": "b"}], "p2"), "p2": ([{"name": "c"}], "p3"), "p3": ([{"name": "d"}], None)}
muted = False

def send(m):
    sys.stdout.write(json.dumps(m) + "\n")
    sys.stdout.flush()

def reply(i, result):
    send({"jsonrpc": "2.0", "id": i, "result": result})

while True:
    line = sys.stdin.readline()
    if not line:
        break
    m = json.loads(line)
    method, i, p = m.get("method"), m.get("id"), m.get("params") or {}
    cursor = p.get("cursor")
    if method is None:
        continue
    if method == "initialize":
        caps = {"tools": {"listChanged": True}, "prompts": {}, "resources": {}}
        info = {"name": "fixture", "version": "1.0"}
        reply(i, {"protocolVersion": p["protocolVersion"], "capabilities": caps, "serverInfo": info})
    elif method == "tools/list":
        items, following = pages[cursor]
        page = {"tools": items}
        if following:
            page["nextCursor"] = following
        reply(i, page)
    elif method == "prompts/list":
        reply(i, {"prompts": [{"name": "first" if cursor is None else "again"}], "nextCursor": "same"})
    elif method == "resources/templates/list":
        reply(i, {"resourceTemplates": 5})
    elif method == "ping":
        if not muted:
            reply(i, {})
    elif method == "test/mute":
        muted = True
        reply(i, {})
    elif method == "test/change":
        pages = {None: ([{"name": "e"}], None)}
        send({"jsonrpc": "2.0", "method": "notifications/tools/list_changed"})
        reply(i, {})
    elif method == "test/note":
        send({"jsonrpc": "2.0", "method": "notifications/resources/updated", "params": {"uri": "file:///x"}})
        reply(i, {})
    elif method == "test/ask":
        asks = [("r1", "ping", None), ("r2", "roots/list", None),
                ("r3", "sampling/createMessage", {"messages": [], "maxTokens": 1})]
        for rid, meth, params in asks:
            req = {"jsonrpc": "2.0", "id": rid, "method": meth}
            if params is not None:
                req["params"] = params
            send(req)
        answers = {}
        while len(answers) < len(asks):
            a = json.loads(sys.stdin.readline())
            if "method" not in a:
                answers[a["id"]] = a
        reply(i, {"answers": [answers[rid] for rid, _, _ in asks]})
    elif method == "test/exit":
        sys.exit(0)
    elif i is not None:
        send({"jsonrpc": "2.0", "id": i, "error": {"code": -32601, "message": "Method not found"}})
"#;

/// `[upstreams.x]` with `body`, validated as the gateway would.
pub(super) fn spec(body: &str) -> UpstreamSpec {
    let src = format!("[upstreams.x]\n{body}\n");
    let mut config =
        Config::from_str(&src, Path::new("gateway.toml"), &BTreeMap::new()).expect("the test config is valid");
    config.upstreams.remove(0)
}

/// The scripted server ([`FIXTURE`]) as upstream `x`, with more settings.
pub(super) fn fixture(body: &str) -> UpstreamSpec {
    spec(&format!("command = \"python3\"\nargs = [\"-c\", '''{FIXTURE}''']\n{body}"))
}

/// A started upstream and what the tests watch it through.
#[derive(Debug)]
pub(super) struct Harness {
    pub(super) up: Arc<Upstream>,
    pub(super) changes: Arc<Changes>,
    pub(super) notes: mpsc::Receiver<Note>,
    pub(super) metrics: Arc<Metrics>,
}

/// Starts `spec` (its supervisor runs at the caller's first `.await`).
pub(super) fn start(spec: UpstreamSpec) -> Harness {
    let changes = Arc::new(Changes::default());
    let metrics = Arc::new(Metrics::new());
    let (tx, notes) = mpsc::channel(8);
    let bounds = Bounds { max_bytes: 1 << 20, json: crate::protocol::Limits::default() };
    let http = reqwest::Client::builder().no_proxy().build().expect("a client");
    let up = Upstream::start(spec, bounds, Redactor::default(), changes.clone(), http, metrics.clone(), tx);
    Harness { up, changes, notes, metrics }
}

impl Harness {
    /// Waits for a state that `pred` accepts. An hour of (paused) time
    /// bounds it, so a test that goes wrong fails rather than hangs.
    pub(super) async fn wait_for(&self, what: &str, pred: impl Fn(&State) -> bool) -> Arc<State> {
        let wait = async {
            loop {
                let s = self.up.state();
                if pred(&s) {
                    return s;
                }
                self.changes.changed().await;
            }
        };
        match tokio::time::timeout(Duration::from_secs(3600), wait).await {
            Ok(s) => s,
            Err(_) => panic!("never {what}; the state is {:?}", self.up.state()),
        }
    }

    /// Waits for connection `n` to be ready.
    pub(super) async fn ready(&self, n: u64) -> Arc<State> {
        self.wait_for(&format!("ready (connection {n})"), |s| matches!(s, State::Ready(r) if r.connection == n)).await
    }

    /// Waits for a `Down` other than the one that retries at `after`;
    /// returns when it retries and the delay until then (read at once: no
    /// time passes between the state's publication and this read).
    pub(super) async fn next_down(&self, after: Option<Instant>) -> (Instant, Duration) {
        let s = self.wait_for("down", |s| matches!(s, State::Down { retry_at, .. } if Some(*retry_at) != after)).await;
        let State::Down { retry_at, .. } = &*s else { unreachable!() };
        (*retry_at, retry_at.saturating_duration_since(Instant::now()))
    }

    /// Whether the supervisor sees a crash loop.
    pub(super) fn crash_looping(&self) -> bool {
        self.up.crash_loop.load(Ordering::Relaxed)
    }

    /// Stops the upstream and waits for `Stopped` on the paused clock
    /// (`Upstream::shutdown` polls on a timer, which a frozen clock never
    /// fires).
    pub(super) async fn stop(&self) {
        self.up.shutdown.cancel();
        self.wait_for("stopped", |s| matches!(s, State::Stopped)).await;
    }
}

/// The ready connection of `state`.
pub(super) fn conn(state: &State) -> Arc<Connection> {
    match state {
        State::Ready(r) => r.conn.clone(),
        other => panic!("not ready: {other:?}"),
    }
}

/// Keeps a paused clock still while a child process is awaited: a running
/// blocking task stops auto-advance (see `tokio::time::pause`), so only
/// `tokio::time::advance` moves time and no deadline fires because real
/// I/O took a while. Released on drop, or after a minute of real time, so a
/// test that goes wrong fails (at `wait_for`) rather than hangs.
#[derive(Debug)]
pub(super) struct Frozen {
    _release: std::sync::mpsc::Sender<()>,
}

impl Frozen {
    pub(super) fn new() -> Self {
        let (tx, rx) = std::sync::mpsc::channel::<()>();
        // Dropping `tx` ends the wait at once.
        drop(tokio::task::spawn_blocking(move || rx.recv_timeout(Duration::from_secs(60))));
        Frozen { _release: tx }
    }
}

/// Yields until `cond` holds (at most 1000 times); whether it did. No time
/// passes: this lets woken tasks run, nothing else.
pub(super) async fn settle(cond: impl Fn() -> bool) -> bool {
    for _ in 0..1000 {
        if cond() {
            return true;
        }
        tokio::task::yield_now().await;
    }
    cond()
}

fn caps(json: &str) -> CheckedBox {
    CheckedBox::parse(json, &crate::protocol::Limits::default()).expect("valid JSON")
}

#[test]
fn a_capability_is_a_present_non_null_dotted_path() {
    let c = caps(r#"{"logging":{},"tools":null,"tasks":{"requests":{"tools":{"call":{}}}}}"#);
    assert!(capability(c.checked(), "logging"));
    assert!(!capability(c.checked(), "tools"), "null is not declared");
    assert!(!capability(c.checked(), "prompts"));
    assert!(capability(c.checked(), "tasks.requests.tools.call"));
    assert!(!capability(c.checked(), "tasks.requests.tools.list"));
    assert!(!capability(c.checked(), "logging.level"));
}

#[tokio::test]
async fn changes_count_every_bump_and_wake_the_waiter() {
    let changes = Changes::default();
    assert_eq!(changes.generation(), 0);
    changes.bump();
    changes.bump();
    assert_eq!(changes.generation(), 2);
    // A change made before the wait counts.
    tokio::time::timeout(Duration::from_secs(5), changes.changed()).await.expect("woken by the earlier bump");
}

#[tokio::test(start_paused = true)]
async fn a_call_to_an_upstream_that_is_not_ready_fails_undelivered_saying_why() {
    let h = start(spec(&format!("command = {NO_SUCH_COMMAND:?}")));
    let now = Instant::now();
    let starting = h.up.unavailable(&State::Starting { since: now - Duration::from_secs(3) });
    assert_eq!(starting.message, "upstream `x` is starting (initialize pending for 3s); try again shortly");
    assert_eq!((starting.class, starting.not_delivered), (ErrorClass::Transport, true));
    let down = State::Down {
        reason: "no token".into(),
        class: ErrorClass::UpstreamAuth,
        retry_at: now + Duration::from_secs(7),
    };
    let down = h.up.unavailable(&down);
    assert_eq!(down.message, "upstream `x` is unavailable: no token; next attempt in 7s");
    assert_eq!((down.class, down.not_delivered), (ErrorClass::UpstreamAuth, true));
    assert_eq!(h.up.unavailable(&State::Stopped).message, "upstream `x` is shut down");
    h.up.shutdown().await;
}
