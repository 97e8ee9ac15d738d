//! The inbox on its own: messages handed to `deliver` as a transport's
//! reader would, calls registered in the pending map as `Connection` does,
//! and the events channel read where the supervisor would read it.

use std::time::Duration;

use serde_json::value::RawValue;
use tokio::sync::oneshot::error::TryRecvError;

use super::*;
use crate::protocol::Limits;
use crate::telemetry::Metrics;

/// An inbox for upstream `x`, its events, and the metrics it counts in.
fn inbox_with(json: Limits) -> (Arc<Inbox>, mpsc::Receiver<Event>, Metrics) {
    let metrics = Metrics::new();
    let (tx, rx) = mpsc::channel(8);
    (Inbox::new(Arc::from("x"), tx, json, &metrics), rx, metrics)
}

fn inbox() -> (Arc<Inbox>, mpsc::Receiver<Event>, Metrics) {
    inbox_with(Limits::default())
}

/// Registers call `id` as `Connection::request_once` does.
fn wait_for(inbox: &Inbox, id: u64) -> oneshot::Receiver<Reply> {
    let (tx, rx) = oneshot::channel();
    inbox.lock().insert(id, (tx, ResultCheck::Whole));
    rx
}

/// The reply a call got (it must have got one).
fn reply(rx: &mut oneshot::Receiver<Reply>) -> Reply {
    rx.try_recv().expect("the call got its reply")
}

/// The `result` text of a reply that is one.
fn result(r: Reply) -> String {
    r.expect("a result").result().expect("a result").text().to_owned()
}

/// `upstream_messages_refused_total{upstream="x",reason}`.
fn refused(metrics: &Metrics, reason: &'static str) -> u64 {
    metrics.upstream_messages_refused.get_or_create(&UpstreamRefusalLabels { upstream: Name::from("x"), reason }).get()
}

/// What a relay was given, as `method params`.
#[derive(Debug, Default)]
struct Recorder(Mutex<Vec<String>>);

impl Relay for Recorder {
    fn notify(&self, msg: &Message) {
        let params = msg.params().map(|p| p.text().to_owned()).unwrap_or_default();
        self.0.locked().push(format!("{} {params}", msg.method()));
    }

    fn request(&self, msg: Message, _reply: super::super::Responder) {
        self.0.locked().push(format!("request {}", msg.method()));
    }
}

impl Recorder {
    fn seen(&self) -> Vec<String> {
        self.0.locked().clone()
    }
}

