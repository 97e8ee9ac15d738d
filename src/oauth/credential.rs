//! The live credential of one upstream connection: the bearer token the
//! HTTP transport puts on every request, renewed before it expires and
//! when the upstream answers 401.
//!
//! The hot path is one `ArcSwap` load and a clock read. Renewal is single
//! flight: one task renews while the others wait on an async mutex (held
//! across the token request on purpose: that is what it serialises; it
//! guards no data). Tokens from `auth login` are read from the token file
//! under its lock, so a running gateway picks up a new login, a rotated
//! refresh token is spent once, and a refresh by another gateway sharing
//! the file is adopted rather than repeated.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwapOption;
use reqwest::header::HeaderValue;

use super::OAuthError;
use super::discovery::{self, Discovered};
use super::flow;
use super::store::{self, Token};
use crate::config::{OAuthGrant, OAuthSpec};
use crate::telemetry::Metrics;
use crate::telemetry::metrics::{Name, TokenLabels};

/// Renew this long before expiry (less for short-lived tokens).
const EARLY: u64 = 30;

/// The token in use.
#[derive(Debug)]
struct Live {
    /// `Bearer …`, marked sensitive.
    header: HeaderValue,
    /// Unix seconds after which it is renewed first.
    renew_at: Option<u64>,
    token: Token,
}

/// One upstream connection's credential (shared, or one principal's).
#[derive(Debug)]
pub struct Credential {
    spec: Arc<OAuthSpec>,
    principal: Option<Arc<str>>,
    http: reqwest::Client,
    live: ArcSwapOption<Live>,
    renewing: tokio::sync::Mutex<()>,
    /// Client credentials: the discovered server, kept.
    found: ArcSwapOption<Discovered>,
    metrics: Arc<Metrics>,
    label: Name,
}

impl Credential {
    /// The credential of `spec`'s upstream for `principal` (`None`: the
    /// gateway's shared token).
    pub fn new(spec: Arc<OAuthSpec>, principal: Option<Arc<str>>, metrics: Arc<Metrics>) -> Credential {
        let label = Name::from(spec.upstream.as_str());
        Credential {
            spec,
            principal,
            http: super::http_client(),
            live: ArcSwapOption::empty(),
            renewing: tokio::sync::Mutex::new(()),
            found: ArcSwapOption::empty(),
            metrics,
            label,
        }
    }

    /// The upstream's id.
    pub fn upstream(&self) -> &str {
        &self.spec.upstream
    }

    /// Whose token this is, for messages.
    pub fn principal(&self) -> Option<&str> {
        self.principal.as_deref()
    }

    /// The `Authorization` value for the next request.
    pub async fn bearer(&self) -> Result<HeaderValue, OAuthError> {
        if let Some(live) = &*self.live.load()
            && live.renew_at.is_none_or(|at| store::now() < at)
        {
            return Ok(live.header.clone());
        }
        self.renew(None).await
    }

    /// The upstream refused `header` (401): get another token, or fail
    /// with what the operator must do.
    pub async fn rejected(&self, header: &HeaderValue) -> Result<HeaderValue, OAuthError> {
        self.renew(Some(header)).await
    }

    /// The upstream refused `header` for want of scope (403
    /// `insufficient_scope`). A person may since have logged in again with
    /// more scope: a different token in the token file is adopted and
    /// returned. Otherwise `None` (refreshing cannot add scope).
    pub async fn stepped_up(&self, header: &HeaderValue) -> Option<HeaderValue> {
        if !self.uses_file() {
            return None;
        }
        let _one = self.renewing.lock().await;
        if let Some(live) = &*self.live.load()
            && live.header != *header
        {
            return Some(live.header.clone());
        }
        let path = self.spec.token_file.clone();
        let file = tokio::task::spawn_blocking(move || store::read(&path)).await.ok()?.ok()?;
        let stored = file.upstreams.get(&self.spec.upstream)?.get(self.principal.as_deref())?.clone();
        let current = self.live.load().as_ref().map(|l| l.token.access_token.clone());
        if current.as_deref() == Some(stored.access_token.as_str()) {
            return None;
        }
        self.count("stored", true);
        tracing::info!(upstream = %self.spec.upstream, principal = self.principal.as_deref().unwrap_or("-"), "Using the newer token in the token file after a 403.");
        let live = live(stored).ok()?;
        let header = live.header.clone();
        self.live.store(Some(Arc::new(live)));
        Some(header)
    }

    async fn renew(&self, rejected: Option<&HeaderValue>) -> Result<HeaderValue, OAuthError> {
        let _one = self.renewing.lock().await;
        // Renewed by another task while this one waited?
        if let Some(live) = &*self.live.load()
            && rejected.is_none_or(|r| *r != live.header)
            && live.renew_at.is_none_or(|at| store::now() < at)
        {
            return Ok(live.header.clone());
        }
        let token = match self.spec.grant {
            OAuthGrant::ClientCredentials => self.client_credentials().await?,
            OAuthGrant::AuthorizationCode => self.stored(rejected.is_some()).await?,
        };
        let live = live(token)?;
        let header = live.header.clone();
        self.live.store(Some(Arc::new(live)));
        Ok(header)
    }

    async fn client_credentials(&self) -> Result<Token, OAuthError> {
        let found = match self.found.load_full() {
            Some(f) => f,
            None => {
                let f = Arc::new(discovery::discover(&self.http, &self.spec, None).await?);
                self.found.store(Some(f.clone()));
                f
            }
        };
        let got = flow::client_credentials(&self.http, &self.spec, &found).await;
        self.count("client_credentials", got.is_ok());
        got.inspect(|_| {
            tracing::info!(upstream = %self.spec.upstream, "Got an access token (client credentials).");
        })
    }

