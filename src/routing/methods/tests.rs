//! The method families through [`dispatch`], over a core without its
//! background tasks: upstreams that never start where nothing must serve,
//! and a small MCP server on 127.0.0.1 where one must.

use std::sync::Arc;

use serde_json::value::RawValue;
use serde_json::{Value, json};

use super::*;
use crate::error::ErrorClass;
use crate::protocol::CheckedBox;
use crate::routing::Caller;
use crate::routing::catalog::encode_tagged_cursor;
use crate::routing::core::LIST_SECRET_NAMES;
use crate::routing::tests::{Mock, caller, catalog, checked, core, down, eventually, principal, session, tool_defs};
use crate::security::access::Grants;
use crate::telemetry::Span;
use crate::upstream::Lists;

/// `method` with `params` (JSON text) from `caller`, through [`dispatch`]:
/// the whole reply (whose id is checked) or the error, and the outcome.
async fn ask(
    core: &Core,
    caller: &Caller<'_>,
    method: &str,
    params: Option<&str>,
) -> (Result<Value, CallError>, Outcome) {
    let id = RawValue::from_string("7".into()).unwrap();
    let params = params.map(checked);
    let rq = Rq { id: &id, params: params.as_ref().map(CheckedBox::checked), caller, span: &Span::NONE };
    let mut out = Outcome::default();
    let reply = dispatch(core, method, &rq, &mut out).await.map(|text| {
        let reply: Value = serde_json::from_str(&text.into_string()).expect("a reply is JSON");
        assert_eq!(reply["id"], 7, "the client's id: {reply}");
        reply
    });
    (reply, out)
}

/// The error of a request that must fail.
async fn refused(core: &Core, caller: &Caller<'_>, method: &str, params: Option<&str>) -> CallError {
    ask(core, caller, method, params).await.0.expect_err("refused")
}

/// The result of a request that must succeed.
async fn result(core: &Core, caller: &Caller<'_>, method: &str, params: &str) -> Value {
    let reply = ask(core, caller, method, Some(params)).await.0.expect("answered");
    assert!(reply.get("error").is_none(), "{reply}");
    reply["result"].clone()
}

/// A core over `mock` as upstream `m` (prefixed, with `extra` config),
/// ready, with `lists` published as `m`'s.
async fn core_over(mock: &Mock, extra: &str, lists: &Lists) -> Arc<Core> {
    let core = core(&format!("{}{extra}", mock.section("m", "")));
    eventually("m is ready", || core.upstreams.ready_count() == 1).await;
    core.published.store(Arc::new(catalog(&core, &[(0, lists)])));
    core
}

fn tools(names: &[&str]) -> Lists {
    Lists { tools: tool_defs(names), ..Lists::default() }
}

#[tokio::test]
async fn an_unknown_method_is_not_found_and_echoed_cut() {
    let core = core("");
    let anon = caller(None);
    let e = refused(&core, &anon, "tools/nope", None).await;
    assert_eq!(
        (e.code, e.class, e.message.as_str()),
        (protocol::METHOD_NOT_FOUND, ErrorClass::Protocol, "Method not found: tools/nope")
    );
    let long = "x".repeat(1000);
    let e = refused(&core, &anon, &long, None).await;
    let cut = format!("Method not found: {}…", "x".repeat(protocol::ECHO_MAX_CHARS));
    assert_eq!((e.code, e.message), (protocol::METHOD_NOT_FOUND, cut), "no more than ECHO_MAX_CHARS of it");
    assert_eq!(result(&core, &anon, "ping", "{}").await, json!({}));
}

