//! Notifications about no call, routed alone: each goes to the sessions
//! it concerns and that may hear it, and to no other.

use crate::protocol::Message;
use crate::routing::tests::{catalog, core, down, drain, principal, session, tool_defs};
use crate::security::access::Grants;
use crate::telemetry::metrics::Name;
use crate::upstream::Lists;

use super::*;

/// Bob sees `a`'s tools, carol `b`'s; neither any prompt or resource.
const ACCESS: &str = "[[access]]\nprincipals = [\"key:bob\", \"key:dan\"]\ntools = { allow = [\"a__*\"] }\n\
    prompts = { deny = [\"*\"] }\nresources = { deny = [\"*\"] }\n\
    [[access]]\nprincipals = [\"key:carol\"]\ntools = { allow = [\"b__*\"] }\n\
    prompts = { deny = [\"*\"] }\nresources = { deny = [\"*\"] }\n";

fn note(upstream: &str, method: &str, params: &str) -> Note {
    let text = format!(r#"{{"jsonrpc":"2.0","method":"{method}","params":{params}}}"#);
    Note {
        upstream: Name::from(upstream),
        msg: Message::parse(text.as_bytes(), &crate::protocol::Limits::default()).unwrap(),
    }
}

/// Runs the loop over `notes` until their channel closes.
async fn route(core: &Arc<Core>, notes: Vec<Note>) {
    let (tx, rx) = mpsc::channel(notes.len().max(1));
    for n in notes {
        tx.try_send(n).unwrap();
    }
    drop(tx);
    notes_loop(core.clone(), rx, CancellationToken::new()).await;
}

/// The params of each `method` message on a session's stream.
fn params_of(rx: &mut mpsc::Receiver<String>, method: &str) -> Vec<serde_json::Value> {
    let all = drain(rx);
    assert!(all.iter().all(|m| m["method"] == method), "only {method}: {all:?}");
    all.into_iter().map(|m| m["params"].clone()).collect()
}

fn lists(tools: &[&str]) -> Lists {
    Lists { tools: tool_defs(tools), ..Lists::default() }
}

#[tokio::test]
async fn a_log_message_reaches_the_sessions_that_asked_at_its_level_and_hear_its_upstream() {
    let core = core(&format!("{}{}{ACCESS}", down("a", ""), down("b", "")));
    let (a_x, b_y) = (lists(&["x"]), lists(&["y"]));
    core.published.store(Arc::new(catalog(&core, &[(0, &a_x), (1, &b_y)])));
    let (root, mut root_rx) = session(&core, principal("root"), Some(Grants::open()));
    let (bob, mut bob_rx) = session(&core, principal("bob"), None);
    let (carol, mut carol_rx) = session(&core, principal("carol"), None);
    let (_dan, mut dan_rx) = session(&core, principal("dan"), None);
    root.set_level(3); // warning
    bob.set_level(0); // debug
    carol.set_level(0);

    let info = r#"{"level":"info","logger":"db","data":"hi"}"#;
    route(&core, vec![note("a", "notifications/message", info)]).await;
    let told = params_of(&mut bob_rx, "notifications/message");
    assert_eq!(told, [serde_json::json!({ "level": "info", "logger": "a/db", "data": "hi" })]);
    assert!(drain(&mut root_rx).is_empty(), "info is below root's warning");
    assert!(drain(&mut carol_rx).is_empty(), "carol sees nothing of `a`");
    assert!(drain(&mut dan_rx).is_empty(), "dan asked for no logs");

    route(&core, vec![note("a", "notifications/message", r#"{"level":"error","data":1}"#)]).await;
    assert_eq!(params_of(&mut root_rx, "notifications/message")[0]["logger"], "a", "no logger of its own: the id");
    assert_eq!(params_of(&mut bob_rx, "notifications/message").len(), 1);
    route(&core, vec![note("a", "notifications/message", r#"{"level":"loud","data":1}"#)]).await;
    assert!(drain(&mut bob_rx).is_empty(), "not a level");

    // A new catalog in which `a` lists nothing bob may see: he stops hearing it.
    core.published.store(Arc::new(catalog(&core, &[(0, &lists(&[])), (1, &b_y)])));
    route(&core, vec![note("a", "notifications/message", info), note("b", "notifications/message", info)]).await;
    assert!(drain(&mut bob_rx).is_empty());
    assert_eq!(params_of(&mut carol_rx, "notifications/message")[0]["logger"], "b/db");
}

#[tokio::test]
async fn a_resource_update_goes_to_its_subscribers_under_the_uri_they_know() {
    let core = core(&format!("{}{}", down("a", ""), down("b", "prefix = false")));
    let (a, b) = (core.upstreams.find("a").unwrap(), core.upstreams.find("b").unwrap());
    let (one, mut one_rx) = session(&core, principal("one"), None);
    let (two, mut two_rx) = session(&core, principal("two"), None);
    core.subscriptions.want(one.id, (a, Arc::from("file:///x")));
    core.subscriptions.want(two.id, (b, Arc::from("mem://1")));

    route(
        &core,
        vec![
            note("a", "notifications/resources/updated", r#"{"uri":"file:///x","title":"t"}"#),
            note("a", "notifications/resources/updated", r#"{"uri":"file:///unwatched"}"#),
            note("b", "notifications/resources/updated", r#"{"uri":"file:///x"}"#),
            note("b", "notifications/resources/updated", r#"{"uri":"mem://1"}"#),
        ],
    )
    .await;
    let told = params_of(&mut one_rx, "notifications/resources/updated");
    assert_eq!(told, [serde_json::json!({ "uri": "file+a:///x", "title": "t" })]);
    assert_eq!(params_of(&mut two_rx, "notifications/resources/updated"), [serde_json::json!({ "uri": "mem://1" })]);
}

#[tokio::test]
async fn a_task_status_goes_to_the_session_that_owns_the_task() {
    let core = core(&format!("{}{}", down("a", ""), down("b", "")));
    let a = core.upstreams.find("a").unwrap();
    let (owner, mut owner_rx) = session(&core, principal("one"), None);
    let (_other, mut other_rx) = session(&core, principal("two"), None);
    let exposed = core.tasks.insert(owner.id, a, "a", "t-1", None);

    let status = r#"{"taskId":"t-1","status":"working"}"#;
    route(
        &core,
        vec![
            note("a", "notifications/tasks/status", status),
            note("a", "notifications/tasks/status", r#"{"taskId":"t-2","status":"working"}"#),
            note("b", "notifications/tasks/status", status),
        ],
    )
    .await;
    let told = params_of(&mut owner_rx, "notifications/tasks/status");
    assert_eq!(told, [serde_json::json!({ "taskId": &*exposed, "status": "working" })]);
    assert_ne!(&*exposed, "t-1", "under the id the gateway gave it");
    assert!(drain(&mut other_rx).is_empty());
}

#[tokio::test]
async fn what_no_session_should_hear_is_dropped_and_the_loop_ends_on_shutdown() {
    let core = core(&down("a", ""));
    let (root, mut rx) = session(&core, principal("root"), Some(Grants::open()));
    root.set_level(0);
    let (tx, notes) = mpsc::channel(8);
    let shutdown = CancellationToken::new();
    let task = tokio::spawn(notes_loop(core.clone(), notes, shutdown.clone()));
    let log = r#"{"level":"error","data":1}"#;
    tx.send(note("zz", "notifications/message", log)).await.unwrap();
    tx.send(note("a", "notifications/tools/list_changed", "{}")).await.unwrap();
    tx.send(note("a", "notifications/message", log)).await.unwrap();
    // Only the last is for anyone: once it arrives, the others were passed over.
    let first = tokio::time::timeout(std::time::Duration::from_secs(5), rx.recv()).await.unwrap().unwrap();
    assert!(first.contains(r#""logger":"a""#), "{first}");
    shutdown.cancel();
    tokio::time::timeout(std::time::Duration::from_secs(5), task).await.expect("ends on shutdown").unwrap();
    assert!(tx.is_closed(), "the loop let go of its channel while a sender was still open");
    assert!(drain(&mut rx).is_empty());
}
