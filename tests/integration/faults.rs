//! The fault matrix (issue 4): one test per fault of the chaos fixture
//! (`tests/fixtures/chaos.py`), asserting what the client gets (outcome and
//! error class), how often the upstream saw and ran the call (the fixture's
//! state file: `attempt` and `exec` lines), the breaker, recovery, and that
//! the gateway holds no more processes, tasks or descriptors than before.

use std::path::PathBuf;
use std::time::Duration;

use futures_util::StreamExt as _;
use serde_json::{Value, json};

use crate::support::*;

/// A chaos upstream (stdio or HTTP) and its state file.
struct Chaos {
    state: PathBuf,
    _dir: tempfile::TempDir,
    http: Option<Fixture>,
    args: Vec<String>,
}

/// Fast retries, no breaker, no pings: each test turns on what it tests.
const RETRY_FAST: &str = "[upstreams.chaos.retry]\ninitial_delay = \"10ms\"\nmax_delay = \"50ms\"\n";
const NO_BREAKER: &str = "[upstreams.chaos.breaker]\nenabled = false\n";
const NO_PINGS: &str = "[upstreams.chaos.health]\ninterval = \"0s\"\n";

impl Chaos {
    fn stdio(args: &[&str]) -> Chaos {
        let dir = tempfile::Builder::new().prefix("chaos").tempdir_in(root().join("target")).unwrap();
        let state = dir.path().join("state.log");
        Chaos { state, _dir: dir, http: None, args: args.iter().map(|a| (*a).to_owned()).collect() }
    }

    async fn http(args: &[&str]) -> Chaos {
        let mut c = Chaos::stdio(args);
        let state = path_str(&c.state);
        let mut all = vec!["--http", "--state-file", &state];
        all.extend_from_slice(args);
        c.http = Some(Fixture::python("chaos.py", &all).await);
        c
    }

    /// `[upstreams.chaos]` with `keys`, then `sections` (sub-tables).
    fn toml(&self, keys: &str, sections: &str) -> String {
        let head = match &self.http {
            Some(f) => format!("[upstreams.chaos]\nurl = \"{}\"\n", f.url()),
            None => {
                let mut args =
                    vec![fixture("chaos.py"), "--stdio".into(), "--state-file".into(), path_str(&self.state)];
                args.extend(self.args.iter().cloned());
                format!("[upstreams.chaos]\ncommand = {:?}\nargs = {args:?}\n", path_str(&peers().python))
            }
        };
        format!("{head}{keys}\n{sections}")
    }

    fn events(&self) -> Vec<String> {
        std::fs::read_to_string(&self.state).unwrap_or_default().lines().map(str::to_owned).collect()
    }

    /// How many lines equal `line` (e.g. `attempt k1`, `exec k1`).
    fn count(&self, line: &str) -> usize {
        self.events().iter().filter(|l| *l == line).count()
    }

    fn control(&self, mode: &str) -> impl std::future::Future<Output = ()> + use<> {
        let url = format!("http://127.0.0.1:{}/control/mode", self.http.as_ref().unwrap().port);
        let body = json!({ "mode": mode }).to_string();
        async move {
            let r = reqwest::Client::new().post(url).body(body).send().await.unwrap();
            assert_eq!(r.status(), 200);
        }
    }
}

async fn start(chaos: &Chaos, keys: &str, sections: &str) -> (Gateway, McpHttp, Footprint) {
    let gw = Gateway::start(&chaos.toml(keys, sections)).await;
    gw.wait_ready("chaos").await;
    let mut c = gw.client().await;
    // Warm up (pooled connections, lazily started tasks), then measure.
    assert_eq!(text(&c.call("chaos__work", json!({"key":"warm"})).await), "ok warm 1");
    let base = gw.footprint().await;
    (gw, c, base)
}

fn class(r: &Value) -> &str {
    r["error"]["data"]["class"].as_str().unwrap_or_else(|| panic!("not a classified error: {r}"))
}

