//! `mcp-gateway stdio`: pipelining, bad input, limits, list_changed.

use std::process::Stdio;

use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader, Lines};
use tokio::process::{Child, ChildStdin, ChildStdout, Command};

use crate::support::*;

struct StdioGateway {
    child: Child,
    stdin: ChildStdin,
    out: Lines<BufReader<ChildStdout>>,
    _dir: tempfile::TempDir,
}

impl StdioGateway {
    fn start(toml: &str) -> Self {
        let (dir, path) = write_config(toml);
        let mut child = Command::new(gateway_bin())
            .arg("stdio")
            .arg("--config")
            .arg(&path)
            .env("RUST_LOG", "warn")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .kill_on_drop(true)
            .spawn()
            .unwrap();
        let stdin = child.stdin.take().unwrap();
        let out = BufReader::new(child.stdout.take().unwrap()).lines();
        StdioGateway { child, stdin, out, _dir: dir }
    }

    async fn send(&mut self, line: &str) {
        self.stdin.write_all(line.as_bytes()).await.unwrap();
        self.stdin.write_all(b"\n").await.unwrap();
        self.stdin.flush().await.unwrap();
    }

    async fn recv(&mut self) -> Value {
        let line = tokio::time::timeout(PATIENCE, self.out.next_line())
            .await
            .expect("a reply in time")
            .unwrap()
            .expect("open");
        serde_json::from_str(&line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}"))
    }

    /// Next message that is not a notification.
    async fn reply(&mut self) -> Value {
        loop {
            let v = self.recv().await;
            if v.get("id").is_some() {
                return v;
            }
        }
    }