    /// The stored token, refreshed when due (or when `rejected`, unless the
    /// file already holds a newer one). Holds the file lock throughout, so
    /// no other process spends the same refresh token.
    async fn stored(&self, rejected: bool) -> Result<Token, OAuthError> {
        let path = self.spec.token_file.clone();
        let locked = tokio::task::spawn_blocking(move || store::Locked::acquire(&path)).await.map_err(|e| {
            OAuthError::Store { path: self.spec.token_file.display().to_string(), message: e.to_string() }
        })??;
        let mut file = locked.read()?;
        let who = self.principal.as_deref();
        let stored = file.upstreams.get(&self.spec.upstream).and_then(|e| e.get(who)).cloned();
        let Some(stored) = stored else {
            return Err(self.no_token("no token is stored"));
        };
        let current = self.live.load().as_ref().map(|l| l.token.access_token.clone());
        let newer = current.as_deref() != Some(stored.access_token.as_str());
        let due = renew_at(&stored).is_some_and(|at| store::now() >= at);
        if newer && !due {
            // A login, or a refresh by another process: use it.
            self.count("stored", true);
            tracing::info!(upstream = %self.spec.upstream, principal = who.unwrap_or("-"), "Using the token in the token file.");
            return Ok(stored);
        }
        if !due && !rejected {
            return Ok(stored);
        }
        if stored.refresh_token.is_none() {
            return Err(self.no_token("the stored token expired or was refused and there is no refresh token"));
        }
        match flow::refresh(&self.http, &stored).await {
            Ok(fresh) => {
                self.count("refresh_token", true);
                let rotated = fresh.refresh_token != stored.refresh_token;
                file.upstreams.entry(self.spec.upstream.clone()).or_default().put(who, fresh.clone());
                // Written before use: a rotated refresh token must not be
                // lost (the old one is already dead).
                let path = self.spec.token_file.display().to_string();
                tokio::task::spawn_blocking(move || locked.write(&file))
                    .await
                    .map_err(|e| OAuthError::Store { path, message: e.to_string() })??;
                tracing::info!(
                    upstream = %self.spec.upstream, principal = who.unwrap_or("-"), rotated,
                    expires_in = fresh.lifetime().unwrap_or(0), "Refreshed the upstream access token."
                );
                Ok(fresh)
            }
            Err(e) => {
                self.count("refresh_token", false);
                tracing::warn!(upstream = %self.spec.upstream, principal = who.unwrap_or("-"), "Refreshing the upstream token failed: {e}.");
                Err(match e {
                    OAuthError::Refused { error, description } => self.no_token(&format!(
                        "refreshing the token was refused ({error}{}{description})",
                        if description.is_empty() { "" } else { ": " }
                    )),
                    other => other,
                })
            }
        }
    }

    fn no_token(&self, why: &str) -> OAuthError {
        OAuthError::NoToken {
            upstream: self.spec.upstream.clone(),
            principal: self.principal.as_deref().map(str::to_owned),
            why: why.to_owned(),
        }
    }

    fn count(&self, grant: &'static str, ok: bool) {
        let outcome = if ok { "ok" } else { "error" };
        self.metrics.upstream_tokens.get_or_create(&TokenLabels { upstream: self.label.clone(), grant, outcome }).inc();
    }

    /// Waits until the token file changes (a login happened), polling its
    /// modification time once a second. For a supervisor whose upstream is
    /// down for want of a token.
    pub async fn file_changed(&self) {
        let path: &Path = &self.spec.token_file;
        let before = store::mtime(path);
        loop {
            tokio::time::sleep(Duration::from_secs(1)).await;
            if store::mtime(path) != before {
                return;
            }
        }
    }

    /// Whether tokens come from the token file (`auth login`).
    pub fn uses_file(&self) -> bool {
        self.spec.grant == OAuthGrant::AuthorizationCode
    }
}

fn renew_at(t: &Token) -> Option<u64> {
    let (exp, life) = (t.expires_at?, t.lifetime().unwrap_or(0));
    Some(exp.saturating_sub(EARLY.min(life / 4)))
}

fn live(token: Token) -> Result<Live, OAuthError> {
    let mut header = HeaderValue::try_from(format!("Bearer {}", token.access_token))
        .map_err(|_| OAuthError::Http("the access token is not a valid header value".into()))?;
    header.set_sensitive(true);
    Ok(Live { header, renew_at: renew_at(&token), token })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_renewed_early_but_not_before_a_quarter_of_their_life() {
        let mut t = Token {
            access_token: "a".into(),
            refresh_token: None,
            expires_at: Some(4600),
            obtained_at: 1000,
            scope: None,
            issuer: String::new(),
            token_endpoint: String::new(),
            revocation_endpoint: None,
            resource: String::new(),
            client_id: String::new(),
            client_secret: None,
            auth_method: "none".into(),
        };
        assert_eq!(renew_at(&t), Some(4570), "an hour-long token: 30 s early");
        t.expires_at = Some(1020);
        assert_eq!(renew_at(&t), Some(1015), "a 20 s token: a quarter of its life early");
        t.expires_at = None;
        assert_eq!(renew_at(&t), None, "no expiry said: used until refused");
    }
}