#[tokio::test]
async fn crash_after_n_calls_fails_that_call_and_the_upstream_comes_back() {
    let chaos = Chaos::stdio(&["--crash-after", "3"]);
    let (gw, mut c, base) = start(&chaos, "", &format!("{RETRY_FAST}{NO_PINGS}")).await;
    let first = gw.upstream("chaos").await["pid"].as_u64().unwrap() as u32;
    for k in ["a", "b"] {
        assert_eq!(text(&c.call("chaos__work", json!({"key":k})).await), format!("ok {k} 1"));
    }
    // The 4th call of this process's life kills it.
    let r = c.call("chaos__work", json!({"key":"boom"})).await;
    assert_eq!(class(&r), "transport", "{r}");
    assert_eq!(r["error"]["code"], -32000);
    assert_eq!(r["error"]["data"]["upstream"], "chaos");
    // Not idempotent and maybe delivered: never sent again.
    assert_eq!((chaos.count("attempt boom"), chaos.count("exec boom")), (1, 0));
    let back = gw.wait_upstream("chaos", |u| u["state"] == "ready" && u["pid"].as_u64() != Some(first.into())).await;
    assert!(back["restarts"].as_u64().unwrap() >= 1, "{back}");
    assert!(!alive(first));
    assert_eq!(text(&c.call("chaos__work", json!({"key":"after"})).await), "ok after 1");
    gw.assert_no_leaks(base).await;
}

#[tokio::test]
async fn hang_times_out_and_the_upstream_is_told_to_cancel() {
    let chaos = Chaos::stdio(&[]);
    let keys = "trusted = true\ntool_timeouts = { \"work\" = \"1s\", \"read\" = \"1s\" }";
    let (gw, mut c, base) = start(&chaos, keys, &format!("{RETRY_FAST}{NO_BREAKER}{NO_PINGS}")).await;
    let r = c.call("chaos__work", json!({"key":"h","fault":"hang"})).await;
    assert_eq!(class(&r), "timeout", "{r}");
    assert_eq!(r["error"]["code"], -32001);
    assert!(r["error"]["message"].as_str().unwrap().contains("within 1.0s"), "{r}");
    // The upstream was told to stop (notifications/cancelled).
    let cancelled =
        wait_for(PATIENCE, || chaos.events().iter().any(|l| l.starts_with("cancelled ")).then_some(())).await;
    assert!(cancelled.is_some(), "no cancellation reached the upstream: {:?}", chaos.events());
    // A read-only tool of a trusted upstream may be retried, but the
    // deadline is one for all attempts: the first used it up.
    let r = c.call("chaos__read", json!({"key":"r","fault":"hang"})).await;
    assert_eq!(class(&r), "timeout", "{r}");
    assert_eq!(chaos.count("attempt r"), 1);
    assert_eq!(gw.upstream("chaos").await["retries"], 0);
    assert_eq!(text(&c.call("chaos__work", json!({"key":"fine"})).await), "ok fine 1");
    gw.assert_no_leaks(base).await;
}

#[tokio::test]
async fn slow_calls_within_the_deadline_succeed_once() {
    let chaos = Chaos::stdio(&[]);
    let keys = "tool_timeouts = { \"idem\" = \"300ms\" }\nidempotent_tools = [\"idem\"]";
    let (gw, mut c, base) = start(&chaos, keys, &format!("{RETRY_FAST}{NO_BREAKER}{NO_PINGS}")).await;
    let r = c.call("chaos__work", json!({"key":"s","fault":"slow","ms":400})).await;
    assert_eq!(text(&r), "ok s 1");
    // Too slow for its tool's deadline: idempotent, but no time is left
    // for another attempt.
    let r = c.call("chaos__idem", json!({"key":"t","fault":"slow","ms":2000})).await;
    assert_eq!(class(&r), "timeout", "{r}");
    assert_eq!(chaos.count("attempt t"), 1);
    gw.assert_no_leaks(base).await;
}

#[tokio::test]
async fn garbage_on_stdout_is_skipped_and_the_connection_survives() {
    let chaos = Chaos::stdio(&[]);
    let keys = "tool_timeouts = { \"work\" = \"1s\" }";
    let (gw, mut c, base) = start(&chaos, keys, &format!("{RETRY_FAST}{NO_BREAKER}{NO_PINGS}")).await;
    let pid = gw.upstream("chaos").await["pid"].clone();
    // Garbage, then the real reply: the reply gets through.
    assert_eq!(text(&c.call("chaos__work", json!({"key":"g","fault":"garbage"})).await), "ok g 1");
    // Garbage instead of a reply: nothing to match, so the deadline.
    let r = c.call("chaos__work", json!({"key":"go","fault":"garbage_only"})).await;
    assert_eq!(class(&r), "timeout", "{r}");
    assert!(gw.proc.logs().contains("invalid JSON-RPC message"), "garbage not logged");
    // Same process, still serving.
    assert_eq!(text(&c.call("chaos__work", json!({"key":"n"})).await), "ok n 1");
    assert_eq!(gw.upstream("chaos").await["pid"], pid);
    gw.assert_no_leaks(base).await;
}

