//! The steps the method families share, over a core with upstreams that
//! never start (and, where one must serve, a small server in the test).

use super::*;
use crate::config::OversizeAction;
use crate::routing::tests::{Mock, caller, catalog, checked, core, down, eventually, principal, session};
use crate::security::access::Grants;
use crate::upstream::Lists;

const BOB_SEES_DOWN: &str = "[[access]]\nprincipals = [\"key:bob\"]\ntools = { allow = [\"down__*\"] }\n";

fn json(text: &str) -> serde_json::Value {
    serde_json::from_str(text).expect("JSON")
}

#[tokio::test]
async fn unknown_names_what_is_down_only_to_whom_may_know() {
    let core = core(&format!("{}{}{BOB_SEES_DOWN}", down("down", ""), down("other", "")));
    eventually("both upstreams failed their first start", || core.upstreams.all_settled()).await;
    let (root, _r1) = session(&core, principal("root"), Some(Grants::open()));
    let (bob, _r2) = session(&core, principal("bob"), None);

    // Nothing is hidden from root: every upstream not serving is named.
    let e = core.unknown(Kind::Tool, "nope__x", &caller(Some(&root)));
    assert_eq!((e.code, e.class), (protocol::INVALID_PARAMS, ErrorClass::Protocol));
    assert_eq!(e.message, "Unknown tool: nope__x (not serving right now: down, other)");
    // Bob may use `down__x`: he is told its upstream is down, and why.
    let e = core.unknown(Kind::Tool, "down__x", &caller(Some(&bob)));
    assert_eq!(e.class, ErrorClass::Transport);
    assert!(e.message.starts_with("upstream `down` is unavailable: "), "{}", e.message);
    // ... but not that `other` exists, nor that it is down.
    let e = core.unknown(Kind::Tool, "other__x", &caller(Some(&bob)));
    assert_eq!((e.code, e.message.as_str()), (protocol::INVALID_PARAMS, "Unknown tool: other__x"));
    // Without a session nothing is granted.
    let e = core.unknown(Kind::Prompt, "down__p", &caller(None));
    assert_eq!(e.message, "Unknown prompt: down__p");
}

