//! Upstream transports and supervision: restarts, session expiry,
//! stateless and SSE answers, legacy SSE, headers and secrets, shutdown.

use std::time::Duration;

use serde_json::json;

use crate::support::*;

#[tokio::test]
async fn killed_upstream_comes_back_and_serves_again() {
    let gw = Gateway::start(&raw_stdio("raw", "env = { RAW_STDIO_LOG_STDERR = \"1\" }")).await;
    let first = gw.wait_ready("raw").await;
    // The child's stderr is in the gateway's log, tagged with its upstream.
    let line =
        wait_for(PATIENCE, || gw.proc.logs().lines().find(|l| l.contains("raw-stdio: started")).map(str::to_owned))
            .await;
    let line = line.expect("stderr line forwarded");
    assert!(line.contains("upstream=raw") && line.contains("mcp_gateway::upstream::stderr"), "{line}");
    let pid = first["pid"].as_u64().unwrap() as u32;
    let mut c = gw.client().await;
    assert_eq!(text(&c.call("raw__pid", json!({})).await), pid.to_string());

    // Kill it from outside, as a crash would.
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid as i32), nix::sys::signal::Signal::SIGKILL).unwrap();
    let back = gw.wait_upstream("raw", |u| u["state"] == "ready" && u["pid"] != first["pid"]).await;
    assert!(back["restarts"].as_u64().unwrap() >= 1);
    let new_pid = text(&c.call("raw__pid", json!({})).await);
    assert_eq!(new_pid, back["pid"].to_string());
    assert!(!alive(pid));

    // A crash in the middle of a call fails that call with a transport
    // error naming the upstream; the next call works again.
    let r = c.call("raw__crash", json!({})).await;
    assert_eq!(r["error"]["data"]["class"], "transport", "{r}");
    assert_eq!(r["error"]["data"]["upstream"], "raw");
    gw.wait_upstream("raw", |u| u["state"] == "ready" && u["restarts"].as_u64() >= Some(2)).await;
    assert_eq!(c.call("raw__echo", json!({"again":true})).await["result"]["args"], json!({"again":true}));
}

#[tokio::test]
async fn expired_http_session_is_reinitialized_transparently() {
    let fx = Fixture::python("http_upstream.py", &["--expire-after", "2"]).await;
    let gw = Gateway::start(&format!("[upstreams.web]\nurl = \"{}\"\n", fx.url())).await;
    gw.wait_ready("web").await;
    let mut c = gw.client().await;
    // initialize + tools/list used the first session; the upstream now
    // answers one more request, then 404.
    let mut whoami = Vec::new();
    for _ in 0..4 {
        let r = c.call("web__whoami", json!({})).await;
        whoami.push(text(&r));
    }
    // Every call succeeded; the session changed under them.
    assert_eq!(whoami.first().unwrap(), "session 1");
    let mut sessions = whoami.clone();
    sessions.dedup();
    assert!(sessions.len() >= 2, "{whoami:?}");
    let log = fx.get("/control/log").await;
    let inits = log.as_array().unwrap().iter().filter(|m| *m == "initialize").count();
    assert_eq!(inits, sessions.len(), "one initialize per session: {log}");
    // `initialized` only after the initialize result was written.
    let trace = fx.get("/control/trace").await;
    let t = trace.as_array().unwrap();
    let sent = t.iter().position(|e| e["event"] == "sent" && e["method"] == "initialize").unwrap();
    let note = t.iter().position(|e| e["method"] == "notifications/initialized").unwrap();
    assert!(sent < note, "{trace}");
}

#[tokio::test]
async fn stateless_sse_answering_and_legacy_sse_upstreams() {
    let stateless = Fixture::python("http_upstream.py", &["--stateless"]).await;
    let sse = Fixture::python("http_upstream.py", &["--sse"]).await;
    let legacy = Fixture::python("legacy_sse.py", &[]).await;
    let toml = format!(
        "[upstreams.st]\nurl = \"{}\"\n[upstreams.sse]\nurl = \"{}\"\n[upstreams.old]\ntransport = \"sse\"\nurl = \"http://127.0.0.1:{}/sse\"\n",
        stateless.url(),
        sse.url(),
        legacy.port
    );
    let gw = Gateway::start(&toml).await;
    for id in ["st", "sse", "old"] {
        gw.wait_ready(id).await;
    }
    assert_eq!(gw.upstream("old").await["protocol_version"], "2024-11-05");
    let mut c = gw.client().await;
    for id in ["st", "sse", "old"] {
        let r = c.call(&format!("{id}__echo"), json!({"from": id})).await;
        assert_eq!(r["result"]["args"], json!({"from": id}), "{id}: {r}");
    }
    // Concurrent calls over the legacy stream, answered out of order.
    let calls = (0..10).map(|i| {
        let url = gw.url();
        async move {
            let mut c = McpHttp::connect(&url).await;
            let r = c.call("old__slow", json!({"ms": (10 - i) * 20})).await;
            text(&r)
        }
    });
    let got = futures_util::future::join_all(calls).await;
    for (i, t) in got.iter().enumerate() {
        assert_eq!(t, &format!("slept {}", (10 - i) * 20));
    }
}

