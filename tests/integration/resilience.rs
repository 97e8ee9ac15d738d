//! Deadlines, progress and graceful drain against real processes. The
//! fault matrix (one test per fault of the chaos fixture) is in `faults`.

use serde_json::{Value, json};

use crate::support::*;

/// TOML for server-everything over stdio (node, installed by the peers
/// script) with `extra` keys.
fn everything(id: &str, extra: &str) -> String {
    let p = peers();
    format!("[upstreams.{id}]\ncommand = \"node\"\nargs = [{:?}, \"stdio\"]\n{extra}\n", path_str(&p.everything))
}

/// A long-running operation of server-everything: with a progress token it
/// reports a step every `duration / steps` seconds.
fn long_op(id: u64, duration: u64, steps: u64, progress: bool) -> String {
    let mut params = json!({
        "name": "ev__trigger-long-running-operation",
        "arguments": { "duration": duration, "steps": steps },
    });
    if progress {
        params["_meta"] = json!({ "progressToken": format!("client-token-{id}") });
    }
    json!({"jsonrpc":"2.0","id":id,"method":"tools/call","params":params}).to_string()
}

#[tokio::test]
async fn progress_extends_a_call_up_to_the_hard_maximum() {
    // The tool's deadline is 2 s; progress every 0.5 s keeps pushing it by
    // 2 s, never past 6 s from the start.
    let gw = Gateway::start(&everything(
        "ev",
        "request_timeout = \"3s\"\ntool_timeouts = { \"trigger-*\" = \"2s\" }\nmax_request_timeout = \"6s\"",
    ))
    .await;
    gw.wait_ready("ev").await;
    let c = gw.client().await;
    let (a, b, d) = (long_op(1, 4, 8, true), long_op(2, 4, 8, false), long_op(3, 12, 24, true));
    let (with_progress, without, too_long) = tokio::join!(c.post(&a, &[]), c.post(&b, &[]), c.post(&d, &[]));
    // 4 s of work with progress: the 2 s deadline moved along with it.
    let ok = with_progress.json();
    assert!(ok["result"]["content"][0]["text"].as_str().unwrap().contains("completed"), "{ok}");
    // The same work without a progress token: 2 s and no more.
    let timed_out = without.json();
    assert_eq!(timed_out["error"]["data"]["class"], "timeout", "{timed_out}");
    assert_eq!(timed_out["error"]["code"], -32001);
    let msg = timed_out["error"]["message"].as_str().unwrap();
    assert!(msg.contains("upstream `ev` did not answer tools/call within 2.0s"), "{msg}");
    // Progress never extends past the hard maximum.
    let capped = too_long.json();
    assert_eq!(capped["error"]["data"]["class"], "timeout", "{capped}");
    assert!(capped["error"]["message"].as_str().unwrap().contains("within 6.0s"), "{capped}");
    // Timeouts are the upstream's failures too.
    let u = gw.upstream("ev").await;
    assert_eq!(u["failures"]["timeout"], 2, "{u}");
    assert_eq!(u["last_error_class"], "timeout");
}

/// How many calls the gateway has in flight.
async fn in_flight(gw: &Gateway) -> u64 {
    gw.status().await["in_flight"].as_u64().unwrap()
}

#[tokio::test]
async fn shutdown_drains_calls_in_flight_then_stops_children() {
    let gw = Gateway::start(&format!("[gateway]\ndrain_timeout = \"20s\"\n{}", raw_stdio("raw", ""))).await;
    let pid = gw.wait_ready("raw").await["pid"].as_u64().unwrap() as u32;
    let c = gw.client().await;
    let call = tokio::spawn(async move {
        c.post(
            &json!({"jsonrpc":"2.0","id":1,"method":"tools/call",
            "params":{"name":"raw__sleep","arguments":{"ms":1500,"tag":"drained"}}})
            .to_string(),
            &[],
        )
        .await
    });
    wait_until(|| async { in_flight(&gw).await == 1 }).await;
    gw.proc.signal(nix::sys::signal::Signal::SIGTERM);
    // Not ready while draining (503, or no longer accepting): load
    // balancers stop sending.
    let readyz = format!("http://{}/readyz", gw.addr);
    wait_until(|| async { gw.http.get(&readyz).send().await.map_or(true, |r| r.status() == 503) }).await;
    let reply = call.await.unwrap().json();
    assert_eq!(text(&reply), "drained", "{reply}");
    let mut gw = gw;
    let status = tokio::time::timeout(PATIENCE, gw.proc.child.wait()).await.unwrap().unwrap();
    assert!(status.success(), "{status}\n{}", gw.proc.logs());
    assert!(!alive(pid), "the upstream process outlived the gateway");
    assert!(gw.proc.logs().contains("Draining calls in flight"));
}

