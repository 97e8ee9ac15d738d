//! Sealing and opening: what a token carries, its size, and every way it
//! is refused.

use super::*;

fn keys(current: u8, previous: Option<u8>) -> SessionKeys {
    use base64::engine::general_purpose::STANDARD;
    let key = |b: u8| SessionKey::decode(&STANDARD.encode([b; 32])).unwrap();
    SessionKeys { current: key(current), previous: previous.map(key) }
}

const CAPS: &str = r#"{"sampling":{},"elicitation":{"form":{},"url":{}},"roots":{"listChanged":true}}"#;

#[test]
fn a_token_carries_the_session_and_opens_only_under_its_key() {
    let ring = Keyring::new(Some(&keys(1, None)));
    let claims = Claims::new("key:alice", "2025-11-25", CAPS, 1_765_000_000);
    let token = ring.seal(&claims);
    assert!(token.starts_with("mgw1.") && token.len() <= MAX_TOKEN_LEN, "{token}");
    assert!(token.bytes().all(|b| b.is_ascii_graphic()), "a valid header value");
    let opened = ring.open(&token).unwrap();
    assert_eq!(opened, claims);
    assert!(opened.opened_by("key:alice") && !opened.opened_by("key:bob"));
    assert!(!token.contains("alice") && !token.contains("2025"), "nothing readable: {token}");
    assert_ne!(ring.seal(&claims), token, "a nonce of its own each time");

    // Another deployment's key: unknown.
    assert_eq!(Keyring::new(Some(&keys(2, None))).open(&token), Err(TokenError::UnknownKey));
    // A generated key is nobody else's either.
    let own = Keyring::new(None);
    assert!(own.generated);
    assert_eq!(own.open(&token), Err(TokenError::UnknownKey));
}

#[test]
fn any_change_to_a_token_is_refused() {
    let ring = Keyring::new(Some(&keys(1, None)));
    let token = ring.seal(&Claims::new("key:alice", "2025-11-25", CAPS, 1));
    let raw = base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(&token[5..]).unwrap();
    for at in 0..raw.len() {
        let mut bent = raw.clone();
        bent[at] ^= 0x01;
        let text = format!("mgw1.{}", base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(&bent));
        let e = ring.open(&text).unwrap_err();
        // A changed key id names no key; anything else fails the tag.
        let want = if at < 4 { TokenError::UnknownKey } else { TokenError::Forged };
        assert_eq!(e, want, "byte {at}");
    }
    for bad in ["", "mgw1.", "mgw2.AAAA", "mgw1.!!!!", &token[..40], &"a".repeat(600)] {
        assert_eq!(ring.open(bad), Err(TokenError::Malformed), "{bad:?}");
    }
    // Truncated to a whole block: still not a token of this key.
    let cut = format!("mgw1.{}", base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(&raw[..raw.len() - 3]));
    assert_eq!(ring.open(&cut), Err(TokenError::Forged));
}

#[test]
fn a_rotation_opens_old_tokens_and_seals_with_the_new_key() {
    let old = Keyring::new(Some(&keys(1, None)));
    let before = old.seal(&Claims::new("p", "2025-11-25", "{}", 1));
    // The secrets file now names key 2 (and no previous): the running
    // key 1 still opens what it sealed.
    let ring = old.rotated(Some(&keys(2, None)));
    assert_eq!(ring.len(), 2);
    assert!(ring.open(&before).is_ok());
    let after = ring.seal(&Claims::new("p", "2025-11-25", "{}", 2));
    assert_eq!(Keyring::new(Some(&keys(2, None))).open(&after).unwrap().created, 2, "sealed with the new key");
    // Key 2 with key 1 named as previous: the same two keys, not three.
    assert_eq!(old.rotated(Some(&keys(2, Some(1)))).len(), 2);
    // The same key again: nothing to keep.
    assert_eq!(old.rotated(Some(&keys(1, None))).len(), 1);
    // No key configured any more: the ring in force stays.
    assert!(old.rotated(None).open(&before).is_ok());
}

#[test]
fn capabilities_too_large_for_a_header_are_carried_reduced() {
    let ring = Keyring::new(Some(&keys(1, None)));
    let big = format!(
        r#"{{"sampling":{{"context":{{}},"tools":{{}},"x":"{}"}},"elicitation":{{"form":{{}}}},"roots":{{"listChanged":true}},"experimental":{{"y":"{}"}}}}"#,
        "x".repeat(300),
        "y".repeat(300)
    );
    let token = ring.seal(&Claims::new("key:alice", "2025-11-25", &big, 1));
    assert!(token.len() <= MAX_TOKEN_LEN, "{}", token.len());
    let caps: serde_json::Value = serde_json::from_str(&ring.open(&token).unwrap().capabilities).unwrap();
    assert_eq!(
        caps,
        serde_json::json!({"sampling":{"context":{},"tools":{}},"elicitation":{"form":{}},"roots":{"listChanged":true}})
    );
    // A long principal and version do not grow it either.
    let long = Claims::new(&"p".repeat(10_000), &"v".repeat(500), &big, u64::MAX);
    let token = ring.seal(&long);
    assert!(token.len() <= MAX_TOKEN_LEN, "{}", token.len());
    let opened = ring.open(&token).unwrap();
    assert!(opened.opened_by(&"p".repeat(10_000)));
    assert_eq!(opened.version.len(), 64);
}
