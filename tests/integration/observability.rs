//! Observability (issue 5): the span tree of a call through retries,
//! trace context reaching HTTP and stdio upstreams, `/metrics` on the main
//! and the admin listener, the audit log, and secret masking in logs.

use std::collections::HashMap;
use std::time::Duration;

use serde_json::{Value, json};

use crate::support::otlp::{OtlpReceiver, SpanRecord};
use crate::support::*;

const TRACE_ID: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const CLIENT_SPAN: &str = "00f067aa0ba902b7";

/// A chaos stdio upstream whose `read` tool is retried (trusted hints).
fn chaos_stdio(id: &str, state: &std::path::Path) -> String {
    format!(
        "[upstreams.{id}]\ncommand = {:?}\nargs = [{:?}, \"--stdio\", \"--state-file\", {:?}]\ntrusted = true\n\
         [upstreams.{id}.retry]\ninitial_delay = \"10ms\"\nmax_delay = \"20ms\"\n",
        peers().python.display().to_string(),
        fixture("chaos.py"),
        path_str(state)
    )
}

fn by_id(spans: &[SpanRecord]) -> HashMap<&str, &SpanRecord> {
    spans.iter().map(|s| (s.span_id.as_str(), s)).collect()
}

/// The JSON inside an `echo_context` result.
fn context_of(resp: &Value) -> Value {
    serde_json::from_str(&text(resp)).unwrap_or_else(|e| panic!("echo_context result ({e}): {resp}"))
}

