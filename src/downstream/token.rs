//! Session tokens (docs/design.md D10): the `Mcp-Session-Id` a client gets
//! is sealed with XChaCha20-Poly1305 under the gateway's session key, so
//! it cannot be forged, read or altered, and carries what a replica needs
//! to know of the session: who opened it (a hash of the principal's
//! identity, checked against whoever presents it), the negotiated protocol
//! version, the client capabilities the gateway relays (sampling,
//! elicitation, roots) and when it was created.
//!
//! Text: `mgw1.` and base64url (no padding) of `key id (4) ‖ nonce (24) ‖
//! ciphertext ‖ tag (16)`. The purpose (`mgw1.session`) and the key id are
//! bound as associated data. A token has one of two lengths, 235 or 509
//! characters (at most [`MAX_TOKEN_LEN`]: load balancers cap header
//! sizes): the plaintext is padded, so the length says only whether the
//! client declared much, and capabilities that would not fit are carried
//! in their reduced, canonical form (the flags the gateway reads),
//! flagged, never by growing the token.
//!
//! Not checked here (the rebuild of a session on another replica will):
//! expiry, and a creation time in the future.

use base64::Engine as _;
use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use sha2::{Digest, Sha256};

use crate::config::{SessionKey, SessionKeys};

/// The longest token, in characters.
pub const MAX_TOKEN_LEN: usize = 512;

/// What every token starts with (the format).
const PREFIX: &str = "mgw1.";

/// The plaintext's format byte.
const FORMAT: u8 = 1;

/// Longest protocol version carried.
const MAX_VERSION_LEN: usize = 64;

/// Bytes around the plaintext: key id, nonce, tag.
const OVERHEAD: usize = 4 + 24 + 16;

/// Plaintext bytes before the version: format, flags, created, principal
/// hash, version length.
const HEAD: usize = 1 + 1 + 8 + 16 + 1;

/// The longest plaintext: the most that fits in [`MAX_TOKEN_LEN`]
/// characters.
const PLAIN_LEN: usize = (MAX_TOKEN_LEN - PREFIX.len()) / 4 * 3 - OVERHEAD;

/// Plaintexts are padded to one of two lengths, so a token's length says
/// only whether its client declared much: this one (a token of 235
/// characters) holds a session with every capability the gateway relays,
/// and every request carries the token, so it is kept short — each byte of
/// it costs the gateway a few instructions per request (docs/benchmarks.md).
const PLAIN_SHORT: usize = 128;

/// Bound as associated data with the key id: a token is a session token
/// of this format, never anything else the key may one day seal.
const PURPOSE: &[u8] = b"mgw1.session\0";

/// Flag: the capabilities are the reduced form of what the client declared.
const REDUCED: u8 = 1;
/// Flag: not even the reduced capabilities fitted; none are carried.
const DROPPED: u8 = 2;

/// What a session token says. Its `Debug` shows neither the principal's
/// hash (an unkeyed hash of a guessable identity) nor the capabilities.
#[derive(Clone, PartialEq, Eq)]
pub struct Claims {
    /// The first 16 bytes of SHA-256 of the principal's identity.
    principal: [u8; 16],
    /// The negotiated protocol version (at most 64 bytes).
    pub version: String,
    /// The client capabilities the gateway relays, as JSON (`{}` when none).
    pub capabilities: String,
    /// When the session was created, Unix seconds.
    pub created: u64,
    /// [`REDUCED`], [`DROPPED`]: what sealing did to the capabilities.
    flags: u8,
}

impl std::fmt::Debug for Claims {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Claims")
            .field("version", &self.version)
            .field("created", &self.created)
            .field("capabilities_reduced", &self.reduced())
            .finish_non_exhaustive()
    }
}

/// Why a token was not accepted (each is answered 404 by the caller).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    /// Not a token of this format.
    #[error("not a session token")]
    Malformed,
    /// Sealed under a key this gateway does not hold (another deployment,
    /// or a key rotated out).
    #[error("sealed under an unknown key")]
    UnknownKey,
    /// Altered, or not sealed by the key it names.
    #[error("does not authenticate")]
    Forged,
}

/// One key, ready to seal and open.
struct Key {
    id: [u8; 4],
    cipher: XChaCha20Poly1305,
}

/// The keys in force: one seals, each opens.
pub struct Keyring {
    /// `keys[0]` seals; every key opens.
    keys: Vec<Key>,
    /// The key was made by this process (no `MCP_GATEWAY_SESSION_KEY`):
    /// tokens die with it, and another replica cannot open them.
    pub generated: bool,
}

impl std::fmt::Debug for Keyring {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let ids: Vec<String> = self.keys.iter().map(|k| hex(&k.id)).collect();
        f.debug_struct("Keyring").field("key_ids", &ids).field("generated", &self.generated).finish()
    }
}