#[tokio::test]
async fn oversized_reply_fails_only_that_call_at_once() {
    for chaos in [Chaos::stdio(&[]), Chaos::http(&[]).await] {
        // A 60 s deadline: failing "at once" means not waiting for it.
        let toml =
            format!("[gateway]\nmax_message_bytes = 1048576\n{}", chaos.toml("", &format!("{NO_BREAKER}{NO_PINGS}")));
        let gw = Gateway::start(&toml).await;
        gw.wait_ready("chaos").await;
        let mut c = gw.client().await;
        let started = tokio::time::Instant::now();
        let r = c.call("chaos__work", json!({"key":"big","fault":"oversize","mib":2})).await;
        assert_eq!(class(&r), "upstream_internal", "{r}");
        assert!(r["error"]["message"].as_str().unwrap().contains("larger than 1048576 bytes"), "{r}");
        assert!(started.elapsed() < Duration::from_secs(30), "waited for the deadline");
        assert_eq!(chaos.count("exec big"), 1);
        assert_eq!(text(&c.call("chaos__work", json!({"key":"small"})).await), "ok small 1");
    }
}

#[tokio::test]
async fn http_5xx_are_retried_only_when_safe() {
    let chaos = Chaos::http(&[]).await;
    let keys = "trusted = true";
    let (gw, mut c, base) = start(&chaos, keys, &format!("{RETRY_FAST}{NO_BREAKER}{NO_PINGS}")).await;
    for status in [500, 502] {
        // Not idempotent; the upstream may have done the work: never again.
        let key = format!("w{status}");
        let r = c.call("chaos__work", json!({"key":key,"fault":"http_status","status":status,"fail_times":1})).await;
        assert_eq!(class(&r), "transport", "{r}");
        assert!(r["error"]["message"].as_str().unwrap().contains(&format!("HTTP {status}")), "{r}");
        assert_eq!(chaos.count(&format!("attempt {key}")), 1);
        // Read-only on a trusted upstream: retried until it works.
        let key = format!("r{status}");
        let r = c.call("chaos__read", json!({"key":key,"fault":"http_status","status":status,"fail_times":2})).await;
        assert_eq!(text(&r), format!("ok {key} 1"));
        assert_eq!(chaos.count(&format!("attempt {key}")), 3);
    }
    // 503 refuses before processing: even a non-idempotent call is sent
    // again, and it runs exactly once.
    let r = c.call("chaos__work", json!({"key":"u","fault":"http_status","status":503,"fail_times":2})).await;
    assert_eq!(text(&r), "ok u 1");
    assert_eq!((chaos.count("attempt u"), chaos.count("exec u")), (3, 1));
    assert_eq!(gw.upstream("chaos").await["retries"], 6);
    gw.assert_no_leaks(base).await;
}

#[tokio::test]
async fn rate_limited_429_honours_retry_after() {
    let chaos = Chaos::http(&[]).await;
    let (gw, mut c, base) =
        start(&chaos, "request_timeout = \"5s\"", &format!("{RETRY_FAST}{NO_BREAKER}{NO_PINGS}")).await;
    let started = tokio::time::Instant::now();
    let r = c
        .call("chaos__work", json!({"key":"l","fault":"http_status","status":429,"retry_after":1,"fail_times":1}))
        .await;
    assert_eq!(text(&r), "ok l 1");
    // The backoff alone would be ≤ 50 ms; the upstream asked for 1 s.
    assert!(started.elapsed() >= Duration::from_secs(1));
    assert_eq!((chaos.count("attempt l"), chaos.count("exec l")), (2, 1));
    // A wait past the deadline is not waited: overloaded, at once.
    let r = c.call("chaos__work", json!({"key":"m","fault":"http_status","status":429,"retry_after":60})).await;
    assert_eq!(class(&r), "overloaded", "{r}");
    assert_eq!(r["error"]["code"], -32003);
    assert_eq!(chaos.count("attempt m"), 1);
    gw.assert_no_leaks(base).await;
}