#[tokio::test]
async fn traces_follow_a_call_through_retries_to_each_upstream() {
    let otlp = OtlpReceiver::start().await;
    let web = Fixture::python("http_upstream.py", &[]).await;
    let state = tempfile::NamedTempFile::new_in(root().join("target")).unwrap();
    let toml = format!(
        "[traces]\nendpoint = {:?}\nservice_name = \"gw-under-test\"\n\
         [upstreams.web]\nurl = {:?}\n{}{}",
        otlp.endpoint(),
        web.url(),
        raw_stdio("raw", ""),
        chaos_stdio("chaos", state.path()),
    );
    let gw = Gateway::start(&toml).await;
    for id in ["web", "raw", "chaos"] {
        gw.wait_ready(id).await;
    }
    let mut c = gw.client().await;
    let traceparent = format!("00-{TRACE_ID}-{CLIENT_SPAN}-01");

    // 1. HTTP upstream, client context in the traceparent header.
    let body =
        json!({"jsonrpc":"2.0","id":"h1","method":"tools/call","params":{"name":"web__echo_context","arguments":{}}});
    let r = c.post(&body.to_string(), &[("traceparent", &traceparent)]).await;
    let web_seen = context_of(&r.json());
    let web_tp =
        web_seen["headers"]["traceparent"].as_str().unwrap_or_else(|| panic!("no traceparent header: {web_seen}"));

    // 2. stdio upstream, client context in _meta.traceparent (no header).
    let r = c
        .request("tools/call", json!({"name":"raw__echo_context","arguments":{},"_meta":{"traceparent":traceparent}}))
        .await;
    let raw_seen = context_of(&r);
    let raw_tp = raw_seen["meta"]["traceparent"].as_str().unwrap_or_else(|| panic!("no _meta.traceparent: {raw_seen}"));

    // 3. A read that fails once and is retried.
    let body = json!({"jsonrpc":"2.0","id":"r1","method":"tools/call","params":{"name":"chaos__read",
        "arguments":{"key":"t","fault":"rpc_error_before","code":-32603,"fail_times":1}}});
    let r = c.post(&body.to_string(), &[("traceparent", &traceparent)]).await.json();
    assert_eq!(text(&r), "ok t 1", "{r}");

    // 4. No client context: a new trace, still propagated.
    let r = c.request("tools/call", json!({"name":"raw__echo_context","arguments":{}})).await;
    let fresh_tp = context_of(&r)["meta"]["traceparent"].as_str().map(str::to_owned).expect("a traceparent");

    // Stopping flushes the exporter.
    assert!(gw.stop().await.success());
    let spans = otlp.spans();
    assert!(otlp.content_types().iter().all(|ct| ct == "application/x-protobuf"), "{:?}", otlp.content_types());
    let ids = by_id(&spans);
    let ours: Vec<&SpanRecord> = spans.iter().filter(|s| s.trace_id == TRACE_ID).collect();
    assert!(ours.iter().all(|s| s.service == "gw-under-test"));

    // Each upstream saw the context of its own attempt span, in our trace.
    for (tp, tool) in [(web_tp, "echo_context"), (raw_tp, "echo_context")] {
        let parts: Vec<&str> = tp.split('-').collect();
        assert_eq!(parts.len(), 4, "{tp}");
        assert_eq!(parts[1], TRACE_ID, "the upstream got our trace id: {tp}");
        let attempt = ids.get(parts[2]).unwrap_or_else(|| panic!("span {} was exported: {spans:#?}", parts[2]));
        assert_eq!(attempt.kind, 3, "the attempt is a CLIENT span");
        assert_eq!(attempt.attributes["gen_ai.tool.name"], tool);
        assert_eq!(attempt.attributes["mcp.method.name"], "tools/call");
        assert_eq!(attempt.attributes["mcp_gateway.attempt"], "1");
        // attempt → route → server → the client's span.
        let route = ids[attempt.parent_span_id.as_str()];
        assert_eq!((route.name.as_str(), route.kind), ("route", 1));
        let server = ids[route.parent_span_id.as_str()];
        assert_eq!(server.kind, 2, "the request span is a SERVER span");
        assert_eq!(server.parent_span_id, CLIENT_SPAN, "a child of the client's span");
        assert!(server.name.starts_with("tools/call ") && server.name.ends_with("__echo_context"), "{}", server.name);
        assert_eq!(server.attributes["mcp.method.name"], "tools/call");
        assert_eq!(server.attributes["network.transport"], "tcp");
        assert!(server.attributes.contains_key("mcp.session.id"));
    }
    assert_eq!(ids[web_tp.split('-').nth(2).unwrap()].attributes["mcp_gateway.upstream"], "web");
    assert_eq!(ids[web_tp.split('-').nth(2).unwrap()].attributes["network.transport"], "tcp");
    assert_eq!(ids[raw_tp.split('-').nth(2).unwrap()].attributes["network.transport"], "pipe");

    // The retried call: one route span with two attempts, the first failed.
    let server = ours
        .iter()
        .find(|s| s.kind == 2 && s.attributes.get("jsonrpc.request.id").map(String::as_str) == Some("r1"))
        .unwrap_or_else(|| panic!("the retried call's span: {ours:#?}"));
    assert_eq!(server.attributes["gen_ai.tool.name"], "chaos__read");
    let route = ours.iter().find(|s| s.parent_span_id == server.span_id).expect("a route span");
    assert_eq!(route.attributes["mcp_gateway.attempts"], "2");
    assert_eq!(route.attributes["mcp_gateway.upstream"], "chaos");
    let mut attempts: Vec<&&SpanRecord> = ours.iter().filter(|s| s.parent_span_id == route.span_id).collect();
    attempts.sort_by_key(|s| s.attributes["mcp_gateway.attempt"].clone());
    assert_eq!(attempts.len(), 2, "{attempts:#?}");
    assert_eq!(attempts[0].attributes["error.type"], "upstream_internal");
    assert_eq!(attempts[0].status_code, 2, "a failed attempt has an error status");
    assert!(!attempts[1].attributes.contains_key("error.type"), "{:?}", attempts[1]);
    assert!(!server.attributes.contains_key("error.type"), "the call succeeded in the end");

    // The call without client context is a root span of its own trace.
    let fresh: Vec<&str> = fresh_tp.split('-').collect();
    assert_ne!(fresh[1], TRACE_ID);
    let root_span = spans.iter().find(|s| s.trace_id == fresh[1] && s.kind == 2).expect("its server span");
    assert_eq!(root_span.parent_span_id, "", "no parent: a new trace");
}

