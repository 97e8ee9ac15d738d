//! The keys that seal session tokens (docs/design.md D10), from the
//! secrets file.

/// The secrets-file name of the key that seals new session tokens.
pub const SESSION_KEY_VAR: &str = "MCP_GATEWAY_SESSION_KEY";

/// The secrets-file name of a key whose tokens are still opened (during a
/// rotation).
pub const SESSION_KEY_PREVIOUS_VAR: &str = "MCP_GATEWAY_SESSION_KEY_PREVIOUS";

/// A session-token key: exactly 32 bytes. Its `Debug` shows nothing of it.
#[derive(Clone, PartialEq, Eq)]
pub struct SessionKey([u8; 32]);

/// Text that is not a usable [`SessionKey`]. The messages never show the
/// text.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SessionKeyError {
    /// Not base64 in the standard alphabet.
    #[error("is not base64 (make one with `openssl rand -base64 32`)")]
    NotBase64,
    /// Not 32 bytes; holds how many.
    #[error("is {0} bytes; it must be exactly 32 (make one with `openssl rand -base64 32`)")]
    WrongLength(usize),
}

/// The configured session keys: the one that seals, and the one a rotation
/// still opens.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionKeys {
    /// Seals new tokens (and opens them).
    pub current: SessionKey,
    /// Opens tokens sealed before a rotation.
    pub previous: Option<SessionKey>,
}

// === impl SessionKey ===

impl std::fmt::Debug for SessionKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SessionKey(***)")
    }
}

impl SessionKey {
    /// A key from its base64 text (standard alphabet, padded or not).
    pub fn decode(text: &str) -> Result<Self, SessionKeyError> {
        use base64::Engine as _;
        let text = text.trim().trim_end_matches('=');
        let bytes =
            base64::engine::general_purpose::STANDARD_NO_PAD.decode(text).map_err(|_| SessionKeyError::NotBase64)?;
        let len = bytes.len();
        bytes.try_into().map(SessionKey).map_err(|_| SessionKeyError::WrongLength(len))
    }

    /// A new random key (a gateway started without one makes its own).
    pub fn generate() -> Self {
        let mut bytes = [0u8; 32];
        getrandom::fill(&mut bytes).expect("the OS has randomness");
        SessionKey(bytes)
    }

    /// The key's bytes.
    pub fn bytes(&self) -> &[u8; 32] {
        &self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_key_is_32_bytes_of_base64_and_never_shown() {
        let text = "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=";
        let key = SessionKey::decode(text).unwrap();
        assert_eq!(key.bytes()[31], 31);
        assert_eq!(SessionKey::decode(text.trim_end_matches('=')).unwrap(), key, "padding is optional");
        assert_eq!(format!("{key:?}"), "SessionKey(***)");
        assert_eq!(SessionKey::decode("c2hvcnQ="), Err(SessionKeyError::WrongLength(5)));
        assert_eq!(SessionKey::decode("not base64!"), Err(SessionKeyError::NotBase64));
        let err = SessionKey::decode("c2hvcnQ=").unwrap_err().to_string();
        assert!(!err.contains("c2hvcnQ"), "the text is never in the message: {err}");
        assert_ne!(SessionKey::generate(), SessionKey::generate());
    }
}