#[tokio::test]
async fn connection_reset_is_retried_only_for_idempotent_tools() {
    let chaos = Chaos::http(&[]).await;
    let keys = "idempotent_tools = [\"idem\"]";
    let (gw, mut c, base) = start(&chaos, keys, &format!("{RETRY_FAST}{NO_BREAKER}{NO_PINGS}")).await;
    let r = c.call("chaos__work", json!({"key":"x","fault":"reset","fail_times":1})).await;
    assert_eq!(class(&r), "transport", "{r}");
    assert_eq!(chaos.count("attempt x"), 1);
    let r = c.call("chaos__idem", json!({"key":"y","fault":"reset","fail_times":1})).await;
    assert_eq!(text(&r), "ok y 1");
    assert_eq!((chaos.count("attempt y"), chaos.count("exec y")), (2, 1));
    gw.assert_no_leaks(base).await;
}

#[tokio::test]
async fn session_expiry_is_transparent_and_runs_each_call_once() {
    let chaos = Chaos::http(&["--expire-after", "2"]).await;
    let (gw, mut c, base) = start(&chaos, "", &format!("{RETRY_FAST}{NO_BREAKER}{NO_PINGS}")).await;
    for i in 0..6 {
        let key = format!("s{i}");
        assert_eq!(text(&c.call("chaos__work", json!({"key":key})).await), format!("ok {key} 1"));
        assert_eq!(chaos.count(&format!("exec {key}")), 1);
    }
    gw.assert_no_leaks(base).await;
}

#[tokio::test]
async fn json_rpc_error_codes_are_relayed_and_classified() {
    let chaos = Chaos::stdio(&[]);
    let keys = "idempotent_tools = [\"idem\"]";
    let (gw, mut c, base) = start(&chaos, keys, &format!("{RETRY_FAST}{NO_BREAKER}{NO_PINGS}")).await;
    let table = [
        (-32700, "protocol"),
        (-32600, "protocol"),
        (-32601, "protocol"),
        (-32602, "protocol"),
        (-32002, "protocol"),
        (-32603, "upstream_internal"),
        (-32000, "upstream_internal"),
        (-32099, "upstream_internal"),
        (-1, "upstream_internal"),
    ];
    for (code, want) in table {
        let key = format!("c{code}");
        // Idempotent, failing twice: internal errors are retried through,
        // the caller's mistakes are not retried at all.
        let args = json!({"key":key,"fault":"rpc_error","code":code,"message":format!("m{code}"),"fail_times":2});
        let r = c.call("chaos__idem", args).await;
        if want == "protocol" {
            assert_eq!(r["error"]["code"], code, "{r}");
            assert_eq!(r["error"]["message"], format!("m{code}"));
            assert_eq!(class(&r), want);
            assert_eq!(r["error"]["data"]["upstream"], "chaos");
            assert_eq!(chaos.count(&format!("attempt {key}")), 1, "{code}");
        } else {
            assert_eq!(text(&r), format!("ok {key} 3"), "{code}");
            assert_eq!(chaos.count(&format!("attempt {key}")), 3, "{code}");
        }
        // Not idempotent: the first error is the answer, relayed as sent.
        let key = format!("w{code}");
        let r = c.call("chaos__work", json!({"key":key,"fault":"rpc_error","code":code,"message":"x"})).await;
        assert_eq!((r["error"]["code"].as_i64(), class(&r)), (Some(code), want), "{r}");
        assert_eq!(chaos.count(&format!("attempt {key}")), 1);
    }
    gw.assert_no_leaks(base).await;
}

