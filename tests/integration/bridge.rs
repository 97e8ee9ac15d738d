//! The bridge between the protocol eras (docs/mcp.md "Bridging the
//! eras"), with real peers on both sides:
//!
//! - A 2026-07-28 client (the official Python SDK, `mcp==2.3.0`, pinned to
//!   2026-07-28, with sampling, elicitation and roots callbacks:
//!   `tests/clients/bridge_client.py`) calls tools of 2025 upstreams that
//!   ask for input during the call: server-everything over Streamable HTTP
//!   and `tests/fixtures/mrtr_upstream.py` spoken to in 2025. The gateway
//!   answers with input-required results, the SDK runs its callbacks and
//!   retries, the upstream call completes.
//! - A 2025 client (the same SDK in legacy mode) calls tools of a
//!   2026-07-28 upstream (`mrtr_upstream.py`, the SDK's `MCPServer`, whose
//!   tools ask the 2026-07-28 way): the gateway asks the client with 2025
//!   requests and retries upstream with the answers.
//! - The `requestState` the gateway hands out: sealed, bound to the
//!   principal and the call, single-use, refused with -32602 and counted
//!   otherwise; the bounds per principal and the answer timeout.

use serde_json::{Value, json};

use crate::support::keys::*;
use crate::support::otlp::{OtlpReceiver, SpanRecord};
use crate::support::*;

/// Runs `tests/clients/bridge_client.py` with `args`; one JSON line per call.
async fn bridge_client(args: &[&str]) -> Vec<Value> {
    let out = tokio::time::timeout(
        std::time::Duration::from_secs(120),
        tokio::process::Command::new(peers().python)
            .arg(root().join("tests/clients/bridge_client.py"))
            .args(["--deadline", "90"])
            .args(args)
            .kill_on_drop(true)
            .output(),
    )
    .await
    .expect("bridge_client finished")
    .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "bridge_client {args:?}: {}\n{stdout}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    stdout.lines().filter(|l| !l.trim().is_empty()).map(|l| serde_json::from_str(l).unwrap()).collect()
}

/// The call named `name` in `out`.
fn call<'a>(out: &'a [Value], name: &str) -> &'a Value {
    out.iter().find(|c| c["call"] == name).unwrap_or_else(|| panic!("no {name} in {out:?}"))
}

/// The text of a call's result (its blocks joined), or a panic naming
/// what came instead.
fn result_text(c: &Value) -> String {
    assert_eq!(c["result"]["isError"], false, "{c}");
    c["result"]["text"]
        .as_array()
        .unwrap_or_else(|| panic!("no result: {c}"))
        .iter()
        .filter_map(Value::as_str)
        .collect::<Vec<_>>()
        .join("\n")
}

fn kinds(c: &Value) -> Vec<String> {
    c["callbacks"].as_array().unwrap().iter().map(|k| k["kind"].as_str().unwrap().to_owned()).collect()
}

async fn metrics(gw: &Gateway) -> String {
    gw.http.get(format!("http://{}/metrics", gw.addr)).send().await.unwrap().text().await.unwrap()
}

fn series(text: &str, name: &str) -> f64 {
    text.lines()
        .find_map(|l| l.strip_prefix(name).and_then(|v| v.strip_prefix(' ')))
        .map_or(0.0, |v| v.trim().parse().unwrap())
}

fn bridged(direction: &str, outcome: &str) -> String {
    format!("mcp_gateway_bridge_exchanges_total{{direction=\"{direction}\",outcome=\"{outcome}\"}}")
}

