//! The official Python SDK client through the gateway to real servers:
//! server-everything over stdio and Streamable HTTP, server-filesystem, and
//! server-postgres against a real PostgreSQL.

use serde_json::{Value, json};

use crate::support::databases::Postgres;
use crate::support::*;

/// everything (stdio), everything over Streamable HTTP, and filesystem.
async fn three_real_upstreams() -> (Gateway, Fixture, tempfile::TempDir) {
    let p = peers();
    let evhttp = Fixture::everything_http().await;
    let files = tempfile::tempdir_in(root().join("target")).unwrap();
    std::fs::write(files.path().join("note.txt"), "hello through the gateway").unwrap();
    let toml = format!(
        r#"
[upstreams.everything]
command = "node"
args = [{ev:?}, "stdio"]

[upstreams.evhttp]
url = "{url}"

[upstreams.filesystem]
command = "node"
args = [{fs:?}, {dir:?}]
"#,
        ev = path_str(&p.everything),
        url = evhttp.url(),
        fs = path_str(&p.filesystem),
        dir = path_str(files.path()),
    );
    let gw = Gateway::start(&toml).await;
    for id in ["everything", "evhttp", "filesystem"] {
        gw.wait_ready(id).await;
    }
    (gw, evhttp, files)
}

fn check_list(out: &Value) {
    let tools: Vec<&str> = out["tools"].as_array().unwrap().iter().map(|t| t.as_str().unwrap()).collect();
    for t in ["everything__echo", "evhttp__echo", "filesystem__read_text_file", "filesystem__write_file"] {
        assert!(tools.contains(&t), "{t} missing from {tools:?}");
    }
}

/// One session lists and calls a tool of each upstream.
async fn exercise(target: &[&str], mode: &str, files: &std::path::Path) {
    let note = files.join("note.txt").display().to_string();
    let steps = json!([
        {"list": true},
        {"call": "everything__echo", "args": {"message": "one"}},
        {"call": "evhttp__get-sum", "args": {"a": 20, "b": 22}},
        {"call": "filesystem__read_text_file", "args": {"path": note}},
        {"call": "nope__missing", "args": {}},
    ]);
    let script = files.join(format!("steps-{mode}-{}.json", target.len()));
    std::fs::write(&script, steps.to_string()).unwrap();
    let mut args: Vec<&str> = vec!["--mode", mode, "script", script.to_str().unwrap()];
    args.extend_from_slice(target);
    let out = py_client(&args).await;
    assert_eq!(out.len(), 5, "{out:?}");
    check_list(&out[0]);
    assert_eq!(out[1]["text"][0], "Echo: one", "{out:?}");
    assert!(out[2]["text"][0].as_str().unwrap().contains("42"), "{out:?}");
    assert_eq!(out[3]["text"][0], "hello through the gateway", "{out:?}");
    assert_eq!(out[4]["error"]["code"], -32602, "{out:?}");
}

#[tokio::test]
async fn python_sdk_over_http_legacy_and_auto() {
    let (gw, _ev, files) = three_real_upstreams().await;
    let url = gw.url();
    let out = py_client(&["--url", &url, "--mode", "auto", "list"]).await;
    assert_eq!(out[0]["server"]["name"], "mcp-gateway", "{out:?}");
    check_list(&out[0]);
    for mode in ["legacy", "auto"] {
        exercise(&["--url", &url], mode, files.path()).await;
    }
    // 100 concurrent calls on one session, spread over two upstreams.
    let out = py_client(&["--url", &url, "concurrent", "everything__echo", r#"{"message":"c"}"#, "100"]).await;
    assert_eq!(out[0]["ok"], 100, "{out:?}");
    let out = py_client(&["--url", &url, "concurrent", "evhttp__echo", r#"{"message":"c"}"#, "100"]).await;
    assert_eq!(out[0]["ok"], 100, "{out:?}");

    // The real server killed mid-run: restarted, and serving again.
    let before = gw.wait_ready("everything").await;
    let pid = before["pid"].as_u64().unwrap() as i32;
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), nix::sys::signal::Signal::SIGKILL).unwrap();
    gw.wait_upstream("everything", |u| u["state"] == "ready" && u["pid"] != before["pid"]).await;
    let out =
        py_client(&["--url", &url, "--mode", "legacy", "call", "everything__echo", r#"{"message":"back"}"#]).await;
    assert_eq!(out[0]["text"][0], "Echo: back", "{out:?}");
    assert_eq!(gw.stop().await.code(), Some(0));
}

#[tokio::test]
async fn python_sdk_over_gateway_stdio_legacy_and_auto() {
    let (gw, _ev, files) = three_real_upstreams().await;
    // The same config, served by `mcp-gateway stdio` launched by the SDK.
    let config = gw.dir.path().join("gateway.toml");
    let config = config.to_str().unwrap();
    for mode in ["legacy", "auto"] {
        exercise(&["--stdio", "--", gateway_bin(), "stdio", "--config", config], mode, files.path()).await;
    }
}

#[tokio::test]
async fn postgres_server_negotiates_2024_11_05() {
    let p = peers();
    let pg = Postgres::start().await;
    let port = pg.port;
    let toml = format!(
        "[upstreams.pg]\ncommand = \"node\"\nargs = [{:?}, \"postgresql://postgres@127.0.0.1:{port}/postgres\"]\n",
        path_str(&p.postgres)
    );
    let gw = Gateway::start(&toml).await;
    let st = gw.wait_ready("pg").await;
    assert_eq!(st["protocol_version"], "2024-11-05");
    let out = py_client(&[
        "--url",
        &gw.url(),
        "--mode",
        "legacy",
        "call",
        "pg__query",
        r#"{"sql":"select name from items order by id"}"#,
    ])
    .await;
    let text = out[0]["text"][0].as_str().unwrap_or_default();
    assert!(text.contains("alpha") && text.contains("gamma"), "{out:?}");
    // It has resources but no resource templates: its -32601 for that
    // optional list is no failure, nor worth a warning at every start.
    let logs = gw.proc.logs();
    assert!(!logs.contains("resources/templates/list failed"), "{logs}");
    let u = gw.upstream("pg").await;
    assert_eq!(u["failures"]["upstream_internal"], 0, "{u}");
}