#[tokio::test]
async fn is_error_results_are_relayed_and_never_retried_or_counted() {
    let chaos = Chaos::stdio(&[]);
    let keys = "idempotent_tools = [\"idem\"]";
    let breaker = "[upstreams.chaos.breaker]\nconsecutive_failures = 2\n";
    let (gw, mut c, base) = start(&chaos, keys, &format!("{RETRY_FAST}{breaker}{NO_PINGS}")).await;
    for i in 0..5 {
        let key = format!("e{i}");
        let r = c.call("chaos__idem", json!({"key":key,"fault":"tool_error"})).await;
        assert_eq!(r["result"]["isError"], true, "{r}");
        assert_eq!(text(&r), format!("failed {key}"));
        assert_eq!(chaos.count(&format!("attempt {key}")), 1);
    }
    let u = gw.upstream("chaos").await;
    assert_eq!(u["breaker"]["state"], "closed", "{u}");
    assert_eq!(u["failures"]["tool_error"], 5);
    // A tool error is not the upstream's failure.
    assert!(u.get("last_error").is_none(), "{u}");
    gw.assert_no_leaks(base).await;
}

/// Reads SSE from `stream` until `n` more list_changed notifications arrived.
async fn list_changed(
    stream: &mut (impl futures_util::Stream<Item = reqwest::Result<bytes::Bytes>> + Unpin),
    n: usize,
) {
    let mut seen = String::new();
    let got = tokio::time::timeout(PATIENCE, async {
        while let Some(chunk) = stream.next().await {
            seen.push_str(&String::from_utf8_lossy(&chunk.unwrap()));
            if seen.matches("notifications/tools/list_changed").count() >= n {
                return;
            }
        }
    })
    .await;
    assert!(got.is_ok(), "list_changed never came; stream: {seen}");
}

#[tokio::test]
async fn breaker_opens_hides_tools_and_closes_after_a_probe() {
    let chaos = Chaos::http(&[]).await;
    // One attempt per call, so three calls are three failures.
    let sections = "[upstreams.chaos.retry]\nattempts = 1\n[upstreams.chaos.breaker]\nconsecutive_failures = 3\n\
         cooldown = \"500ms\"\n[upstreams.chaos.health]\ninterval = \"0s\"\ntimeout = \"1s\"\nfailures_to_restart = 0\n";
    let (gw, mut c, base) = start(&chaos, "", sections).await;
    let sid = c.session.clone().unwrap();
    let get = c.http.get(&c.url).header("mcp-session-id", &sid).header("accept", "text/event-stream");
    let mut stream = get.send().await.unwrap().bytes_stream();
    chaos.control("fail").await;
    for i in 0..3 {
        let r = c.call("chaos__work", json!({"key":format!("f{i}")})).await;
        assert_eq!(class(&r), "transport", "{r}");
    }
    // Open: clients are told, the tools are gone, calls fail fast and
    // never reach the upstream.
    list_changed(&mut stream, 1).await;
    assert!(c.tool_names().await.is_empty());
    let u = gw.upstream("chaos").await;
    assert_eq!((u["breaker"]["state"].as_str(), u["tools"].as_u64()), (Some("open"), Some(0)), "{u}");
    let r = c.call("chaos__work", json!({"key":"blocked"})).await;
    assert_eq!(class(&r), "breaker_open", "{r}");
    assert_eq!(r["error"]["code"], -32004);
    assert_eq!(chaos.count("attempt blocked"), 0);
    // The status keeps the cause, not the breaker's own refusal.
    let u = gw.upstream("chaos").await;
    assert_eq!(u["last_error_class"], "transport", "{u}");
    assert!(u["last_error"].as_str().unwrap().contains("HTTP 503"), "{u}");
    // Still failing: the probe (a ping after the cooldown) fails, and the
    // breaker opens again for longer.
    gw.wait_upstream("chaos", |u| u["breaker"]["opened_total"].as_u64() >= Some(2)).await;
    chaos.control("ok").await;
    // Healthy again: the next probe closes it and the tools come back.
    let u = gw.wait_upstream("chaos", |u| u["breaker"]["state"] == "closed").await;
    // closed → open, (open → half-open → open), open → half-open → closed.
    assert!(u["breaker"]["transitions_total"].as_u64() >= Some(5), "{u}");
    list_changed(&mut stream, 1).await;
    assert_eq!(c.tool_names().await.len(), 5);
    assert_eq!(text(&c.call("chaos__work", json!({"key":"back"})).await), "ok back 1");
    drop(stream);
    gw.assert_no_leaks(base).await;
}

