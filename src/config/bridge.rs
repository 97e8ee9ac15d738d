//! `[bridge]`: what the gateway holds open while it bridges a request
//! between the protocol eras (docs/mcp.md "Bridging the eras").

use std::time::Duration;

use serde::Deserialize;

use super::error::ConfigError;

/// `[bridge]`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct BridgeSection {
    /// Most bridged exchanges open at once, both directions together: a
    /// 2025 upstream's call held open while a 2026-07-28 client answers an
    /// input-required result, or a 2026-07-28 upstream's input-required
    /// result being asked of a 2025 client. More are refused (the call
    /// fails with a clear error, counted). Default 1024.
    pub max_exchanges: usize,
    /// Most of them one principal may hold. Default 8: a parked call holds
    /// one of its upstream's `max_concurrency` slots.
    pub max_exchanges_per_principal: usize,
    /// How long the gateway waits for a client's answer: a 2026-07-28
    /// client's retry carrying its input responses (the upstream call is
    /// then cancelled), or a 2025 client's answer to a relayed request.
    /// Default `5m` (a person may be answering).
    #[serde(with = "humantime_serde")]
    pub answer_timeout: Duration,
    /// Most input-required rounds of one call the gateway bridges, either
    /// way, before it fails the call. Default 10 (what the official SDKs
    /// allow).
    pub max_rounds: u32,
}

impl Default for BridgeSection {
    fn default() -> Self {
        BridgeSection {
            max_exchanges: 1024,
            max_exchanges_per_principal: 8,
            answer_timeout: Duration::from_secs(300),
            max_rounds: 10,
        }
    }
}

impl BridgeSection {
    /// Every bound must let something through.
    pub(crate) fn validate(&self) -> Result<(), ConfigError> {
        let zero = |key: &str| Err(ConfigError::new(&[key], "must be at least 1"));
        if self.max_exchanges == 0 {
            return zero("max_exchanges");
        }
        if self.max_exchanges_per_principal == 0 {
            return zero("max_exchanges_per_principal");
        }
        if self.max_rounds == 0 {
            return zero("max_rounds");
        }
        if self.answer_timeout.is_zero() {
            return Err(ConfigError::new(&["answer_timeout"], "must be longer than 0s"));
        }
        Ok(())
    }
}
