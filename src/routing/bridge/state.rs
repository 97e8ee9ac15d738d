//! The `requestState` the gateway hands a 2026-07-28 client when it bridges
//! a 2025 upstream's server request into an input-required result
//! (docs/design.md D13): sealed with XChaCha20-Poly1305, so a client can
//! neither read nor alter it, and bound to the exchange, its round, the
//! principal and the call (tool name and arguments, hashed).
//!
//! Text: `mgwrs1.` and base64url (no padding) of `nonce (24) ‖ ciphertext
//! ‖ tag (16)`. The purpose is bound as associated data, and the key is
//! derived from the session key for this purpose only (a session token
//! never opens as a request state, nor the other way round). With no
//! `MCP_GATEWAY_SESSION_KEY` the key is made at start: states die with the
//! process, as do the exchanges they name.

use base64::Engine as _;
use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use hmac::Mac;
use sha2::{Digest, Sha256};

/// What every state the gateway seals starts with.
pub(crate) const PREFIX: &str = "mgwrs1.";

/// Bound as associated data: a request state of this format.
const PURPOSE: &[u8] = b"mgw1.requestState\0";

/// The plaintext's format byte.
const FORMAT: u8 = 1;

/// format, instance, exchange, round, binding, expiry.
const PLAIN: usize = 1 + 8 + 16 + 4 + 32 + 8;

/// Longest state opened (a longer one is not ours).
const MAX_LEN: usize = 256;

/// What a state says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Claims {
    /// The gateway process that holds the exchange.
    pub(crate) instance: [u8; 8],
    /// The exchange (random, unique).
    pub(crate) exchange: u128,
    /// Which round of the exchange the state was handed out for.
    pub(crate) round: u32,
    /// [`binding`] of the principal and the call.
    pub(crate) binding: [u8; 32],
    /// Unix seconds after which the state is refused.
    pub(crate) expires: u64,
}

/// Why a state was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub(crate) enum StateError {
    /// Not a state of this format.
    #[error("not a request state of this gateway")]
    Malformed,
    /// Altered, or sealed under another key.
    #[error("does not authenticate")]
    Forged,
}

/// Seals and opens request states.
pub(crate) struct Sealer {
    cipher: XChaCha20Poly1305,
    /// This process, among replicas sharing the session key.
    pub(crate) instance: [u8; 8],
}

impl std::fmt::Debug for Sealer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sealer").finish_non_exhaustive()
    }
}

/// The hash a state is bound to: who asked, and which call (the tool name
/// as the client wrote it and its arguments' text). A retry must repeat
/// the call it continues.
pub(crate) fn binding(principal: &str, tool: &str, arguments: &[u8]) -> [u8; 32] {
    let mut h = Sha256::new();
    for part in [principal.as_bytes(), tool.as_bytes(), arguments] {
        h.update((part.len() as u64).to_be_bytes());
        h.update(part);
    }
    h.finalize().into()
}

impl Sealer {
    /// A sealer whose key is derived from `session_key` (replicas sharing
    /// it open each other's states and can tell which one holds an
    /// exchange), else made now.
    pub(crate) fn new(session_key: Option<&[u8; 32]>) -> Self {
        let key: [u8; 32] = match session_key {
            Some(k) => {
                let mut mac =
                    <hmac::Hmac<Sha256> as hmac::KeyInit>::new_from_slice(k).expect("HMAC takes any key length");
                mac.update(PURPOSE);
                mac.finalize().into_bytes().into()
            }
            None => random(),
        };
        let mut instance = [0u8; 8];
        getrandom::fill(&mut instance).expect("the OS has randomness");
        Sealer { cipher: XChaCha20Poly1305::new(&key.into()), instance }
    }

    /// The state text for `claims`.
    pub(crate) fn seal(&self, claims: &Claims) -> String {
        let mut plain = Vec::with_capacity(PLAIN);
        plain.push(FORMAT);
        plain.extend_from_slice(&claims.instance);
        plain.extend_from_slice(&claims.exchange.to_be_bytes());
        plain.extend_from_slice(&claims.round.to_be_bytes());
        plain.extend_from_slice(&claims.binding);
        plain.extend_from_slice(&claims.expires.to_be_bytes());
        self.envelope(PREFIX, PURPOSE, &plain)
    }

