//! The whole MCP surface through the gateway (issue 3): pagination over
//! merged lists, prompts, resources with namespaced URIs, completion,
//! subscriptions, logging, list_changed for every list, progress and
//! cancellation. The upstream is `tests/fixtures/paged_stdio.py`, which
//! paginates every list and sends the server-side traffic on demand.

use std::collections::BTreeSet;

use serde_json::{Value, json};

use crate::support::*;

/// TOML for a stdio upstream running the paged fixture.
fn paged(id: &str, extra: &str) -> String {
    format!(
        "[upstreams.{id}]\ncommand = {:?}\nargs = [{:?}]\n{extra}\n",
        path_str(&peers().python),
        fixture("paged_stdio.py")
    )
}

/// Every entry of a list, following the gateway's cursors; also returns
/// how many pages it took.
async fn walk(c: &mut McpHttp, method: &str, key: &str) -> (Vec<Value>, usize) {
    let mut all = Vec::new();
    let mut cursor: Option<String> = None;
    for pages in 1..100 {
        let params = match &cursor {
            Some(c) => json!({ "cursor": c }),
            None => json!({}),
        };
        let r = c.request(method, params).await;
        let result = &r["result"];
        all.extend(result[key].as_array().unwrap_or_else(|| panic!("{r}")).iter().cloned());
        match result.get("nextCursor") {
            Some(n) => cursor = Some(n.as_str().unwrap().to_owned()),
            None => return (all, pages),
        }
    }
    panic!("more than 100 pages");
}

fn field(items: &[Value], f: &str) -> Vec<String> {
    items.iter().map(|i| i[f].as_str().unwrap().to_owned()).collect()
}

/// The fixture's `state` tool result.
async fn state(c: &mut McpHttp, tool: &str) -> Value {
    serde_json::from_str(&text(&c.call(tool, json!({})).await)).unwrap()
}

#[tokio::test]
async fn merged_lists_page_with_the_gateways_cursor_and_every_name_routes() {
    let toml = format!("[gateway]\npage_size = 7\n{}{}", paged("paged", ""), raw_stdio("raw", ""));
    let gw = Gateway::start(&toml).await;
    gw.wait_ready("paged").await;
    gw.wait_ready("raw").await;
    let mut c = gw.client().await;

    // The upstream paginates (10 a page); the gateway follows every
    // nextCursor, merges with raw's 7 tools and pages by its own 7.
    let (tools, pages) = walk(&mut c, "tools/list", "tools").await;
    let names = field(&tools, "name");
    assert_eq!(names.len(), 25 + 7, "{names:?}");
    assert_eq!(pages, 5);
    let mut sorted = names.clone();
    sorted.sort();
    assert_eq!(names, sorted, "deterministic order: sorted by exposed name");
    assert_eq!(names.iter().collect::<BTreeSet<_>>().len(), names.len(), "no duplicates");
    for special in ["admin.tools.list", "DATA-EXPORT_v2", "a.b-c_d", "filler_13"] {
        let exposed = format!("paged__{special}");
        assert!(names.contains(&exposed), "{exposed} in {names:?}");
        assert_eq!(text(&c.call(&exposed, json!({})).await), format!("called {special}"));
    }
    // `paged__` + 128 characters is over the limit: shortened, and it routes.
    let long = names.iter().find(|n| n.starts_with("paged__tttt")).unwrap();
    assert_eq!(long.len(), 128, "{long}");
    assert_eq!(text(&c.call(long, json!({})).await), format!("called {}", "t".repeat(128)));

    // Prompts, resources and templates: every page of the upstream, one
    // page each here only because 7 > what is left after the first page.
    let (prompts, _) = walk(&mut c, "prompts/list", "prompts").await;
    let prompt_names = field(&prompts, "name");
    assert_eq!(prompt_names.len(), 12);
    assert!(prompt_names.contains(&"paged__greet".to_owned()) && prompt_names.contains(&"paged__a.b-c_d".to_owned()));
    let (resources, pages) = walk(&mut c, "resources/list", "resources").await;
    let uris = field(&resources, "uri");
    assert_eq!((uris.len(), pages), (15, 3));
    for uri in ["file+paged:///data/readme.txt", "db+paged://main/users", "https+paged://example.com/x?y=1#z"] {
        assert!(uris.contains(&uri.to_owned()), "{uri} in {uris:?}");
    }
    let readme = resources.iter().find(|r| r["uri"] == "file+paged:///data/readme.txt").unwrap();
    assert_eq!(
        (&readme["name"], &readme["mimeType"]),
        (&json!("readme.txt"), &json!("text/plain")),
        "the rest is kept"
    );
    let (templates, _) = walk(&mut c, "resources/templates/list", "resourceTemplates").await;
    assert_eq!(field(&templates, "uriTemplate"), ["db+paged://main/{table}", "file+paged:///data/{path}"]);

    // Cursors the gateway did not hand out are -32602.
    let first = c.request("tools/list", json!({})).await;
    let cursor = first["result"]["nextCursor"].as_str().unwrap().to_owned();
    for bad in [json!("bm9wZQ=="), json!(""), json!(7), json!(format!("{cursor}00"))] {
        let r = c.request("tools/list", json!({ "cursor": bad })).await;
        assert_eq!(r["error"]["code"], -32602, "{bad}: {r}");
    }
    let r = c.request("prompts/list", json!({ "cursor": cursor })).await;
    assert_eq!(r["error"]["code"], -32602, "a tools cursor is not a prompts cursor: {r}");
}