#[tokio::test]
async fn drain_delay_keeps_serving_new_connections_while_readyz_says_leaving() {
    let gw = Gateway::start(&format!("[gateway]\ndrain_delay = \"3s\"\n{}", raw_stdio("raw", ""))).await;
    gw.wait_ready("raw").await;
    let readyz = format!("http://{}/readyz", gw.addr);
    assert_eq!(gw.http.get(&readyz).send().await.unwrap().status(), 200);
    gw.proc.signal(nix::sys::signal::Signal::SIGTERM);
    let fresh = || reqwest::Client::builder().pool_max_idle_per_host(0).build().unwrap();
    // Leaving: /readyz says so at once, on a new connection...
    wait_until(|| async { fresh().get(&readyz).send().await.is_ok_and(|r| r.status() == 503) }).await;
    let body: Value = fresh().get(&readyz).send().await.unwrap().json().await.unwrap();
    assert_eq!(body["draining"], true, "{body}");
    // ...and a new client on a new connection is still served.
    let mut c = McpHttp { http: fresh(), ..McpHttp::connect(&gw.url()).await };
    let r = c.call("raw__sleep", json!({"ms": 1, "tag": "still here"})).await;
    assert_eq!(text(&r), "still here", "{r}");
    // Then it stops accepting, and exits.
    let mut gw = gw;
    let status = tokio::time::timeout(PATIENCE, gw.proc.child.wait()).await.unwrap().unwrap();
    assert!(status.success(), "{status}");
    assert!(gw.proc.logs().contains("new connections are served for drain_delay"), "{}", gw.proc.logs());
    assert!(std::net::TcpStream::connect(gw.addr).is_err(), "no longer accepting");
}

#[tokio::test]
async fn drain_deadline_cuts_off_calls_that_take_too_long() {
    let gw = Gateway::start(&format!("[gateway]\ndrain_timeout = \"300ms\"\n{}", raw_stdio("raw", ""))).await;
    let pid = gw.wait_ready("raw").await["pid"].as_u64().unwrap() as u32;
    let c = gw.client().await;
    let body = json!({"jsonrpc":"2.0","id":1,"method":"tools/call",
        "params":{"name":"raw__sleep","arguments":{"ms":60000,"tag":"never"}}})
    .to_string();
    let call = tokio::spawn(async move {
        c.http
            .post(&c.url)
            .header("content-type", "application/json")
            .header("accept", "application/json, text/event-stream")
            .header("mcp-session-id", c.session.clone().unwrap())
            .header("mcp-protocol-version", "2025-11-25")
            .body(body)
            .send()
            .await
    });
    wait_until(|| async { in_flight(&gw).await == 1 }).await;
    gw.proc.signal(nix::sys::signal::Signal::SIGTERM);
    let mut gw = gw;
    let status = tokio::time::timeout(PATIENCE, gw.proc.child.wait()).await.unwrap().unwrap();
    assert!(status.success(), "{status}");
    assert!(gw.proc.logs().contains("Drain deadline passed"), "{}", gw.proc.logs());
    assert!(!alive(pid));
    // The cut-off call did not get a success.
    let outcome = call.await.unwrap();
    if let Ok(r) = outcome {
        let body: Value = r.json().await.unwrap_or(Value::Null);
        assert!(body.get("result").is_none(), "{body}");
    }
}
