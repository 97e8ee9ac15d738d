//! The key of the audit log's argument digests, from the secrets file.

/// The secrets-file name of the audit log's digest key.
pub const AUDIT_KEY_VAR: &str = "MCP_GATEWAY_AUDIT_KEY";

/// A key for the audit log's keyed digests: at least 32 bytes. Its `Debug`
/// shows nothing of it.
#[derive(Clone, PartialEq, Eq)]
pub struct AuditKey(Vec<u8>);

/// Text that is not a usable [`AuditKey`]. The messages never show the text.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuditKeyError {
    /// Not base64 in the standard alphabet.
    #[error("is not base64 (make one with `openssl rand -base64 32`)")]
    NotBase64,
    /// Fewer than 32 bytes; holds how many.
    #[error("is {0} bytes; it must be at least 32")]
    TooShort(usize),
}

// === impl AuditKey ===

impl std::fmt::Debug for AuditKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("AuditKey(***)")
    }
}

impl AuditKey {
    /// A key from its base64 text (standard alphabet, padded or not).
    pub fn decode(text: &str) -> Result<Self, AuditKeyError> {
        use base64::Engine as _;
        let text = text.trim().trim_end_matches('=');
        let bytes =
            base64::engine::general_purpose::STANDARD_NO_PAD.decode(text).map_err(|_| AuditKeyError::NotBase64)?;
        if bytes.len() < 32 {
            return Err(AuditKeyError::TooShort(bytes.len()));
        }
        Ok(AuditKey(bytes))
    }

    /// A new random key.
    pub fn generate() -> Self {
        let mut bytes = vec![0u8; 32];
        getrandom::fill(&mut bytes).expect("the OS has randomness");
        AuditKey(bytes)
    }

    /// Its base64 text.
    pub fn encode(&self) -> String {
        use base64::Engine as _;
        base64::engine::general_purpose::STANDARD.encode(&self.0)
    }

    /// The key's bytes.
    pub fn bytes(&self) -> &[u8] {
        &self.0
    }
}