#[tokio::test]
async fn metrics_on_the_main_listener_count_calls_by_class() {
    let state = tempfile::NamedTempFile::new_in(root().join("target")).unwrap();
    let gw = Gateway::start(&format!("{}{}", raw_stdio("raw", ""), chaos_stdio("chaos", state.path()))).await;
    gw.wait_ready("raw").await;
    gw.wait_ready("chaos").await;
    let mut c = gw.client().await;
    c.call("raw__echo", json!({"x":1})).await;
    c.call("chaos__work", json!({"key":"a","fault":"tool_error"})).await;
    c.call("nope__x", json!({})).await;
    let r = gw.http.get(format!("http://{}/metrics", gw.addr)).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert!(r.headers()["content-type"].to_str().unwrap().starts_with("application/openmetrics-text"));
    let text = r.text().await.unwrap();
    for line in [
        r#"mcp_gateway_requests_total{upstream="raw",method="tools/call",tool="echo",class="ok"} 1"#,
        r#"mcp_gateway_requests_total{upstream="chaos",method="tools/call",tool="work",class="tool_error"} 1"#,
        r#"mcp_gateway_requests_total{upstream="",method="tools/call",tool="",class="protocol"} 1"#,
        r#"mcp_gateway_upstream_up{upstream="raw"} 1"#,
        r#"mcp_gateway_downstream_sessions{transport="http"} 1"#,
        r#"mcp_gateway_upstream_attempt_duration_seconds_count{upstream="chaos",class="tool_error"} 1"#,
    ] {
        assert!(text.contains(line), "missing `{line}` in:\n{text}");
    }
    // A client cannot mint label values: the unknown tool's name is nowhere.
    assert!(!text.contains("nope__x") && !text.contains("\"x\""), "{text}");
    assert!(text.ends_with("# EOF\n"));
    // Behind the Host check like /status.
    let r = gw.http.get(format!("http://{}/metrics", gw.addr)).header("host", "evil.example").send().await.unwrap();
    assert_eq!(r.status(), 403);
}

