//! `[redis]`: the state replicas share (docs/design.md D10), and what each
//! feature does while Redis cannot be reached.

use std::time::Duration;

use serde::Deserialize;

use super::error::ConfigError;
use super::secrets::{Expander, Resolved};

/// `[redis]` as written.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RedisSection {
    /// `redis://[user:password@]host:port/db` (or `rediss://`); may use
    /// `${NAME}` from the secrets file, and should for the password.
    pub url: String,
    /// Prefix of every key the gateway writes, so replicas of another
    /// gateway (or anything else) can share the server. Default
    /// `mcp-gateway:`.
    #[serde(default = "default_prefix")]
    pub key_prefix: String,
    /// Longest wait for one round trip (and for a connection); past it the
    /// feature's `on_unreachable` choice applies. Default 250ms.
    #[serde(default = "default_timeout", with = "humantime_serde")]
    pub timeout: Duration,
    /// What each feature does while Redis cannot be reached.
    #[serde(default)]
    pub on_unreachable: OnUnreachable,
}

/// `[redis.on_unreachable]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct OnUnreachable {
    /// A call that is a step of a multi-step `block` or `confirm` rule.
    /// Default `closed`: it is refused, since its history cannot be seen.
    pub rules: Fallback,
    /// Rate limits. Default `local`: this replica's own buckets.
    pub limits: Fallback,
    /// Ending sessions (DELETE) and checking that a session was not ended
    /// elsewhere. Default `local`: this replica's own record of ended
    /// sessions, with an alert, since another replica may still serve one
    /// ended here. `closed`: no tool call of any session goes ahead, and
    /// no session is taken over from another replica, until Redis answers
    /// (an outage of its own: for deployments where a revoked session
    /// must never run another call).
    pub revocation: Fallback,
}

/// What a feature does without Redis.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Fallback {
    /// Refuse what cannot be checked.
    Closed,
    /// Decide on this replica's own state.
    Local,
}

/// `[redis]` resolved: the URL expanded.
#[derive(Clone, PartialEq)]
pub struct Redis {
    /// The server's URL (it may hold a password: never log it).
    pub url: Resolved,
    /// As in [`RedisSection::key_prefix`].
    pub key_prefix: String,
    /// As in [`RedisSection::timeout`].
    pub timeout: Duration,
    /// As in [`RedisSection::on_unreachable`].
    pub on_unreachable: OnUnreachable,
}

fn default_prefix() -> String {
    "mcp-gateway:".to_owned()
}

fn default_timeout() -> Duration {
    Duration::from_millis(250)
}

// === impl RedisSection ===

impl RedisSection {
    /// Checks what can be checked before `${NAME}` is expanded; an error
    /// names a key of the section.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.timeout.is_zero() || self.timeout > Duration::from_secs(10) {
            return Err(ConfigError::new(&["timeout"], "must be between 1ms and 10s (every call may wait this long)"));
        }
        if self.key_prefix.len() > 64 || self.key_prefix.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return Err(ConfigError::new(&["key_prefix"], "at most 64 characters, no spaces or control characters"));
        }
        Ok(())
    }

    /// The section with its URL expanded and checked.
    pub(super) fn resolve(self, x: Expander<'_>) -> Result<Redis, ConfigError> {
        let url = x.expand(&self.url, &["url"])?;
        let scheme = url.expose().split_once("://").map(|(s, _)| s);
        if !matches!(scheme, Some("redis" | "rediss" | "redis+unix" | "unix")) {
            return Err(ConfigError::new(&["url"], "must be a redis://, rediss:// or unix:// URL"));
        }
        if !url.is_secret() && url.expose().contains('@') {
            tracing::warn!(
                "[redis] url holds credentials in the config file: put them in the secrets file as ${{NAME}}."
            );
        }
        Ok(Redis { url, key_prefix: self.key_prefix, timeout: self.timeout, on_unreachable: self.on_unreachable })
    }
}

// === impl Redis ===

impl std::fmt::Debug for Redis {
    /// The URL's credentials stay out, wherever the URL came from.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Redis")
            .field("url", &without_credentials(self.url.expose()))
            .field("key_prefix", &self.key_prefix)
            .field("timeout", &self.timeout)
            .field("on_unreachable", &self.on_unreachable)
            .finish()
    }
}

/// `scheme://***@host…` for a URL with user information, else as is.
fn without_credentials(url: &str) -> String {
    match url.split_once("://") {
        Some((scheme, rest)) => match rest.rsplit_once('@') {
            Some((_, host)) => format!("{scheme}://***@{host}"),
            None => url.to_owned(),
        },
        None => url.to_owned(),
    }
}

// === impl OnUnreachable ===

impl Default for OnUnreachable {
    fn default() -> Self {
        OnUnreachable { rules: Fallback::Closed, limits: Fallback::Local, revocation: Fallback::Local }
    }
}

// === impl Fallback ===

impl Fallback {
    /// `closed` or `local`.
    pub fn as_str(self) -> &'static str {
        match self {
            Fallback::Closed => "closed",
            Fallback::Local => "local",
        }
    }
}