#[tokio::test]
async fn per_tool_breaker_cuts_only_the_failing_tool() {
    let chaos = Chaos::stdio(&[]);
    let sections = format!(
        "{RETRY_FAST}[upstreams.chaos.breaker]\nconsecutive_failures = 2\ncooldown = \"30s\"\nper_tool = true\n{NO_PINGS}"
    );
    let (gw, mut c, base) = start(&chaos, "", &sections).await;
    for i in 0..2 {
        let r = c.call("chaos__work", json!({"key":format!("p{i}"),"fault":"rpc_error","code":-32603})).await;
        assert_eq!(class(&r), "upstream_internal", "{r}");
    }
    let r = c.call("chaos__work", json!({"key":"cut"})).await;
    assert_eq!(class(&r), "breaker_open", "{r}");
    assert!(r["error"]["message"].as_str().unwrap().contains("tool `work` of upstream `chaos`"), "{r}");
    let names = c.tool_names().await;
    assert!(!names.contains(&"chaos__work".to_owned()) && names.contains(&"chaos__read".to_owned()), "{names:?}");
    // The other tools and the upstream itself serve on.
    assert_eq!(text(&c.call("chaos__read", json!({"key":"other"})).await), "ok other 1");
    let u = gw.upstream("chaos").await;
    assert_eq!(u["breaker"]["state"], "closed", "{u}");
    assert_eq!(u["breaker_open_tools"], json!(["work"]));
    gw.assert_no_leaks(base).await;
}

#[tokio::test]
async fn hung_stdio_upstream_is_restarted_by_health_pings() {
    let chaos = Chaos::stdio(&[]);
    let sections = format!(
        "{RETRY_FAST}{NO_BREAKER}[upstreams.chaos.health]\ninterval = \"300ms\"\ntimeout = \"300ms\"\nfailures_to_restart = 2\n"
    );
    let (gw, mut c, base) = start(&chaos, "", &sections).await;
    let pid = gw.upstream("chaos").await["pid"].as_u64().unwrap();
    assert_eq!(text(&c.call("chaos__set_mode", json!({"mode":"hang"})).await), "mode hang");
    let back = gw.wait_upstream("chaos", |u| u["state"] == "ready" && u["pid"].as_u64() != Some(pid)).await;
    assert!(back["health"]["failed"].as_u64().unwrap() >= 2, "{back}");
    assert!(gw.proc.logs().contains("health pings in a row failed"));
    assert!(!alive(pid as u32));
    assert_eq!(text(&c.call("chaos__work", json!({"key":"alive"})).await), "ok alive 1");
    gw.assert_no_leaks(base).await;
}

#[tokio::test]
async fn http_upstream_that_goes_away_is_reconnected() {
    let port = free_port().to_string();
    let mut chaos = Chaos::http(&["--port", &port]).await;
    let sections = format!(
        "{RETRY_FAST}{NO_BREAKER}[upstreams.chaos.health]\ninterval = \"200ms\"\ntimeout = \"500ms\"\nfailures_to_restart = 2\n"
    );
    let (gw, mut c, _) = start(&chaos, "", &sections).await;
    // The server goes away: pings fail, the connection is given up, the
    // tools are withdrawn, and reconnecting goes on with backoff.
    chaos.http.take().unwrap().proc.signal(nix::sys::signal::Signal::SIGKILL);
    gw.wait_upstream("chaos", |u| u["state"] == "down").await;
    assert!(c.tool_names().await.is_empty());
    let r = c.call("chaos__work", json!({"key":"gone"})).await;
    assert_eq!(class(&r), "transport", "{r}");
    assert!(r["error"]["message"].as_str().unwrap().contains("upstream `chaos` is unavailable"), "{r}");
    // It comes back on the same address: a new session, tools again.
    let state = path_str(&chaos.state);
    let _again = Fixture::python("chaos.py", &["--http", "--state-file", &state, "--port", &port]).await;
    gw.wait_ready("chaos").await;
    assert_eq!(text(&c.call("chaos__work", json!({"key":"again"})).await), "ok again 1");
}

