//! The official Python SDK as the client, with its sampling, elicitation,
//! roots and progress callbacks, through the gateway to server-everything
//! over Streamable HTTP (shared: server requests travel on the call's own
//! stream) and over stdio with `isolation = "per-session"` (each session
//! gets its own process, initialised with that client's capabilities).
//! Two sessions run at once and must each see only their own requests,
//! progress, roots and tasks. Also: the legacy HTTP+SSE endpoint.

use serde_json::{Value, json};

use crate::support::*;

/// Runs `tests/clients/py_client.py` against the gateway (the arguments
/// are copied, so calls can be joined), in the SDK's `legacy` mode: what
/// this module tests (server requests relayed to the client, the 2025
/// subscriptions) is 2025's; a 2026-07-28 client gets sampling and
/// elicitation as input-required results once the eras are bridged.
fn sdk(gw: &Gateway, args: &[&str]) -> impl std::future::Future<Output = Value> + use<> {
    let mut all: Vec<String> =
        vec!["--url".into(), gw.url(), "--deadline".into(), "60".into(), "--mode".into(), "legacy".into()];
    all.extend(args.iter().map(|a| (*a).to_owned()));
    async move {
        let refs: Vec<&str> = all.iter().map(String::as_str).collect();
        py_client(&refs).await.pop().expect("one output line")
    }
}

fn result_text(out: &Value) -> String {
    out["result"]["text"]
        .as_array()
        .map(|t| t.iter().filter_map(Value::as_str).collect::<Vec<_>>().join("\n"))
        .unwrap_or_else(|| panic!("a result: {out}"))
}