#[tokio::test]
async fn admin_listener_serves_metrics_instead_of_the_main_one() {
    let port = free_port();
    let gw = Gateway::start(&format!("[admin]\nlisten = \"127.0.0.1:{port}\"\n{}", raw_stdio("raw", ""))).await;
    gw.wait_ready("raw").await;
    let main = gw.http.get(format!("http://{}/metrics", gw.addr)).send().await.unwrap();
    assert_eq!(main.status(), 404, "not on the main listener");
    let admin = gw.http.get(format!("http://127.0.0.1:{port}/metrics")).send().await.unwrap();
    assert_eq!(admin.status(), 200);
    assert!(admin.text().await.unwrap().contains(r#"mcp_gateway_upstream_up{upstream="raw"} 1"#));
    let ready = gw.http.get(format!("http://127.0.0.1:{port}/readyz")).send().await.unwrap();
    assert_eq!(ready.status(), 200);
    assert!(gw.stop().await.success());
}

#[tokio::test]
async fn audit_log_has_one_line_per_call_with_digest_and_masked_values() {
    // A secret the model passes back in arguments must not land in the file.
    let (dir, path) = write_config("");
    // A key for the argument digests, shared by every replica through the
    // secrets file (32 bytes of 7).
    let key = "BwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwc=";
    std::fs::write(
        dir.path().join("secrets.env"),
        format!("API_TOKEN=s3cr3t-token-value\nMCP_GATEWAY_AUDIT_KEY={key}\n"),
    )
    .unwrap();
    let state = tempfile::NamedTempFile::new_in(root().join("target")).unwrap();
    // Outside the config's folder, which goes with the gateway.
    let logs = tempfile::tempdir_in(root().join("target")).unwrap();
    let audit = logs.path().join("logs/audit.jsonl");
    let toml = format!(
        "[gateway]\nsecrets_file = \"secrets.env\"\n[audit]\npath = {:?}\ninclude_arguments = true\n{}{}\
         [upstreams.raw.env]\nTOKEN = \"${{API_TOKEN}}\"\n",
        path_str(&audit),
        raw_stdio("raw", ""),
        chaos_stdio("chaos", state.path()),
    );
    std::fs::write(&path, toml).unwrap();
    let gw = Gateway::start_at(&path, dir).await;
    gw.wait_ready("raw").await;
    gw.wait_ready("chaos").await;
    let mut c = gw.client().await;
    c.call("raw__echo", json!({"note":"s3cr3t-token-value","n":1})).await;
    c.call("chaos__read", json!({"key":"b","fault":"rpc_error_before","code":-32603,"fail_times":1})).await;
    c.call("raw__missing", json!({})).await;
    c.request("tools/list", json!({})).await;
    let session = c.session.clone().unwrap();
    assert!(gw.stop().await.success());
    let text = std::fs::read_to_string(&audit).unwrap();
    assert!(!text.contains("s3cr3t-token-value"), "the secret was masked: {text}");
    assert!(!text.contains(&session), "the session id itself is a credential: {text}");
    let lines: Vec<Value> = text.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(lines.len(), 3, "one line per tools/call, none for tools/list: {text}");
    let [echo, read, missing] = &lines[..] else { unreachable!() };
    assert_eq!(echo["name"], "raw__echo");
    assert_eq!((echo["upstream"].as_str(), echo["tool"].as_str()), (Some("raw"), Some("echo")));
    assert_eq!(echo["class"], "ok");
    assert_eq!(echo["attempts"], 1);
    assert_eq!(echo["arguments"], json!({"note":"***","n":1}));
    // Keyed: a digest that cannot be checked against guesses without the key.
    let digest = echo["arguments_hmac"].as_str().unwrap();
    let audit_key = mcp_gateway::config::AuditKey::decode(key).unwrap();
    let expected = {
        use hmac::{KeyInit, Mac};
        let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(audit_key.bytes()).unwrap();
        // The arguments' text as the client sent it.
        mac.update(json!({"note":"s3cr3t-token-value","n":1}).to_string().as_bytes());
        mac.finalize().into_bytes().iter().map(|b| format!("{b:02x}")).collect::<String>()
    };
    assert_eq!(digest, format!("hmac-sha256:{expected}"), "{echo}");
    assert!(echo.get("arguments_sha256").is_none());
    assert!(!logs.path().join("logs/audit.jsonl.key").exists(), "the configured key is used, none made");
    assert_eq!(echo["transport"], "http");
    assert_eq!(echo["principal"], "anonymous", "no [auth]: everyone is anonymous");
    assert_eq!(echo["session"].as_str().unwrap().len(), 16);
    assert_eq!(echo["session"], read["session"], "one session, one digest");
    assert!(echo["time"].as_str().unwrap().ends_with('Z'));
    assert!(echo["latency_ms"].as_f64().unwrap() > 0.0);
    assert_eq!((read["class"].as_str(), read["attempts"].as_u64()), (Some("ok"), Some(2)), "{read}");
    assert_eq!(missing["class"], "protocol");
    assert_eq!(missing["attempts"], 0);
    assert_eq!(missing["upstream"], "raw", "counted against the namespace's upstream");
    assert_eq!(missing["tool"], Value::Null);
}

#[tokio::test]
async fn logs_are_json_lines_with_structured_fields_when_asked() {
    let gw = Gateway::start(&format!("[gateway]\nlog_format = \"json\"\n{}", raw_stdio("raw", ""))).await;
    gw.wait_ready("raw").await;
    let logs = gw.proc.logs();
    assert!(gw.stop().await.success());
    let lines: Vec<Value> = logs
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not a JSON line ({e}): {l}")))
        .collect();
    assert!(lines.len() >= 3, "{logs}");
    assert!(lines.iter().all(|l| l["level"].is_string() && l["fields"]["message"].is_string()), "{logs}");
    assert!(
        lines.iter().any(|l| l["fields"]["upstream"] == "raw" && l["fields"]["message"] == "Upstream initialized."),
        "fields are structured, not in the message: {logs}"
    );
}

/// The standard MCP metrics (`[traces] metrics`) arrive over OTLP beside
/// the spans, for a 2025 session and for stateless 2026-07-28 requests,
/// with the conventions' names, unit, buckets and bounded attributes; the
/// spans follow the conventions in both eras.
#[tokio::test]
async fn standard_mcp_metrics_and_spans_in_both_eras() {
    let otlp = OtlpReceiver::start().await;
    let state = tempfile::NamedTempFile::new_in(root().join("target")).unwrap();
    let toml = format!(
        "[traces]\nendpoint = {:?}\nservice_name = \"gw-std\"\nmetrics = true\nmetrics_interval = \"200ms\"\n{}{}",
        otlp.endpoint(),
        raw_stdio("raw", ""),
        chaos_stdio("chaos", state.path()),
    );
    let gw = Gateway::start(&toml).await;
    gw.wait_ready("raw").await;
    gw.wait_ready("chaos").await;

    // A 2025 session: a call, a tool error, a read of a resource no one has.
    let mut c = gw.client().await;
    let session = c.session.clone().unwrap();
    assert!(c.call("raw__echo", json!({"x":1})).await.get("result").is_some());
    let r = c.call("chaos__work", json!({"key":"a","fault":"tool_error"})).await;
    assert_eq!(r["result"]["isError"], true, "{r}");
    let r = c.request("resources/read", json!({"uri":"file:///secret/nope"})).await;
    assert!(r.get("error").is_some(), "{r}");
    // Its end is the server session's duration.
    let r = c.http.delete(&c.url).header("mcp-session-id", &session).send().await.unwrap();
    assert!(r.status().is_success(), "{}", r.status());

    // 2026-07-28: stateless requests, no session.
    let r = modern_call(&gw.url(), None, "raw__echo", json!({"x":2})).await;
    assert!(r.get("result").is_some(), "{r}");
    let r = modern_call(&gw.url(), None, "chaos__work", json!({"key":"b","fault":"tool_error"})).await;
    assert_eq!(r["result"]["isError"], true, "{r}");

    // Periodic export: the operations arrive while the gateway runs.
    let seen =
        wait_for(Duration::from_secs(10), || (!otlp.latest("mcp.server.operation.duration").is_empty()).then_some(()))
            .await;
    assert!(seen.is_some(), "no metrics within 10s: {:?}", otlp.points());
    // Stopping flushes both exporters (and ends the upstream connections).
    assert!(gw.stop().await.success());
    assert!(otlp.content_types().iter().all(|ct| ct == "application/x-protobuf"), "{:?}", otlp.content_types());

    let points = otlp.points();
    for p in &points {
        assert_eq!(p.unit, "s", "{p:?}");
        assert_eq!(p.service, "gw-std");
        assert_eq!(p.temporality, 2, "cumulative");
        assert_eq!(p.bounds, [0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0], "{p:?}");
        // Bounded: never a session id, a resource URI or what a client typed.
        assert!(!p.attributes.contains_key("mcp.session.id") && !p.attributes.contains_key("mcp.resource.uri"));
        assert!(p.attributes.values().all(|v| !v.contains("secret") && !v.contains(&session)), "{p:?}");
    }
    let find = |name: &str, want: &[(&str, &str)]| {
        otlp.latest(name)
            .into_iter()
            .find(|p| want.iter().all(|(k, v)| p.attributes.get(*k).map(String::as_str) == Some(*v)))
            .unwrap_or_else(|| panic!("no {name} point with {want:?} in {:#?}", otlp.latest(name)))
    };
    let absent =
        |p: &crate::support::otlp::PointRecord, k: &str| assert!(!p.attributes.contains_key(k), "{k} in {p:?}");

    // Server operations, one series per era.
    let ok = [
        ("mcp.method.name", "tools/call"),
        ("gen_ai.tool.name", "echo"),
        ("gen_ai.operation.name", "execute_tool"),
        ("mcp_gateway.upstream", "raw"),
        ("network.transport", "tcp"),
    ];
    for version in ["2025-11-25", "2026-07-28"] {
        let p = find("mcp.server.operation.duration", &[&ok[..], &[("mcp.protocol.version", version)]].concat());
        assert_eq!(p.count, 1, "{p:?}");
        absent(&p, "error.type");
        let p = find(
            "mcp.server.operation.duration",
            &[("gen_ai.tool.name", "work"), ("error.type", "tool_error"), ("mcp.protocol.version", version)],
        );
        assert_eq!(p.count, 1, "{p:?}");
    }
    let p = find("mcp.server.operation.duration", &[("mcp.method.name", "resources/read")]);
    assert!(p.attributes.contains_key("rpc.response.status_code") && p.attributes.contains_key("error.type"), "{p:?}");

    // Client operations: every request to an upstream, its handshake too.
    let p = find(
        "mcp.client.operation.duration",
        &[("mcp.method.name", "tools/call"), ("gen_ai.tool.name", "echo"), ("mcp_gateway.upstream", "raw")],
    );
    assert_eq!(p.count, 2, "one call per era: {p:?}");
    assert_eq!(p.attributes["network.transport"], "pipe");
    assert!(p.attributes.contains_key("mcp.protocol.version"), "{p:?}");
    absent(&p, "error.type");
    let p = find("mcp.client.operation.duration", &[("gen_ai.tool.name", "work"), ("error.type", "tool_error")]);
    assert_eq!(p.count, 2, "{p:?}");
    find("mcp.client.operation.duration", &[("mcp.method.name", "initialize"), ("mcp_gateway.upstream", "raw")]);
    find("mcp.client.operation.duration", &[("mcp.method.name", "tools/list"), ("mcp_gateway.upstream", "chaos")]);

    // Sessions: the 2025 one (the stateless requests had none), and each
    // upstream connection, ended by the gateway (no error).
    let sessions = otlp.latest("mcp.server.session.duration");
    assert_eq!(sessions.iter().map(|p| p.count).sum::<u64>(), 1, "one session, not the stateless calls: {sessions:#?}");
    assert_eq!(sessions[0].attributes["mcp.protocol.version"], "2025-11-25");
    assert_eq!(sessions[0].attributes["network.transport"], "tcp");
    for up in ["raw", "chaos"] {
        let p = find("mcp.client.session.duration", &[("mcp_gateway.upstream", up), ("network.transport", "pipe")]);
        assert_eq!(p.count, 1, "{p:?}");
        assert!(p.attributes.contains_key("mcp.protocol.version"), "{p:?}");
        absent(&p, "error.type");
    }

    // Spans: `{mcp.method.name} {target}`, the era's version, no session
    // on 2026-07-28, `tool_error` for isError, the URI as an attribute only.
    let spans = otlp.spans();
    let server = |name: &str, version: &str| -> Vec<SpanRecord> {
        spans
            .iter()
            .filter(|s| s.kind == 2 && s.name == name)
            .filter(|s| s.attributes.get("mcp.protocol.version").map(String::as_str) == Some(version))
            .cloned()
            .collect()
    };
    let legacy = server("tools/call raw__echo", "2025-11-25");
    assert_eq!(legacy.len(), 1, "{spans:#?}");
    assert!(legacy[0].attributes.contains_key("mcp.session.id"));
    let modern = server("tools/call raw__echo", "2026-07-28");
    assert_eq!(modern.len(), 1, "{spans:#?}");
    assert!(!modern[0].attributes.contains_key("mcp.session.id"), "{:?}", modern[0]);
    assert_eq!(modern[0].attributes["gen_ai.operation.name"], "execute_tool");
    assert_eq!(modern[0].attributes["jsonrpc.request.id"], "1");
    for version in ["2025-11-25", "2026-07-28"] {
        let failed = server("tools/call chaos__work", version);
        assert_eq!(failed.len(), 1, "{spans:#?}");
        assert_eq!(failed[0].attributes["error.type"], "tool_error");
        assert_eq!(failed[0].status_code, 2, "an error status with error.type");
        assert_eq!(failed[0].attributes.contains_key("mcp.session.id"), version == "2025-11-25");
    }
    let read = server("resources/read", "2025-11-25");
    assert_eq!(read.len(), 1, "{spans:#?}");
    assert_eq!(read[0].attributes["mcp.resource.uri"], "file:///secret/nope");
    assert!(read[0].attributes.contains_key("rpc.response.status_code"), "{:?}", read[0]);
    assert_eq!(read[0].status_code, 2);
    assert!(spans.iter().all(|s| !s.name.contains("file://")), "a URI is never in a span name");
}
