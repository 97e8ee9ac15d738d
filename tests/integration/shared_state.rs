//! The shared-state scripts (`mcp_gateway::shared`) against a real
//! `redis-server`: buckets all or none and refilled at their rate, a
//! refused call taken back, histories appended and trimmed, sessions
//! counted per principal, ended for every replica, and refused when idle.
//! The replicas test (`replicas.rs`) shows the same through the gateway;
//! this one pins each script's answers.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use mcp_gateway::config::Config;
use mcp_gateway::shared::{Admit, AdmitRequest, Bucket, Histories, Open, Opened, Shared, key_hash};
use mcp_gateway::telemetry::Metrics;

use crate::replicas::redis;

fn shared(port: u16, prefix: &str) -> Shared {
    let toml = format!("[redis]\nurl = \"redis://127.0.0.1:{port}/0\"\nkey_prefix = \"{prefix}\"\ntimeout = \"2s\"\n");
    let config = Config::from_str(&toml, Path::new("gateway.toml"), &BTreeMap::new()).unwrap();
    Shared::new(config.redis.as_ref().unwrap(), Arc::new(Metrics::new())).unwrap()
}

const IDLE: Duration = Duration::from_secs(60);

/// How sessions are opened here: a cap of `cap`, the idle time above.
fn opening(cap: usize) -> Open {
    Open { cap, idle: IDLE, hold: IDLE, old: false }
}

/// Opens the sessions `ids` of alice (Redis admits only sessions it knows).
async fn open_all(s: &Shared, ids: &[&str]) {
    for id in ids {
        assert_eq!(s.open(key_hash(id), Some(key_hash("alice")), opening(100)).await.unwrap(), Opened::Open);
    }
}

fn request<'a>(session: &str, buckets: &'a [Bucket], histories: Option<Histories<'a>>) -> AdmitRequest<'a> {
    AdmitRequest {
        session: Some(key_hash(session)),
        principal: Some(key_hash("alice")),
        principal_history: true,
        buckets,
        histories,
        idle: IDLE,
    }
}

fn admitted(a: Admit) -> mcp_gateway::shared::Admitted {
    match a {
        Admit::Admitted(a) => a,
        other => panic!("not admitted: {other:?}"),
    }
}

#[tokio::test]
async fn buckets_are_all_or_none_refill_at_their_rate_and_a_refused_call_gives_its_token_back() {
    let r = redis().await;
    let s = shared(r.port, "t1:");
    open_all(&s, &["s", "s2"]).await;
    // Two buckets: 2 calls, and 3 calls refilling at 10 a second.
    let buckets = [Bucket { id: 1, per_second: 0.001, burst: 2.0 }, Bucket { id: 2, per_second: 10.0, burst: 3.0 }];
    for _ in 0..2 {
        admitted(s.admit(&request("s", &buckets, None)).await.unwrap());
    }
    match s.admit(&request("s", &buckets, None)).await.unwrap() {
        Admit::Limited { index, retry_after } => {
            assert_eq!(index, 0, "the first bucket is empty");
            assert!(retry_after > Duration::from_secs(900), "at 0.001/s a token is ~1000 s away: {retry_after:?}");
        }
        other => panic!("{other:?}"),
    }
    // The second bucket lost nothing to the refused call (all or none):
    // it has one token left of three, refilled a little since.
    let only_second = [buckets[1]];
    admitted(s.admit(&request("s", &only_second, None)).await.unwrap());
    match s.admit(&request("s", &only_second, None)).await.unwrap() {
        Admit::Limited { index: 0, retry_after } => {
            assert!(retry_after <= Duration::from_millis(100), "{retry_after:?}")
        }
        Admit::Admitted(_) => {} // refilled by 10/s in between: fine
        other => panic!("{other:?}"),
    }
    tokio::time::sleep(Duration::from_millis(350)).await;
    admitted(s.admit(&request("s", &only_second, None)).await.unwrap());

    // Another principal has buckets of its own.
    let mut bob = request("s2", &buckets, None);
    bob.principal = Some(key_hash("bob"));
    admitted(s.admit(&bob).await.unwrap());

    // A call admitted then refused by the rules gives its token back.
    let one = [Bucket { id: 3, per_second: 0.001, burst: 1.0 }];
    let a = admitted(s.admit(&request("s", &one, None)).await.unwrap());
    assert!(matches!(s.admit(&request("s", &one, None)).await.unwrap(), Admit::Limited { .. }));
    s.undo(&request("s", &one, None), &a);
    tokio::time::sleep(Duration::from_millis(200)).await;
    admitted(s.admit(&request("s", &one, None)).await.unwrap());
}