// === impl Claims ===

impl Claims {
    /// The claims of a session `principal` (its identity) opens now. A
    /// version longer than 64 bytes (never one the gateway negotiates) is
    /// cut at a character boundary.
    pub fn new(principal: &str, version: &str, capabilities: &str, created: u64) -> Self {
        let mut end = version.len().min(MAX_VERSION_LEN);
        while !version.is_char_boundary(end) {
            end -= 1;
        }
        Claims {
            principal: principal_hash(principal),
            version: version[..end].to_owned(),
            capabilities: capabilities.to_owned(),
            created,
            flags: 0,
        }
    }

    /// Whether the token was opened by `principal`.
    pub fn opened_by(&self, principal: &str) -> bool {
        // Both sides are hashes: comparing them leaks nothing of the key.
        self.principal == principal_hash(principal)
    }

    /// Whether the capabilities carried are less than the client declared
    /// (reduced to the flags the gateway reads, or none).
    pub fn reduced(&self) -> bool {
        self.flags & (REDUCED | DROPPED) != 0
    }

    /// The plaintext, padded to [`PLAIN_SHORT`] or [`PLAIN_LEN`]: the capabilities as
    /// declared, else reduced, else none (flagged).
    fn encode(&self) -> Vec<u8> {
        let version = self.version.as_bytes();
        let room = PLAIN_LEN - HEAD - version.len() - 2;
        let reduced;
        let (capabilities, flags) = if self.capabilities.len() <= room {
            (self.capabilities.as_str(), 0)
        } else {
            reduced = reduce(&self.capabilities);
            match reduced.len() <= room {
                true => (reduced.as_str(), REDUCED),
                false => ("{}", DROPPED),
            }
        };
        let mut out = Vec::with_capacity(PLAIN_SHORT);
        out.push(FORMAT);
        out.push(flags);
        out.extend_from_slice(&self.created.to_be_bytes());
        out.extend_from_slice(&self.principal);
        out.push(u8::try_from(version.len()).expect("at most 64 bytes"));
        out.extend_from_slice(version);
        let len = u16::try_from(capabilities.len()).expect("under PLAIN_LEN");
        out.extend_from_slice(&len.to_be_bytes());
        out.extend_from_slice(capabilities.as_bytes());
        let padded = if out.len() <= PLAIN_SHORT { PLAIN_SHORT } else { PLAIN_LEN };
        out.resize(padded, 0);
        out
    }

    fn decode(plain: &[u8]) -> Option<Self> {
        if (plain.len() != PLAIN_LEN && plain.len() != PLAIN_SHORT) || plain[0] != FORMAT {
            return None;
        }
        let flags = plain[1];
        let created = u64::from_be_bytes(plain[2..10].try_into().ok()?);
        let principal: [u8; 16] = plain[10..26].try_into().ok()?;
        let len = usize::from(plain[26]);
        let version = std::str::from_utf8(plain.get(HEAD..HEAD + len)?).ok()?.to_owned();
        let at = HEAD + len;
        let n = usize::from(u16::from_be_bytes(plain.get(at..at + 2)?.try_into().ok()?));
        let capabilities = std::str::from_utf8(plain.get(at + 2..at + 2 + n)?).ok()?.to_owned();
        Some(Claims { principal, version, capabilities, created, flags })
    }
}

// === impl Keyring ===

impl Keyring {
    /// The keyring of `keys`, or of a key made now when none is configured.
    pub fn new(keys: Option<&SessionKeys>) -> Self {
        match keys {
            Some(k) => Keyring {
                keys: std::iter::once(&k.current).chain(&k.previous).map(Key::new).collect(),
                generated: false,
            },
            None => Keyring { keys: vec![Key::new(&SessionKey::generate())], generated: true },
        }
    }

    /// The keyring after a reload to `next`: its keys, and this one's
    /// sealing key too when `next` replaced it (tokens sealed before the
    /// rotation keep opening until the next restart, or the next rotation).
    pub fn rotated(&self, next: Option<&SessionKeys>) -> Self {
        let Some(next) = next else {
            // No key configured any more: keep what runs (a reload never
            // ends every session).
            return Keyring { keys: self.keys.iter().map(Key::copy).collect(), generated: self.generated };
        };
        let mut ring = Keyring::new(Some(next));
        let sealing = &self.keys[0];
        if !ring.keys.iter().any(|k| k.id == sealing.id) {
            ring.keys.push(sealing.copy());
        }
        ring
    }

    /// The id of the sealing key (hex), for logs.
    pub fn key_id(&self) -> String {
        hex(&self.keys[0].id)
    }

    /// How many keys open tokens.
    pub fn len(&self) -> usize {
        self.keys.len()
    }

