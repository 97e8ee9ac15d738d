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