/// Waits until the bridged exchanges open read `want` (both directions).
async fn open_becomes(gw: &Gateway, want: f64) {
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(20);
    loop {
        let m = metrics(gw).await;
        let open = series(&m, "mcp_gateway_bridge_in_flight{direction=\"to_modern\"}")
            + series(&m, "mcp_gateway_bridge_in_flight{direction=\"to_legacy\"}");
        if open == want {
            return;
        }
        assert!(tokio::time::Instant::now() < deadline, "{open} bridged exchanges open, expected {want}");
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
}

/// Two principals' 2026-07-28 clients at once, through the gateway to
/// 2025 upstreams that ask for sampling and elicitation during a call:
/// each client's callbacks run for its own call only, and each call
/// completes with its own answers.
#[tokio::test]
async fn a_2026_client_answers_what_a_2025_upstream_asks_during_a_call() {
    let everything = Fixture::everything_http().await;
    let old = Fixture::python("mrtr_upstream.py", &["--http"]).await;
    let otlp = OtlpReceiver::start().await;
    let toml = format!(
        "{}[traces]\nendpoint = \"{}\"\n[upstreams.everything]\nurl = \"{}\"\nprotocol = \"legacy\"\n[upstreams.old]\nurl = \"{}\"\nprotocol = \"legacy\"\n",
        keys(),
        otlp.endpoint(),
        everything.url(),
        old.url()
    );
    let mut gw = Gateway::start(&toml).await;
    gw.authorize(OPS);
    gw.wait_ready("everything").await;
    gw.wait_ready("old").await;
    let url = gw.url();
    let sampling = r#"{"prompt":"capital of France?","maxTokens":20}"#;
    let client = |key: &'static str, me: &'static str| {
        let url = url.clone();
        async move {
            let elicit = format!(r#"{{"name":"{me}","color":"green"}}"#);
            let sample = format!("answer of {me}");
            bridge_client(&[
                "--mode",
                "2026-07-28",
                "--url",
                &url,
                "--bearer",
                key,
                "--no-roots",
                "--sample-text",
                &sample,
                "--elicit-json",
                &elicit,
                "--call",
                "everything__trigger-sampling-request",
                "--args",
                sampling,
                "--call",
                "old__ask_two_rounds",
                "--call",
                "old__ask_url",
                "--call",
                "old__echo",
                "--args",
                r#"{"message":"plain"}"#,
            ])
            .await
        }
    };
    let (a, b) = tokio::join!(client(ALICE, "Ann"), client(BOB, "Bob"));
    for (out, me, other) in [(&a, "Ann", "Bob"), (&b, "Bob", "Ann")] {
        for c in out.iter() {
            assert_eq!(c["protocolVersion"], "2026-07-28", "the client spoke 2026-07-28: {c}");
            assert!(!c.to_string().contains(&format!("answer of {other}")), "{me} saw {other}'s answer: {c}");
        }
        let s = call(out, "everything__trigger-sampling-request");
        assert_eq!(kinds(s), ["sampling"], "{s}");
        assert!(result_text(s).contains(&format!("answer of {me}")), "{s}");
        // An input-required round, then the retry with its answer and state.
        assert_eq!(s["rounds"].as_array().unwrap().len(), 2, "{s}");
        assert_eq!(s["rounds"][1]["requestState"], true, "{s}");
        let two = call(out, "old__ask_two_rounds");
        assert_eq!(kinds(two), ["elicitation", "elicitation"], "{two}");
        assert_eq!(result_text(two), format!("{me} likes green"));
        let u = call(out, "old__ask_url");
        assert_eq!(u["callbacks"][0]["params"]["mode"], "url", "{u}");
        assert_eq!(result_text(u), "url: accept");
        let plain = call(out, "old__echo");
        assert_eq!(result_text(plain), "echo: plain");
        assert_eq!(plain["rounds"].as_array().unwrap().len(), 1, "no input asked, no round: {plain}");
    }
    // The elicitation tool of server-everything, form mode, with the
    // schema it sends.
    let out = bridge_client(&[
        "--mode",
        "2026-07-28",
        "--url",
        &url,
        "--bearer",
        ALICE,
        "--no-roots",
        "--elicit-json",
        r#"{"name":"Ada","check":true,"integer":7}"#,
        "--call",
        "everything__trigger-elicitation-request",
    ])
    .await;
    let e = call(&out, "everything__trigger-elicitation-request");
    assert_eq!(kinds(e), ["elicitation"], "{e}");
    assert!(result_text(e).contains("Ada"), "{e}");

    let m = metrics(&gw).await;
    assert!(series(&m, &bridged("to_modern", "asked")) >= 9.0, "{m}");
    assert!(series(&m, &bridged("to_modern", "completed")) >= 7.0, "{m}");
    open_becomes(&gw, 0.0).await;
    // The bridge's own spans: a round asked, a retry completed, each a
    // child of its request's server span; the attempts name the 2025
    // revision they spoke.
    assert!(gw.stop().await.success());
    let spans = otlp.spans();
    let bridge: Vec<&SpanRecord> = spans.iter().filter(|s| s.name == "bridge to_modern").collect();
    let outcome = |o: &str| bridge.iter().filter(|s| s.attributes["mcp_gateway.bridge.outcome"] == o).count();
    assert!(outcome("input_required") >= 9 && outcome("completed") >= 7, "{bridge:#?}");
    for b in &bridge {
        let parent = spans.iter().find(|s| s.span_id == b.parent_span_id).unwrap_or_else(|| panic!("{b:#?}"));
        assert!(parent.name.starts_with("tools/call "), "{parent:#?}");
    }
    let attempt =
        spans.iter().find(|s| s.kind == 3 && s.attributes.get("mcp_gateway.upstream").is_some_and(|u| u == "old"));
    assert_eq!(attempt.unwrap().attributes["mcp.protocol.version"], "2025-11-25");
}

/// A 2025 client (legacy session) calls tools of a 2026-07-28 upstream
/// that ask for input the 2026-07-28 way: the gateway asks the client in
/// 2025 requests (elicitation in form and URL mode, sampling, roots), on
/// the call's own stream, and retries upstream with the answers and the
/// upstream's `requestState` as it came. A client that declared no
/// sampling gets a clear error; one that declared no roots gets the
/// configured roots.
#[tokio::test]
async fn a_2025_client_answers_what_a_2026_upstream_asks_for() {
    let otlp = OtlpReceiver::start().await;
    let toml = format!(
        "[gateway]\nresponse_mode = \"sse\"\n[traces]\nendpoint = \"{}\"\n[upstreams.new]\ncommand = {:?}\nargs = [{:?}]\nprotocol = \"modern\"\nroots = [\"file:///configured\"]\n",
        otlp.endpoint(),
        peers().python,
        fixture("mrtr_upstream.py"),
    );
    let gw = Gateway::start(&toml).await;
    gw.wait_ready("new").await;
    let url = gw.url();
    let client = |me: &'static str| {
        let url = url.clone();
        async move {
            let elicit = format!(r#"{{"name":"{me}","color":"red"}}"#);
            let sample = format!("Paris, says {me}");
            bridge_client(&[
                "--mode",
                "legacy",
                "--url",
                &url,
                "--roots",
                "file:///mine",
                "--sample-text",
                &sample,
                "--elicit-json",
                &elicit,
                "--call",
                "new__ask_name",
                "--call",
                "new__ask_sample",
                "--call",
                "new__ask_url",
                "--call",
                "new__ask_roots",
                "--call",
                "new__ask_two_rounds",
            ])
            .await
        }
    };
    let (a, b) = tokio::join!(client("Ann"), client("Bob"));
    for (out, me) in [(&a, "Ann"), (&b, "Bob")] {
        for c in out.iter() {
            assert_eq!(c["protocolVersion"], "2025-11-25", "{c}");
        }
        assert_eq!(result_text(call(out, "new__ask_name")), format!("Hello, {me}!"));
        assert_eq!(result_text(call(out, "new__ask_sample")), format!("LLM said: Paris, says {me}"));
        let u = call(out, "new__ask_url");
        // 2025-11-25 needs an elicitationId, which 2026-07-28 does not send.
        assert!(u["callbacks"][0]["params"]["elicitationId"].is_string(), "{u}");
        assert_eq!(result_text(u), "url: accept");
        assert_eq!(result_text(call(out, "new__ask_roots")), "roots: file:///mine");
        let two = call(out, "new__ask_two_rounds");
        assert_eq!(kinds(two), ["elicitation", "elicitation"], "{two}");
        assert_eq!(result_text(two), format!("{me} likes red"));
    }
    // What the upstream saw: each retry carried the answers and its own
    // (sealed) state back.
    let log = bridge_client(&["--mode", "legacy", "--url", &url, "--call", "new__call_log"]).await;
    let entries: Vec<Value> = serde_json::from_str(&result_text(&log[0])).unwrap();
    let retries: Vec<&Value> = entries.iter().filter(|e| e["tool"] == "ask_two_rounds").collect();
    assert_eq!(retries.len(), 6, "three legs per client: {entries:?}");
    assert!(retries.iter().filter(|e| e["requestState"] == "sealed").count() == 4, "{entries:?}");
    assert!(retries.iter().all(|e| e["protocolVersion"] == "2026-07-28"), "{entries:?}");

    // No sampling declared: a clear error, not a hang; no roots declared:
    // the configured roots.
    let out = bridge_client(&[
        "--mode",
        "legacy",
        "--url",
        &url,
        "--no-sampling",
        "--no-roots",
        "--call",
        "new__ask_sample",
        "--call",
        "new__ask_roots",
    ])
    .await;
    let s = call(&out, "new__ask_sample");
    assert!(s["error"]["message"].as_str().unwrap().contains("sampling"), "{s}");
    assert_eq!(result_text(call(&out, "new__ask_roots")), "roots: file:///configured");
    let m = metrics(&gw).await;
    assert!(series(&m, &bridged("to_legacy", "completed")) >= 10.0, "{m}");
    open_becomes(&gw, 0.0).await;
    // One span per round asked of the client, under the call's route.
    assert!(gw.stop().await.success());
    let spans = otlp.spans();
    let rounds: Vec<&SpanRecord> = spans.iter().filter(|s| s.name == "bridge to_legacy").collect();
    assert!(
        rounds.iter().filter(|s| s.attributes["mcp_gateway.bridge.outcome"] == "answered").count() >= 12,
        "{rounds:#?}"
    );
    assert!(rounds.iter().any(|s| s.attributes["mcp_gateway.bridge.round"] == "2"), "ask_two_rounds: {rounds:#?}");
}

/// `mrtr_upstream.py` over HTTP as upstream `old`, spoken to in 2025,
/// behind a gateway with the test keys (`before` first in its config,
/// `upstream` more lines of the upstream's section); the harness acts as
/// `ops`. Keep the fixture as long as the gateway.
async fn old_behind_gateway(before: &str, upstream: &str) -> (Fixture, Gateway) {
    let old = Fixture::python("mrtr_upstream.py", &["--http"]).await;
    let toml = format!("{}{before}[upstreams.old]\nurl = \"{}\"\nprotocol = \"legacy\"\n{upstream}", keys(), old.url());
    let mut gw = Gateway::start(&toml).await;
    gw.authorize(OPS);
    gw.wait_ready("old").await;
    (old, gw)
}

/// The first leg of a bridged call: its input-required result.
async fn first_leg(url: &str, key: &str, args: Value) -> Value {
    let caps = json!({"elicitation": {"form": {}}, "sampling": {}});
    let body = json!({"jsonrpc":"2.0","id":1,"method":"tools/call",
        "params":{"name":"old__ask_name","arguments":args,"_meta":modern_meta(caps)}});
    let r = post_modern(url, Some(key), &body, &[("mcp-method", "tools/call"), ("mcp-name", "old__ask_name")]).await;
    let v: Value = serde_json::from_str(&r.body).unwrap_or_else(|e| panic!("{e}: {}", r.body));
    assert_eq!(v["result"]["resultType"], "input_required", "{v}");
    v["result"].clone()
}

/// A retry of `old__ask_name` by `key` with `state`, `args` and `responses`.
async fn retry(url: &str, key: &str, state: &str, args: Value, responses: Value) -> Value {
    let caps = json!({"elicitation": {"form": {}}});
    let body = json!({"jsonrpc":"2.0","id":2,"method":"tools/call","params":{"name":"old__ask_name","arguments":args,
        "inputResponses":responses,"requestState":state,"_meta":modern_meta(caps)}});
    let r = post_modern(url, Some(key), &body, &[("mcp-method", "tools/call"), ("mcp-name", "old__ask_name")]).await;
    serde_json::from_str(&r.body).unwrap_or_else(|e| panic!("{e}: {}", r.body))
}

fn refused(v: &Value, says: &str) {
    assert_eq!(v["error"]["code"], -32602, "{v}");
    assert!(v["error"]["message"].as_str().unwrap().contains(says), "wanted {says:?}: {v}");
}

/// The `requestState` of a bridged call is the gateway's, sealed: another
/// principal, other arguments, an altered or replayed state are each
/// refused with -32602 and counted, and a malformed answer is refused
/// without losing the exchange.
#[tokio::test]
async fn a_bridged_request_state_is_bound_to_its_principal_and_call() {
    let (_old, gw) = old_behind_gateway("", "").await;
    let url = gw.url();
    let args = json!({});
    let first = first_leg(&url, ALICE, args.clone()).await;
    let (key, asked) = first["inputRequests"].as_object().unwrap().iter().next().unwrap();
    assert_eq!(asked["method"], "elicitation/create", "{first}");
    let state = first["requestState"].as_str().unwrap();
    assert!(state.starts_with("mgwrs1.") && !state.contains("old"), "sealed, says nothing: {state}");
    let answer = json!({ key.clone(): {"action": "accept", "content": {"name": "Ann"}} });

    refused(&retry(&url, BOB, state, args.clone(), answer.clone()).await, "another call");
    refused(&retry(&url, ALICE, state, json!({"x": 1}), answer.clone()).await, "another call");
    let mut altered = state.to_owned().into_bytes();
    let last = altered.len() - 3;
    altered[last] = if altered[last] == b'A' { b'B' } else { b'A' };
    refused(&retry(&url, ALICE, std::str::from_utf8(&altered).unwrap(), args.clone(), answer.clone()).await, "altered");
    refused(&retry(&url, ALICE, state, args.clone(), json!({ key.clone(): "Ann" })).await, "must be the result");
    // The exchange survived all of that.
    let done = retry(&url, ALICE, state, args.clone(), answer.clone()).await;
    assert_eq!(done["result"]["content"][0]["text"], "Hello, Ann!", "{done}");
    assert_eq!(done["result"]["resultType"], "complete", "{done}");
    // Single use.
    refused(&retry(&url, ALICE, state, args.clone(), answer.clone()).await, "has ended");
    // A reload that closes the tool to Alice while her call is held: the
    // retry is answered like an unknown tool and the call cancelled.
    let held = first_leg(&url, ALICE, args.clone()).await;
    let config = gw.dir.path().join("gateway.toml");
    let toml = std::fs::read_to_string(&config).unwrap();
    let deny = format!("{toml}[[access]]\nprincipals = [\"alice\"]\ntools = {{ deny = [\"old__ask_name\"] }}\n");
    std::fs::write(&config, deny).unwrap();
    gw.proc.signal(nix::sys::signal::Signal::SIGHUP);
    let reloaded = "mcp_gateway_config_reloads_total{outcome=\"applied\"}";
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(20);
    while series(&metrics(&gw).await, reloaded) < 1.0 {
        assert!(tokio::time::Instant::now() < deadline, "reloaded: {}", gw.proc.logs());
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    let denied = retry(&url, ALICE, held["requestState"].as_str().unwrap(), args.clone(), answer).await;
    assert!(denied["error"]["message"].as_str().unwrap().contains("old__ask_name"), "{denied}");
    assert!(denied.get("result").is_none(), "{denied}");
    let m = metrics(&gw).await;
    assert_eq!(series(&m, &bridged("to_modern", "other_call")), 2.0, "{m}");
    assert_eq!(series(&m, &bridged("to_modern", "invalid_state")), 1.0, "{m}");
    assert_eq!(series(&m, &bridged("to_modern", "ended")), 1.0, "{m}");
    assert_eq!(series(&m, &bridged("to_modern", "completed")), 1.0, "{m}");
    assert_eq!(series(&m, &bridged("to_modern", "revoked")), 1.0, "{m}");
    open_becomes(&gw, 0.0).await;
}

/// Bridged exchanges are bounded per principal (one more is refused,
/// counted `limited`, and fails rather than hangs; another principal is
/// not affected) and wait `answer_timeout` for the client: then the
/// upstream call is cancelled and the state has ended.
#[tokio::test]
async fn bridged_exchanges_are_bounded_per_principal_and_time_out() {
    let (_old, gw) =
        old_behind_gateway("[bridge]\nmax_exchanges_per_principal = 1\nanswer_timeout = \"2s\"\n", "").await;
    let url = gw.url();
    let first = first_leg(&url, ALICE, json!({})).await;
    let state = first["requestState"].as_str().unwrap().to_owned();
    // Alice's second exchange is over her bound: the upstream's request is
    // refused, so her call ends (here as the tool's error), not parked.
    let caps = json!({"elicitation": {"form": {}}});
    let body = json!({"jsonrpc":"2.0","id":3,"method":"tools/call",
        "params":{"name":"old__ask_name","arguments":{"n":2},"_meta":modern_meta(caps)}});
    let r = post_modern(&url, Some(ALICE), &body, &[("mcp-method", "tools/call"), ("mcp-name", "old__ask_name")]).await;
    let second: Value = serde_json::from_str(&r.body).unwrap();
    assert_ne!(second["result"]["resultType"], "input_required", "{second}");
    assert_eq!(series(&metrics(&gw).await, &bridged("to_modern", "limited")), 1.0);
    // Bob is not Alice.
    let bob = first_leg(&url, BOB, json!({})).await;
    assert!(bob["requestState"].is_string(), "{bob}");
    // Nobody answers: both exchanges end after answer_timeout.
    open_becomes(&gw, 0.0).await;
    let m = metrics(&gw).await;
    assert_eq!(series(&m, &bridged("to_modern", "timeout")), 2.0, "{m}");
    let late =
        retry(&url, ALICE, &state, json!({}), json!({"r1": {"action": "accept", "content": {"name": "A"}}})).await;
    assert_eq!(late["error"]["code"], -32602, "{late}");
    assert!(gw.proc.logs().contains("cancelled upstream"), "the parked call was cancelled");
}

/// `prompts/get` bridged too: a 2025 session asks a prompt of a 2026-07-28
/// upstream (the conformance fixture's MRTR prompt), is sent the
/// elicitation on the request's own stream, answers it, and gets the
/// prompt the answer made.
#[tokio::test]
async fn a_2025_client_answers_a_2026_prompts_input_required() {
    let up = Fixture::python("conformance_server.py", &["--http"]).await;
    let toml =
        format!("[gateway]\nresponse_mode = \"sse\"\n[upstreams.cf]\nurl = \"{}\"\nprotocol = \"modern\"\n", up.url());
    let gw = Gateway::start(&toml).await;
    gw.wait_ready("cf").await;
    let c = McpHttp::connect_with(&gw.url(), json!({"elicitation": {"form": {}}})).await;
    let get = json!({"jsonrpc":"2.0","id":"p-1","method":"prompts/get",
        "params":{"name":"cf__test_input_required_result_prompt","arguments":{}}});
    let mut stream = post_streaming(&c, &get).await;
    let request = stream.next().await;
    assert_eq!(request["method"], "elicitation/create", "{request}");
    assert!(request["id"].as_str().unwrap().starts_with("mcpgw-"), "{request}");
    let answer =
        json!({"jsonrpc":"2.0","id":request["id"],"result":{"action":"accept","content":{"context":"the bridge"}}});
    assert_eq!(c.post(&answer.to_string(), &[]).await.status, 202);
    let reply = stream.until(|m| m["id"] == "p-1").await.pop().unwrap();
    assert!(reply["result"]["messages"].to_string().contains("Prompt with context: the bridge"), "{reply}");
    assert!(reply["result"].get("inputRequests").is_none(), "no input-required result reaches a 2025 client: {reply}");
}

/// A modern `tools/call` of `tool` by `key`, with `extra` params (a retry's
/// `inputResponses` and `requestState`), declaring elicitation.
async fn modern_tool(url: &str, key: &str, tool: &str, extra: Value) -> Value {
    let mut params = json!({"name": tool, "arguments": {}, "_meta": modern_meta(json!({"elicitation": {"form": {}}}))});
    for (k, v) in extra.as_object().unwrap() {
        params[k] = v.clone();
    }
    let body = json!({"jsonrpc":"2.0","id":7,"method":"tools/call","params":params});
    let r = post_modern(url, Some(key), &body, &[("mcp-method", "tools/call"), ("mcp-name", tool)]).await;
    serde_json::from_str(&r.body).unwrap_or_else(|e| panic!("{e}: {}", r.body))
}

/// Both 2026-07-28: a modern upstream's own `requestState` reaches the
/// client wrapped by the gateway and bound to the principal it was given
/// to. Over the shared connection the upstream cannot tell Alice from
/// Bob: unwrapped, Bob could continue Alice's exchange (and learn what her
/// state carries). Bob's retry with Alice's state is refused; Alice's own
/// completes; an altered state is refused; the upstream gets its own state
/// back, byte for byte.
#[tokio::test]
async fn a_2026_upstreams_state_is_bound_to_the_principal_it_was_given_to() {
    let toml = format!(
        "{}[upstreams.new]\ncommand = {:?}\nargs = [{:?}]\nprotocol = \"modern\"\n",
        keys(),
        peers().python,
        fixture("mrtr_upstream.py"),
    );
    let mut gw = Gateway::start(&toml).await;
    gw.authorize(OPS);
    gw.wait_ready("new").await;
    let url = gw.url();
    let first = modern_tool(&url, ALICE, "new__ask_two_rounds", json!({})).await;
    assert_eq!(first["result"]["resultType"], "input_required", "{first}");
    let state = first["result"]["requestState"].as_str().unwrap();
    assert!(state.starts_with("mgwrs2."), "wrapped: {first}");
    let name = json!({"mrtr:name": {"action": "accept", "content": {"name": "Alice-secret"}}});
    let second =
        modern_tool(&url, ALICE, "new__ask_two_rounds", json!({"inputResponses": name, "requestState": state})).await;
    assert_eq!(second["result"]["resultType"], "input_required", "{second}");
    let state = second["result"]["requestState"].as_str().unwrap().to_owned();
    let color = json!({"mrtr:color": {"action": "accept", "content": {"color": "blue"}}});
    let retry = |key: &'static str, state: String| {
        let (url, color) = (url.clone(), color.clone());
        async move {
            modern_tool(&url, key, "new__ask_two_rounds", json!({"inputResponses": color, "requestState": state})).await
        }
    };
    let bob = retry(BOB, state.clone()).await;
    refused(&bob, "another call");
    assert!(!bob.to_string().contains("Alice-secret"), "{bob}");
    let mut altered = state.clone().into_bytes();
    let at = altered.len() / 2;
    altered[at] = if altered[at] == b'A' { b'B' } else { b'A' };
    refused(&retry(ALICE, String::from_utf8(altered).unwrap()).await, "altered");
    let done = retry(ALICE, state).await;
    assert_eq!(done["result"]["content"][0]["text"], "Alice-secret likes blue", "{done}");
    // The upstream saw its own (sealed) state on each retry.
    let log = modern_tool(&url, ALICE, "new__call_log", json!({})).await;
    let entries: Vec<Value> = serde_json::from_str(log["result"]["content"][0]["text"].as_str().unwrap()).unwrap();
    let legs: Vec<&Value> = entries.iter().filter(|e| e["tool"] == "ask_two_rounds").collect();
    assert_eq!(legs.len(), 3, "Bob's and the altered retry never reached it: {entries:?}");
    assert_eq!(legs[2]["outcome"], "complete", "{entries:?}");
    let m = metrics(&gw).await;
    assert_eq!(series(&m, &bridged("through", "other_call")), 1.0, "{m}");
    assert_eq!(series(&m, &bridged("through", "invalid_state")), 1.0, "{m}");
}

/// A parked call is not timed out by its upstream's `request_timeout`
/// while its client answers (a person takes longer than a tool): the
/// upstream's request waits on the client, so only the hard maximum and
/// `answer_timeout` bound it. A retry that answers nothing is asked the
/// same again.
#[tokio::test]
async fn a_parked_call_outlives_its_request_timeout_while_the_client_answers() {
    let (_old, gw) = old_behind_gateway("", "request_timeout = \"1s\"\n").await;
    let url = gw.url();
    let first = first_leg(&url, ALICE, json!({})).await;
    let state = first["requestState"].as_str().unwrap().to_owned();
    let key = first["inputRequests"].as_object().unwrap().keys().next().unwrap().clone();
    // Nothing answered: the same question again, its state still good.
    let again = retry(&url, ALICE, &state, json!({}), json!({})).await;
    assert_eq!(again["result"]["resultType"], "input_required", "{again}");
    assert!(again["result"]["inputRequests"].get(&key).is_some(), "{again}");
    tokio::time::sleep(std::time::Duration::from_millis(2500)).await;
    let answer = json!({ key: {"action": "accept", "content": {"name": "Slow"}} });
    let done = retry(&url, ALICE, again["result"]["requestState"].as_str().unwrap(), json!({}), answer).await;
    assert_eq!(done["result"]["content"][0]["text"], "Hello, Slow!", "{done}");
}

/// A `confirm` rule asks a 2026-07-28 client too: no request can ask it,
/// so the gateway answers with an input-required result carrying the
/// confirmation (a state bound to the principal and the call, nothing
/// held), and the retry that allows it goes ahead; a decline, another
/// principal's retry and a client that cannot be asked are refused. The
/// official SDK, pinned to 2026-07-28, confirms through its elicitation
/// callback without knowing a gateway asked.
#[tokio::test]
async fn a_confirm_rule_asks_a_2026_client_through_an_input_required_result() {
    let old = Fixture::python("mrtr_upstream.py", &["--http"]).await;
    let state_dir = tempfile::tempdir_in(root().join("target")).unwrap();
    let rules = state_dir.path().join("rules.toml");
    std::fs::write(
        &rules,
        "[[rule]]\nid = \"confirm-echo\"\naction = \"confirm\"\nmessage = \"Echo needs a yes.\"\nsteps = [{ tool = \"old__echo\" }]\n\
         [[rule]]\nid = \"confirm-rounds\"\naction = \"confirm\"\nmessage = \"Two rounds need a yes.\"\nsteps = [{ tool = \"new__ask_two_rounds\" }]\n",
    )
    .unwrap();
    let toml = format!(
        "{}[rules]\nfile = {:?}\n[upstreams.old]\nurl = \"{}\"\nprotocol = \"legacy\"\n\
         [upstreams.new]\ncommand = {:?}\nargs = [{:?}]\nprotocol = \"modern\"\n",
        keys(),
        path_str(&rules),
        old.url(),
        peers().python,
        fixture("mrtr_upstream.py"),
    );
    let mut gw = Gateway::start(&toml).await;
    gw.authorize(OPS);
    gw.wait_ready("old").await;
    gw.wait_ready("new").await;
    let url = gw.url();
    let args = json!({"message": "hi"});
    let echo = |key: &'static str, extra: Value, caps: Value| {
        let (url, args) = (url.clone(), args.clone());
        async move {
            let mut params = json!({"name": "old__echo", "arguments": args, "_meta": modern_meta(caps)});
            for (k, v) in extra.as_object().unwrap() {
                params[k] = v.clone();
            }
            let body = json!({"jsonrpc":"2.0","id":5,"method":"tools/call","params":params});
            let r =
                post_modern(&url, Some(key), &body, &[("mcp-method", "tools/call"), ("mcp-name", "old__echo")]).await;
            serde_json::from_str::<Value>(&r.body).unwrap_or_else(|e| panic!("{e}: {}", r.body))
        }
    };
    let elicit = json!({"elicitation": {"form": {}}});
    let first = echo(ALICE, json!({}), elicit.clone()).await;
    assert_eq!(first["result"]["resultType"], "input_required", "{first}");
    let ask = &first["result"]["inputRequests"]["confirm"];
    assert_eq!(ask["method"], "elicitation/create", "{first}");
    assert!(ask["params"]["message"].as_str().unwrap().contains("Echo needs a yes."), "{first}");
    let state = first["result"]["requestState"].as_str().unwrap();
    let yes = json!({"confirm": {"action": "accept", "content": {"allow": true}}});
    let no = json!({"confirm": {"action": "decline"}});
    // Bob cannot use Alice's confirmation: he is asked his own.
    let bob = echo(BOB, json!({"inputResponses": yes, "requestState": state}), elicit.clone()).await;
    assert_eq!(bob["result"]["resultType"], "input_required", "{bob}");
    assert_ne!(bob["result"]["requestState"].as_str(), Some(state), "{bob}");
    let declined = echo(ALICE, json!({"inputResponses": no, "requestState": state}), elicit.clone()).await;
    assert!(declined["error"]["message"].as_str().unwrap().contains("not confirmed"), "{declined}");
    // The user said no: that state cannot be turned into a yes.
    let overruled = echo(ALICE, json!({"inputResponses": yes, "requestState": state}), elicit.clone()).await;
    assert_eq!(overruled["result"]["resultType"], "input_required", "asked again: {overruled}");
    let fresh = echo(ALICE, json!({}), elicit.clone()).await;
    let state = fresh["result"]["requestState"].as_str().unwrap();
    let done = echo(ALICE, json!({"inputResponses": yes, "requestState": state}), elicit.clone()).await;
    assert_eq!(done["result"]["content"][0]["text"], "echo: hi", "{done}");
    // A confirmation allows one call: sent again, the user is asked again.
    let again = echo(ALICE, json!({"inputResponses": yes, "requestState": state}), elicit.clone()).await;
    assert_eq!(again["result"]["resultType"], "input_required", "{again}");
    // A client that cannot be asked gets the rule's refusal.
    let mute = echo(ALICE, json!({}), json!({})).await;
    assert!(mute["error"]["message"].as_str().unwrap().contains("confirm-echo"), "{mute}");
    // The SDK confirms through its own elicitation callback.
    let out = bridge_client(&[
        "--mode",
        "2026-07-28",
        "--url",
        &url,
        "--bearer",
        ALICE,
        "--no-roots",
        "--elicit-json",
        r#"{"allow":true}"#,
        "--call",
        "old__echo",
        "--args",
        r#"{"message":"sdk"}"#,
    ])
    .await;
    let c = call(&out, "old__echo");
    assert_eq!(kinds(c), ["elicitation"], "{c}");
    assert_eq!(result_text(c), "echo: sdk");
    // A confirmed call whose 2026-07-28 upstream then asks for input: its
    // continuations are the same call (not stopped by the rule again), and
    // the upstream gets every answer.
    let rounds = |extra: Value| modern_tool(&url, ALICE, "new__ask_two_rounds", extra);
    let asked = rounds(json!({})).await;
    assert!(asked["result"]["inputRequests"].get("confirm").is_some(), "{asked}");
    let state = asked["result"]["requestState"].as_str().unwrap().to_owned();
    let name = rounds(json!({"inputResponses": yes, "requestState": state})).await;
    assert!(name["result"]["inputRequests"].get("mrtr:name").is_some(), "the upstream asks now: {name}");
    let state = name["result"]["requestState"].as_str().unwrap().to_owned();
    let ann = json!({"mrtr:name": {"action": "accept", "content": {"name": "Ann"}}});
    let color = rounds(json!({"inputResponses": ann, "requestState": state})).await;
    assert!(color["result"]["inputRequests"].get("mrtr:color").is_some(), "not the rule again: {color}");
    let state = color["result"]["requestState"].as_str().unwrap().to_owned();
    let red = json!({"mrtr:color": {"action": "accept", "content": {"color": "red"}}});
    let done = rounds(json!({"inputResponses": red, "requestState": state})).await;
    assert_eq!(done["result"]["content"][0]["text"], "Ann likes red", "{done}");
    let m = metrics(&gw).await;
    assert!(m.contains(r#"mcp_gateway_rule_hits_total{rule="confirm-echo",action="confirm"}"#), "{m}");
    // The rule saw the two-round call twice (asked, then confirmed), never
    // its continuations.
    assert!(m.contains(r#"mcp_gateway_rule_hits_total{rule="confirm-rounds",action="confirm"} 2"#), "{m}");
}