#[tokio::test]
async fn bulkhead_refuses_overflow_at_once_and_others_serve_on() {
    let chaos = Chaos::stdio(&[]);
    let keys = "max_concurrency = 2\nmax_queue = 1\ntool_timeouts = { \"work\" = \"3s\" }";
    let other = raw_stdio("other", "");
    let toml = format!("{other}{}", chaos.toml(keys, &format!("{NO_BREAKER}{NO_PINGS}")));
    let gw = Gateway::start(&toml).await;
    gw.wait_ready("chaos").await;
    gw.wait_ready("other").await;
    let c = gw.client().await;
    let hang = |i: u32| {
        json!({"jsonrpc":"2.0","id":100 + i,"method":"tools/call",
            "params":{"name":"chaos__work","arguments":{"key":format!("h{i}"),"fault":"hang"}}})
        .to_string()
    };
    let bodies: Vec<String> = (0..3).map(hang).collect();
    let stuck = futures_util::future::join_all(bodies.iter().map(|b| c.post(b, &[])));
    let check = async {
        wait_until(|| async {
            let u = gw.upstream("chaos").await;
            u["bulkhead"]["in_flight"] == 2 && u["bulkhead"]["queued"] == 1
        })
        .await;
        // Full: refused at once, with the numbers.
        let r = c.post(&hang(9), &[]).await.json();
        assert_eq!(class(&r), "overloaded", "{r}");
        assert!(r["error"]["message"].as_str().unwrap().contains("2 calls in flight and 1 waiting"), "{r}");
        // Another upstream does not notice.
        let mut other = gw.client().await;
        assert_eq!(other.call("other__echo", json!({"k":1})).await["result"]["args"], json!({"k":1}));
    };
    let (stuck, ()) = tokio::join!(stuck, check);
    // The two in flight time out; the queued one got a slot only after,
    // and timed out at the same deadline (it shares it).
    for r in stuck {
        assert_eq!(class(&r.json()), "timeout");
    }
    let u = gw.upstream("chaos").await;
    assert_eq!(u["bulkhead"]["rejected"], 1, "{u}");
    assert_eq!(chaos.count("attempt h9"), 0);
}

#[tokio::test]
async fn crash_loop_is_detected_and_restart_delays_grow() {
    let toml = format!(
        "[upstreams.dies]\ncommand = {:?}\nargs = [\"-c\", \"import sys; sys.exit(1)\"]\n",
        path_str(&peers().python)
    );
    let gw = Gateway::start(&toml).await;
    let u = gw.wait_upstream("dies", |u| u["crash_loop"] == true).await;
    assert!(u["restarts"].as_u64().unwrap() >= 2, "{u}");
    assert!(gw.proc.logs().contains("crash-looping"));
    let mut c = gw.client().await;
    let r = c.call("dies__anything", json!({})).await;
    assert_eq!(class(&r), "transport", "{r}");
    assert!(children_of(gw.proc.pid()).len() <= 1);
}

#[tokio::test]
async fn retry_budget_caps_retries() {
    let chaos = Chaos::stdio(&[]);
    let keys = "idempotent_tools = [\"idem\"]";
    // No per-second allowance and no share of calls: only the initial
    // burst of 10 retries.
    let sections = format!(
        "[upstreams.chaos.retry]\nattempts = 2\ninitial_delay = \"1ms\"\nmax_delay = \"1ms\"\n\
         budget_ratio = 0.0\nbudget_min_per_second = 0.0\n{NO_BREAKER}{NO_PINGS}"
    );
    let (gw, mut c, base) = start(&chaos, keys, &sections).await;
    for i in 0..12 {
        let r = c.call("chaos__idem", json!({"key":format!("b{i}"),"fault":"rpc_error","code":-32603})).await;
        assert_eq!(class(&r), "upstream_internal", "{r}");
    }
    let attempts: Vec<usize> = (0..12).map(|i| chaos.count(&format!("attempt b{i}"))).collect();
    assert_eq!(attempts, [2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 1, 1]);
    let u = gw.upstream("chaos").await;
    assert_eq!((u["retries"].as_u64(), u["retry_budget_exhausted"].as_u64()), (Some(10), Some(2)), "{u}");
    gw.assert_no_leaks(base).await;
}