#[tokio::test]
async fn secrets_fill_headers_and_never_show() {
    let secret = "tok-7f3a9c-SECRET";
    let fx = Fixture::python("http_upstream.py", &["--require-header", &format!("x-api-key={secret}")]).await;
    let toml = format!(
        "[gateway]\nsecrets_file = \"secrets.env\"\n[upstreams.web]\nurl = \"{}\"\nheaders = {{ x-api-key = \"${{API_TOKEN}}\" }}\n",
        fx.url()
    );
    let (dir, path) = write_config(&toml);
    std::fs::write(dir.path().join("secrets.env"), format!("# upstream credential\nAPI_TOKEN=\"{secret}\"\n")).unwrap();
    // A check of the same file with the secret missing names the key.
    let out = std::process::Command::new(gateway_bin())
        .args(["check", "--config"])
        .arg(&path)
        .env("MCP_GATEWAY_ENV_FILE", "/dev/null")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(64));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("upstreams.web.headers.x-api-key") && err.contains("API_TOKEN"), "{err}");
    assert!(!err.contains(secret));

    let gw = Gateway::start(
        &std::fs::read_to_string(&path)
            .unwrap()
            .replace("secrets.env", &dir.path().join("secrets.env").display().to_string()),
    )
    .await;
    gw.wait_ready("web").await;
    let mut c = gw.client().await;
    // The header reached the upstream (otherwise 401), and the client's
    // own Authorization did not (no token passthrough).
    let body = json!({"jsonrpc":"2.0","id":9,"method":"tools/call","params":{"name":"web__headers","arguments":{}}})
        .to_string();
    let r = c.post(&body, &[("authorization", "Bearer client-token-xyz")]).await.json();
    let seen = text(&r);
    assert!(seen.contains("x-api-key"), "{seen}");
    assert!(
        seen.contains(r#""mcp-protocol-version": "2025-11-25""#)
            || seen.contains(r#""mcp-protocol-version":"2025-11-25""#),
        "{seen}"
    );
    assert!(!seen.contains("client-token-xyz"), "client token leaked upstream: {seen}");
    assert_eq!(c.call("web__echo", json!({})).await["result"]["zeta"], 1);
    // The secret is nowhere in the gateway's logs or status.
    let status = gw.status().await.to_string();
    assert!(!status.contains(secret));
    assert!(!gw.proc.logs().contains(secret));
}

#[tokio::test]
async fn shutdown_escalates_and_leaves_no_process() {
    let p = peers();
    let toml = format!(
        "{}\n[upstreams.stubborn.env]\nRAW_STDIO_IGNORE_EOF = \"1\"\nRAW_STDIO_IGNORE_SIGTERM = \"1\"\n\n[upstreams.everything]\ncommand = \"node\"\nargs = [{:?}, \"stdio\"]\nshutdown_grace = \"500ms\"\n",
        raw_stdio("stubborn", "shutdown_grace = \"500ms\""),
        path_str(&p.everything)
    );
    let gw = Gateway::start(&toml).await;
    let a = gw.wait_ready("stubborn").await["pid"].as_u64().unwrap() as u32;
    let b = gw.wait_ready("everything").await["pid"].as_u64().unwrap() as u32;
    assert!(alive(a) && alive(b));
    let logs_before = gw.proc.stderr.clone();
    let status = gw.stop().await;
    assert_eq!(status.code(), Some(0));
    // Give the kernel a moment to tear down what SIGKILL hit.
    let gone = wait_for(Duration::from_secs(5), || {
        (!alive(a) && !alive(b) && group_members(a).is_empty() && group_members(b).is_empty()).then_some(())
    })
    .await;
    assert!(gone.is_some(), "left behind: {:?} {:?}", group_members(a), group_members(b));
    let logs = logs_before.lock().unwrap().clone();
    assert!(logs.contains("ignored stdin close; sending SIGTERM"), "{logs}");
    assert!(logs.contains("ignored SIGTERM; sending SIGKILL"), "{logs}");
}