#[tokio::test]
async fn histories_are_read_before_the_call_is_appended_trimmed_and_taken_back() {
    let r = redis().await;
    let s = shared(r.port, "t2:");
    open_all(&s, &["s", "s2", "s3"]).await;
    let h = |entry| Some(Histories { rules: 7, capacity: 3, entry, ttl: Duration::from_secs(60) });
    let first = admitted(s.admit(&request("s", &[], h("|01|a"))).await.unwrap());
    assert_eq!((first.session.len, first.principal.len), (0, 0), "nothing before the first call");
    assert!(first.now_ms > 1_700_000_000_000, "Redis's clock, Unix ms: {}", first.now_ms);
    let entry = first.entry.clone().unwrap();
    assert_eq!(entry, format!("{}|01|a", first.now_ms));
    // `||` marks a call that matched no step: kept (it counts in a window
    // of calls), never sent back.
    for e in ["|02|b", "||c", "|04|d"] {
        admitted(s.admit(&request("s", &[], h(e))).await.unwrap());
    }
    let next = admitted(s.admit(&request("s", &[], h("|05|e"))).await.unwrap());
    let tails: Vec<(usize, &str)> =
        next.session.marked.iter().map(|(at, e)| (*at, e.split_once('|').unwrap().1)).collect();
    assert_eq!(next.session.len, 3, "trimmed to 3");
    assert_eq!(tails, [(0, "04|d"), (2, "02|b")], "newest first, by place; the unmarked call only counted");
    assert_eq!(next.principal, next.session, "the principal's history saw the same calls");
    // Another session of the same principal: its own session history,
    // the principal's shared.
    let other = admitted(s.admit(&request("s2", &[], h("|06|f"))).await.unwrap());
    assert_eq!(other.session.len, 0);
    assert_eq!(other.principal.len, 3);
    // Without a principal history (anonymous): none read or written.
    let mut anon = request("s3", &[], h("|07|g"));
    anon.principal_history = false;
    assert_eq!(admitted(s.admit(&anon).await.unwrap()).principal, Default::default());
    // Another rules file (fingerprint) starts afresh.
    let other_rules = Some(Histories { rules: 8, capacity: 3, entry: "|01|x", ttl: Duration::from_secs(60) });
    assert_eq!(admitted(s.admit(&request("s", &[], other_rules)).await.unwrap()).session.len, 0);
    // A refused call's entry is taken back.
    let refused = admitted(s.admit(&request("s", &[], h("|09|z"))).await.unwrap());
    s.undo(&request("s", &[], h("|09|z")), &refused);
    tokio::time::sleep(Duration::from_millis(200)).await;
    let after = admitted(s.admit(&request("s", &[], h("|0a|y"))).await.unwrap());
    assert!(after.session.marked.iter().all(|(_, e)| !e.ends_with("|09|z")), "{:?}", after.session);
    assert!(after.session.marked[0].1.ends_with("|05|e"), "{:?}", after.session);
}