#[tokio::test]
async fn a_crash_loop_clears_once_the_upstream_is_up_and_stable() {
    // Fails its first three starts, then serves for good.
    let dir = tempfile::tempdir_in(root().join("target")).unwrap();
    let count = dir.path().join("starts");
    let script = format!(
        "n=$(cat {count:?} 2>/dev/null || echo 0); echo $((n+1)) > {count:?}; [ \"$n\" -lt 3 ] && exit 1; exec {:?} {:?}",
        path_str(&peers().python),
        fixture("raw_stdio.py"),
        count = path_str(&count),
    );
    let toml = format!(
        "[upstreams.flappy]\ncommand = \"sh\"\nargs = [\"-c\", {script:?}]\nstable_after = \"1s\"\nrestart_max_delay = \"1s\"\n"
    );
    let gw = Gateway::start(&toml).await;
    gw.wait_upstream("flappy", |u| u["crash_loop"] == true).await;
    gw.wait_upstream("flappy", |u| u["state"] == "ready").await;
    // Before, the flag stayed set for the life of the process, and the
    // restart-loop alert fired on a healthy upstream.
    let u = gw.wait_upstream("flappy", |u| u["crash_loop"] == false).await;
    assert_eq!(u["state"], "ready", "{u}");
    let metrics = gw.http.get(format!("http://{}/metrics", gw.addr)).send().await.unwrap().text().await.unwrap();
    assert!(metrics.contains(r#"mcp_gateway_upstream_crash_looping{upstream="flappy"} 0"#), "{metrics}");
    assert!(gw.proc.logs().contains("left its crash loop"));
}

#[tokio::test]
async fn an_http_upstream_that_is_not_up_yet_is_unreachable_and_picked_up_soon() {
    let (port, hold) = reserved_port();
    let toml = format!("[upstreams.later]\nurl = \"http://127.0.0.1:{port}/mcp\"\nstartup_timeout = \"2s\"\n");
    let gw = Gateway::start(&toml).await;
    // Several attempts fail: more than a crash loop would need. (Read in
    // one status: between two reads the next attempt may have begun.)
    let u = gw.wait_upstream("later", |u| u["restarts"].as_u64().unwrap_or(0) >= 4 && u["state"] == "down").await;
    assert_eq!((u["state"].as_str(), u["crash_loop"].as_bool()), (Some("down"), Some(false)), "{u}");
    let logs = gw.proc.logs();
    assert!(logs.contains("Upstream is unreachable") && !logs.contains("crash-looping"), "{logs}");
    // Up now: picked up within the default 5 s ceiling (plus a start).
    drop(hold);
    let _fx = Fixture::python("http_upstream.py", &["--port", &port.to_string()]).await;
    let started = tokio::time::Instant::now();
    gw.wait_ready("later").await;
    assert!(started.elapsed() < Duration::from_secs(8), "picked up {:?} after it came up", started.elapsed());
}

#[tokio::test]
async fn a_breaker_that_opens_during_retries_keeps_the_cause() {
    let chaos = Chaos::stdio(&[]);
    let dir = tempfile::tempdir_in(root().join("target")).unwrap();
    let audit = dir.path().join("audit.jsonl");
    let sections = format!(
        "[upstreams.chaos.retry]\nattempts = 5\ninitial_delay = \"1ms\"\nmax_delay = \"2ms\"\n\
         [upstreams.chaos.breaker]\nconsecutive_failures = 2\ncooldown = \"30s\"\n{NO_PINGS}\
         [audit]\npath = {:?}\n",
        path_str(&audit)
    );
    let (_gw, mut c, _) = start(&chaos, "idempotent_tools = [\"idem\"]", &sections).await;
    // Two failed attempts open the breaker; the third is refused by it.
    let r = c.call("chaos__idem", json!({"key":"bo","fault":"rpc_error","code":-32603})).await;
    assert_eq!(class(&r), "breaker_open", "{r}");
    assert_eq!(r["error"]["data"]["cause"], "upstream_internal", "{r}");
    assert!(r["error"]["message"].as_str().unwrap().contains("the attempt before failed (upstream_internal)"), "{r}");
    assert_eq!(chaos.count("attempt bo"), 2);
    let line = wait_for(PATIENCE, || {
        let text = std::fs::read_to_string(&audit).ok()?;
        text.lines().map(|l| serde_json::from_str::<Value>(l).unwrap()).find(|l| l["tool"] == "idem")
    })
    .await
    .unwrap();
    assert_eq!((line["class"].as_str(), line["cause"].as_str()), (Some("breaker_open"), Some("upstream_internal")));
}