#[tokio::test]
async fn a_walk_stays_correct_when_the_list_changes_between_pages() {
    let toml = format!("[gateway]\npage_size = 10\n{}", paged("paged", ""));
    let gw = Gateway::start(&toml).await;
    gw.wait_ready("paged").await;
    let mut c = gw.client().await;
    let first = c.request("tools/list", json!({})).await;
    let page1 = field(first["result"]["tools"].as_array().unwrap(), "name");
    let cursor = first["result"]["nextCursor"].as_str().unwrap().to_owned();
    let served = page1.last().unwrap().clone();
    let (before, _) = walk(&mut c, "tools/list", "tools").await;
    let before = field(&before, "name");

    // Between pages: one tool already served and one not yet are removed, one added.
    let not_yet = "filler_13";
    let already = page1[3].trim_start_matches("paged__").to_owned();
    assert!(page1.contains(&format!("paged__{already}")) && !page1.contains(&format!("paged__{not_yet}")));
    for (list_op, name) in [("remove", already.as_str()), ("remove", not_yet), ("add", "zz_added")] {
        let mut args = json!({ "list": "tools" });
        args[list_op] = json!(name);
        let r = c.call("paged__mutate", args).await;
        assert_eq!(text(&r), "ok");
    }
    wait_until(|| {
        let url = gw.url();
        async move {
            let mut c = McpHttp::connect(&url).await;
            let (now, _) = walk(&mut c, "tools/list", "tools").await;
            field(&now, "name").contains(&"paged__zz_added".to_owned())
        }
    })
    .await;

    let mut rest = Vec::new();
    let mut next = Some(cursor);
    while let Some(cur) = next {
        let r = c.request("tools/list", json!({ "cursor": cur })).await;
        rest.extend(field(r["result"]["tools"].as_array().unwrap(), "name"));
        next = r["result"].get("nextCursor").map(|n| n.as_str().unwrap().to_owned());
    }
    assert!(rest.iter().all(|n| n.as_str() > served.as_str()), "resumes after the last name served: {rest:?}");
    assert!(!rest.contains(&format!("paged__{not_yet}")), "removed before it was reached");
    assert!(rest.contains(&"paged__zz_added".to_owned()), "added after the cursor: {rest:?}");
    let walked: Vec<&String> = page1.iter().chain(&rest).collect();
    assert_eq!(walked.iter().collect::<BTreeSet<_>>().len(), walked.len(), "nothing twice");
    for name in before.iter().filter(|n| !n.ends_with(not_yet) && !n.ends_with(&already)) {
        assert!(walked.contains(&name), "{name}: present throughout, so it must be walked");
    }
}

