//! The pipeline alone, over a gateway with no upstreams: one request in,
//! one reply and its outcome out.

use std::sync::Arc;

use super::*;
use crate::config::Config;
use crate::error::ErrorClass;
use crate::protocol::{Classified, Reply, Transport};
use crate::routing::Gateway;
use crate::security::auth::{Principal, Via};
use crate::telemetry::Telemetry;

const CONFIG: &str = "[gateway]\nlist_secret_names = true\n\
    [[access]]\nprincipals = [\"key:bob\"]\ntools = { allow = [\"gateway__*\"] }\n";

fn gateway() -> Arc<Gateway> {
    let config = Config::from_str(CONFIG, std::path::Path::new("gateway.toml"), &std::collections::BTreeMap::new())
        .expect("the test config is valid");
    Gateway::start(config, Telemetry::metrics_only())
}

fn request(text: &str) -> protocol::Request {
    match Message::parse(text.as_bytes(), &protocol::Limits::default()).unwrap().classify().unwrap() {
        Classified::Request(r) => r,
        other => panic!("not a request: {other:?}"),
    }
}

fn caller(peer: Option<&Arc<crate::routing::Peer>>) -> Caller<'_> {
    Caller {
        transport: Transport::Http,
        session: None,
        traceparent: None,
        peer,
        stream: None,
        era: crate::protocol::Era::Legacy,
    }
}

async fn run_one(gw: &Gateway, text: &str, caller: &Caller<'_>) -> Handled {
    let msg = request(text);
    run(&gw.core, &msg, caller, &Span::NONE).await
}

fn error_of(reply: &str) -> (i64, String) {
    let v: serde_json::Value = serde_json::from_str(reply).unwrap();
    (v["error"]["code"].as_i64().unwrap_or(0), v["error"]["message"].as_str().unwrap_or_default().to_owned())
}

#[tokio::test]
async fn a_call_hands_back_its_reply_and_its_outcome() {
    let gw = gateway();
    let bob = Arc::new(Principal::new("bob", Via::ApiKey, Box::new([]), Box::new([])));
    let client = gw.connect(tokio::sync::mpsc::channel(4).0, None, bob);

    let call = r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"gateway__list_secret_names"}}"#;
    let ok = run_one(&gw, call, &caller(Some(&client.peer))).await;
    let text = ok.reply.map(Reply::into_string);
    assert!(text.as_deref().unwrap().contains(r#""result""#), "{text:?}");
    assert_eq!(ok.outcome.name.as_deref(), Some("gateway__list_secret_names"));
    assert_eq!(ok.outcome.class, None);

    let unknown = r#"{"jsonrpc":"2.0","id":2,"method":"tools/call","params":{"name":"nope__x"}}"#;
    let bad = run_one(&gw, unknown, &caller(Some(&client.peer))).await;
    assert_eq!(
        error_of(bad.reply.map(Reply::into_string).as_deref().unwrap()),
        (protocol::INVALID_PARAMS, "Unknown tool: nope__x".into())
    );
    assert_eq!(bad.outcome.name.as_deref(), Some("nope__x"));
    assert_eq!(bad.outcome.class, Some(ErrorClass::Protocol));
}

#[tokio::test]
async fn a_tool_the_caller_may_not_see_is_answered_as_unknown() {
    let gw = gateway();
    // Without a session: anonymous, granted nothing.
    let call = r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"gateway__list_secret_names"}}"#;
    let hidden = run_one(&gw, call, &caller(None)).await;
    let (code, message) = error_of(hidden.reply.map(Reply::into_string).as_deref().unwrap());
    assert_eq!((code, message.as_str()), (protocol::INVALID_PARAMS, "Unknown tool: gateway__list_secret_names"));
    let list = r#"{"jsonrpc":"2.0","id":2,"method":"tools/list"}"#;
    let listed = run_one(&gw, list, &caller(None)).await;
    assert!(!listed.reply.unwrap().into_string().contains("gateway__list_secret_names"), "nor listed");
}

#[tokio::test]
async fn an_id_already_in_flight_in_the_session_is_refused() {
    let gw = gateway();
    let client = gw.connect(tokio::sync::mpsc::channel(4).0, None, Arc::new(Principal::anonymous()));
    let id = serde_json::value::RawValue::from_string("7".into()).unwrap();
    let _held = client.peer.start_call(&id).expect("a first call with id 7");
    let ping = r#"{"jsonrpc":"2.0","id":7,"method":"ping"}"#;
    let refused = run_one(&gw, ping, &caller(Some(&client.peer))).await;
    let (code, message) = error_of(refused.reply.map(Reply::into_string).as_deref().unwrap());
    assert_eq!(code, protocol::INVALID_REQUEST);
    assert!(message.contains("already in flight"), "{message}");
    assert_eq!(refused.outcome.class, Some(ErrorClass::Protocol));
    drop(_held);
    let answered = run_one(&gw, ping, &caller(Some(&client.peer))).await;
    assert!(answered.reply.unwrap().into_string().contains(r#""result""#));
}