/// Sampling, elicitation and progress for two sessions at once: each
/// client's callbacks get only its own requests.
async fn two_sessions_get_their_own_server_requests(gw: &Gateway, ns: &str) {
    let sampling = format!("{ns}__trigger-sampling-request");
    let (a, b) = tokio::join!(
        sdk(gw, &["--sampling-text", "answer of A", "callbacks", &sampling, r#"{"prompt":"from a","maxTokens":7}"#]),
        sdk(gw, &["--sampling-text", "answer of B", "callbacks", &sampling, r#"{"prompt":"from b","maxTokens":7}"#]),
    );
    for (out, me, other) in [(&a, "A", "from b"), (&b, "B", "from a")] {
        assert!(result_text(out).contains(&format!("answer of {me}")), "{out}");
        let asked = out["sampling"].as_array().unwrap();
        assert_eq!(asked.len(), 1, "{out}");
        assert!(!asked[0].to_string().contains(other), "{me} saw the other's request: {out}");
    }

    let elicit = format!("{ns}__trigger-elicitation-request");
    let out =
        sdk(gw, &["--elicit-json", r#"{"name":"Ada","check":true,"integer":7}"#, "callbacks", &elicit, "{}"]).await;
    assert_eq!(out["elicitation"].as_array().unwrap().len(), 1, "{out}");
    assert!(result_text(&out).contains("Ada"), "{out}");

    let long = format!("{ns}__trigger-long-running-operation");
    let args = r#"{"duration":1,"steps":3}"#;
    let (a, b) = tokio::join!(sdk(gw, &["callbacks", &long, args]), sdk(gw, &["callbacks", &long, args]));
    for out in [&a, &b] {
        let steps: Vec<f64> =
            out["progress"].as_array().unwrap().iter().map(|p| p["progress"].as_f64().unwrap()).collect();
        assert_eq!(steps, [1.0, 2.0, 3.0], "each session its own progress, once: {out}");
    }
}

#[tokio::test]
async fn sdk_callbacks_through_a_shared_http_upstream() {
    let everything = Fixture::everything_http().await;
    let toml = format!(
        "[gateway]\nresponse_mode = \"sse\"\n[upstreams.everything]\nurl = \"{}\"\nroots = [\"file:///srv/configured\"]\n",
        everything.url()
    );
    let gw = Gateway::start(&toml).await;
    gw.wait_ready("everything").await;
    two_sessions_get_their_own_server_requests(&gw, "everything").await;

    // A shared upstream is shown the configured roots, never a client's.
    let out = sdk(
        &gw,
        &["--roots", "file:///home/client-a", "--linger-ms", "600", "callbacks", "everything__get-roots-list", "{}"],
    )
    .await;
    let text = result_text(&out);
    assert!(text.contains("file:///srv/configured"), "{out}");
    assert!(!text.contains("client-a"), "{out}");
    assert_eq!(out["roots_asked"], 0, "{out}");

    // Tasks through the SDK; another session cannot reach the task.
    let out = sdk(&gw, &["task", "everything__simulate-research-query", r#"{"topic":"sdk"}"#, "60000"]).await;
    let id = out["created"]["taskId"].as_str().unwrap_or_else(|| panic!("{out}")).to_owned();
    assert!(id.starts_with("everything__"), "{out}");
    assert_eq!(out["statuses"].as_array().unwrap().last().unwrap(), "completed", "{out}");
    assert!(out["result"].to_string().contains("Research Report: sdk"), "{out}");
    assert_eq!(out["listed"], json!([id]), "{out}");
    let other = sdk(&gw, &["task-get", &id]).await;
    for op in ["get", "result", "cancel"] {
        assert_eq!(other[op]["error"]["code"], -32602, "{op} from another session: {other}");
    }
}

#[tokio::test]
async fn sdk_callbacks_through_a_per_session_stdio_upstream() {
    let p = peers();
    let toml = format!(
        "[upstreams.everything]\ncommand = \"node\"\nargs = [{:?}, \"stdio\"]\nisolation = \"per-session\"\n",
        path_str(&p.everything)
    );
    let gw = Gateway::start(&toml).await;
    gw.wait_ready("everything").await;
    let idle_children = children_of(gw.proc.pid()).len();
    two_sessions_get_their_own_server_requests(&gw, "everything").await;

    // Each session's own process is shown that client's roots.
    let roots = |r: &'static str| ["--roots", r, "--linger-ms", "600", "callbacks", "everything__get-roots-list", "{}"];
    let (a, b) = tokio::join!(sdk(&gw, &roots("file:///home/a")), sdk(&gw, &roots("file:///home/b")));
    assert!(result_text(&a).contains("file:///home/a") && !result_text(&a).contains("/home/b"), "{a}");
    assert!(result_text(&b).contains("file:///home/b") && !result_text(&b).contains("/home/a"), "{b}");

    // A task on the session's own process.
    let out = sdk(&gw, &["task", "everything__simulate-research-query", r#"{"topic":"own"}"#, "60000"]).await;
    assert!(out["result"].to_string().contains("Research Report: own"), "{out}");

    // Sessions ended (the SDK deletes them): their processes are gone.
    let pid = gw.proc.pid();
    let gone =
        wait_for(std::time::Duration::from_secs(30), || (children_of(pid).len() <= idle_children).then_some(())).await;
    assert!(gone.is_some(), "per-session processes left: {:?} (idle {idle_children})", children_of(pid));
}

#[tokio::test]
async fn sdk_sessions_hear_updates_only_for_what_they_subscribed_to() {
    // One shared stdio process: both URIs are subscribed on its single
    // session, and its (one) toggle makes it send updates for both; the
    // gateway must give each client only its own.
    let p = peers();
    let toml =
        format!("[upstreams.everything]\ncommand = \"node\"\nargs = [{:?}, \"stdio\"]\n", path_str(&p.everything));
    let gw = Gateway::start(&toml).await;
    gw.wait_ready("everything").await;
    let x = "demo+everything://resource/static/document/features.md";
    let y = "demo+everything://resource/static/document/architecture.md";
    // Updates come at once and then every 5 s: 6 s sees one tick after both
    // subscriptions are in place.
    let (a, b) = tokio::join!(
        sdk(&gw, &["subscribe", x, "6000", "everything__toggle-subscriber-updates", "{}"]),
        sdk(&gw, &["subscribe", y, "6000"]),
    );
    assert_eq!(a["subscribe"], json!({}), "{a}");
    assert!(a["call"]["text"].to_string().contains("Started simulated resource updated"), "{a}");
    for (out, mine) in [(&a, x), (&b, y)] {
        let updated = out["updated"].as_array().unwrap_or_else(|| panic!("{out}"));
        assert!(!updated.is_empty(), "no update for {mine}: {out}");
        assert!(updated.iter().all(|u| u == mine), "only {mine}, under the gateway's URI: {out}");
        assert_eq!(out["unsubscribe"], json!({}), "{out}");
    }
}

#[tokio::test]
async fn legacy_http_sse_clients_connect_at_sse() {
    let gw = Gateway::start(&raw_stdio("raw", "")).await;
    gw.wait_ready("raw").await;
    let url = format!("{}/sse", gw.url().trim_end_matches("/mcp"));
    let out = py_client(&["--url", &url, "--transport", "sse", "list"]).await;
    assert!(out[0]["tools"].as_array().unwrap().contains(&json!("raw__echo")), "{out:?}");
    let out =
        py_client(&["--url", &url, "--transport", "sse", "call", "raw__sleep", r#"{"ms":1,"tag":"legacy"}"#]).await;
    assert_eq!(out[0]["text"][0], "legacy", "{out:?}");
    let out =
        py_client(&["--url", &url, "--transport", "sse", "concurrent", "raw__sleep", r#"{"ms":20,"tag":"c"}"#, "20"])
            .await;
    assert_eq!(out[0]["ok"], 20, "{out:?}");

    // Unknown session → 404; a session ends with its stream.
    let http = reqwest::Client::new();
    let base = gw.url().trim_end_matches("/mcp").to_owned();
    let r = http
        .post(format!("{base}/messages?sessionId=nope"))
        .header("content-type", "application/json")
        .body(r#"{"jsonrpc":"2.0","id":1,"method":"ping"}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
    let mut stream = http.get(&url).header("accept", "text/event-stream").send().await.unwrap();
    let first = String::from_utf8(stream.chunk().await.unwrap().unwrap().to_vec()).unwrap();
    let endpoint = first.lines().find_map(|l| l.strip_prefix("data: ")).unwrap_or_else(|| panic!("{first}")).to_owned();
    assert!(endpoint.starts_with("/messages?sessionId="), "{first}");
    let post = |body: &'static str| {
        http.post(format!("{base}{endpoint}")).header("content-type", "application/json").body(body).send()
    };
    assert_eq!(post(r#"{"jsonrpc":"2.0","id":1,"method":"ping"}"#).await.unwrap().status(), 202);
    let answer = String::from_utf8(stream.chunk().await.unwrap().unwrap().to_vec()).unwrap();
    assert!(answer.contains("Send initialize first"), "{answer}");
    drop(stream);
    let mut still = 202;
    for _ in 0..100 {
        still = post(r#"{"jsonrpc":"2.0","method":"notifications/initialized"}"#).await.unwrap().status().as_u16();
        if still == 404 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    assert_eq!(still, 404, "the session ended with its stream");
}
