//! The OAuth 2.1 exchanges: PKCE, dynamic client registration (RFC 7591),
//! the authorization code grant behind `mcp-gateway auth login`, refresh
//! (with rotation), client credentials and revocation (RFC 7009).
//!
//! Every token request carries the RFC 8707 `resource`, so a token is
//! only good for the one upstream it was asked for.

use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use reqwest::Url;
use serde::Deserialize;
use sha2::{Digest as _, Sha256};

use super::OAuthError;
use super::discovery::{self, Discovered};
use super::store::{self, Token};
use crate::config::{OAuthSpec, TokenEndpointAuth};

/// Largest token or registration answer read.
const MAX_ANSWER: usize = 64 * 1024;

/// A PKCE pair (RFC 7636, method S256).
#[derive(Debug)]
pub(crate) struct Pkce {
    /// Kept by the client, sent with the code.
    pub(crate) verifier: String,
    /// Sent with the authorization request.
    pub(crate) challenge: String,
}

impl Pkce {
    /// A fresh verifier of 43 characters (32 random bytes).
    pub(crate) fn new() -> Pkce {
        let verifier = random_token(32);
        Pkce { challenge: challenge_of(&verifier), verifier }
    }
}

/// `BASE64URL(SHA256(verifier))`.
pub(crate) fn challenge_of(verifier: &str) -> String {
    URL_SAFE_NO_PAD.encode(Sha256::digest(verifier.as_bytes()))
}

/// `n` random bytes, base64url.
pub(crate) fn random_token(n: usize) -> String {
    let mut bytes = vec![0u8; n];
    getrandom::fill(&mut bytes).expect("the OS has randomness");
    URL_SAFE_NO_PAD.encode(bytes)
}

/// A client as the token endpoint knows it.
#[derive(Clone)]
pub(crate) struct Client {
    /// `client_id`.
    pub(crate) id: String,
    /// Its secret (confidential clients).
    pub(crate) secret: Option<String>,
    /// `none`, `client_secret_basic` or `client_secret_post`.
    pub(crate) method: String,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client").field("id", &self.id).field("method", &self.method).finish_non_exhaustive()
    }
}

impl Client {
    /// The configured (pre-registered) client, if any.
    pub(crate) fn configured(spec: &OAuthSpec) -> Option<Client> {
        let id = spec.client_id.clone()?;
        let secret = spec.client_secret.as_ref().map(|s| s.expose().to_owned());
        let method = match (&secret, spec.token_endpoint_auth) {
            (None, _) => "none",
            (Some(_), TokenEndpointAuth::ClientSecretBasic) => "client_secret_basic",
            (Some(_), TokenEndpointAuth::ClientSecretPost) => "client_secret_post",
        };
        Some(Client { id, secret, method: method.to_owned() })
    }

    /// Client authentication at a token or revocation endpoint: HTTP
    /// Basic, form fields, or (public clients) only `client_id`.
    fn authenticate(
        &self,
        req: reqwest::RequestBuilder,
        form: &mut Vec<(&'static str, String)>,
    ) -> reqwest::RequestBuilder {
        match (self.method.as_str(), &self.secret) {
            // RFC 6749 §2.3.1: each part form-encoded before Basic.
            ("client_secret_basic", Some(secret)) => req.basic_auth(url_encode(&self.id), Some(url_encode(secret))),
            ("client_secret_post", Some(secret)) => {
                form.push(("client_id", self.id.clone()));
                form.push(("client_secret", secret.clone()));
                req
            }
            _ => {
                form.push(("client_id", self.id.clone()));
                req
            }
        }
    }

    fn of(token: &Token) -> Client {
        Client { id: token.client_id.clone(), secret: token.client_secret.clone(), method: token.auth_method.clone() }
    }
}

/// A token endpoint's success answer.
#[derive(Deserialize)]
struct TokenAnswer {
    access_token: String,
    #[serde(default)]
    token_type: Option<String>,
    #[serde(default)]
    expires_in: Option<f64>,
    #[serde(default)]
    refresh_token: Option<String>,
    #[serde(default)]
    scope: Option<String>,
}

/// An OAuth error answer (RFC 6749 §5.2).
#[derive(Deserialize)]
struct ErrorAnswer {
    error: String,
    #[serde(default)]
    error_description: Option<String>,
}

/// What a token belongs to, to store it.
struct Issued<'a> {
    server: &'a discovery::ServerMetadata,
    client: &'a Client,
    resource: &'a str,
}

