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
    let long = Claims::new(&"p".repeat(10_000), &"é".repeat(500), &big, u64::MAX);
    let token = ring.seal(&long);
    assert!(token.len() <= MAX_TOKEN_LEN, "{}", token.len());
    let opened = ring.open(&token).unwrap();
    assert!(opened.opened_by(&"p".repeat(10_000)));
    assert_eq!(opened.version, "é".repeat(32), "cut at a character boundary, at most 64 bytes");
    assert!(opened.reduced());
}

#[test]
fn a_token_has_one_of_two_lengths_whatever_its_client_declared() {
    let ring = Keyring::new(Some(&keys(1, None)));
    let lens: std::collections::BTreeSet<usize> = ["{}", CAPS, r#"{"sampling":{}}"#]
        .into_iter()
        .map(|c| ring.seal(&Claims::new("key:alice", "2025-11-25", c, 1)).len())
        .chain([ring.seal(&Claims::new("k", "2024-11-05", "{}", 1)).len()])
        .collect();
    assert_eq!(lens.into_iter().collect::<Vec<_>>(), [235], "every usual session: the short length");
    let big = format!(r#"{{"sampling":{{"x":"{}"}}}}"#, "x".repeat(150));
    let long = ring.seal(&Claims::new("k", "2025-11-25", &big, 1));
    assert_eq!(long.len(), 509);
    assert_eq!(ring.open(&long).unwrap().capabilities, big, "carried whole");
    assert!(!ring.open(&ring.seal(&Claims::new("k", "v", CAPS, 1))).unwrap().reduced());
}

#[test]
fn reduced_capabilities_declare_what_the_client_named_as_the_gateway_reads_it() {
    let reduced: serde_json::Value = serde_json::from_str(&reduce(
        r#"{"sampling":true,"elicitation":{"form":null,"url":{"x":1}},"roots":null,"experimental":{}}"#,
    ))
    .unwrap();
    // Named is declared (`Peer::supports` checks the name); a null flag
    // is not set.
    assert_eq!(reduced, serde_json::json!({"sampling":{},"elicitation":{"url":{}},"roots":{}}));
    assert_eq!(reduce("not json"), "{}");
}

#[test]
fn rotations_in_a_row_keep_only_the_keys_that_opened_what_runs() {
    // A generated key replaced by a configured one: its tokens still open.
    let own = Keyring::new(None);
    let sealed = own.seal(&Claims::new("p", "v", "{}", 1));
    let ring = own.rotated(Some(&keys(1, None)));
    assert!(!ring.generated && ring.open(&sealed).is_ok());
    assert!(!ring.seals_like(&own));
    // 1 → 2 → 3: the ring holds 3 and 2 (what 3's reload replaced); 1 is
    // gone unless the file names it.
    let one = Keyring::new(Some(&keys(1, None)));
    let t1 = one.seal(&Claims::new("p", "v", "{}", 1));
    let two = one.rotated(Some(&keys(2, None)));
    let t2 = two.seal(&Claims::new("p", "v", "{}", 2));
    let three = two.rotated(Some(&keys(3, None)));
    assert_eq!(three.len(), 2);
    assert!(three.open(&t2).is_ok());
    assert_eq!(three.open(&t1), Err(TokenError::UnknownKey));
    assert!(two.rotated(Some(&keys(3, Some(1)))).open(&t1).is_ok(), "named as previous: kept");
    // Only the previous key changed: the sealing key is the same.
    assert!(one.rotated(Some(&keys(1, Some(9)))).seals_like(&one));
}

#[test]
fn a_token_is_235_characters() {
    let ring = Keyring::new(Some(&keys(1, None)));
    assert_eq!(ring.seal(&Claims::new("p", "2025-11-25", "{}", 1)).len(), 235, "docs/security.md says so");
}