#[test]
fn replies_in_any_order_reach_the_call_they_answer() {
    let (inbox, mut events, _m) = inbox();
    let mut calls: Vec<_> = (1..=3).map(|id| wait_for(&inbox, id)).collect();
    for id in [3, 1, 2] {
        inbox.deliver(format!(r#"{{"jsonrpc":"2.0","id":{id},"result":{{"for":{id}}}}}"#).as_bytes());
    }
    let got: Vec<_> = calls.iter_mut().map(|rx| result(reply(rx))).collect();
    assert_eq!(got, [r#"{"for":1}"#, r#"{"for":2}"#, r#"{"for":3}"#]);
    assert!((1..=3).all(|id| !inbox.is_pending(id)), "a delivered reply ends the wait");
    assert!(events.try_recv().is_err(), "replies are no events");
}

#[test]
fn a_reply_nobody_waits_for_is_dropped_without_harm() {
    let (inbox, mut events, m) = inbox();
    let mut call = wait_for(&inbox, 1);
    // Unknown, expired (a second reply to 2 after it was answered), and an
    // id the gateway never gives (a string).
    let mut answered = wait_for(&inbox, 2);
    inbox.deliver(br#"{"jsonrpc":"2.0","id":2,"result":{}}"#);
    assert!(reply(&mut answered).is_ok());
    for late in [r#"{"jsonrpc":"2.0","id":7,"result":{}}"#, r#"{"jsonrpc":"2.0","id":2,"result":{}}"#] {
        inbox.deliver(late.as_bytes());
    }
    inbox.deliver(br#"{"jsonrpc":"2.0","id":"1","result":{}}"#);
    assert!(matches!(call.try_recv(), Err(TryRecvError::Empty)), "call 1 still waits");
    assert!(inbox.is_pending(1));
    assert!(events.try_recv().is_err(), "a stray reply is no event");
    assert_eq!(refused(&m, "invalid"), 0, "a stray reply is not refused either");
    inbox.deliver(br#"{"jsonrpc":"2.0","id":1,"result":{"ok":true}}"#);
    assert_eq!(result(reply(&mut call)), r#"{"ok":true}"#);
}

#[test]
fn a_reply_with_a_duplicate_member_fails_its_call_as_refused_and_is_counted() {
    let (inbox, mut events, m) = inbox();
    let mut call = wait_for(&inbox, 1);
    inbox.deliver(br#"{"jsonrpc":"2.0","id":1,"result":{"a":1,"a":2}}"#);
    let err = reply(&mut call).expect_err("refused");
    assert_eq!(
        (err.class, err.refused, err.upstream.as_deref()),
        (ErrorClass::Protocol, Some("duplicate_member"), Some("x"))
    );
    assert!(err.message.starts_with("upstream `x` sent a reply the gateway refused: "), "{}", err.message);
    assert!(!err.not_delivered, "the call ran upstream: never retried");
    assert_eq!(refused(&m, "duplicate_member"), 1);
    // A notification that would be read two ways: counted, never acted on.
    inbox.deliver(br#"{"jsonrpc":"2.0","method":"notifications/tools/list_changed","method":"ping"}"#);
    assert_eq!(refused(&m, "duplicate_member"), 2);
    assert!(events.try_recv().is_err(), "nothing reaches the supervisor");
}

#[test]
fn a_refused_request_is_answered_with_an_error_under_its_id() {
    let (inbox, mut events, m) = inbox();
    inbox.deliver(br#"{"jsonrpc":"2.0","id":"r1","method":"roots/list","params":{"x":1,"x":1}}"#);
    let Ok(Event::Answer(body)) = events.try_recv() else { panic!("an answer is owed") };
    let v: serde_json::Value = serde_json::from_str(&body).expect("JSON");
    assert_eq!(v["id"], "r1");
    assert_eq!(v["error"]["code"], crate::protocol::INVALID_REQUEST, "{body}");
    assert_eq!(refused(&m, "duplicate_member"), 1);
    // Not JSON at all: no id to answer, counted by its own reason.
    inbox.deliver(b"{not json");
    assert!(events.try_recv().is_err());
    assert_eq!(refused(&m, "json"), 1);
}

#[test]
fn a_message_nested_past_the_limit_is_refused_as_too_deep() {
    let (inbox, _events, m) = inbox_with(Limits { max_depth: 3 });
    let mut shallow = wait_for(&inbox, 1);
    let mut deep = wait_for(&inbox, 2);
    inbox.deliver(br#"{"jsonrpc":"2.0","id":1,"result":{"a":{}}}"#);
    inbox.deliver(br#"{"jsonrpc":"2.0","id":2,"result":{"a":{"b":{}}}}"#);
    assert!(reply(&mut shallow).is_ok(), "three deep is allowed");
    assert_eq!(reply(&mut deep).expect_err("refused").refused, Some("too_deep"));
    assert_eq!(refused(&m, "too_deep"), 1);
}

#[test]
fn an_oversized_reply_fails_the_call_its_head_names() {
    let (inbox, _events, _m) = inbox();
    let mut named = wait_for(&inbox, 4);
    let mut other = wait_for(&inbox, 5);
    inbox.fail_oversized(None, 100);
    inbox.fail_oversized(Some("\"4\""), 100);
    inbox.fail_oversized(Some("4"), 100);
    let err = reply(&mut named).expect_err("failed");
    assert_eq!(
        (err.class, err.message.as_str()),
        (ErrorClass::UpstreamInternal, "upstream `x` sent a reply larger than 100 bytes")
    );
    assert!(matches!(other.try_recv(), Err(TryRecvError::Empty)), "only the call it answers");
}

#[test]
fn requests_and_notifications_from_the_upstream_become_events() {
    let (inbox, mut events, _m) = inbox();
    inbox.deliver(br#"{"jsonrpc":"2.0","id":"s1","method":"roots/list"}"#);
    inbox.deliver(br#"{"jsonrpc":"2.0","method":"notifications/tools/list_changed"}"#);
    inbox.deliver(br#"{"jsonrpc":"2.0","method":"notifications/message","params":{"level":"info","data":"hi"}}"#);
    let Ok(Event::Request(req, relay)) = events.try_recv() else { panic!("a request event") };
    assert_eq!((req.method(), req.id.as_deref().map(RawValue::get)), ("roots/list", Some("\"s1\"")));
    assert!(relay.is_none(), "not on any call's stream");
    let methods: Vec<_> = std::iter::from_fn(|| events.try_recv().ok())
        .map(|e| match e {
            Event::Notification(n) => n.method().to_owned(),
            other => panic!("not a notification: {other:?}"),
        })
        .collect();
    assert_eq!(methods, ["notifications/tools/list_changed", "notifications/message"]);
}

#[test]
fn a_call_s_response_stream_relays_its_log_and_requests_but_not_list_changes() {
    let (inbox, mut events, _m) = inbox();
    let relay = Arc::new(Recorder::default());
    let dyn_relay: Arc<dyn Relay> = relay.clone();
    inbox.related.locked().insert(3, (dyn_relay.clone(), Arc::default()));
    let log = br#"{"jsonrpc":"2.0","method":"notifications/message","params":{"data":"on 3"}}"#;
    inbox.deliver_related(log, Some(3));
    assert_eq!(relay.seen(), [r#"notifications/message {"data":"on 3"}"#]);
    assert!(events.try_recv().is_err(), "relayed, not the supervisor's");

    // A list change is the supervisor's wherever it arrives; so is a log
    // message on the stream of a call that is gone.
    inbox.deliver_related(br#"{"jsonrpc":"2.0","method":"notifications/tools/list_changed"}"#, Some(3));
    inbox.deliver_related(log, Some(4));
    let mut methods = Vec::new();
    while let Ok(Event::Notification(n)) = events.try_recv() {
        methods.push(n.method().to_owned());
    }
    assert_eq!(methods, ["notifications/tools/list_changed", "notifications/message"]);

    // A request on the stream goes to the supervisor with the call's relay.
    inbox.deliver_related(br#"{"jsonrpc":"2.0","id":9,"method":"sampling/createMessage"}"#, Some(3));
    let Ok(Event::Request(_, Some((r, _)))) = events.try_recv() else { panic!("a request with its relay") };
    assert!(Arc::ptr_eq(&r, &dyn_relay));
    assert_eq!(relay.seen().len(), 1, "the inbox does not answer it itself");
}

#[tokio::test(start_paused = true)]
async fn progress_wakes_and_reaches_only_the_call_whose_token_it_names() {
    let (inbox, mut events, _m) = inbox();
    let relay = Arc::new(Recorder::default());
    let dyn_relay: Arc<dyn Relay> = relay.clone();
    let watch = inbox.watch_progress("\"t1\"", Some(&dyn_relay));
    let progress = |token: &str| {
        format!(
            r#"{{"jsonrpc":"2.0","method":"notifications/progress","params":{{"progressToken":{token},"progress":1}}}}"#
        )
    };
    inbox.deliver(progress("\"t2\"").as_bytes());
    inbox.deliver(progress("\"t1\"").as_bytes());
    assert_eq!(relay.seen(), [r#"notifications/progress {"progressToken":"t1","progress":1}"#]);
    // The waker holds one wake-up for the call's deadline.
    tokio::time::timeout(Duration::from_secs(1), watch.notify.notified()).await.expect("woken");
    // Once the watch is dropped, late progress goes nowhere.
    drop(watch);
    inbox.deliver(progress("\"t1\"").as_bytes());
    assert_eq!(relay.seen().len(), 1);
    assert!(events.try_recv().is_err(), "progress is never the supervisor's");
}

#[test]
fn a_dropped_call_leaves_nothing_pending() {
    let (inbox, _events, _m) = inbox();
    let mut rx = wait_for(&inbox, 8);
    inbox.related.locked().insert(8, (Arc::new(Recorder::default()), Arc::default()));
    drop(PendingGuard { inbox: &inbox, id: 8, related: true });
    assert!(!inbox.is_pending(8));
    assert!(inbox.related.locked().is_empty(), "nor its relay");
    assert!(matches!(rx.try_recv(), Err(TryRecvError::Closed)), "its caller sees the sender gone");
}

#[test]
fn fail_and_fail_all_fail_pending_calls_with_their_reason() {
    let (inbox, _events, _m) = inbox();
    let mut calls: Vec<_> = (1..=3).map(|id| wait_for(&inbox, id)).collect();
    inbox.fail(2, CallError::new(ErrorClass::Timeout, Some("x"), "just this one"));
    inbox.fail(2, CallError::new(ErrorClass::Timeout, Some("x"), "again"));
    assert_eq!(reply(&mut calls[1]).expect_err("failed").message, "just this one");
    assert!(matches!(calls[0].try_recv(), Err(TryRecvError::Empty)));
    inbox.fail_all("reader stopped");
    for i in [0, 2] {
        let err = reply(&mut calls[i]).expect_err("failed");
        assert_eq!(
            (err.class, err.message.as_str()),
            (ErrorClass::Transport, "upstream `x` connection lost: reader stopped")
        );
    }
    assert!((1..=3).all(|id| !inbox.is_pending(id)));
}

#[tokio::test(start_paused = true)]
async fn close_resolves_closed_keeps_the_first_reason_and_fails_the_calls() {
    let (inbox, _events, _m) = inbox();
    let mut call = wait_for(&inbox, 1);
    assert_eq!(inbox.close_reason(), "closed", "the default, before any close");
    assert!(tokio::time::timeout(Duration::from_secs(1), inbox.closed()).await.is_err(), "open");
    inbox.close("process exited (exit status: 3)".into());
    inbox.close("later".into());
    tokio::time::timeout(Duration::from_secs(1), inbox.closed()).await.expect("closed");
    assert_eq!(inbox.close_reason(), "process exited (exit status: 3)");
    let err = reply(&mut call).expect_err("failed");
    assert_eq!(err.message, "upstream `x` connection lost: process exited (exit status: 3)");
    // A call registered after the close is failed by the next close.
    let mut late = wait_for(&inbox, 2);
    inbox.close("again".into());
    assert!(
        reply(&mut late).expect_err("failed").message.ends_with("connection lost: process exited (exit status: 3)")
    );
}