    async fn initialize(&mut self) {
        self.send(r#"{"jsonrpc":"2.0","id":0,"method":"initialize","params":{"protocolVersion":"2025-11-25","capabilities":{},"clientInfo":{"name":"t","version":"0"}}}"#).await;
        assert_eq!(self.reply().await["result"]["serverInfo"]["name"], "mcp-gateway");
        self.send(r#"{"jsonrpc":"2.0","method":"notifications/initialized"}"#).await;
    }

    /// Calls a tool, retrying while the upstream is still starting.
    async fn call_when_ready(&mut self, id: u64, name: &str, args: Value) -> Value {
        for _ in 0..600 {
            let req = json!({"jsonrpc":"2.0","id":id,"method":"tools/call","params":{"name":name,"arguments":args}});
            self.send(&req.to_string()).await;
            let r = self.reply().await;
            if r["error"]["data"]["class"] != "transport" && r["error"]["code"] != -32602 {
                return r;
            }
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        }
        panic!("{name} never became callable");
    }
}

#[tokio::test]
async fn pipelined_calls_get_their_own_replies_out_of_order() {
    let mut gw = StdioGateway::start(&raw_stdio("raw", ""));
    gw.initialize().await;
    gw.call_when_ready(1, "raw__echo", json!({})).await;
    // 20 calls written at once; earlier ones sleep longer, so the upstream
    // answers them in reverse.
    let mut batch = String::new();
    for i in 0..20u64 {
        let ms = (20 - i) * 25;
        let req = json!({"jsonrpc":"2.0","id":format!("p{i}"),"method":"tools/call","params":{"name":"raw__sleep","arguments":{"ms":ms,"tag":format!("tag-{i}")}}});
        batch.push_str(&req.to_string());
        batch.push('\n');
    }
    gw.stdin.write_all(batch.as_bytes()).await.unwrap();
    let mut order = Vec::new();
    for _ in 0..20 {
        let r = gw.reply().await;
        let id = r["id"].as_str().unwrap().to_owned();
        let n: u64 = id[1..].parse().unwrap();
        assert_eq!(text(&r), format!("tag-{n}"), "reply for {id} carries another call's result");
        order.push(n);
    }
    let mut sorted = order.clone();
    sorted.sort_unstable();
    assert_eq!(sorted, (0..20).collect::<Vec<_>>(), "every call answered once");
    assert_ne!(order, sorted, "replies came back in request order; the test did not pipeline");
}

#[tokio::test]
async fn large_results_come_whole_on_their_own_lines_among_small_ones() {
    let mut gw = StdioGateway::start(&raw_stdio("raw", ""));
    gw.initialize().await;
    gw.call_when_ready(1, "raw__echo", json!({})).await;
    // Large replies are written in parts (not copied) from their own queue:
    // each must still be one line, byte for byte, between the small ones.
    let mut batch = String::new();
    for i in 0..6u64 {
        let req = match i % 2 {
            0 => {
                json!({"jsonrpc":"2.0","id":format!("b{i}"),"method":"tools/call","params":{"name":"raw__big","arguments":{"mib":1}}})
            }
            _ => {
                json!({"jsonrpc":"2.0","id":format!("s{i}"),"method":"tools/call","params":{"name":"raw__sleep","arguments":{"ms":0,"tag":format!("tag-{i}")}}})
            }
        };
        batch.push_str(&req.to_string());
        batch.push('\n');
    }
    gw.stdin.write_all(batch.as_bytes()).await.unwrap();
    let expected = |id: &str| {
        format!(
            r#"{{"jsonrpc":"2.0","id":"{id}","result":{{"content":[{{"type":"text","text":"{}"}}],"size":1}}}}"#,
            "x".repeat(1 << 20)
        )
    };
    let mut seen = Vec::new();
    while seen.len() < 6 {
        let line = tokio::time::timeout(PATIENCE, gw.out.next_line()).await.expect("a reply in time").unwrap().unwrap();
        let v: Value =
            serde_json::from_str(&line).unwrap_or_else(|e| panic!("not one JSON line ({e}): {} bytes", line.len()));
        let Some(id) = v["id"].as_str() else { continue };
        if id.starts_with('b') {
            assert!(line == expected(id), "{id}: a 1 MiB result changed on the way ({} bytes)", line.len());
        } else {
            assert_eq!(text(&v), format!("tag-{}", &id[1..]), "{line}");
        }
        seen.push(id.to_owned());
    }
    seen.sort();
    assert_eq!(seen, ["b0", "b2", "b4", "s1", "s3", "s5"]);
}

#[tokio::test]
async fn bad_input_gets_errors_and_the_session_goes_on() {
    let toml = format!("[gateway]\nmax_message_bytes = 4096\n{}", raw_stdio("raw", ""));
    let mut gw = StdioGateway::start(&toml);
    gw.initialize().await;
    gw.send("{this is not json").await;
    let r = gw.recv().await;
    assert_eq!((r["error"]["code"].clone(), r["id"].clone()), (json!(-32700), Value::Null));
    gw.send(r#"{"jsonrpc":"2.0","id":"x","method":7}"#).await;
    assert_eq!(gw.recv().await["error"]["code"], -32600);
    gw.send(&format!(r#"{{"jsonrpc":"2.0","id":1,"method":"ping","params":{{"pad":"{}"}}}}"#, "z".repeat(10_000)))
        .await;
    let r = gw.recv().await;
    assert_eq!(r["error"]["code"], -32600);
    assert!(r["error"]["message"].as_str().unwrap().contains("4096"));
    gw.send(r#"[{"jsonrpc":"2.0","id":2,"method":"ping"}]"#).await;
    assert_eq!(gw.recv().await["error"]["code"], -32600);
    gw.send(r#"{"jsonrpc":"2.0","id":3,"method":"ping"}"#).await;
    assert_eq!(gw.recv().await, json!({"jsonrpc":"2.0","id":3,"result":{}}));
    // stdin closing ends the gateway cleanly.
    drop(gw.stdin);
    let status = tokio::time::timeout(PATIENCE, gw.child.wait()).await.unwrap().unwrap();
    assert!(status.success(), "{status}");
}

#[tokio::test]
async fn list_changed_is_sent_to_stdio_clients() {
    let mut gw = StdioGateway::start(&raw_stdio("raw", ""));
    gw.initialize().await;
    gw.call_when_ready(1, "raw__echo", json!({})).await;
    gw.send(r#"{"jsonrpc":"2.0","id":2,"method":"tools/call","params":{"name":"raw__add_tool","arguments":{"name":"late"}}}"#).await;
    // Every list_changed is followed by a tools/list; the one sent for the
    // new tool must show it. Without the notification this times out.
    let mut next_id = 100;
    loop {
        let m = gw.recv().await;
        if m["method"] != "notifications/tools/list_changed" {
            continue;
        }
        next_id += 1;
        gw.send(&json!({"jsonrpc":"2.0","id":next_id,"method":"tools/list"}).to_string()).await;
        let r = loop {
            let r = gw.recv().await;
            if r["id"] == next_id {
                break r;
            }
        };
        let names: Vec<&str> =
            r["result"]["tools"].as_array().unwrap().iter().map(|t| t["name"].as_str().unwrap()).collect();
        if names.contains(&"raw__late") {
            break;
        }
    }
}

#[tokio::test]
async fn stdio_serves_metrics_on_the_admin_listener() {
    let port = free_port();
    let mut gw = StdioGateway::start(&format!("[admin]\nlisten = \"127.0.0.1:{port}\"\n{}", raw_stdio("raw", "")));
    gw.initialize().await;
    let r = gw.call_when_ready(1, "raw__echo", json!({"x": 1})).await;
    assert!(r["result"].is_object(), "{r}");
    let url = format!("http://127.0.0.1:{port}/metrics");
    let text = reqwest::get(&url).await.unwrap().text().await.unwrap();
    for line in [
        r#"mcp_gateway_downstream_sessions{transport="stdio"} 1"#,
        r#"mcp_gateway_requests_total{upstream="raw",method="tools/call",tool="echo",class="ok"} 1"#,
    ] {
        assert!(text.contains(line), "missing `{line}`:\n{text}");
    }
    drop(gw.stdin);
    let status = tokio::time::timeout(PATIENCE, gw.child.wait()).await.unwrap().unwrap();
    assert!(status.success());
    assert!(reqwest::get(&url).await.is_err(), "the admin listener stops with the gateway");
}

/// A stdio gateway in front of the chaos fixture, which writes what it was
/// told (`attempt <key>`, `cancelled <id>`) to a state file.
fn chaos_stdio(state: &std::path::Path) -> StdioGateway {
    let args = [fixture("chaos.py"), "--stdio".into(), "--state-file".into(), path_str(state)];
    StdioGateway::start(&format!(
        "[upstreams.chaos]\ncommand = {:?}\nargs = {args:?}\n[upstreams.chaos.health]\ninterval = \"0s\"\n",
        path_str(&peers().python)
    ))
}

fn state_lines(state: &std::path::Path) -> Vec<String> {
    std::fs::read_to_string(state).unwrap_or_default().lines().map(str::to_owned).collect()
}

#[tokio::test]
async fn notifications_cancelled_stops_the_call_upstream_and_it_gets_no_reply() {
    let dir = tempfile::Builder::new().prefix("chaos").tempdir_in(root().join("target")).unwrap();
    let state = dir.path().join("state.log");
    let mut gw = chaos_stdio(&state);
    gw.initialize().await;
    gw.call_when_ready(1, "chaos__work", json!({"key":"warm"})).await;
    gw.send(&json!({"jsonrpc":"2.0","id":"hang-1","method":"tools/call","params":{"name":"chaos__work","arguments":{"key":"h1","fault":"hang"}}}).to_string()).await;
    wait_until(|| std::future::ready(state_lines(&state).contains(&"attempt h1".to_owned()))).await;
    gw.send(r#"{"jsonrpc":"2.0","method":"notifications/cancelled","params":{"requestId":"hang-1","reason":"user"}}"#)
        .await;
    // The upstream is told, under its own id for the call.
    wait_until(|| std::future::ready(state_lines(&state).iter().any(|l| l.starts_with("cancelled ")))).await;
    gw.send(r#"{"jsonrpc":"2.0","id":"after","method":"ping"}"#).await;
    assert_eq!(gw.reply().await["id"], "after");
    // Nothing ever answers the cancelled call: read to the end.
    drop(gw.stdin);
    let mut rest = Vec::new();
    while let Ok(Some(line)) = gw.out.next_line().await {
        rest.push(line);
    }
    assert!(!rest.iter().any(|l| l.contains("hang-1")), "{rest:?}");
}

#[tokio::test]
async fn a_client_that_goes_away_cancels_its_calls_upstream() {
    let dir = tempfile::Builder::new().prefix("chaos").tempdir_in(root().join("target")).unwrap();
    let state = dir.path().join("state.log");
    let mut gw = chaos_stdio(&state);
    gw.initialize().await;
    gw.call_when_ready(1, "chaos__work", json!({"key":"warm"})).await;
    gw.send(&json!({"jsonrpc":"2.0","id":2,"method":"tools/call","params":{"name":"chaos__work","arguments":{"key":"gone","fault":"hang"}}}).to_string()).await;
    wait_until(|| std::future::ready(state_lines(&state).contains(&"attempt gone".to_owned()))).await;
    assert!(!state_lines(&state).iter().any(|l| l.starts_with("cancelled ")));
    // The host closes our stdin (it quit): the call, which hangs, gets the
    // drain time (10 s) to finish, then is cancelled upstream before the
    // upstream is shut down.
    drop(gw.stdin);
    let status = tokio::time::timeout(PATIENCE, gw.child.wait()).await.expect("exits").unwrap();
    assert!(status.success(), "{status}");
    assert!(state_lines(&state).iter().any(|l| l.starts_with("cancelled ")), "{:?}", state_lines(&state));
}