#[tokio::test]
async fn a_tool_call_goes_to_its_upstream_by_its_original_name() {
    let answer = json!({ "content": [{ "type": "text", "text": "hi" }], "structuredContent": { "n": 1 } });
    let mock = Mock::with_replies(json!({ "tools": {} }), json!({}), json!({ "tools/call": answer })).await;
    let core = core_over(&mock, "", &tools(&["echo"])).await;
    let (root, _rx) = session(&core, principal("root"), None);

    let params = r#"{"name":"m__echo","arguments":{"say":"hi"}}"#;
    let (reply, out) = ask(&core, &caller(Some(&root)), "tools/call", Some(params)).await;
    assert_eq!(reply.unwrap()["result"], answer, "the upstream's result, as it came");
    assert_eq!(mock.params_of("tools/call"), [json!({ "name": "echo", "arguments": { "say": "hi" } })]);
    assert_eq!(
        (out.name.as_deref(), out.tool.as_deref(), out.upstream.as_deref()),
        (Some("m__echo"), Some("echo"), Some("m"))
    );
    assert_eq!((out.class, out.attempts), (None, 1));

    let e = refused(&core, &caller(Some(&root)), "tools/call", Some(r#"{"name":7}"#)).await;
    assert_eq!((e.code, e.message.as_str()), (protocol::INVALID_PARAMS, "tools/call needs a string `name`"));
}

#[tokio::test]
async fn a_denied_tool_is_answered_exactly_like_an_unknown_one() {
    let mock = Mock::start(json!({ "tools": {} }), json!({})).await;
    let access = "[[access]]\nprincipals = [\"key:bob\"]\ntools = { allow = [\"m__echo\"] }\n";
    let core = core_over(&mock, access, &tools(&["echo", "secret"])).await;
    let (bob, _rx) = session(&core, principal("bob"), None);
    let bob = caller(Some(&bob));

    let (denied, out_denied) = ask(&core, &bob, "tools/call", Some(r#"{"name":"m__secret"}"#)).await;
    let (unknown, out_unknown) = ask(&core, &bob, "tools/call", Some(r#"{"name":"m__secre7"}"#)).await;
    let (denied, unknown) = (denied.unwrap_err(), unknown.unwrap_err());
    assert_eq!((denied.code, denied.class, denied.upstream), (unknown.code, unknown.class, unknown.upstream));
    assert_eq!(denied.message, "Unknown tool: m__secret");
    assert_eq!(unknown.message, "Unknown tool: m__secre7");
    assert!(!mock.seen().contains(&"tools/call".to_owned()), "neither reached the upstream");
    // Only the operator's record tells them apart.
    assert_eq!(
        (out_denied.class, out_denied.policy.as_slice()),
        (Some(ErrorClass::Policy), &["access:denied".to_owned()][..])
    );
    assert_eq!((out_unknown.class, out_unknown.policy.len()), (None, 0));
    assert_eq!(out_unknown.upstream.as_deref(), Some("m"), "counted against its namespace's upstream");
}

#[tokio::test]
async fn a_prompt_is_got_by_its_original_name() {
    let answer = json!({ "messages": [{ "role": "user", "content": { "type": "text", "text": "hello" } }] });
    let mock = Mock::with_replies(json!({ "prompts": {} }), json!({}), json!({ "prompts/get": answer })).await;
    let lists =
        Lists { prompts: [checked(r#"{"name":"greet"}"#), checked(r#"{"name":"hidden"}"#)].into(), ..Lists::default() };
    let access = "[[access]]\nprincipals = [\"key:bob\"]\nprompts = { allow = [\"m__greet\"] }\n";
    let core = core_over(&mock, access, &lists).await;
    let (bob, _rx) = session(&core, principal("bob"), None);
    let bob = caller(Some(&bob));

    let (reply, out) = ask(&core, &bob, "prompts/get", Some(r#"{"name":"m__greet","arguments":{"who":"x"}}"#)).await;
    assert_eq!(reply.unwrap()["result"], answer);
    assert_eq!(mock.params_of("prompts/get"), [json!({ "name": "greet", "arguments": { "who": "x" } })]);
    assert_eq!((out.name.as_deref(), out.upstream.as_deref()), (Some("m__greet"), Some("m")));

    for name in ["m__hidden", "m__nope"] {
        let e = refused(&core, &bob, "prompts/get", Some(&format!(r#"{{"name":"{name}"}}"#))).await;
        assert_eq!((e.code, e.message), (protocol::INVALID_PARAMS, format!("Unknown prompt: {name}")));
    }
    assert_eq!(mock.params_of("prompts/get").len(), 1, "only the allowed one went upstream");
}

#[tokio::test]
async fn a_resource_is_read_by_its_original_uri_and_answered_with_the_exposed_one() {
    let contents = json!({ "contents": [
        { "uri": "file:///a.txt", "mimeType": "text/plain", "text": "hi" },
        { "uri": "file:///b.bin", "blob": "AA==" },
    ] });
    let mock = Mock::with_replies(json!({ "resources": {} }), json!({}), json!({ "resources/read": contents })).await;
    let core = core_over(&mock, "", &Lists::default()).await;
    let (root, _rx) = session(&core, principal("root"), None);

    let (reply, out) = ask(&core, &caller(Some(&root)), "resources/read", Some(r#"{"uri":"file+m:///a.txt"}"#)).await;
    assert_eq!(mock.params_of("resources/read"), [json!({ "uri": "file:///a.txt" })]);
    let expected = json!({ "contents": [
        { "uri": "file+m:///a.txt", "mimeType": "text/plain", "text": "hi" },
        { "uri": "file+m:///b.bin", "blob": "AA==" },
    ] });
    assert_eq!(reply.unwrap()["result"], expected);
    assert_eq!((out.name.as_deref(), out.upstream.as_deref()), (Some("file+m:///a.txt"), Some("m")));
}

#[tokio::test]
async fn a_hidden_resource_is_as_missing_as_one_nobody_serves() {
    // `a` never starts: a hidden resource must not even say so.
    let access = "[[access]]\nprincipals = [\"key:bob\"]\nresources = { allow = [\"file+a:///public/*\"] }\n";
    let core = core(&format!("{}{access}", down("a", "")));
    eventually("a failed its first start", || core.upstreams.all_settled()).await;
    let (bob, _rx) = session(&core, principal("bob"), None);
    let bob = caller(Some(&bob));
    for uri in ["file+a:///secret", "other://x"] {
        let (e, out) = ask(&core, &bob, "resources/read", Some(&format!(r#"{{"uri":"{uri}"}}"#))).await;
        let e = e.unwrap_err();
        assert_eq!(
            (e.code, e.class, e.message),
            (protocol::RESOURCE_NOT_FOUND, ErrorClass::Protocol, format!("Resource not found: {uri}"))
        );
        assert_eq!(out.attempts, 0);
    }
    // An allowed one is routed, and only then meets the outage.
    let e = refused(&core, &bob, "resources/read", Some(r#"{"uri":"file+a:///public/x"}"#)).await;
    assert_ne!(e.code, protocol::RESOURCE_NOT_FOUND, "{e:?}");
    assert_eq!(e.upstream.as_deref(), Some("a"));
}

#[tokio::test]
async fn an_upstream_is_subscribed_once_while_any_session_wants_it() {
    let mock = Mock::start(json!({ "resources": { "subscribe": true } }), json!({})).await;
    let core = core_over(&mock, "", &Lists::default()).await;
    let (one, _r1) = session(&core, principal("one"), None);
    let (two, _r2) = session(&core, principal("two"), None);
    let (c1, c2) = (caller(Some(&one)), caller(Some(&two)));
    let key = (core.upstreams.find("m").unwrap(), Arc::<str>::from("file:///w"));
    let params = r#"{"uri":"file+m:///w"}"#;
    let told = |method| mock.params_of(method);

    assert_eq!(result(&core, &c1, "resources/subscribe", params).await, json!({}));
    assert_eq!(told("resources/subscribe"), [json!({ "uri": "file:///w" })], "by its original URI");
    result(&core, &c2, "resources/subscribe", params).await;
    result(&core, &c1, "resources/subscribe", params).await;
    assert_eq!(told("resources/subscribe").len(), 1, "told once");
    assert!(one.lock_subscriptions().contains(&key) && two.lock_subscriptions().contains(&key));
    assert_eq!(core.subscriptions.watchers(&key).len(), 2);

    result(&core, &c1, "resources/unsubscribe", params).await;
    assert!(!one.lock_subscriptions().contains(&key));
    assert!(told("resources/unsubscribe").is_empty(), "`two` still wants it");
    result(&core, &c2, "resources/unsubscribe", params).await;
    assert_eq!(told("resources/unsubscribe"), [json!({ "uri": "file:///w" })]);
    assert!(core.subscriptions.watchers(&key).is_empty());

    let e = refused(&core, &caller(None), "resources/subscribe", Some(params)).await;
    assert_eq!((e.code, e.message.as_str()), (protocol::INVALID_REQUEST, "Subscriptions need a session"));
}

#[tokio::test]
async fn a_subscription_the_upstream_cannot_take_is_undone() {
    let core = core(&down("a", ""));
    eventually("a failed its first start", || core.upstreams.all_settled()).await;
    let (root, _rx) = session(&core, principal("root"), Some(Grants::open()));
    let key = (core.upstreams.find("a").unwrap(), Arc::<str>::from("file:///x"));

    let e = refused(&core, &caller(Some(&root)), "resources/subscribe", Some(r#"{"uri":"file+a:///x"}"#)).await;
    assert_eq!(e.upstream.as_deref(), Some("a"), "{e:?}");
    assert!(root.lock_subscriptions().is_empty(), "the session does not think it is subscribed");
    assert!(core.subscriptions.watchers(&key).is_empty(), "nor is it counted as wanting it");
}

#[tokio::test]
async fn tools_list_pages_with_a_checked_cursor() {
    let gateway = "[gateway]\npage_size = 2\nstartup_list_wait = \"0s\"\n";
    let access = "[[access]]\nprincipals = [\"key:bob\"]\ntools = { allow = [\"a__*\"] }\n";
    let core = core(&format!("{gateway}{}{}{access}", down("a", ""), down("b", "")));
    let (ab, b) = (tools(&["y", "x"]), tools(&["z"]));
    core.published.store(Arc::new(catalog(&core, &[(0, &ab), (1, &b)])));
    let (root, _r1) = session(&core, principal("root"), Some(Grants::open()));
    let (bob, _r2) = session(&core, principal("bob"), None);
    let root = caller(Some(&root));
    let names = |page: &Value| -> Vec<String> {
        page["tools"].as_array().unwrap().iter().map(|t| t["name"].as_str().unwrap().to_owned()).collect()
    };

    let first = result(&core, &root, "tools/list", "{}").await;
    assert_eq!(names(&first), ["a__x", "a__y"], "sorted, one page");
    let cursor = first["nextCursor"].as_str().expect("more follow").to_owned();
    let second = result(&core, &root, "tools/list", &json!({ "cursor": cursor }).to_string()).await;
    assert_eq!(names(&second), ["b__z"]);
    assert!(second.get("nextCursor").is_none(), "the last page");
    // Bob's page is what he may see: `b__z` is not a page away.
    let bobs = result(&core, &caller(Some(&bob)), "tools/list", "{}").await;
    assert_eq!((names(&bobs), bobs.get("nextCursor")), (vec!["a__x".to_owned(), "a__y".to_owned()], None));

    let prompts_cursor = encode_tagged_cursor(b'p', "a__x");
    for params in [json!({ "cursor": "zz" }), json!({ "cursor": prompts_cursor }), json!({ "cursor": 7 })] {
        let e = refused(&core, &root, "tools/list", Some(&params.to_string())).await;
        assert_eq!((e.code, e.message.as_str()), (protocol::INVALID_PARAMS, "Invalid cursor"), "{params}");
    }
}

#[tokio::test]
async fn the_gateways_own_tool_leads_only_the_first_page() {
    let gateway = "[gateway]\npage_size = 1\nstartup_list_wait = \"0s\"\nlist_secret_names = true\n";
    let core = core(&format!("{gateway}{}", down("a", "")));
    core.published.store(Arc::new(catalog(&core, &[(0, &tools(&["x", "y"]))])));
    let (root, _rx) = session(&core, principal("root"), Some(Grants::open()));
    let root = caller(Some(&root));
    let mut seen = Vec::new();
    let mut params = json!({});
    loop {
        let page = result(&core, &root, "tools/list", &params.to_string()).await;
        seen.extend(page["tools"].as_array().unwrap().iter().map(|t| t["name"].as_str().unwrap().to_owned()));
        let Some(next) = page.get("nextCursor") else { break };
        params = json!({ "cursor": next });
    }
    assert_eq!(seen, [LIST_SECRET_NAMES, "a__x", "a__y"], "once, first");
}

#[tokio::test]
async fn set_level_takes_only_mcp_levels_and_tells_upstreams_that_log() {
    let logs = Mock::start(json!({ "logging": {} }), json!({})).await;
    let quiet = Mock::start(json!({}), json!({})).await;
    let core = core(&format!("{}{}", logs.section("logs", ""), quiet.section("quiet", "")));
    eventually("both ready", || core.upstreams.ready_count() == 2).await;
    let (one, _r1) = session(&core, principal("one"), None);
    let (two, _r2) = session(&core, principal("two"), None);
    let (c1, c2) = (caller(Some(&one)), caller(Some(&two)));
    let levels_told = || logs.params_of("logging/setLevel");

    let e = refused(&core, &c1, "logging/setLevel", Some(r#"{"level":"verbose"}"#)).await;
    let all = "debug, info, notice, warning, error, critical, alert, emergency";
    assert_eq!((e.code, e.message), (protocol::INVALID_PARAMS, format!("Unknown log level \"verbose\"; one of {all}")));
    let e = refused(&core, &c1, "logging/setLevel", Some(r#"{"level":3}"#)).await;
    assert_eq!((e.code, e.message.as_str()), (protocol::INVALID_PARAMS, "params need a string `level`"));
    assert_eq!(one.level(), None, "nothing set");

    assert_eq!(result(&core, &c1, "logging/setLevel", r#"{"level":"warning"}"#).await, json!({}));
    assert_eq!(one.level(), Some(3));
    assert_eq!(levels_told(), [json!({ "level": "warning" })]);
    assert!(!quiet.seen().contains(&"logging/setLevel".to_owned()), "it does not declare logging");
    // Upstreams get the most verbose level any session asked for.
    result(&core, &c2, "logging/setLevel", r#"{"level":"error"}"#).await;
    assert_eq!(levels_told().len(), 1, "warning still stands");
    result(&core, &c2, "logging/setLevel", r#"{"level":"debug"}"#).await;
    assert_eq!(levels_told().last(), Some(&json!({ "level": "debug" })));
    assert_eq!((one.level(), two.level()), (Some(3), Some(0)), "each session keeps its own");
}

#[tokio::test]
async fn completion_goes_by_its_reference() {
    let answer = json!({ "completion": { "values": ["alice"], "hasMore": false } });
    let caps = json!({ "prompts": {}, "resources": {}, "completions": {} });
    let mock = Mock::with_replies(caps, json!({}), json!({ "completion/complete": answer })).await;
    let lists = Lists {
        prompts: [checked(r#"{"name":"greet"}"#)].into(),
        templates: [checked(r#"{"uriTemplate":"file:///t/{id}","name":"t"}"#)].into(),
        ..Lists::default()
    };
    let core = core_over(&mock, "", &lists).await;
    let (root, _rx) = session(&core, principal("root"), None);
    let root = caller(Some(&root));
    let arg = json!({ "name": "who", "value": "al" });

    let prompt = json!({ "ref": { "type": "ref/prompt", "name": "m__greet" }, "argument": arg });
    assert_eq!(result(&core, &root, "completion/complete", &prompt.to_string()).await, answer);
    let template = json!({ "ref": { "type": "ref/resource", "uri": "file+m:///t/{id}" }, "argument": arg });
    result(&core, &root, "completion/complete", &template.to_string()).await;
    assert_eq!(
        mock.params_of("completion/complete"),
        [
            json!({ "ref": { "type": "ref/prompt", "name": "greet" }, "argument": arg }),
            json!({ "ref": { "type": "ref/resource", "uri": "file:///t/{id}" }, "argument": arg }),
        ]
    );

    let ask_ref = |r: Value| json!({ "ref": r, "argument": arg }).to_string();
    let e = refused(&core, &root, "completion/complete", Some(&ask_ref(json!({ "type": "ref/tool", "name": "m__x" }))))
        .await;
    assert_eq!((e.code, e.message.as_str()), (protocol::INVALID_PARAMS, "ref.type must be ref/prompt or ref/resource"));
    let e = refused(
        &core,
        &root,
        "completion/complete",
        Some(&ask_ref(json!({ "type": "ref/prompt", "name": "m__nope" }))),
    )
    .await;
    assert_eq!((e.code, e.message.as_str()), (protocol::INVALID_PARAMS, "Unknown prompt: m__nope"));
    let e =
        refused(&core, &root, "completion/complete", Some(&ask_ref(json!({ "type": "ref/resource", "uri": "x://y" }))))
            .await;
    assert_eq!(e.code, protocol::RESOURCE_NOT_FOUND);
    assert_eq!(mock.params_of("completion/complete").len(), 2, "no refused one went upstream");
}

#[tokio::test]
async fn a_task_nobody_owns_or_another_session_owns_is_unknown() {
    let core = core(&down("d", ""));
    let d = core.upstreams.find("d").unwrap();
    let (mine, _r1) = session(&core, principal("me"), None);
    let (theirs, _r2) = session(&core, principal("them"), None);
    let exposed = core.tasks.insert(theirs.id, d, "d", "t1", None);
    let me = caller(Some(&mine));

    for method in ["tasks/get", "tasks/result", "tasks/cancel"] {
        for id in [&*exposed, "d__never"] {
            let e = refused(&core, &me, method, Some(&json!({ "taskId": id }).to_string())).await;
            assert_eq!((e.code, e.message), (protocol::INVALID_PARAMS, format!("Unknown task: {id}")), "{method}");
        }
        let e = refused(&core, &caller(None), method, Some(r#"{"taskId":"d__t1"}"#)).await;
        assert_eq!((e.code, e.message.as_str()), (protocol::INVALID_REQUEST, "Tasks need a session"));
    }
    assert_eq!(result(&core, &me, "tasks/list", "{}").await, json!({ "tasks": [] }), "not theirs");
    let e = refused(&core, &me, "tasks/list", Some(r#"{"cursor":"zz"}"#)).await;
    assert_eq!((e.code, e.message.as_str()), (protocol::INVALID_PARAMS, "Invalid cursor"));
    assert!(core.tasks.get(theirs.id, &exposed).is_some(), "still theirs");
}

#[tokio::test]
async fn a_task_is_made_got_and_listed_under_its_exposed_id() {
    let caps = json!({ "tools": {}, "tasks": { "requests": { "tools": { "call": {} } } } });
    let task = json!({ "taskId": "t1", "status": "working", "ttl": 60000 });
    let replies = json!({ "tools/call": { "task": task }, "tasks/get": task });
    let mock = Mock::with_replies(caps, json!({}), replies).await;
    let core = core_over(&mock, "", &tools(&["slow"])).await;
    let (mine, _r1) = session(&core, principal("me"), None);
    let (theirs, _r2) = session(&core, principal("them"), None);
    let me = caller(Some(&mine));
    let exposed = json!({ "taskId": "m__t1", "status": "working", "ttl": 60000 });

    let created = result(&core, &me, "tools/call", r#"{"name":"m__slow","task":{"ttl":60000}}"#).await;
    assert_eq!(created, json!({ "task": exposed }));
    assert_eq!(mock.params_of("tools/call"), [json!({ "name": "slow", "task": { "ttl": 60000 } })]);

    assert_eq!(result(&core, &me, "tasks/get", r#"{"taskId":"m__t1"}"#).await, exposed);
    assert_eq!(mock.params_of("tasks/get"), [json!({ "taskId": "t1" })], "by the upstream's id");
    assert_eq!(result(&core, &me, "tasks/list", "{}").await, json!({ "tasks": [exposed] }));
    let e = refused(&core, &caller(Some(&theirs)), "tasks/get", Some(r#"{"taskId":"m__t1"}"#)).await;
    assert_eq!(e.message, "Unknown task: m__t1");
}

#[tokio::test]
async fn a_task_call_needs_an_upstream_that_runs_tasks() {
    let mock = Mock::start(json!({ "tools": {} }), json!({})).await;
    let core = core_over(&mock, "", &tools(&["slow"])).await;
    let (me, _rx) = session(&core, principal("me"), None);
    let params = r#"{"name":"m__slow","task":{}}"#;

    let e = refused(&core, &caller(Some(&me)), "tools/call", Some(params)).await;
    let message = "m__slow cannot run as a task: upstream `m` does not support tasks";
    assert_eq!((e.code, e.message.as_str()), (protocol::INVALID_PARAMS, message));
    let e = refused(&core, &caller(None), "tools/call", Some(params)).await;
    assert_eq!((e.code, e.message.as_str()), (protocol::INVALID_REQUEST, "Tasks need a session"));
    assert!(!mock.seen().contains(&"tools/call".to_owned()), "neither was sent");
}

#[tokio::test]
async fn a_sessionless_task_call_is_refused_before_the_gate_and_spends_no_token() {
    let mock = Mock::start(json!({ "tools": {} }), json!({})).await;
    let limits = "[limits]\nper_principal = { rate = 0.001, burst = 1 }\n";
    let core = core_over(&mock, limits, &tools(&["echo"])).await;
    let anonymous = caller(None);

    for name in ["m__echo", "m__unknown"] {
        let params = format!(r#"{{"name":"{name}","task":{{}}}}"#);
        let e = refused(&core, &anonymous, "tools/call", Some(&params)).await;
        assert_eq!((e.code, e.message.as_str()), (protocol::INVALID_REQUEST, "Tasks need a session"), "{name}");
    }
    // The bucket's one token is still there for a plain call.
    result(&core, &anonymous, "tools/call", r#"{"name":"m__echo"}"#).await;
    let e = refused(&core, &anonymous, "tools/call", r#"{"name":"m__echo"}"#.into()).await;
    assert!(e.message.starts_with("rate limit reached"), "the next one is limited: {}", e.message);
}

#[tokio::test]
async fn calls_to_a_cached_tool_wait_for_the_first_start_in_bounded_numbers_and_stop_waiting_at_a_drain() {
    use crate::routing::catalog::{Catalog, Source};
    use crate::telemetry::metrics::Outcome as Counted;
    // `slow` never answers `initialize`; at most one call may wait for it.
    let slow = "[gateway]\nstartup_call_wait = \"10m\"\n\
                [upstreams.slow]\ncommand = \"sleep\"\nargs = [\"60\"]\nmax_concurrency = 1\nmax_queue = 0\n";
    let core = core(slow);
    let lists = tools(&["t"]);
    let all = crate::config::ToolMatcher::all();
    let source = Source {
        upstream: crate::routing::ix::UpstreamIx::new(0),
        id: "slow",
        prefix: true,
        filter: &all,
        lists: &lists,
        hidden: false,
        hidden_tools: &[],
        cached: true,
    };
    core.published.store(Arc::new(Catalog::build(&[source], 128, &["slow"])));
    let (root, _rx) = session(&core, principal("root"), None);
    let params = r#"{"name":"slow__t","arguments":{}}"#;
    let counted = |outcome| core.telemetry.metrics.warm_start_calls.get_or_create(&Counted { outcome }).get();

    let first = {
        let (core, root) = (core.clone(), root.clone());
        tokio::spawn(async move { ask(&core, &caller(Some(&root)), "tools/call", Some(params)).await.0 })
    };
    eventually("the first call waits", || core.warm.waiting_for("slow") == 1).await;
    let e = refused(&core, &caller(Some(&root)), "tools/call", Some(params)).await;
    assert_eq!(e.class, ErrorClass::Overloaded, "{}", e.message);
    assert!(e.message.contains("1 calls already wait"), "{}", e.message);
    assert_eq!(counted("overloaded"), 1);

    // A drain ends the wait: the call is answered, retryable, not held
    // until the drain deadline cuts it off.
    core.draining.cancel();
    let e = tokio::time::timeout(std::time::Duration::from_secs(10), first).await.expect("answered").unwrap();
    let e = e.expect_err("the upstream is still starting");
    assert_eq!(e.class, ErrorClass::Transport);
    assert!(e.message.contains("upstream `slow` is starting"), "{}", e.message);
    assert_eq!(counted("timed_out"), 1);
    assert_eq!(core.warm.waiting_for("slow"), 0, "the waiter is let go");
    for u in core.upstreams.all() {
        u.shutdown().await;
    }
}