#[tokio::test]
async fn prompts_resources_and_completion_route_by_name_and_uri() {
    let gw = Gateway::start(&paged("paged", "")).await;
    gw.wait_ready("paged").await;
    let mut c = gw.client().await;

    let r = c.request("prompts/get", json!({"name":"paged__greet","arguments":{"name":"bob"}})).await;
    assert_eq!(r["result"]["messages"][0]["content"]["text"], r#"greet {"name":"bob"}"#, "{r}");
    let r = c.request("prompts/get", json!({"name":"paged__nope"})).await;
    assert_eq!(r["error"]["code"], -32602, "{r}");
    assert!(r["error"]["message"].as_str().unwrap().contains("Unknown prompt: paged__nope"), "{r}");

    // A namespaced URI reaches the upstream as the original; the contents
    // come back with the URI the client knows.
    let r = c.request("resources/read", json!({"uri":"file+paged:///data/readme.txt"})).await;
    let content = &r["result"]["contents"][0];
    assert_eq!(content["uri"], "file+paged:///data/readme.txt", "{r}");
    assert_eq!(content["text"], "contents of file:///data/readme.txt");
    // Through a template, and by the upstream's own URI (as a resource_link
    // in a tool result would carry it).
    let r = c.request("resources/read", json!({"uri":"db+paged://main/orders"})).await;
    assert_eq!(r["result"]["contents"][0]["text"], "contents of db://main/orders", "{r}");
    let r = c.request("resources/read", json!({"uri":"https://example.com/x?y=1#z"})).await;
    assert_eq!(r["result"]["contents"][0]["uri"], "https+paged://example.com/x?y=1#z", "{r}");
    // The upstream's own -32002 is relayed; a URI no upstream owns is ours.
    let r = c.request("resources/read", json!({"uri":"db+paged://other/x"})).await;
    assert_eq!(r["error"]["code"], -32002, "{r}");
    assert_eq!(r["error"]["data"]["upstream"], "paged", "{r}");
    let r = c.request("resources/read", json!({"uri":"zzz://nothing"})).await;
    assert_eq!(r["error"]["code"], -32002, "{r}");
    let r = c.request("resources/read", json!({})).await;
    assert_eq!(r["error"]["code"], -32602, "{r}");

    let r = c
        .request(
            "completion/complete",
            json!({"ref":{"type":"ref/prompt","name":"paged__greet"},"argument":{"name":"name","value":"al"}}),
        )
        .await;
    assert_eq!(r["result"]["completion"]["values"], json!(["alice", "albert"]), "{r}");
    let r = c
        .request(
            "completion/complete",
            json!({"ref":{"type":"ref/resource","uri":"db+paged://main/{table}"},"argument":{"name":"table","value":"u"}}),
        )
        .await;
    assert_eq!(r["result"]["completion"]["values"], json!(["users"]), "{r}");
    let r = c.request("completion/complete", json!({"ref":{"type":"ref/tool"}})).await;
    assert_eq!(r["error"]["code"], -32602, "{r}");

    // The gateway says it serves all of it.
    let init = McpHttp::connect(&gw.url()).await;
    let r = init
        .post(
            &json!({"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"2025-11-25","capabilities":{},"clientInfo":{"name":"t","version":"0"}}}).to_string(),
            &[],
        )
        .await
        .json();
    let caps = &r["result"]["capabilities"];
    for cap in ["tools", "prompts", "resources", "logging", "completions"] {
        assert!(caps.get(cap).is_some(), "{cap} in {caps}");
    }
    assert_eq!(caps["resources"]["subscribe"], true);
}

#[tokio::test]
async fn resource_updates_reach_only_subscribed_sessions() {
    let gw = Gateway::start(&paged("paged", "")).await;
    gw.wait_ready("paged").await;
    let (mut a, mut b) = (gw.client().await, gw.client().await);
    let (mut a_events, mut b_events) = (SseReader::open(&a).await, SseReader::open(&b).await);
    // b hears log messages: the sentinel that proves what b did not get.
    assert!(b.request("logging/setLevel", json!({"level":"debug"})).await["result"].is_object());

    let uri = "test+paged://static/resource-1";
    let r = a.request("resources/subscribe", json!({ "uri": uri })).await;
    assert_eq!(r["result"], json!({}), "{r}");
    assert_eq!(state(&mut a, "paged__state").await["subscriptions"], json!(["test://static/resource-1"]));
    // A second subscriber does not subscribe the upstream twice; both hear.
    let mut c = gw.client().await;
    let mut c_events = SseReader::open(&c).await;
    assert_eq!(c.request("resources/subscribe", json!({ "uri": uri })).await["result"], json!({}));

    assert_eq!(text(&b.call("paged__touch", json!({"uri":"test://static/resource-1"})).await), "sent");
    for events in [&mut a_events, &mut c_events] {
        let got = events.until(|m| is_note(m, "notifications/resources/updated")).await;
        assert_eq!(got.last().unwrap()["params"]["uri"], uri, "the URI the client subscribed to");
    }
    assert_eq!(text(&b.call("paged__log", json!({"level":"error","data":"sentinel"})).await), "ok");
    let seen = b_events.until(|m| m["params"]["data"] == "sentinel").await;
    assert!(!seen.iter().any(|m| is_note(m, "notifications/resources/updated")), "b never subscribed: {seen:?}");

    // The upstream stays subscribed while one session is; a session that
    // ends takes its subscriptions with it.
    assert_eq!(a.request("resources/unsubscribe", json!({ "uri": uri })).await["result"], json!({}));
    assert_eq!(state(&mut b, "paged__state").await["subscriptions"], json!(["test://static/resource-1"]));
    let r = c.http.delete(&c.url).header("mcp-session-id", c.session.clone().unwrap()).send().await.unwrap();
    assert_eq!(r.status(), 200);
    wait_until(|| {
        let url = gw.url();
        async move {
            let mut probe = McpHttp::connect(&url).await;
            state(&mut probe, "paged__state").await["subscriptions"] == json!([])
        }
    })
    .await;
    c.session = None;
}

#[tokio::test]
async fn a_last_unsubscribe_racing_a_new_subscribe_leaves_the_upstream_subscribed() {
    // The fixture holds each unsubscribe, so b's subscribe is certain to
    // arrive while a's last unsubscribe is on its way upstream.
    let gw = Gateway::start(&paged("paged", "env = { PAGED_UNSUBSCRIBE_MS = \"1000\" }")).await;
    gw.wait_ready("paged").await;
    let (mut a, mut b) = (gw.client().await, gw.client().await);
    let uri = "test+paged://static/resource-2";
    let upstream_uri = "test://static/resource-2";
    assert_eq!(a.request("resources/subscribe", json!({ "uri": uri })).await["result"], json!({}));

    let unsubscribe = async { a.request("resources/unsubscribe", json!({ "uri": uri })).await };
    let subscribe = async {
        let deadline = tokio::time::Instant::now() + PATIENCE;
        while state(&mut b, "paged__state").await["unsubscribing"] != json!([upstream_uri]) {
            assert!(tokio::time::Instant::now() < deadline, "the unsubscribe never reached the upstream");
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
        let r = b.request("resources/subscribe", json!({ "uri": uri })).await;
        (r, b)
    };
    let (unsubscribed, (subscribed, mut b)) = tokio::join!(unsubscribe, subscribe);
    assert_eq!(unsubscribed["result"], json!({}), "{unsubscribed}");
    assert_eq!(subscribed["result"], json!({}), "{subscribed}");
    // b is subscribed, so the upstream must be, whatever order the two
    // requests took: it is told again once the unsubscribe is through.
    let s = state(&mut b, "paged__state").await;
    assert_eq!(s["subscriptions"], json!([upstream_uri]), "{s}");
    assert_eq!(text(&b.call("paged__touch", json!({ "uri": upstream_uri })).await), "sent");
}

#[tokio::test]
async fn a_request_the_upstream_withdraws_is_withdrawn_from_the_client() {
    let gw = Gateway::start(&paged("paged", "isolation = \"per-session\"")).await;
    gw.wait_ready("paged").await;
    let c = McpHttp::connect_with(&gw.url(), json!({"sampling":{}})).await;
    let mut events = SseReader::open(&c).await;
    let call = json!({"jsonrpc":"2.0","id":"w-1","method":"tools/call",
        "params":{"name":"paged__withdraw","arguments":{"ms":300}}})
    .to_string();
    let called = c.post(&call, &[]);
    let client = async {
        let request = events.until(|m| m["method"] == "sampling/createMessage").await.pop().unwrap();
        let id = request["id"].clone();
        assert!(id.as_str().is_some_and(|s| s.starts_with("mcpgw-")), "the gateway's own id: {request}");
        // Not answered: the upstream withdraws it, under the id the client knows.
        let cancelled = events.until(|m| is_note(m, "notifications/cancelled")).await.pop().unwrap();
        assert_eq!(cancelled["params"]["requestId"], id, "{cancelled}");
        assert_eq!(cancelled["params"]["reason"], "no longer needed", "{cancelled}");
        // A late answer is accepted from the client and goes nowhere.
        let late = json!({"jsonrpc":"2.0","id":id,"result":{"role":"assistant",
            "content":{"type":"text","text":"too late"},"model":"m","stopReason":"endTurn"}});
        assert_eq!(c.post(&late.to_string(), &[]).await.status, 202);
    };
    let (reply, ()) = tokio::join!(called, client);
    let reply = reply.json();
    assert_eq!(text(&reply), "withdrawn", "the late answer never reached the upstream: {reply}");
}

#[tokio::test]
async fn every_list_change_reaches_every_session() {
    let gw = Gateway::start(&paged("paged", "")).await;
    gw.wait_ready("paged").await;
    let mut a = gw.client().await;
    let b = gw.client().await;
    let mut events = [SseReader::open(&a).await, SseReader::open(&b).await];
    for (list, add, method, check) in [
        (
            "prompts",
            "fresh_prompt",
            "notifications/prompts/list_changed",
            ("prompts/list", "prompts", "name", "paged__fresh_prompt"),
        ),
        (
            "resources",
            "test://static/fresh",
            "notifications/resources/list_changed",
            ("resources/list", "resources", "uri", "test+paged://static/fresh"),
        ),
        (
            "tools",
            "fresh_tool",
            "notifications/tools/list_changed",
            ("tools/list", "tools", "name", "paged__fresh_tool"),
        ),
    ] {
        assert_eq!(text(&a.call("paged__mutate", json!({ "list": list, "add": add })).await), "ok");
        for e in &mut events {
            e.until(|m| is_note(m, method)).await;
        }
        let (items, _) = walk(&mut a, check.0, check.1).await;
        assert!(field(&items, check.2).contains(&check.3.to_owned()), "{check:?}");
    }
}

#[tokio::test]
async fn log_levels_are_per_session_and_messages_name_their_upstream() {
    let gw = Gateway::start(&paged("paged", "")).await;
    gw.wait_ready("paged").await;
    let (mut a, mut b) = (gw.client().await, gw.client().await);
    let (mut a_events, mut b_events) = (SseReader::open(&a).await, SseReader::open(&b).await);
    assert_eq!(a.request("logging/setLevel", json!({"level":"warning"})).await["result"], json!({}));
    assert_eq!(state(&mut a, "paged__state").await["log_level"], "warning");
    assert_eq!(b.request("logging/setLevel", json!({"level":"info"})).await["result"], json!({}));
    assert_eq!(state(&mut a, "paged__state").await["log_level"], "info", "the upstream gets the most verbose");
    let r = a.request("logging/setLevel", json!({"level":"loud"})).await;
    assert_eq!(r["error"]["code"], -32602, "{r}");

    c_log(&mut a, "info", "for b only", Some("db")).await;
    c_log(&mut a, "error", "for both", None).await;
    let b_seen = b_events.until(|m| m["params"]["data"] == "for both").await;
    let info = b_seen.iter().find(|m| m["params"]["data"] == "for b only").expect("b asked for info");
    assert_eq!(info["method"], "notifications/message");
    assert_eq!(info["params"]["logger"], "paged/db", "the upstream is named in logger");
    let a_seen = a_events.until(|m| m["params"]["data"] == "for both").await;
    assert_eq!(a_seen.last().unwrap()["params"]["logger"], "paged");
    assert!(!a_seen.iter().any(|m| m["params"]["data"] == "for b only"), "a asked for warning and up: {a_seen:?}");

    // When b goes, the upstream's level follows a's again.
    let r = b.http.delete(&b.url).header("mcp-session-id", b.session.clone().unwrap()).send().await.unwrap();
    assert_eq!(r.status(), 200);
    wait_until(|| {
        let url = gw.url();
        async move {
            let mut probe = McpHttp::connect(&url).await;
            state(&mut probe, "paged__state").await["log_level"] == "warning"
        }
    })
    .await;
}

async fn c_log(c: &mut McpHttp, level: &str, data: &str, logger: Option<&str>) {
    let mut args = json!({ "level": level, "data": data });
    if let Some(l) = logger {
        args["logger"] = json!(l);
    }
    assert_eq!(text(&c.call("paged__log", args).await), "ok");
}

#[tokio::test]
async fn progress_reaches_only_the_caller_with_its_own_token() {
    let gw = Gateway::start(&format!("[gateway]\nresponse_mode = \"sse\"\n{}", paged("paged", ""))).await;
    gw.wait_ready("paged").await;
    let (mut a, mut b) = (gw.client().await, gw.client().await);
    let mut b_events = SseReader::open(&b).await;
    assert!(b.request("logging/setLevel", json!({"level":"debug"})).await["result"].is_object());

    // SSE response: the progress comes on the call's own stream, before the
    // reply, with the client's token (a number stays a number).
    let call = json!({"jsonrpc":"2.0","id":"p-1","method":"tools/call",
        "params":{"name":"paged__progress","arguments":{"steps":3,"ms":10},"_meta":{"progressToken":42}}});
    let r = a.post(&call.to_string(), &[]).await;
    assert_eq!(r.headers["content-type"], "text/event-stream");
    let msgs = sse_messages(&r.body);
    assert_eq!(msgs.len(), 4, "{msgs:?}");
    for (i, m) in msgs[..3].iter().enumerate() {
        assert!(is_note(m, "notifications/progress"), "{m}");
        assert_eq!(m["params"]["progressToken"], 42);
        assert_eq!(m["params"]["progress"], i + 1);
    }
    assert_eq!(msgs[3]["id"], "p-1");
    assert_eq!(text(&msgs[3]), "done 3");

    // JSON response: the progress goes to the session's GET stream.
    let mut a_events = SseReader::open(&a).await;
    let call = json!({"jsonrpc":"2.0","id":7,"method":"tools/call",
        "params":{"name":"paged__progress","arguments":{"steps":2,"ms":10},"_meta":{"progressToken":"tok-a"}}});
    let r = a.post(&call.to_string(), &[("accept", "application/json")]).await;
    assert_eq!(text(&r.json()), "done 2");
    let got = a_events.until(|m| m["params"]["progress"] == 2).await;
    assert!(got.iter().all(|m| m["params"]["progressToken"] == "tok-a"), "{got:?}");

    // b saw none of it (the log message is the sentinel).
    c_log(&mut a, "error", "sentinel", None).await;
    let seen = b_events.until(|m| m["params"]["data"] == "sentinel").await;
    assert!(!seen.iter().any(|m| is_note(m, "notifications/progress")), "{seen:?}");
}

#[tokio::test]
async fn a_cancelled_call_is_cancelled_upstream_and_gets_no_result() {
    let gw = Gateway::start(&paged("paged", "")).await;
    gw.wait_ready("paged").await;
    let mut c = gw.client().await;
    let call = json!({"jsonrpc":"2.0","id":"slow-1","method":"tools/call",
        "params":{"name":"paged__wait_cancel","arguments":{"ms":60000}}});
    let pending = {
        let c = McpHttp { http: c.http.clone(), url: c.url.clone(), session: c.session.clone(), next: 0 };
        tokio::spawn(async move { c.post(&call.to_string(), &[]).await })
    };
    // Cancel once the upstream has the call (its id is not ours to know:
    // the fixture reports what it was told to cancel).
    let cancel =
        r#"{"jsonrpc":"2.0","method":"notifications/cancelled","params":{"requestId":"slow-1","reason":"user"}}"#;
    wait_until(|| {
        let c = McpHttp { http: c.http.clone(), url: c.url.clone(), session: c.session.clone(), next: 0 };
        async move {
            assert_eq!(c.post(cancel, &[]).await.status, 202);
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
            let mut c = c;
            !state(&mut c, "paged__state").await["cancelled"].as_array().unwrap().is_empty()
        }
    })
    .await;
    // No reply (cancellation.mdx): the client takes SSE, so the stream just ends.
    let r = pending.await.unwrap();
    assert_eq!(r.headers["content-type"], "text/event-stream");
    assert!(sse_messages(&r.body).is_empty(), "no reply for a cancelled call: {:?}", r.body);
    // The session is fine afterwards.
    assert_eq!(text(&c.call("paged__filler_01", json!({})).await), "called filler_01");
}

/// POSTs a request and returns its response stream (SSE response mode).
#[tokio::test]
async fn sampling_and_elicitation_reach_the_caller_and_their_answers_go_back() {
    // server-everything over Streamable HTTP sends its server requests on
    // the call's own response stream: the gateway knows whose they are.
    let (_everything, gw) = everything_sse_gateway().await;
    let caps = json!({"sampling":{},"elicitation":{"form":{}}});
    let mut a = McpHttp::connect_with(&gw.url(), caps).await;
    let names = a.tool_names().await;
    assert!(
        names.contains(&"everything__trigger-sampling-request".to_owned()),
        "the gateway declared sampling: {names:?}"
    );

    let call = json!({"jsonrpc":"2.0","id":"s-1","method":"tools/call",
        "params":{"name":"everything__trigger-sampling-request","arguments":{"prompt":"hello","maxTokens":5}}});
    let mut stream = post_streaming(&a, &call).await;
    let request = stream.next().await;
    assert_eq!(request["method"], "sampling/createMessage", "{request}");
    let id = request["id"].as_str().expect("a string id of the gateway's").to_owned();
    assert!(id.starts_with("mcpgw-"), "{id}");
    let answer = json!({"jsonrpc":"2.0","id":id,"result":{"role":"assistant","content":{"type":"text","text":"sampled by a"},"model":"test-model","stopReason":"endTurn"}});
    assert_eq!(a.post(&answer.to_string(), &[]).await.status, 202);
    let reply = stream.until(|m| m["id"] == "s-1").await.pop().unwrap();
    assert!(reply["result"].to_string().contains("sampled by a"), "{reply}");

    // Form elicitation the same way; the answer's content comes back.
    let call = json!({"jsonrpc":"2.0","id":"e-1","method":"tools/call",
        "params":{"name":"everything__trigger-elicitation-request","arguments":{}}});
    let mut stream = post_streaming(&a, &call).await;
    let request = stream.next().await;
    assert_eq!(request["method"], "elicitation/create", "{request}");
    let answer = json!({"jsonrpc":"2.0","id":request["id"],"result":{"action":"decline"}});
    assert_eq!(a.post(&answer.to_string(), &[]).await.status, 202);
    let reply = stream.until(|m| m["id"] == "e-1").await.pop().unwrap();
    assert!(reply["result"].to_string().to_lowercase().contains("decline"), "{reply}");

    // A client that did not declare sampling is never sent the request: the
    // upstream gets an error (and makes of it what it will).
    let mut b = McpHttp::connect(&gw.url()).await;
    let r = b.call("everything__trigger-sampling-request", json!({"prompt":"x","maxTokens":5})).await;
    assert!(r.get("error").is_some() || r["result"]["isError"] == true, "{r}");
    assert!(r.to_string().contains("does not support sampling/createMessage"), "{r}");
}

#[tokio::test]
async fn roots_for_a_shared_upstream_come_from_the_config() {
    let gw = Gateway::start(&paged("paged", "roots = [\"file:///srv/data\", \"file:///srv/logs\"]")).await;
    gw.wait_ready("paged").await;
    // The client's own roots would be wrong for an upstream every client shares.
    let mut c = McpHttp::connect_with(&gw.url(), json!({"roots":{"listChanged":true}})).await;
    let s = state(&mut c, "paged__state").await;
    assert_eq!(s["client_capabilities"], json!({"roots":{}}), "{s}");
    let r = c.call("paged__ask_roots", json!({})).await;
    let roots: Value = serde_json::from_str(&text(&r)).unwrap();
    assert_eq!(roots, json!({"roots":[{"uri":"file:///srv/data"},{"uri":"file:///srv/logs"}]}));
}

/// Reads a stream until `n` whole events have come; returns the id of the
/// last whole event read and the messages of every whole event read.
async fn read_events(resp: &mut reqwest::Response, n: usize) -> (String, Vec<Value>) {
    let mut buf = String::new();
    loop {
        let whole = buf.rfind("\n\n").map_or("", |end| &buf[..end + 2]);
        let ids: Vec<&str> = whole.lines().filter_map(|l| l.strip_prefix("id: ")).collect();
        if ids.len() >= n {
            return (ids.last().unwrap().to_string(), sse_messages(whole));
        }
        let chunk = resp.chunk().await.unwrap().expect("the stream ended early");
        buf.push_str(std::str::from_utf8(&chunk).unwrap());
    }
}

/// A GET carrying `Last-Event-ID`, read to its end (or its first `n` messages).
async fn resume(c: &McpHttp, last: &str) -> reqwest::Response {
    let resp = reqwest::Client::new()
        .get(c.url.as_str())
        .header("accept", "text/event-stream")
        .header("mcp-session-id", c.session.as_deref().unwrap())
        .header("last-event-id", last)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    resp
}

#[tokio::test]
async fn a_lost_stream_resumes_from_its_last_event_id() {
    let gw = Gateway::start(&format!("[gateway]\nresponse_mode = \"sse\"\n{}", paged("paged", ""))).await;
    gw.wait_ready("paged").await;
    let mut a = gw.client().await;

    // A call's stream is lost after its first event: the call goes on, and a
    // GET with that event's id gets the rest of that stream, once, then ends.
    let call = json!({"jsonrpc":"2.0","id":"r-1","method":"tools/call",
        "params":{"name":"paged__progress","arguments":{"steps":4,"ms":200},"_meta":{"progressToken":1}}});
    let mut resp = a.send(&call.to_string(), &[]).await;
    // The priming event (an id, no message), then the first progress.
    let (last, seen) = read_events(&mut resp, 2).await;
    drop(resp);
    let seen_progress = seen.last().unwrap()["params"]["progress"].as_u64().unwrap();
    let body = resume(&a, &last).await.text().await.unwrap();
    let rest = sse_messages(&body);
    let (reply, progress) = rest.split_last().expect("the rest of the stream");
    assert_eq!(reply["id"], "r-1", "{body}");
    assert_eq!(text(reply), "done 4");
    let steps: Vec<u64> = progress.iter().map(|m| m["params"]["progress"].as_u64().unwrap()).collect();
    let want: Vec<u64> = (seen_progress + 1..=4).collect();
    assert_eq!(steps, want, "each event once, in order: {body}");
    // Resuming again from the same id replays the same events.
    let again = resume(&a, &last).await.text().await.unwrap();
    assert_eq!(sse_messages(&again), rest);

    // The GET stream: messages after the last one the client saw come again
    // (from the replay buffer, or still queued), none twice, none lost.
    assert!(a.request("logging/setLevel", json!({"level":"debug"})).await["result"].is_object());
    let mut get = resume(&a, "0-0").await;
    for n in 1..=3 {
        c_log(&mut a, "info", &format!("m{n}"), None).await;
    }
    let (last, seen) = read_events(&mut get, 1).await;
    drop(get);
    c_log(&mut a, "info", "m4", None).await;
    let mut get = resume(&a, &last).await;
    let (_, rest) = read_events(&mut get, 4 - seen.len()).await;
    let data: Vec<&Value> = seen.iter().chain(&rest).map(|m| &m["params"]["data"]).collect();
    assert_eq!(data, [&json!("m1"), &json!("m2"), &json!("m3"), &json!("m4")], "{seen:?} then {rest:?}");
    // Another session's event ids name nothing of this one.
    let b = gw.client().await;
    let body = resume(&b, &format!("1-{}", u64::MAX)).await.text().await.unwrap();
    assert!(sse_messages(&body).is_empty(), "{body}");
}
