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
//!
//! A token and the client it was issued to belong to one authorization
//! server, its issuer (SEP-2352). When the upstream refuses a token (401),
//! its RFC 9728 metadata is read again: once it names other servers only,
//! the token is dropped, neither refreshed nor adopted from the file again,
//! and the client is never shown to the new server; what is needed (a new
//! login, which registers with the new server, or another client) is logged,
//! counted and said in the error.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwapOption;
use reqwest::header::{HeaderMap, HeaderValue, WWW_AUTHENTICATE};

use super::OAuthError;
use super::discovery::{self, Challenge, Discovered};
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
    /// The authorization servers the upstream's metadata named when it
    /// last refused a token (`None`: not looked at since the start). A
    /// token or client of another issuer is not used.
    named: ArcSwapOption<Vec<String>>,
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
            named: ArcSwapOption::empty(),
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

    /// The upstream refused `header` (401, its response headers
    /// `answer`): get another token, or fail with what the operator must
    /// do. The challenge's resource metadata says whether the upstream's
    /// authorization server changed.
    pub async fn rejected(&self, header: &HeaderValue, answer: &HeaderMap) -> Result<HeaderValue, OAuthError> {
        let challenge = answer
            .get_all(WWW_AUTHENTICATE)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .find_map(discovery::parse_challenge);
        self.renew(Some((header, challenge))).await
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
        if !self.serves(&stored.issuer) {
            return None;
        }
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

    async fn renew(&self, rejected: Option<(&HeaderValue, Option<Challenge>)>) -> Result<HeaderValue, OAuthError> {
        let _one = self.renewing.lock().await;
        // Renewed by another task while this one waited?
        if let Some(live) = &*self.live.load()
            && rejected.as_ref().is_none_or(|(r, _)| **r != live.header)
            && live.renew_at.is_none_or(|at| store::now() < at)
        {
            return Ok(live.header.clone());
        }
        let rejected = match rejected {
            Some((_, challenge)) => {
                self.recheck(challenge).await;
                true
            }
            None => false,
        };
        let token = match self.spec.grant {
            OAuthGrant::ClientCredentials => self.client_credentials().await?,
            OAuthGrant::AuthorizationCode => self.stored(rejected).await?,
        };
        let live = live(token)?;
        let header = live.header.clone();
        self.live.store(Some(Arc::new(live)));
        Ok(header)
    }

    /// After a 401: reads which authorization servers the upstream names
    /// now (RFC 9728). When none is the issuer of the refused token, that
    /// token and its client belong to a server the upstream left: the
    /// change is logged and counted, and the token dropped. A configured
    /// `authorization_server` pins the server: nothing to read. Metadata
    /// that cannot be read changes nothing (the refresh goes on as before).
    async fn recheck(&self, challenge: Option<Challenge>) {
        if self.spec.authorization_server.is_some() {
            return;
        }
        let names = match discovery::resource_metadata(&self.http, &self.spec, challenge.as_ref()).await {
            Ok(meta) if !meta.authorization_servers.is_empty() => meta.authorization_servers,
            Ok(_) => return,
            Err(e) => {
                tracing::debug!(upstream = %self.spec.upstream, "Could not read the resource metadata after a 401: {e}.");
                return;
            }
        };
        let from = self.live.load().as_ref().map(|l| l.token.issuer.clone());
        self.named.store(Some(Arc::new(names)));
        if let Some(from) = from.filter(|f| !self.serves(f)) {
            self.live.store(None);
            let grant = if self.uses_file() { "stored" } else { "client_credentials" };
            let outcome = "issuer_changed";
            self.metrics
                .upstream_tokens
                .get_or_create(&TokenLabels { upstream: self.label.clone(), grant, outcome })
                .inc();
            tracing::warn!(
                upstream = %self.spec.upstream, principal = self.principal.as_deref().unwrap_or("-"),
                from = %from, to = %self.named_list(),
                "The upstream's authorization server changed; its token and client belong to the old one and are not used again: {}.",
                if self.uses_file() {
                    format!("a new login registers with the new one: run `{}`", super::login_command(&self.spec.upstream, self.principal.as_deref()))
                } else {
                    "the configured client must be registered there".to_owned()
                }
            );
        }
    }

    /// Whether a token or client of `issuer` may be used: the upstream
    /// named it when last asked (or was not asked yet).
    fn serves(&self, issuer: &str) -> bool {
        self.named.load().as_ref().is_none_or(|names| names.iter().any(|n| discovery::same_issuer(n, issuer)))
    }

    /// The servers the upstream names now, for messages.
    fn named_list(&self) -> String {
        self.named.load().as_ref().map(|n| n.join(", ")).unwrap_or_default()
    }

    async fn client_credentials(&self) -> Result<Token, OAuthError> {
        if let Some(found) = self.found.load_full()
            && !self.serves(&found.server.issuer)
        {
            return Err(OAuthError::ServerChanged {
                upstream: self.spec.upstream.clone(),
                from: found.server.issuer.clone(),
                to: self.named_list(),
                what: "the configured client was used with the old one and is not sent to the new (SEP-2352): \
                       register the gateway there and set `client_id` and `client_secret`, or set \
                       `authorization_server` when the client is registered at both"
                    .into(),
            });
        }
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
        if !self.serves(&stored.issuer) {
            return Err(self.no_token(&format!(
                "its authorization server changed from {} to {}; the stored token and its client belong to the old \
                 one and are not used with the new (SEP-2352), and a new login registers there",
                stored.issuer,
                self.named_list()
            )));
        }
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
    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::*;

    fn token(access: &str, issuer: &str) -> Token {
        Token {
            access_token: access.into(),
            refresh_token: Some(format!("r-{access}")),
            expires_at: Some(store::now() + 3600),
            obtained_at: store::now(),
            scope: None,
            issuer: issuer.into(),
            token_endpoint: format!("{issuer}/token"),
            revocation_endpoint: None,
            resource: String::new(),
            client_id: format!("client-of-{issuer}"),
            client_secret: None,
            auth_method: "none".into(),
        }
    }

    fn store_token(path: &Path, t: Token) {
        let locked = store::Locked::acquire(path).unwrap();
        let mut file = locked.read().unwrap();
        file.upstreams.entry("up".into()).or_default().put(None, t);
        locked.write(&file).unwrap();
    }

    /// SEP-2352: a token is bound to the issuer that gave it. Once the
    /// upstream's metadata names another server, a 401 does not refresh
    /// it at the old one, the token is not used again, the change is
    /// counted and the error says to log in; a login with the new server
    /// is used.
    #[tokio::test]
    async fn a_token_is_not_used_once_the_upstream_names_another_authorization_server() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let (as1, as2) = (format!("{base}/as1"), format!("{base}/as2"));
        let refreshes = Arc::new(AtomicUsize::new(0));
        let json = |v: serde_json::Value| ([(reqwest::header::CONTENT_TYPE, "application/json")], v.to_string());
        let prm = json(serde_json::json!({"resource": format!("{base}/mcp"), "authorization_servers": [as2]}));
        let counted = refreshes.clone();
        let app = axum::Router::new()
            .route("/.well-known/oauth-protected-resource/mcp", axum::routing::get(move || async move { prm }))
            .route(
                "/as1/token",
                axum::routing::post(move || async move {
                    counted.fetch_add(1, Ordering::SeqCst);
                    json(serde_json::json!({"access_token": "refreshed-at-as1", "token_type": "Bearer"}))
                }),
            );
        tokio::spawn(async move { axum::serve(listener, app).await });

        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("tokens.json");
        store_token(&path, token("from-as1", &as1));
        let spec = Arc::new(OAuthSpec {
            upstream: "up".into(),
            grant: OAuthGrant::AuthorizationCode,
            client_id: None,
            client_secret: None,
            token_endpoint_auth: crate::config::TokenEndpointAuth::ClientSecretBasic,
            scopes: Vec::new(),
            resource: format!("{base}/mcp"),
            url: format!("{base}/mcp"),
            authorization_server: None,
            per_principal: false,
            redirect_port: 0,
            token_file: path.clone(),
        });
        let metrics = Arc::new(Metrics::new());
        let cred = Credential::new(spec, None, metrics.clone());
        let old = cred.bearer().await.unwrap();
        assert_eq!(old, "Bearer from-as1");

        // The upstream refuses it, and its metadata names as2 only.
        let mut answer = HeaderMap::new();
        let challenge = format!(r#"Bearer resource_metadata="{base}/.well-known/oauth-protected-resource/mcp""#);
        answer.insert(WWW_AUTHENTICATE, HeaderValue::try_from(challenge).unwrap());
        let e = cred.rejected(&old, &answer).await.unwrap_err().to_string();
        assert!(e.contains(&format!("authorization server changed from {as1} to {as2}")), "{e}");
        assert!(e.contains("run `mcp-gateway auth login up`"), "{e}");
        assert_eq!(refreshes.load(Ordering::SeqCst), 0, "never refreshed at the server the upstream left");
        let counted = metrics.encode();
        assert!(
            counted.contains(r#"upstream_tokens_total{upstream="up",grant="stored",outcome="issuer_changed"} 1"#),
            "{counted}"
        );
        // Dropped: the next request does not send it again.
        let e = cred.bearer().await.unwrap_err().to_string();
        assert!(e.contains("authorization server changed"), "{e}");

        // A login with as2 (its own client) is used.
        store_token(&path, token("from-as2", &as2));
        assert_eq!(cred.bearer().await.unwrap(), "Bearer from-as2");
        assert_eq!(refreshes.load(Ordering::SeqCst), 0);
    }

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