#[tokio::test]
async fn a_resource_goes_to_its_namespace_its_lister_or_its_template() {
    let core = core(&format!("{}{}", down("a", ""), down("b", "prefix = false")));
    let (a, b) = (core.upstreams.find("a").unwrap(), core.upstreams.find("b").unwrap());
    let lists = Lists {
        resources: [checked(r#"{"uri":"mem://b/one","name":"one"}"#)].into(),
        templates: [checked(r#"{"uriTemplate":"mem://b/items/{id}","name":"t"}"#)].into(),
        ..Lists::default()
    };
    core.published.store(Arc::new(catalog(&core, &[(1, &lists)])));

    assert_eq!(core.resource_owner("file+a:///srv/x").unwrap(), (a, "file:///srv/x".to_owned()));
    assert_eq!(core.resource_owner("mem://b/one").unwrap(), (b, "mem://b/one".to_owned()));
    let by_template = core.resource_owner("mem://b/items/7").unwrap();
    assert_eq!(by_template, (b, "mem://b/items/7".to_owned()));
    // Only a prefixed upstream's namespace routes.
    for uri in ["other://x", "file+zz:///x", "file+b:///x"] {
        let e = core.resource_owner(uri).unwrap_err();
        assert_eq!((e.code, e.message), (protocol::RESOURCE_NOT_FOUND, format!("Resource not found: {uri}")));
    }
}

#[tokio::test]
async fn a_bare_uri_goes_to_the_only_unprefixed_server_of_resources_and_never_to_a_guess() {
    let mock = Mock::start(serde_json::json!({ "resources": {} }), serde_json::json!({})).await;
    let bare = "prefix = false";
    // `p` serves resources too, but its URIs carry its namespace.
    let one = core(&format!("{}{}", mock.section("p", ""), mock.section("u1", bare)));
    eventually("both ready", || one.upstreams.ready_count() == 2).await;
    assert_eq!(one.resource_owner("x://anything").unwrap(), (one.upstreams.find("u1").unwrap(), "x://anything".into()));

    let two = core(&format!("{}{}", mock.section("u1", bare), mock.section("u2", bare)));
    eventually("both ready", || two.upstreams.ready_count() == 2).await;
    let e = two.resource_owner("x://anything").unwrap_err();
    assert_eq!(e.code, protocol::RESOURCE_NOT_FOUND);
}

#[test]
fn a_progress_token_is_replaced_by_one_unique_in_the_gateway() {
    let params = checked(r#"{"name":"t","_meta":{"progressToken":"abc","other":1}}"#);
    let mut obj = params.checked().object().unwrap();
    let (ours, theirs) = rewrite_progress_token(&mut obj).expect("a token to replace");
    assert_eq!(theirs.text(), r#""abc""#);
    let sent = json(obj.to_checked().text());
    assert_eq!(json(&ours), sent["_meta"]["progressToken"], "the token sent is the one returned");
    assert!(sent["_meta"]["progressToken"].as_str().unwrap().starts_with("mcpgw-"));
    assert_eq!((&sent["name"], &sent["_meta"]["other"]), (&json(r#""t""#), &json("1")), "the rest is kept");

    let params = checked(r#"{"_meta":{"progressToken":7}}"#);
    let mut again = params.checked().object().unwrap();
    let (next, theirs) = rewrite_progress_token(&mut again).unwrap();
    assert_eq!(theirs.text(), "7");
    assert_ne!(next, ours, "each call gets its own");

    for text in [r#"{"name":"t"}"#, r#"{"_meta":{"other":1}}"#] {
        let params = checked(text);
        let mut obj = params.checked().object().unwrap();
        assert!(rewrite_progress_token(&mut obj).is_none());
        assert_eq!(json(obj.to_checked().text()), json(text), "untouched");
    }
}

#[tokio::test]
async fn a_relay_is_made_only_for_a_session_that_can_hear_about_the_call() {
    let mock = Mock::start(serde_json::json!({}), serde_json::json!({})).await;
    let core = core(&format!("{}{}", mock.section("net", ""), down("pipe", "")));
    let (net, pipe) = (&core.upstreams.get(UpstreamIx::new(0)), &core.upstreams.get(UpstreamIx::new(1)));
    assert_eq!((net.id(), pipe.id()), ("net", "pipe"));
    let (peer, _rx) = session(&core, principal("bob"), None);
    let with_token = checked(r#"{"_meta":{"progressToken":"p"}}"#);
    let without = checked(r#"{"name":"t"}"#);
    let run = |params: &CheckedBox, caller: &Caller<'_>, u: &Upstream| {
        let mut obj = params.checked().object().unwrap();
        let (token, relay) = related(&mut obj, caller, u);
        (token.is_some(), relay.is_some())
    };

    assert_eq!(run(&with_token, &caller(None), pipe), (true, false), "no session: nobody to relay to");
    assert_eq!(run(&with_token, &caller(Some(&peer)), pipe), (true, true));
    assert_eq!(run(&without, &caller(Some(&peer)), pipe), (false, false), "a pipe says nothing else of a call");
    assert_eq!(run(&without, &caller(Some(&peer)), net), (false, true), "an HTTP response stream may");
}

#[tokio::test]
async fn a_refusal_is_counted_and_recorded_and_a_hidden_one_answers_as_unknown() {
    let src = format!("{}[[access]]\nprincipals = [\"key:bob\"]\nprompts = {{ allow = [\"a__p\"] }}\n", down("a", ""));
    let core = core(&src);
    let a = core.upstreams.find("a").unwrap();
    let (bob, _rx) = session(&core, principal("bob"), None);
    let bob = caller(Some(&bob));
    let denials = |reason: DenyReason, tool: &str| {
        let labels = DenialLabels { upstream: Name::from("a"), tool: Name::from(tool), reason: reason.as_str() };
        core.telemetry.metrics.policy_denials.get_or_create(&labels).get()
    };
    let unknown = || CallError::protocol(protocol::INVALID_PARAMS, "Unknown prompt: a__q".to_owned());

    let mut out = Outcome::default();
    assert!(core.permit(&bob, Kind::Prompt, "a__p", Ident::plain("a__p"), a, &mut out, unknown).is_ok());
    assert_eq!((out.name, out.class, out.policy.len()), (None, None, 0), "nothing recorded");

    let mut out = Outcome::default();
    let e = core.permit(&bob, Kind::Prompt, "a__q", Ident::plain("a__q"), a, &mut out, unknown).unwrap_err();
    assert_eq!((e.class, e.message.as_str()), (ErrorClass::Protocol, "Unknown prompt: a__q"), "as if unknown");
    assert_eq!(out.name.as_deref(), Some("a__q"));
    assert_eq!((out.class, out.upstream.as_deref()), (Some(ErrorClass::Policy), Some("a")), "policy, for us");
    assert_eq!(out.policy, ["access:denied"]);
    assert_eq!(denials(DenyReason::Access, ""), 1);

    // A refusal the client is told of is classed `policy` for it too.
    let mut out = Outcome::default();
    let tool = Name::from("echo");
    let e = core.deny(&bob, a, Some(&tool), DenyReason::RateLimit, &mut out, unknown());
    assert_eq!(e.class, ErrorClass::Policy);
    assert_eq!((out.tool.as_deref(), out.policy.as_slice()), (Some("echo"), &["rate_limit:denied".to_owned()][..]));
    assert_eq!(denials(DenyReason::RateLimit, "echo"), 1);
    assert_eq!(denials(DenyReason::Access, ""), 1, "counted under its own reason");

    // Both are kept for `/status`, newest first, with who and why.
    let kept = core.refusals.to_json();
    let seen = |i: usize, k: &str| kept[i][k].as_str().map(str::to_owned);
    assert_eq!(kept.as_array().map(Vec::len), Some(2));
    assert_eq!((seen(0, "reason"), seen(1, "reason")), (Some("rate_limit".into()), Some("access".into())));
    assert_eq!(
        (seen(1, "name"), seen(1, "upstream"), seen(1, "principal")),
        (Some("a__q".into()), Some("a".into()), Some("key:bob".into()))
    );
}

#[tokio::test]
async fn the_builtin_tool_is_listed_when_on_and_granted() {
    let on = "[gateway]\nlist_secret_names = true\n";
    let grant = "[[access]]\nprincipals = [\"key:bob\"]\ntools = { allow = [\"gateway__*\"] }\n";
    let core_on = core(&format!("{on}{grant}"));
    let (bob, _r1) = session(&core_on, principal("bob"), None);
    let (eve, _r2) = session(&core_on, principal("eve"), None);
    assert!(core_on.builtin_listed(&caller(Some(&bob))));
    assert!(!core_on.builtin_listed(&caller(Some(&eve))), "not granted");
    assert!(!core_on.builtin_listed(&caller(None)), "anonymous");

    let core_off = core(grant);
    let (bob, _r3) = session(&core_off, principal("bob"), None);
    assert!(!core_off.builtin_listed(&caller(Some(&bob))), "off");
}

#[tokio::test]
async fn a_reply_carries_the_clients_id_and_an_error_names_its_upstream() {
    let core = core(&down("a", ""));
    let a = core.upstreams.find("a").unwrap();
    let id = RawValue::from_string("\"c-1\"".into()).unwrap();
    let limits = protocol::Limits::default();
    let ok = Message::parse(br#"{"jsonrpc":"2.0","id":41,"result":{"x":1}}"#, &limits).unwrap();
    let err =
        Message::parse(br#"{"jsonrpc":"2.0","id":42,"error":{"code":-32603,"message":"boom"}}"#, &limits).unwrap();

    let reply = json(&core.reply_with(&id, a, &ok, |_, _| None));
    assert_eq!(reply, serde_json::json!({ "jsonrpc": "2.0", "id": "c-1", "result": { "x": 1 } }));
    let rewritten = core.reply_with(&id, a, &ok, |i, _| {
        assert_eq!(i, a);
        Some(RawValue::from_string(r#"{"y":2}"#.into()).unwrap())
    });
    assert_eq!(json(&rewritten)["result"], serde_json::json!({ "y": 2 }));

    let reply = json(&core.reply_with(&id, a, &err, |_, _| panic!("an error is not exposed")));
    assert_eq!(reply["id"], "c-1");
    assert_eq!((reply["error"]["code"].as_i64(), &reply["error"]["message"]), (Some(-32603), &json(r#""boom""#)));
    assert_eq!(reply["error"]["data"]["upstream"], "a");
}

#[tokio::test]
async fn a_result_over_its_cap_is_truncated_or_refused() {
    let core = core(&down("a", ""));
    let a = core.upstreams.find("a").unwrap();
    let (bob, _rx) = session(&core, principal("bob"), None);
    let bob = caller(Some(&bob));
    let id = RawValue::from_string("1".into()).unwrap();
    let long = "x".repeat(2000);
    let text = format!(r#"{{"jsonrpc":"2.0","id":1,"result":{{"content":[{{"type":"text","text":"{long}"}}]}}}}"#);
    let reply = Message::parse(text.as_bytes(), &protocol::Limits::default()).unwrap();
    let tool = Name::from("big");
    let capped = |outcome| {
        let labels = OutcomeLabels { upstream: Name::from("a"), outcome };
        core.telemetry.metrics.results_capped.get_or_create(&labels).get()
    };
    let cap = |max_bytes, action| Some(ResultCap { max_bytes, action });

    let mut out = Outcome::default();
    assert!(core.capped(&id, None, &reply, a, Some(&tool), &bob, &mut out).is_none(), "no cap");
    assert!(core.capped(&id, cap(10_000, OversizeAction::Refuse), &reply, a, Some(&tool), &bob, &mut out).is_none());
    assert!(out.policy.is_empty());

    let cut = core.capped(&id, cap(500, OversizeAction::Truncate), &reply, a, Some(&tool), &bob, &mut out);
    let cut = cut.expect("over its cap").expect("truncated, not refused");
    assert!(cut.len() < text.len(), "{} bytes", cut.len());
    assert_eq!(json(&cut)["id"], 1);
    assert_eq!(out.policy, ["result_size:truncated"]);
    assert_eq!((capped("truncated"), capped("refused")), (1, 0));

    let mut out = Outcome::default();
    let refused = core.capped(&id, cap(500, OversizeAction::Refuse), &reply, a, Some(&tool), &bob, &mut out);
    let e = refused.expect("over its cap").expect_err("refused");
    assert_eq!(e.class, ErrorClass::Policy);
    assert_eq!(out.policy, ["result_size:denied"]);
    assert_eq!((capped("truncated"), capped("refused")), (1, 1));
}