    /// The claims of `text`, when this gateway's key sealed it unaltered.
    pub(crate) fn open(&self, text: &str) -> Result<Claims, StateError> {
        if text.len() > MAX_LEN {
            return Err(StateError::Malformed);
        }
        let plain = self.open_envelope(PREFIX, PURPOSE, text)?;
        if plain.len() != PLAIN || plain[0] != FORMAT {
            return Err(StateError::Malformed);
        }
        let take = |from: usize, n: usize| &plain[from..from + n];
        Ok(Claims {
            instance: take(1, 8).try_into().expect("8 bytes"),
            exchange: u128::from_be_bytes(take(9, 16).try_into().expect("16 bytes")),
            round: u32::from_be_bytes(take(25, 4).try_into().expect("4 bytes")),
            binding: take(29, 32).try_into().expect("32 bytes"),
            expires: u64::from_be_bytes(take(61, 8).try_into().expect("8 bytes")),
        })
    }
}

/// What a wrapped upstream state starts with.
pub(crate) const WRAPPED: &str = "mgwrs2.";

/// Bound as associated data of a wrapped upstream state.
const WRAPPED_PURPOSE: &[u8] = b"mgw1.requestState.wrapped\0";

/// Longest upstream state the gateway wraps (and so the longest it
/// passes on to a 2026-07-28 client).
pub(crate) const MAX_WRAPPED: usize = 64 * 1024;

impl Sealer {
    /// A 2026-07-28 upstream's own `requestState`, sealed for the client
    /// with `binding` (the principal and the call) and `expires`: the
    /// upstream cannot tell the gateway's clients apart, so the gateway
    /// binds its state to the one it was given to. `None` over
    /// [`MAX_WRAPPED`].
    pub(crate) fn wrap(&self, binding: &[u8; 32], expires: u64, inner: &str) -> Option<String> {
        if inner.len() > MAX_WRAPPED {
            return None;
        }
        let mut plain = Vec::with_capacity(41 + inner.len());
        plain.push(FORMAT);
        plain.extend_from_slice(binding);
        plain.extend_from_slice(&expires.to_be_bytes());
        plain.extend_from_slice(inner.as_bytes());
        Some(self.envelope(WRAPPED, WRAPPED_PURPOSE, &plain))
    }

    /// The upstream state in `text`, with its binding and expiry, when this
    /// gateway's key wrapped it unaltered.
    pub(crate) fn unwrap(&self, text: &str) -> Result<([u8; 32], u64, String), StateError> {
        if text.len() > WRAPPED.len() + (MAX_WRAPPED + 41 + 40) * 4 / 3 + 4 {
            return Err(StateError::Malformed);
        }
        let plain = self.open_envelope(WRAPPED, WRAPPED_PURPOSE, text)?;
        if plain.len() < 41 || plain[0] != FORMAT {
            return Err(StateError::Malformed);
        }
        let binding: [u8; 32] = plain[1..33].try_into().expect("32 bytes");
        let expires = u64::from_be_bytes(plain[33..41].try_into().expect("8 bytes"));
        let inner = String::from_utf8(plain[41..].to_vec()).map_err(|_| StateError::Malformed)?;
        Ok((binding, expires, inner))
    }
}

impl Sealer {
    /// `prefix` and base64url of `nonce (24) ‖ ciphertext ‖ tag (16)`,
    /// `purpose` bound as associated data.
    fn envelope(&self, prefix: &str, purpose: &[u8], plain: &[u8]) -> String {
        let nonce: [u8; 24] = random();
        let sealed = self
            .cipher
            .encrypt(&XNonce::from(nonce), Payload { msg: plain, aad: purpose })
            .expect("a bounded plaintext always encrypts");
        let mut raw = Vec::with_capacity(24 + sealed.len());
        raw.extend_from_slice(&nonce);
        raw.extend_from_slice(&sealed);
        format!("{prefix}{}", base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(raw))
    }

    /// The plaintext of an [`Sealer::envelope`] of `prefix` and `purpose`
    /// (the caller bounds `text`'s length first).
    fn open_envelope(&self, prefix: &str, purpose: &[u8], text: &str) -> Result<Vec<u8>, StateError> {
        let body = text.strip_prefix(prefix).ok_or(StateError::Malformed)?;
        let raw = base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(body).map_err(|_| StateError::Malformed)?;
        if raw.len() < 24 + 16 {
            return Err(StateError::Malformed);
        }
        let (nonce, sealed) = raw.split_at(24);
        let nonce: [u8; 24] = nonce.try_into().map_err(|_| StateError::Malformed)?;
        self.cipher.decrypt(&XNonce::from(nonce), Payload { msg: sealed, aad: purpose }).map_err(|_| StateError::Forged)
    }
}

