//! Session tokens (issue 19, item 1): the `Mcp-Session-Id` is sealed with
//! the configured key (XChaCha20-Poly1305), carries the principal's hash,
//! the negotiated version, the relayed capabilities and the creation time,
//! and a key rotation by reload keeps open sessions while new ones get the
//! new key. A changed token is unknown.

use std::time::Duration;

use base64::Engine as _;
use mcp_gateway::config::{SessionKey, SessionKeys};
use mcp_gateway::downstream::token::Keyring;
use serde_json::json;

use crate::support::*;

fn key(b: u8) -> String {
    base64::engine::general_purpose::STANDARD.encode([b; 32])
}

fn ring(b: u8) -> Keyring {
    Keyring::new(Some(&SessionKeys { current: SessionKey::decode(&key(b)).unwrap(), previous: None }))
}

async fn reloads_applied(gw: &Gateway) -> u64 {
    let m = gw.http.get(format!("http://{}/metrics", gw.addr)).send().await.unwrap().text().await.unwrap();
    let line = "mcp_gateway_config_reloads_total{outcome=\"applied\"} ";
    m.lines().find_map(|l| l.strip_prefix(line)).map_or(0, |v| v.trim().parse().unwrap())
}

#[tokio::test]
async fn session_ids_are_sealed_with_the_configured_key_and_a_rotation_keeps_open_sessions() {
    let (dir, path) = write_config("");
    let secrets = dir.path().join("secrets.env");
    std::fs::write(&secrets, format!("MCP_GATEWAY_SESSION_KEY={}\n", key(7))).unwrap();
    let config =
        format!("[gateway]\nsecrets_file = {:?}\nwatch_config = false\n{}", path_str(&secrets), raw_stdio("raw", ""));
    std::fs::write(&path, config).unwrap();
    let gw = Gateway::start_at(&path, dir).await;
    gw.wait_ready("raw").await;
    assert!(gw.proc.logs().contains("Session tokens are sealed with the configured key."), "{}", gw.proc.logs());

    let caps = json!({"sampling": {}, "roots": {"listChanged": true}, "experimental": {"x": {}}});
    let mut old = McpHttp::connect_with(&gw.url(), caps).await;
    let token = old.session.clone().unwrap();
    assert!(token.starts_with("mgw1.") && token.len() <= 512, "{token}");
    let claims = ring(7).open(&token).expect("sealed with the configured key");
    assert!(claims.opened_by("anonymous"), "bound to who opened it");
    assert_eq!(claims.version, "2025-11-25");
    let carried: serde_json::Value = serde_json::from_str(&claims.capabilities).unwrap();
    assert_eq!(carried, json!({"sampling": {}, "roots": {"listChanged": true}}), "what the gateway relays, no more");
    let age = mcp_gateway::downstream::token::unix_now() - claims.created;
    assert!(age < 600, "created now: {age}s ago");
    assert!(ring(8).open(&token).is_err(), "no other key opens it");

    // A changed token is unknown: 404, the session it was copied from
    // goes on.
    let mut bent = token.clone().into_bytes();
    let at = bent.len() - 5;
    bent[at] = if bent[at] == b'A' { b'B' } else { b'A' };
    let mut forged = McpHttp { session: Some(String::from_utf8(bent).unwrap()), ..McpHttp::connect(&gw.url()).await };
    let r = forged.post(r#"{"jsonrpc":"2.0","id":1,"method":"ping"}"#, &[]).await;
    assert_eq!(r.status, 404, "{}", r.body);
    forged.session = None;
    assert_eq!(old.request("ping", json!({})).await["result"], json!({}));

    // Rotate: the secrets file names key 9, and key 7 as the previous one.
    std::fs::write(
        &secrets,
        format!("MCP_GATEWAY_SESSION_KEY={}\nMCP_GATEWAY_SESSION_KEY_PREVIOUS={}\n", key(9), key(7)),
    )
    .unwrap();
    let before = reloads_applied(&gw).await;
    gw.proc.signal(nix::sys::signal::Signal::SIGHUP);
    let applied = async {
        while reloads_applied(&gw).await <= before {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    };
    tokio::time::timeout(Duration::from_secs(20), applied).await.expect("the rotation is applied");
    assert!(gw.proc.logs().contains("Session keys rotated"), "{}", gw.proc.logs());
    let echoed = old.call("raw__echo", json!({"x": 1})).await;
    assert!(echoed.get("result").is_some(), "the open session goes on: {echoed}");
    let new = McpHttp::connect(&gw.url()).await;
    let token = new.session.clone().unwrap();
    assert!(ring(9).open(&token).is_ok(), "new sessions get the new key");
    assert!(ring(7).open(&token).is_err());
    assert!(!gw.proc.logs().contains(&key(9)) && !gw.proc.logs().contains(&key(7)), "keys never reach the log");
    assert!(gw.stop().await.success());
}

/// A gateway with API keys and the session key `k`, in front of raw_stdio.
async fn replica(k: u8) -> Gateway {
    let (dir, path) = write_config("");
    let secrets = dir.path().join("secrets.env");
    std::fs::write(&secrets, format!("MCP_GATEWAY_SESSION_KEY={}\n", key(k))).unwrap();
    let config = format!(
        "[gateway]\nsecrets_file = {:?}\nwatch_config = false\nsession_idle_timeout = \"1h\"\n{}\
         [[access]]\nprincipals = [\"*\"]\ntools = {{ allow = [\"*\"] }}\n{}",
        path_str(&secrets),
        crate::support::keys::keys(),
        raw_stdio("raw", "")
    );
    std::fs::write(&path, config).unwrap();
    let mut gw = Gateway::start_at(&path, dir).await;
    gw.authorize(crate::support::keys::OPS);
    gw.wait_ready("raw").await;
    gw
}

/// A client of `gw` presenting `key` and the session `token`.
fn presenting(gw: &Gateway, key: &str, token: &str) -> McpHttp {
    McpHttp { http: bearer_client(key), url: gw.url(), session: Some(token.to_owned()), next: 10 }
}

async fn rebuilds(gw: &Gateway, outcome: &str) -> u64 {
    let m = gw.http.get(format!("http://{}/metrics", gw.addr)).send().await.unwrap().text().await.unwrap();
    let line = format!("mcp_gateway_session_rebuilds_total{{outcome=\"{outcome}\"}} ");
    m.lines().find_map(|l| l.strip_prefix(&line)).map_or(0, |v| v.trim().parse().unwrap())
}

const PING: &str = r#"{"jsonrpc":"2.0","id":1,"method":"ping"}"#;

/// A token for alice sealed by `ring`, created `offset` seconds from now.
fn alices(ring: &Keyring, offset: i64) -> String {
    let created = mcp_gateway::downstream::token::unix_now().saturating_add_signed(offset);
    ring.seal(&mcp_gateway::downstream::token::Claims::new("key:alice", "2025-11-25", "{}", created))
}

#[tokio::test]
async fn a_replica_that_never_saw_a_session_rebuilds_it_from_its_token_for_its_principal_only() {
    use crate::support::keys::{ALICE, BOB};
    let (a, b) = tokio::join!(replica(5), replica(5));
    let alice = McpHttp::connect_via(&a.url(), json!({"roots": {"listChanged": true}}), bearer_client(ALICE)).await;
    let token = alice.session.clone().unwrap();

    // B never saw it: a call with A's token is served there.
    let mut on_b = presenting(&b, ALICE, &token);
    let r = on_b.call("raw__echo", json!({"x": 1})).await;
    assert!(r.get("result").is_some(), "{r}\n{}", b.proc.logs());
    assert_eq!(rebuilds(&b, "rebuilt").await, 1);
    assert!(b.proc.logs().contains("Rebuilt a session another replica opened, from its token."));
    // Once rebuilt it is B's: the next request finds it.
    assert_eq!(on_b.request("ping", json!({})).await["result"], json!({}));
    assert_eq!(rebuilds(&b, "rebuilt").await, 1);

    // Bob cannot use Alice's token anywhere.
    let bob = presenting(&b, BOB, &token);
    assert_eq!(bob.post(PING, &[]).await.status, 404);
    let bob_a = presenting(&a, BOB, &token);
    assert_eq!(bob_a.post(PING, &[]).await.status, 404);

    // A token sealed with this key but long ago is expired; one sealed
    // now for Alice is rebuilt though no replica ever issued it.
    let ring = ring(5);
    let old = alices(&ring, -7200);
    let c = presenting(&b, ALICE, &old);
    assert_eq!(c.post(PING, &[]).await.status, 404);
    assert_eq!(rebuilds(&b, "expired").await, 1);
    let fresh = alices(&ring, 0);
    assert_eq!(presenting(&b, ALICE, &fresh).post(PING, &[]).await.status, 200);
    // Another deployment's key: unknown there.
    let foreign = alices(&crate::session_tokens::ring(6), 0);
    assert_eq!(presenting(&b, ALICE, &foreign).post(PING, &[]).await.status, 404);
    assert_eq!(rebuilds(&b, "unknown_key").await, 1);
    // Bob with a token of Alice's that no replica holds yet: not rebuilt.
    let hers = alices(&ring, 0);
    assert_eq!(presenting(&b, BOB, &hers).post(PING, &[]).await.status, 404);
    assert_eq!(rebuilds(&b, "other_principal").await, 1);

    // From further ahead than clock skew explains: refused.
    let ahead = alices(&ring, 3600);
    assert_eq!(presenting(&b, ALICE, &ahead).post(PING, &[]).await.status, 404);
    assert_eq!(rebuilds(&b, "future").await, 1);

    // DELETE on a replica that never held the session ends it there
    // without rebuilding it.
    let c = McpHttp::connect_via(&a.url(), json!({}), bearer_client(ALICE)).await;
    let other = c.session.clone().unwrap();
    let rebuilt = rebuilds(&b, "rebuilt").await;
    let r = bearer_client(ALICE).delete(b.url()).header("mcp-session-id", &other).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(rebuilds(&b, "rebuilt").await, rebuilt, "not rebuilt only to be ended");
    assert_eq!(presenting(&b, ALICE, &other).post(PING, &[]).await.status, 404);
    assert_eq!(presenting(&a, ALICE, &other).post(PING, &[]).await.status, 200, "A holds it still");

    // DELETE on B ends it there for good; A, which shares nothing with B
    // without Redis, still serves it (docs/operations.md "Replicas").
    let r = on_b.http.delete(&on_b.url).header("mcp-session-id", &token).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(on_b.post(PING, &[]).await.status, 404);
    assert_eq!(rebuilds(&b, "ended").await, 2);
    assert_eq!(presenting(&a, ALICE, &token).post(PING, &[]).await.status, 200);
    assert!(a.stop().await.success());
    assert!(b.stop().await.success());
}