#[tokio::test]
async fn sessions_are_counted_per_principal_ended_everywhere_and_refused_when_idle() {
    let r = redis().await;
    let s = shared(r.port, "t3:");
    let alice = Some(key_hash("alice"));
    for id in ["a", "b"] {
        assert_eq!(s.open(key_hash(id), alice, opening(2)).await.unwrap(), Opened::Open);
    }
    // The same session again (rebuilt elsewhere) is not a new one.
    assert_eq!(s.open(key_hash("a"), alice, opening(2)).await.unwrap(), Opened::Open);
    assert_eq!(s.open(key_hash("c"), alice, opening(2)).await.unwrap(), Opened::Full(2));
    assert_eq!(s.open(key_hash("c"), Some(key_hash("bob")), opening(2)).await.unwrap(), Opened::Open);
    // Ending one frees its slot and ends it for every replica.
    s.end(key_hash("a"), alice, IDLE).await.unwrap();
    assert_eq!(s.open(key_hash("a"), alice, opening(2)).await.unwrap(), Opened::Ended);
    assert!(matches!(s.admit(&request("a", &[], None)).await.unwrap(), Admit::Ended));
    assert_eq!(s.open(key_hash("c"), alice, opening(2)).await.unwrap(), Opened::Open);
    // A token older than the idle time is taken only if some replica used
    // it within it.
    assert_eq!(
        s.open(key_hash("b"), alice, Open { old: true, ..opening(5) }).await.unwrap(),
        Opened::Open,
        "b was used"
    );
    assert_eq!(s.open(key_hash("never"), alice, Open { old: true, ..opening(5) }).await.unwrap(), Opened::Idle);
    // Slots expire with their sessions' idle time.
    let short = Duration::from_millis(300);
    let carol = Some(key_hash("carol"));
    assert_eq!(
        s.open(key_hash("x"), carol, Open { cap: 1, idle: short, hold: short, old: false }).await.unwrap(),
        Opened::Open
    );
    assert_eq!(
        s.open(key_hash("y"), carol, Open { cap: 1, idle: short, hold: short, old: false }).await.unwrap(),
        Opened::Full(1)
    );
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert_eq!(
        s.open(key_hash("y"), carol, Open { cap: 1, idle: short, hold: short, old: false }).await.unwrap(),
        Opened::Open
    );
    // A session never opened in Redis (Redis was down then) is unknown to
    // it, and so is an ended one once its end record expired: its last
    // use went with the end, so it does not come back.
    assert!(matches!(s.admit(&request("nowhere", &[], None)).await.unwrap(), Admit::Unknown));
    assert_eq!(s.open(key_hash("brief"), alice, opening(50)).await.unwrap(), Opened::Open);
    s.end(key_hash("brief"), alice, Duration::from_millis(200)).await.unwrap();
    assert!(matches!(s.admit(&request("brief", &[], None)).await.unwrap(), Admit::Ended));
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(matches!(s.admit(&request("brief", &[], None)).await.unwrap(), Admit::Unknown));
    // A session that holds its slot briefly (never used after initialize)
    // gives it back; a call extends it to the idle time.
    let dave = Some(key_hash("dave"));
    let brief = Open { cap: 1, idle: IDLE, hold: Duration::from_millis(200), old: false };
    assert_eq!(s.open(key_hash("d1"), dave, brief).await.unwrap(), Opened::Open);
    assert_eq!(s.open(key_hash("d2"), dave, brief).await.unwrap(), Opened::Full(1));
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(s.open(key_hash("d2"), dave, brief).await.unwrap(), Opened::Open, "d1's slot is back");
    let mut d2 = request("d2", &[], None);
    d2.principal = dave;
    admitted(s.admit(&d2).await.unwrap());
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(s.open(key_hash("d3"), dave, brief).await.unwrap(), Opened::Full(1), "d2 was used: it holds its slot");
    // The replica's periodic check: ended, unknown, used (its use
    // recorded) and unused but alive elsewhere.
    let checks = [(key_hash("a"), true), (key_hash("nowhere"), false), (key_hash("b"), true), (key_hash("c"), false)];
    assert_eq!(s.refresh(&checks, IDLE).await.unwrap(), [false, false, true, true]);
    // Every key the gateway wrote has the prefix and an expiry.
    let out = std::process::Command::new("redis-cli").args(["-p", &r.port.to_string(), "--scan"]).output().unwrap();
    let keys = String::from_utf8_lossy(&out.stdout);
    assert!(!keys.trim().is_empty());
    for key in keys.lines() {
        assert!(key.starts_with("t3:"), "{key}");
        assert!(!key.contains("alice") && !key.contains("carol"), "no names in keys: {key}");
        let ttl =
            std::process::Command::new("redis-cli").args(["-p", &r.port.to_string(), "PTTL", key]).output().unwrap();
        let ttl: i64 = String::from_utf8_lossy(&ttl.stdout).trim().parse().unwrap();
        assert!(ttl > 0, "{key} expires: {ttl}");
    }
}