fn random<const N: usize>() -> [u8; N] {
    let mut out = [0u8; N];
    getrandom::fill(&mut out).expect("the OS has randomness");
    out
}

/// A new exchange id (random: an id is never guessed).
pub(crate) fn exchange_id() -> u128 {
    u128::from_be_bytes(random())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn claims(s: &Sealer) -> Claims {
        Claims { instance: s.instance, exchange: 7, round: 2, binding: binding("alice", "t", b"{}"), expires: 99 }
    }

    #[test]
    fn a_sealed_state_opens_to_its_claims_and_says_nothing_in_clear() {
        let s = Sealer::new(None);
        let text = s.seal(&claims(&s));
        assert!(text.starts_with(PREFIX) && text.len() < MAX_LEN, "{text}");
        assert_eq!(s.open(&text), Ok(claims(&s)));
        assert_ne!(s.seal(&claims(&s)), text, "a fresh nonce each time");
    }

    #[test]
    fn an_altered_or_foreign_state_is_refused() {
        let s = Sealer::new(None);
        let text = s.seal(&claims(&s));
        // One character changed anywhere in the body.
        for i in PREFIX.len()..text.len() {
            let mut b = text.clone().into_bytes();
            b[i] = if b[i] == b'A' { b'B' } else { b'A' };
            let t = String::from_utf8(b).unwrap();
            assert!(s.open(&t).is_err(), "altered at {i}");
        }
        assert_eq!(Sealer::new(None).open(&text), Err(StateError::Forged), "another key");
        assert_eq!(s.open("mgwrs1.AAAA"), Err(StateError::Malformed));
        assert_eq!(s.open("state-of-an-upstream"), Err(StateError::Malformed));
        assert_eq!(s.open(&"x".repeat(5000)), Err(StateError::Malformed));
    }

    #[test]
    fn a_wrapped_upstream_state_comes_back_whole_and_bound_and_nothing_else_opens_as_one() {
        let s = Sealer::new(Some(&[1u8; 32]));
        let b = binding("alice", "up/tools/call/t", b"{}");
        let text = s.wrap(&b, 99, "the upstream's \u{e9}tat").unwrap();
        assert!(text.starts_with(WRAPPED) && !text.contains("upstream"), "{text}");
        assert_eq!(s.unwrap(&text), Ok((b, 99, "the upstream's \u{e9}tat".to_owned())));
        // A replica with the key opens it; a request state never opens as one.
        assert!(Sealer::new(Some(&[1u8; 32])).unwrap(&text).is_ok());
        let c = Claims { instance: s.instance, exchange: 1, round: 0, binding: b, expires: 9 };
        let own = s.seal(&c).replacen(PREFIX, WRAPPED, 1);
        assert!(s.unwrap(&own).is_err(), "purposes do not mix");
        assert!(s.open(&text).is_err());
        assert!(Sealer::new(None).unwrap(&text).is_err(), "another key");
        assert!(s.wrap(&b, 1, &"x".repeat(MAX_WRAPPED + 1)).is_none());
    }

    #[test]
    fn replicas_sharing_the_session_key_open_each_others_states() {
        let key = [9u8; 32];
        let (a, b) = (Sealer::new(Some(&key)), Sealer::new(Some(&key)));
        let c = claims(&a);
        assert_eq!(b.open(&a.seal(&c)).unwrap().instance, a.instance);
        assert_ne!(a.instance, b.instance);
    }

    #[test]
    fn the_binding_tells_principals_tools_and_arguments_apart() {
        let b = binding("alice", "up__t", br#"{"a":1}"#);
        assert_ne!(b, binding("bob", "up__t", br#"{"a":1}"#));
        assert_ne!(b, binding("alice", "up__u", br#"{"a":1}"#));
        assert_ne!(b, binding("alice", "up__t", br#"{"a":2}"#));
        // Length-prefixed: moving a byte between parts changes the hash.
        assert_ne!(binding("ab", "c", b""), binding("a", "bc", b""));
    }
}