    /// Whether no key opens tokens (never: a keyring always has one).
    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    /// Seals `claims` into a token of [`MAX_TOKEN_LEN`] characters or
    /// fewer (always the same length: the plaintext is padded).
    pub fn seal(&self, claims: &Claims) -> String {
        let key = &self.keys[0];
        let plain = claims.encode();
        let mut nonce = [0u8; 24];
        getrandom::fill(&mut nonce).expect("the OS has randomness");
        let sealed = key
            .cipher
            .encrypt(&XNonce::from(nonce), Payload { msg: &plain, aad: &aad(&key.id) })
            .expect("a plaintext this small always encrypts");
        let mut raw = Vec::with_capacity(OVERHEAD + plain.len());
        raw.extend_from_slice(&key.id);
        raw.extend_from_slice(&nonce);
        raw.extend_from_slice(&sealed);
        let token = format!("{PREFIX}{}", base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(raw));
        assert!(token.len() <= MAX_TOKEN_LEN, "the plaintext is padded to fit: {} characters", token.len());
        token
    }

    /// Opens `token`: its claims, if a key of this ring sealed it and
    /// nothing in it changed.
    pub fn open(&self, token: &str) -> Result<Claims, TokenError> {
        if token.len() > MAX_TOKEN_LEN {
            return Err(TokenError::Malformed);
        }
        let body = token.strip_prefix(PREFIX).ok_or(TokenError::Malformed)?;
        let raw = base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(body).map_err(|_| TokenError::Malformed)?;
        if raw.len() < OVERHEAD + HEAD {
            return Err(TokenError::Malformed);
        }
        let (id, rest) = raw.split_at(4);
        let (nonce, sealed) = rest.split_at(24);
        let nonce: [u8; 24] = nonce.try_into().map_err(|_| TokenError::Malformed)?;
        // Every key with this id (two keys sharing one are unlikely, not
        // impossible).
        let mut named = false;
        for key in self.keys.iter().filter(|k| k.id == id) {
            named = true;
            if let Ok(plain) = key.cipher.decrypt(&XNonce::from(nonce), Payload { msg: sealed, aad: &aad(&key.id) }) {
                // Authenticated: only a gateway holding the key wrote it.
                return Claims::decode(&plain).ok_or(TokenError::Malformed);
            }
        }
        Err(if named { TokenError::Forged } else { TokenError::UnknownKey })
    }

    /// Whether `other` seals with the same key.
    pub fn seals_like(&self, other: &Keyring) -> bool {
        self.keys[0].id == other.keys[0].id
    }
}

/// The associated data of a token sealed under key `id`.
fn aad(id: &[u8; 4]) -> Vec<u8> {
    [PURPOSE, id].concat()
}

// === impl Key ===

impl Key {
    fn new(key: &SessionKey) -> Self {
        let digest = Sha256::new().chain_update(b"mcp-gateway session key id\0").chain_update(key.bytes()).finalize();
        let id = [digest[0], digest[1], digest[2], digest[3]];
        Key { id, cipher: XChaCha20Poly1305::new(&(*key.bytes()).into()) }
    }

    fn copy(&self) -> Self {
        Key { id: self.id, cipher: self.cipher.clone() }
    }
}

/// Now, in Unix seconds (a token's creation time).
pub fn unix_now() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

/// The first 16 bytes of SHA-256 of `principal`.
fn principal_hash(principal: &str) -> [u8; 16] {
    let digest = Sha256::new().chain_update(b"mcp-gateway principal\0").chain_update(principal.as_bytes()).finalize();
    let mut out = [0u8; 16];
    out.copy_from_slice(&digest[..16]);
    out
}

/// The capabilities the gateway reads, in canonical form: `sampling`
/// (with `context`, `tools`), `elicitation` (with `form`, `url`) and
/// `roots` (with `listChanged`). A capability the client named is declared
/// whatever its value (as `Peer::supports` reads it), as `{}` with the
/// flags it set; a flag set to `null` is not set.
fn reduce(capabilities: &str) -> String {
    let Ok(serde_json::Value::Object(caps)) = serde_json::from_str::<serde_json::Value>(capabilities) else {
        return "{}".into();
    };
    let mut out = serde_json::Map::new();
    for (name, flags) in
        [("sampling", &["context", "tools"][..]), ("elicitation", &["form", "url"]), ("roots", &["listChanged"])]
    {
        let Some(v) = caps.get(name) else { continue };
        let mut m = serde_json::Map::new();
        for f in flags {
            match v.get(*f) {
                None | Some(serde_json::Value::Null) => {}
                Some(serde_json::Value::Bool(b)) => {
                    m.insert((*f).to_owned(), (*b).into());
                }
                Some(_) => {
                    m.insert((*f).to_owned(), serde_json::json!({}));
                }
            }
        }
        out.insert(name.to_owned(), serde_json::Value::Object(m));
    }
    serde_json::Value::Object(out).to_string()
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests;