/// One token request: the form plus client authentication.
async fn token_request(
    http: &reqwest::Client,
    endpoint: &str,
    client: &Client,
    mut form: Vec<(&'static str, String)>,
) -> Result<TokenAnswer, OAuthError> {
    let req = http.post(endpoint).header(reqwest::header::ACCEPT, "application/json");
    let resp = client
        .authenticate(req, &mut form)
        .form(&form)
        .send()
        .await
        .map_err(|e| OAuthError::Http(e.without_url().to_string()))?;
    let status = resp.status();
    let body = discovery::read_limited(resp, MAX_ANSWER).await.map_err(|e| OAuthError::Http(e.to_string()))?;
    if !status.is_success() {
        return Err(match serde_json::from_slice::<ErrorAnswer>(&body) {
            Ok(e) => OAuthError::Refused { error: e.error, description: e.error_description.unwrap_or_default() },
            Err(_) => OAuthError::Http(format!("the token endpoint answered HTTP {}", status.as_u16())),
        });
    }
    let answer: TokenAnswer = serde_json::from_slice(&body)
        .map_err(|e| OAuthError::Http(format!("the token endpoint's answer is not a token: {e}")))?;
    if answer.token_type.as_deref().is_some_and(|t| !t.eq_ignore_ascii_case("bearer")) {
        return Err(OAuthError::Http(format!("token type {:?} is not Bearer", answer.token_type.unwrap_or_default())));
    }
    Ok(answer)
}

fn token_of(answer: TokenAnswer, issued: &Issued<'_>, previous_refresh: Option<String>) -> Token {
    let now = store::now();
    Token {
        access_token: answer.access_token,
        // A server that does not rotate sends no new refresh token: keep
        // the old one.
        refresh_token: answer.refresh_token.or(previous_refresh),
        expires_at: answer.expires_in.filter(|s| s.is_finite() && *s >= 0.0).map(|s| now + s as u64),
        obtained_at: now,
        scope: answer.scope,
        issuer: issued.server.issuer.clone(),
        token_endpoint: issued.server.token_endpoint.clone(),
        revocation_endpoint: issued.server.revocation_endpoint.clone(),
        resource: issued.resource.to_owned(),
        client_id: issued.client.id.clone(),
        client_secret: issued.client.secret.clone(),
        auth_method: issued.client.method.clone(),
    }
}

/// Client credentials grant (a confidential client acting for itself).
pub(crate) async fn client_credentials(
    http: &reqwest::Client,
    spec: &OAuthSpec,
    found: &Discovered,
) -> Result<Token, OAuthError> {
    let client =
        Client::configured(spec).ok_or_else(|| OAuthError::Config("client_credentials needs client_id".into()))?;
    let mut form = vec![("grant_type", "client_credentials".to_owned()), ("resource", found.resource.clone())];
    let scopes = if spec.scopes.is_empty() { &found.scopes } else { &spec.scopes };
    if !scopes.is_empty() {
        form.push(("scope", scopes.join(" ")));
    }
    let answer = token_request(http, &found.server.token_endpoint, &client, form).await?;
    Ok(token_of(answer, &Issued { server: &found.server, client: &client, resource: &found.resource }, None))
}

/// Refreshes `token` (the server may rotate the refresh token: the new one
/// is returned, the old one is dead).
pub(crate) async fn refresh(http: &reqwest::Client, token: &Token) -> Result<Token, OAuthError> {
    let Some(rt) = &token.refresh_token else {
        return Err(OAuthError::Refused { error: "no_refresh_token".into(), description: "log in again".into() });
    };
    let client = Client::of(token);
    let form = vec![
        ("grant_type", "refresh_token".to_owned()),
        ("refresh_token", rt.clone()),
        ("resource", token.resource.clone()),
    ];
    let answer = token_request(http, &token.token_endpoint, &client, form).await?;
    let now = store::now();
    Ok(Token {
        access_token: answer.access_token,
        refresh_token: answer.refresh_token.or_else(|| token.refresh_token.clone()),
        expires_at: answer.expires_in.filter(|s| s.is_finite() && *s >= 0.0).map(|s| now + s as u64),
        obtained_at: now,
        scope: answer.scope.or_else(|| token.scope.clone()),
        ..token.clone()
    })
}

/// Revokes a token's refresh token (or access token), best effort.
pub(crate) async fn revoke(http: &reqwest::Client, token: &Token) -> Result<(), OAuthError> {
    let Some(endpoint) = &token.revocation_endpoint else { return Ok(()) };
    let client = Client::of(token);
    let (value, hint) = match &token.refresh_token {
        Some(rt) => (rt.clone(), "refresh_token"),
        None => (token.access_token.clone(), "access_token"),
    };
    let mut form = vec![("token", value), ("token_type_hint", hint.to_owned())];
    let resp = client
        .authenticate(http.post(endpoint), &mut form)
        .form(&form)
        .send()
        .await
        .map_err(|e| OAuthError::Http(e.without_url().to_string()))?;
    if resp.status().is_success() {
        Ok(())
    } else {
        Err(OAuthError::Http(format!("revocation answered HTTP {}", resp.status().as_u16())))
    }
}

/// RFC 7591 registration of a public client for the login's redirect URI.
async fn register(
    http: &reqwest::Client,
    found: &Discovered,
    redirect_uri: &str,
    scopes: &[String],
) -> Result<Client, OAuthError> {
    let Some(endpoint) = &found.server.registration_endpoint else {
        return Err(OAuthError::Config(
            "no `client_id` is configured and the authorization server offers no dynamic registration; \
             register a client there and set `client_id` (and `client_secret`)"
                .into(),
        ));
    };
    let mut body = serde_json::json!({
        "client_name": "mcp-gateway",
        // SEP-837 (2026-07-28): `native` for a loopback redirect (the `auth
        // login` callback on this machine), `web` for one on a host.
        "application_type": application_type(redirect_uri),
        "redirect_uris": [redirect_uri],
        "grant_types": ["authorization_code", "refresh_token"],
        "response_types": ["code"],
        "token_endpoint_auth_method": "none",
    });
    if !scopes.is_empty() {
        body["scope"] = scopes.join(" ").into();
    }
    let resp = http
        .post(endpoint)
        .header(reqwest::header::CONTENT_TYPE, "application/json")
        .body(body.to_string())
        .send()
        .await
        .map_err(|e| OAuthError::Http(e.without_url().to_string()))?;
    let status = resp.status();
    let answer = discovery::read_limited(resp, MAX_ANSWER).await.map_err(|e| OAuthError::Http(e.to_string()))?;
    if !status.is_success() {
        let why = serde_json::from_slice::<ErrorAnswer>(&answer)
            .map(|e| format!("{}: {}", e.error, e.error_description.unwrap_or_default()))
            .unwrap_or_else(|_| format!("HTTP {}", status.as_u16()));
        return Err(OAuthError::Http(format!("dynamic client registration failed: {why}")));
    }
    #[derive(Deserialize)]
    struct Registered {
        client_id: String,
        #[serde(default)]
        client_secret: Option<String>,
        #[serde(default)]
        token_endpoint_auth_method: Option<String>,
    }
    let r: Registered = serde_json::from_slice(&answer)
        .map_err(|e| OAuthError::Http(format!("dynamic client registration answered no client: {e}")))?;
    let method = match (&r.client_secret, r.token_endpoint_auth_method.as_deref()) {
        (None, _) => "none".to_owned(),
        (Some(_), Some(m)) => m.to_owned(),
        (Some(_), None) => "client_secret_basic".to_owned(),
    };
    Ok(Client { id: r.client_id, secret: r.client_secret, method })
}

/// Options of `mcp-gateway auth login`.
#[derive(Debug, Default, Clone)]
pub struct LoginOptions {
    /// Whose token (`None`: the gateway's shared one).
    pub principal: Option<String>,
    /// Scopes instead of the configured or discovered ones.
    pub scopes: Vec<String>,
    /// OIDC `login_hint` for the authorization server.
    pub login_hint: Option<String>,
    /// How long to wait for the browser.
    pub timeout: Duration,
}

/// What a login stored.
#[derive(Debug)]
pub struct LoginOutcome {
    /// The token file.
    pub file: std::path::PathBuf,
    /// Seconds the access token lasts, when said.
    pub expires_in: Option<u64>,
    /// The granted scope.
    pub scope: Option<String>,
    /// Whether a refresh token came with it.
    pub refreshable: bool,
}

/// The authorization code flow with PKCE: discover, register if needed,
/// listen on loopback, hand the URL to `show` (the person opens it), take
/// the callback, redeem the code and store the tokens.
pub async fn login(
    http: &reqwest::Client,
    spec: &OAuthSpec,
    opts: &LoginOptions,
    show: impl FnOnce(&str, &str),
) -> Result<LoginOutcome, OAuthError> {
    let found = discovery::discover(http, spec, None).await?;
    let server = &found.server;
    let Some(authorize) = &server.authorization_endpoint else {
        return Err(OAuthError::Config("the authorization server has no authorization endpoint".into()));
    };
    if !server.code_challenge_methods_supported.iter().any(|m| m == "S256") {
        // MCP: absent means no PKCE, and then the client must not go on.
        return Err(OAuthError::Config(
            "the authorization server does not offer PKCE S256 (code_challenge_methods_supported); refusing to log in"
                .into(),
        ));
    }
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", spec.redirect_port))
        .await
        .map_err(|e| OAuthError::Login(format!("cannot listen on 127.0.0.1:{}: {e}", spec.redirect_port)))?;
    let port = listener.local_addr().map_err(|e| OAuthError::Login(e.to_string()))?.port();
    let redirect_uri = format!("http://127.0.0.1:{port}/callback");
    let scopes = if !opts.scopes.is_empty() {
        opts.scopes.clone()
    } else if !spec.scopes.is_empty() {
        spec.scopes.clone()
    } else {
        found.scopes.clone()
    };
    let client = match Client::configured(spec) {
        Some(c) => {
            moved_from(spec, opts.principal.as_deref(), &server.issuer, Some(&c.id)).await?;
            c
        }
        None => {
            moved_from(spec, opts.principal.as_deref(), &server.issuer, None).await?;
            register(http, &found, &redirect_uri, &scopes).await?
        }
    };
    let pkce = Pkce::new();
    let state = random_token(24);
    let mut url = Url::parse(authorize).map_err(|e| OAuthError::Config(format!("bad authorization endpoint: {e}")))?;
    {
        let mut q = url.query_pairs_mut();
        q.append_pair("response_type", "code")
            .append_pair("client_id", &client.id)
            .append_pair("redirect_uri", &redirect_uri)
            .append_pair("code_challenge", &pkce.challenge)
            .append_pair("code_challenge_method", "S256")
            .append_pair("state", &state)
            .append_pair("resource", &found.resource);
        if !scopes.is_empty() {
            q.append_pair("scope", &scopes.join(" "));
        }
        if let Some(h) = &opts.login_hint {
            q.append_pair("login_hint", h);
        }
    }
    show(url.as_str(), &redirect_uri);
    let callback = tokio::time::timeout(opts.timeout, super::callback::wait(listener))
        .await
        .map_err(|_| OAuthError::Login(format!("no callback within {}s", opts.timeout.as_secs())))??;
    if callback.state.as_deref() != Some(state.as_str()) {
        return Err(OAuthError::Login("the callback's state does not match (a forged or stale redirect)".into()));
    }
    if let Some(e) = callback.error {
        return Err(OAuthError::Refused { error: e, description: callback.error_description.unwrap_or_default() });
    }
    // RFC 9207: a server that sends `iss` must send its own, character for
    // character (no case folding, port or slash normalisation: RFC 9207
    // §2.4, conformance `auth/iss-normalized`).
    match (&callback.iss, server.authorization_response_iss_parameter_supported) {
        (Some(iss), _) if *iss != server.issuer => {
            return Err(OAuthError::Login(format!("the callback came from issuer {iss:?}, not {:?}", server.issuer)));
        }
        (None, true) => return Err(OAuthError::Login("the callback lacks `iss`, which the server promised".into())),
        _ => {}
    }
    let code = callback.code.ok_or_else(|| OAuthError::Login("the callback has no code".into()))?;
    let form = vec![
        ("grant_type", "authorization_code".to_owned()),
        ("code", code),
        ("redirect_uri", redirect_uri),
        ("code_verifier", pkce.verifier),
        ("resource", found.resource.clone()),
    ];
    let answer = token_request(http, &server.token_endpoint, &client, form).await?;
    let token = token_of(answer, &Issued { server, client: &client, resource: &found.resource }, None);
    let outcome = LoginOutcome {
        file: spec.token_file.clone(),
        expires_in: token.lifetime(),
        scope: token.scope.clone(),
        refreshable: token.refresh_token.is_some(),
    };
    let (path, upstream, principal) = (spec.token_file.clone(), spec.upstream.clone(), opts.principal.clone());
    tokio::task::spawn_blocking(move || {
        let locked = store::Locked::acquire(&path)?;
        let mut s = locked.read()?;
        s.upstreams.entry(upstream).or_default().put(principal.as_deref(), token);
        locked.write(&s)
    })
    .await
    .map_err(|e| OAuthError::Login(e.to_string()))??;
    Ok(outcome)
}

/// Before a login with `issuer`: when the stored token of `principal` came
/// from another authorization server, the upstream moved (SEP-2352). Its
/// client is not reused there: a dynamically registered one is replaced by
/// a new registration (logged), and a configured client the old token was
/// issued to (`configured`) is refused, unless `authorization_server` pins
/// the server (the operator said where it is registered).
async fn moved_from(
    spec: &OAuthSpec,
    principal: Option<&str>,
    issuer: &str,
    configured: Option<&str>,
) -> Result<(), OAuthError> {
    let (path, upstream, who) = (spec.token_file.clone(), spec.upstream.clone(), principal.map(str::to_owned));
    let old = tokio::task::spawn_blocking(move || {
        store::read(&path)
            .ok()?
            .upstreams
            .get(&upstream)?
            .get(who.as_deref())
            .map(|t| (t.issuer.clone(), t.client_id.clone()))
    })
    .await
    .ok()
    .flatten();
    let Some((from, client_id)) = old.filter(|(from, _)| !discovery::same_issuer(from, issuer)) else { return Ok(()) };
    if configured.is_some_and(|c| c == client_id) && spec.authorization_server.is_none() {
        return Err(OAuthError::ServerChanged {
            upstream: spec.upstream.clone(),
            from,
            to: issuer.to_owned(),
            what: format!(
                "the configured client_id was used with the old one and is not sent to the new (SEP-2352): register \
                 the gateway there and set `client_id` (and `client_secret`); if it is registered at both, set \
                 `authorization_server` or run `{}` first",
                super::login_command(&spec.upstream, principal).replacen(" login ", " logout ", 1)
            ),
        });
    }
    tracing::info!(upstream = %spec.upstream, from = %from, to = %issuer, "The upstream's authorization server changed; registering with the new one.");
    Ok(())
}

/// Removes a stored token and revokes it at the server (best effort).
pub async fn logout(http: &reqwest::Client, spec: &OAuthSpec, principal: Option<&str>) -> Result<bool, OAuthError> {
    let (path, upstream, who) = (spec.token_file.clone(), spec.upstream.clone(), principal.map(str::to_owned));
    let removed = tokio::task::spawn_blocking(move || {
        let locked = store::Locked::acquire(&path)?;
        let mut s = locked.read()?;
        let Some(entry) = s.upstreams.get_mut(&upstream) else { return Ok(None) };
        let t = entry.take(who.as_deref());
        locked.write(&s)?;
        Ok::<_, OAuthError>(t)
    })
    .await
    .map_err(|e| OAuthError::Login(e.to_string()))??;
    match removed {
        Some(t) => {
            if let Err(e) = revoke(http, &t).await {
                tracing::warn!(upstream = %spec.upstream, "Revoking the removed token failed: {e}.");
            }
            Ok(true)
        }
        None => Ok(false),
    }
}

/// `application/x-www-form-urlencoded` encoding of one value.
fn url_encode(s: &str) -> String {
    let mut u = Url::parse("x:").expect("valid");
    u.query_pairs_mut().append_pair("v", s);
    u.query().unwrap_or("v=").trim_start_matches("v=").to_owned()
}

/// The OAuth `application_type` of a client whose redirect URI is
/// `redirect_uri` (OpenID Connect Dynamic Registration, SEP-837): `native`
/// for a loopback or private-scheme redirect, `web` otherwise.
fn application_type(redirect_uri: &str) -> &'static str {
    let Ok(url) = url::Url::parse(redirect_uri) else { return "native" };
    let loopback = match url.host() {
        Some(url::Host::Domain(d)) => d.eq_ignore_ascii_case("localhost"),
        Some(url::Host::Ipv4(a)) => a.is_loopback(),
        Some(url::Host::Ipv6(a)) => a.is_loopback(),
        None => true,
    };
    if loopback || !matches!(url.scheme(), "http" | "https") { "native" } else { "web" }
}

#[cfg(test)]
mod tests {

    #[test]
    fn a_loopback_redirect_registers_native_and_a_host_web() {
        assert_eq!(super::application_type("http://127.0.0.1:8123/callback"), "native");
        assert_eq!(super::application_type("http://localhost:8123/callback"), "native");
        assert_eq!(super::application_type("http://[::1]:8123/callback"), "native");
        assert_eq!(super::application_type("https://gateway.example.com/oauth/callback"), "web");
    }

    use super::*;

    #[test]
    fn the_pkce_challenge_is_rfc_7636s_s256() {
        // RFC 7636 appendix B.
        assert_eq!(
            challenge_of("dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk"),
            "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM"
        );
        let a = Pkce::new();
        let b = Pkce::new();
        assert_eq!(a.verifier.len(), 43);
        assert_ne!(a.verifier, b.verifier);
        assert_eq!(a.challenge, challenge_of(&a.verifier));
    }

    #[test]
    fn basic_credentials_are_form_encoded_first() {
        assert_eq!(url_encode("a b:c/d+é"), "a+b%3Ac%2Fd%2B%C3%A9");
        assert_eq!(url_encode("plain"), "plain");
    }
}
