//! `/mcp` as the Streamable HTTP spec says, with precise status codes.

use std::time::Duration;

use futures_util::StreamExt;
use serde_json::json;

use crate::support::*;

#[tokio::test]
async fn status_codes_and_errors_follow_the_spec() {
    let gw = Gateway::start(&format!("[gateway]\nmax_message_bytes = 65536\n{}", raw_stdio("raw", ""))).await;
    gw.wait_ready("raw").await;
    let c = gw.client().await;
    let anon = McpHttp { session: None, ..McpHttp::connect(&gw.url()).await };
    let ping = r#"{"jsonrpc":"2.0","id":1,"method":"ping"}"#;

    // A request without a session → 400; with an unknown one → 404.
    assert_eq!(anon.post(ping, &[]).await.status, 400);
    assert_eq!(anon.post(ping, &[("mcp-session-id", "nope")]).await.status, 404);
    // Good session → 200.
    let r = c.post(ping, &[]).await;
    assert_eq!((r.status, r.json()["result"].clone()), (200, json!({})));
    // Unsupported protocol version → 400 (the header set by `post` is
    // replaced by the one given here).
    let r = c
        .http
        .post(&c.url)
        .header("content-type", "application/json")
        .header("accept", "application/json, text/event-stream")
        .header("mcp-session-id", c.session.as_deref().unwrap())
        .header("mcp-protocol-version", "1999-01-01")
        .body(ping)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    // Origin and Host checks → 403.
    assert_eq!(c.post(ping, &[("origin", "http://evil.example")]).await.status, 403);
    assert_eq!(c.post(ping, &[("origin", "http://localhost:3000")]).await.status, 200);
    let r = c
        .http
        .post(&c.url)
        .header("host", "evil.example")
        .header("content-type", "application/json")
        .body(ping)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
    // /status (pids, errors) is behind the same check; health probes are not.
    let base = format!("http://{}", gw.addr);
    let r = c.http.get(format!("{base}/status")).header("host", "evil.example").send().await.unwrap();
    assert_eq!(r.status(), 403);
    let r = c.http.get(format!("{base}/status")).header("origin", "http://evil.example").send().await.unwrap();
    assert_eq!(r.status(), 403);
    let r = c.http.get(format!("{base}/healthz")).header("host", "10.0.0.7:8080").send().await.unwrap();
    assert_eq!(r.status(), 200);
    // Malformed JSON → 400 with -32700; not JSON-RPC → -32600.
    let r = c.post("{oops", &[]).await;
    assert_eq!((r.status, r.json()["error"]["code"].clone()), (400, json!(-32700)));
    let r = c.post(r#"{"jsonrpc":"2.0","id":5}"#, &[]).await;
    assert_eq!((r.status, r.json()["error"]["code"].clone()), (400, json!(-32600)));
    // Over the body limit → 413.
    let big = format!(r#"{{"jsonrpc":"2.0","id":6,"method":"ping","params":{{"x":"{}"}}}}"#, "a".repeat(70_000));
    assert_eq!(c.post(&big, &[]).await.status, 413);
    // Wrong content type → 415.
    let r = c.http.post(&c.url).header("content-type", "text/plain").body(ping).send().await.unwrap();
    assert_eq!(r.status(), 415);
    // Notifications → 202.
    assert_eq!(
        c.post(r#"{"jsonrpc":"2.0","method":"notifications/cancelled","params":{"requestId":9}}"#, &[]).await.status,
        202
    );
    // `server/discover` is a 2026-07-28 request, without a session; one
    // without its `_meta` is invalid params (docs/mcp.md, both eras).
    let r = anon.post(r#"{"jsonrpc":"2.0","id":7,"method":"server/discover"}"#, &[]).await;
    assert_eq!((r.status, r.json()["error"]["code"].clone()), (400, json!(-32602)));
    // Unknown method → -32601; unknown tool → -32602.
    let r = c.post(r#"{"jsonrpc":"2.0","id":8,"method":"resources/nope"}"#, &[]).await;
    assert_eq!(r.json()["error"]["code"], -32601);
    let mut c2 = gw.client().await;
    let r = c2.call("raw__missing", json!({})).await;
    assert_eq!(r["error"]["code"], -32602);
    // The connection survives all of that.
    assert_eq!(c2.call("raw__echo", json!({"k":1})).await["result"]["args"], json!({"k":1}));
    // GET needs text/event-stream → 406.
    let r = c
        .http
        .get(&c.url)
        .header("mcp-session-id", c.session.as_deref().unwrap())
        .header("accept", "application/json")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 406);
    // DELETE ends the session; then it is unknown.
    let r = c.http.delete(&c.url).header("mcp-session-id", c.session.as_deref().unwrap()).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(c.post(ping, &[]).await.status, 404);
    // Session ids are sealed tokens (session_tokens.rs): short enough for
    // any load balancer's header limit, one of their own per session.
    let id = c2.session.clone().unwrap();
    assert!(id.starts_with("mgw1.") && id.len() <= 512, "{id}");
    assert!(id.bytes().all(|b| b.is_ascii_graphic()));
    assert_ne!(Some(id), c.session);
}

#[tokio::test]
async fn get_stream_carries_list_changed() {
    let gw = Gateway::start(&raw_stdio("raw", "")).await;
    gw.wait_ready("raw").await;
    let mut c = gw.client().await;
    let sid = c.session.clone().unwrap();
    let resp =
        c.http.get(&c.url).header("mcp-session-id", &sid).header("accept", "text/event-stream").send().await.unwrap();
    assert_eq!(resp.status(), 200);
    // A second stream for the same session is refused.
    let second =
        c.http.get(&c.url).header("mcp-session-id", &sid).header("accept", "text/event-stream").send().await.unwrap();
    assert_eq!(second.status(), 409);

    let r = c.call("raw__add_tool", json!({"name":"fresh"})).await;
    assert_eq!(text(&r), "added");
    let mut stream = resp.bytes_stream();
    let mut seen = String::new();
    let got = tokio::time::timeout(PATIENCE, async {
        while let Some(chunk) = stream.next().await {
            seen.push_str(&String::from_utf8_lossy(&chunk.unwrap()));
            if seen.contains("notifications/tools/list_changed") {
                return true;
            }
        }
        false
    })
    .await;
    assert_eq!(got, Ok(true), "stream so far: {seen}");
    assert!(c.tool_names().await.contains(&"raw__fresh".to_owned()));
    assert_eq!(text(&c.call("raw__fresh", json!({})).await), "echo");
}

#[tokio::test]
async fn sse_response_mode() {
    let gw = Gateway::start(&format!("[gateway]\nresponse_mode = \"sse\"\n{}", raw_stdio("raw", ""))).await;
    gw.wait_ready("raw").await;
    let c = gw.client().await;
    let r = c
        .post(
            r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"raw__echo","arguments":{"a":1}}}"#,
            &[],
        )
        .await;
    assert_eq!(r.headers["content-type"], "text/event-stream");
    // A priming event first (SEP-1699: an id, the reconnection time, empty
    // data), so even a stream lost before its first message can resume.
    let (priming, r_body) = r.body.split_once("\n\n").unwrap();
    assert_eq!(priming, "id: 1-1\nretry: 1000\ndata: ", "{}", r.body);
    // An event id (`<stream>-<n>`) lets the client resume the stream.
    let (id_line, rest) = r_body.split_once('\n').unwrap();
    assert!(id_line.starts_with("id: 1-"), "{}", r.body);
    assert!(
        rest.starts_with("event: message\ndata: {\"jsonrpc\":\"2.0\",\"id\":1,\"result\":{\"zeta\":1"),
        "{}",
        r.body
    );
    // And the official SDK client handles it.
    let out =
        py_client(&["--url", &gw.url(), "--mode", "legacy", "call", "raw__sleep", r#"{"ms":1,"tag":"via-sse"}"#]).await;
    assert_eq!(out[0]["text"][0], "via-sse");
    let _ = Duration::ZERO;
}

#[tokio::test]
async fn a_request_id_in_flight_cannot_be_reused() {
    let gw = Gateway::start(&raw_stdio("raw", "")).await;
    gw.wait_ready("raw").await;
    let c = gw.client().await;
    let call = r#"{"jsonrpc":"2.0","id":5,"method":"tools/call","params":{"name":"raw__sleep","arguments":{"ms":400,"tag":"once"}}}"#;
    let (a, b) = tokio::join!(c.post(call, &[]), c.post(call, &[]));
    let mut outcomes: Vec<serde_json::Value> = [a, b].iter().map(|r| r.json()).collect();
    outcomes.sort_by_key(|r| r.get("error").is_some());
    assert_eq!(text(&outcomes[0]), "once", "{outcomes:?}");
    assert_eq!(outcomes[1]["error"]["code"], -32600, "{outcomes:?}");
    assert!(outcomes[1]["error"]["message"].as_str().unwrap().contains("already in flight"), "{outcomes:?}");
    // Once answered, the id is free again.
    assert_eq!(text(&c.post(call, &[]).await.json()), "once");
}

#[tokio::test]
async fn sighup_keeps_the_gateway_serving() {
    let gw = Gateway::start(&raw_stdio("raw", "")).await;
    gw.wait_ready("raw").await;
    let mut c = gw.client().await;
    let pid = gw.upstream("raw").await["pid"].clone();
    // Before this, SIGHUP's default action ended the process at once
    // (exit 129), dropping every session and call without a drain.
    gw.proc.signal(nix::sys::signal::Signal::SIGHUP);
    let logged = wait_for(PATIENCE, || gw.proc.logs().contains("SIGHUP received").then_some(())).await;
    assert!(logged.is_some(), "{}", gw.proc.logs());
    assert!(c.call("raw__echo", json!({"n":1})).await.get("result").is_some(), "the same session serves on");
    assert_eq!(gw.upstream("raw").await["pid"], pid, "the upstream was not restarted");
    assert!(gw.stop().await.success(), "and a SIGTERM still ends it cleanly");
}
