//! Client authentication (docs/design.md D9, spec §1.12): API keys stored as
//! SHA-256 hashes, and OAuth 2.1 bearer JWTs checked against a JWKS (or a
//! PEM key) for signature, issuer, audience (this gateway's resource URI),
//! expiry and required scopes. Also the RFC 9728 protected-resource
//! metadata and the `WWW-Authenticate` challenges.
//!
//! The client's credential stops here: nothing in this module hands it on,
//! and upstream requests are built from the upstream's own config only.

use std::collections::HashMap;
use std::sync::Arc;

use sha2::{Digest, Sha256};

use crate::config::{AuthMode, AuthSection};

mod jwt;

use self::jwt::Jwt;

/// Headers that carry client credentials and are never logged or sent
/// upstream, whatever the config adds.
pub const ALWAYS_SENSITIVE: [&str; 4] = ["authorization", "cookie", "x-api-key", "proxy-authorization"];

/// Who a client is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    /// The principal id (API key's `principal`, the JWT's `sub`, or
    /// `anonymous` / `stdio`): what `[[access]] principals` name.
    pub id: Arc<str>,
    /// The whole identity, `<how>:<id>` (`key:bob`, `jwt:bob`) or
    /// `anonymous` / `stdio` (docs/design.md D12): an API key `bob` and a JWT
    /// whose `sub` is `bob` are two principals. Sessions are bound to it,
    /// and rate limits, rule histories and per-principal upstream tokens
    /// are kept by it.
    pub identity: Arc<str>,
    /// Groups, for `[[access]]`.
    pub groups: Box<[Arc<str>]>,
    /// Scopes the token granted (JWT only).
    pub scopes: Box<[Arc<str>]>,
    /// How it was established.
    pub via: Via,
}

/// How a [`Principal`] was established.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Via {
    /// `[auth] mode = "none"`: nobody was asked.
    Anonymous,
    /// The local user of `mcp-gateway stdio`.
    Stdio,
    /// An API key.
    ApiKey,
    /// A bearer JWT.
    Jwt,
}

/// Why a client was refused. Each maps to a status, a `WWW-Authenticate`
/// challenge and a `reason` label of `mcp_gateway_auth_failures_total`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    /// No `Authorization: Bearer` nor `X-API-Key`.
    #[error("authentication required")]
    Missing,
    /// An API key nobody has.
    #[error("unknown API key")]
    UnknownKey,
    /// Both `Authorization` and `X-API-Key`: which one a proxy in front
    /// checked cannot be told, so neither counts (docs/design.md D12).
    #[error("two credentials (Authorization and X-API-Key): send one")]
    TwoCredentials,
    /// Malformed, badly signed, wrong algorithm, unknown key id, …
    #[error("invalid token: {0}")]
    Invalid(String),
    /// `exp` passed.
    #[error("token expired")]
    Expired,
    /// `nbf` still ahead.
    #[error("token not yet valid")]
    NotYetValid,
    /// `aud` is not this gateway.
    #[error("token audience is not this gateway")]
    Audience,
    /// `iss` is not the configured issuer.
    #[error("token issuer is not trusted")]
    Issuer,
    /// A required scope is missing (403).
    #[error("token lacks the required scope")]
    InsufficientScope,
    /// The signing keys could not be fetched (503).
    #[error("signing keys unavailable: {0}")]
    Keys(String),
}

/// Verifies client credentials; built once from `[auth]`.
pub struct Authenticator {
    mode: AuthMode,
    /// SHA-256 of the key → its principal.
    api_keys: HashMap<[u8; 32], Arc<Principal>>,
    jwt: Option<Jwt>,
    anonymous: Arc<Principal>,
    required_scopes: Vec<String>,
    metadata: String,
    metadata_url: String,
    metadata_path: String,
    sensitive: Vec<String>,
}

/// Why the authenticator could not be built (a PEM that does not parse).
#[derive(Debug, thiserror::Error)]
#[error("[auth.jwt] {0}")]
pub struct AuthSetupError(String);

// === impl Principal ===

impl Principal {
    /// The principal of every client when `[auth] mode = "none"`.
    pub fn anonymous() -> Self {
        Self::named("anonymous", Via::Anonymous)
    }

    /// The local user of `mcp-gateway stdio` (who launched the process).
    pub fn stdio() -> Self {
        Self::named("stdio", Via::Stdio)
    }

    fn named(id: &str, via: Via) -> Self {
        Self::new(id, via, Box::new([]), Box::new([]))
    }

    /// A principal established `via`, with its groups and scopes.
    pub fn new(id: &str, via: Via, groups: Box<[Arc<str>]>, scopes: Box<[Arc<str>]>) -> Self {
        let identity = match via {
            Via::Anonymous | Via::Stdio => Arc::from(id),
            Via::ApiKey => format!("key:{id}").into(),
            Via::Jwt => format!("jwt:{id}").into(),
        };
        Principal { id: id.into(), identity, groups, scopes, via }
    }

    /// Whether an `[[access]] principals` entry names it: `"*"`; an
    /// identity (`key:bob` the API key only, `jwt:bob` the JWT subject only,
    /// `anonymous`, `stdio`), compared with its identity alone, so a JWT
    /// whose subject is `key:admin` is not the API key `admin`; or a bare
    /// name (`bob`), compared with its id (an API key or a JWT subject).
    pub fn is_named(&self, entry: &str) -> bool {
        let identity = entry.starts_with("key:") || entry.starts_with("jwt:") || matches!(entry, "anonymous" | "stdio");
        entry == "*" || if identity { entry == &*self.identity } else { entry == &*self.id }
    }

    /// Whether it is in `group`.
    pub fn in_group(&self, group: &str) -> bool {
        self.groups.iter().any(|g| &**g == group)
    }
}

/// The identity `--principal NAME` of `mcp-gateway auth login` means under
/// `auth`: `key:NAME` or `jwt:NAME` as written, `anonymous` and `stdio` as
/// they are, and a bare name by what can authenticate as it (an API key of
/// that name, or a JWT subject). A bare name both could be is ambiguous:
/// the error says to write which.
pub fn identity_for(auth: &AuthSection, name: &str) -> Result<String, IdentityError> {
    if name.starts_with("key:") || name.starts_with("jwt:") || matches!(name, "anonymous" | "stdio") {
        return Ok(name.to_owned());
    }
    let key = auth.api_keys.iter().any(|k| k.principal == name);
    match (key, auth.jwt.is_some()) {
        (true, true) => Err(IdentityError::Ambiguous(name.to_owned())),
        (true, false) => Ok(format!("key:{name}")),
        (false, true) => Ok(format!("jwt:{name}")),
        (false, false) => Err(IdentityError::Unknown(name.to_owned())),
    }
}

/// Why [`identity_for`] cannot tell which principal a name means.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IdentityError {
    /// Both an API key and a JWT subject could have it.
    #[error("`{0}` could be the API key `{0}` or a JWT subject `{0}`: write `key:{0}` or `jwt:{0}`")]
    Ambiguous(String),
    /// Nothing can authenticate as it.
    #[error("no API key is named `{0}` and no [auth.jwt] is configured")]
    Unknown(String),
}

// === impl AuthError ===

impl AuthError {
    /// The `reason` label of `mcp_gateway_auth_failures_total`.
    pub fn reason(&self) -> &'static str {
        match self {
            AuthError::Missing => "missing",
            AuthError::UnknownKey => "unknown_key",
            AuthError::TwoCredentials => "two_credentials",
            AuthError::Invalid(_) => "invalid",
            AuthError::Expired => "expired",
            AuthError::NotYetValid => "not_yet_valid",
            AuthError::Audience => "audience",
            AuthError::Issuer => "issuer",
            AuthError::InsufficientScope => "insufficient_scope",
            AuthError::Keys(_) => "keys_unavailable",
        }
    }

    /// The HTTP status: 401, 403 for a missing scope, 503 when the keys
    /// cannot be fetched (not the client's fault).
    pub fn status(&self) -> u16 {
        match self {
            AuthError::InsufficientScope => 403,
            AuthError::Keys(_) => 503,
            _ => 401,
        }
    }
}

// === impl Authenticator ===

impl std::fmt::Debug for Authenticator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Authenticator")
            .field("mode", &self.mode)
            .field("api_keys", &self.api_keys.len())
            .field("jwt", &self.jwt.is_some())
            .finish_non_exhaustive()
    }
}

/// What [`Authenticator::decide`] could tell at once.
#[derive(Debug)]
pub enum Decided<'t> {
    /// Decided: the principal, or why not.
    Now(Result<Arc<Principal>, AuthError>),
    /// A bearer JWT, for [`Authenticator::verify_jwt`].
    Jwt(&'t str),
}

impl Authenticator {
    /// Builds it from a validated `[auth]` (see `config::validate_auth`).
    pub fn new(auth: &AuthSection, http: reqwest::Client) -> Result<Self, AuthSetupError> {
        let resource = auth.resource.clone().unwrap_or_default();
        let api_keys = auth
            .api_keys
            .iter()
            .map(|k| {
                let mut hash = [0u8; 32];
                for (i, b) in hash.iter_mut().enumerate() {
                    *b = u8::from_str_radix(&k.sha256[2 * i..2 * i + 2], 16).unwrap_or(0);
                }
                let groups = k.groups.iter().map(|g| Arc::from(g.as_str())).collect();
                let p = Principal::new(&k.principal, Via::ApiKey, groups, Box::new([]));
                (hash, Arc::new(p))
            })
            .collect();
        let jwt = auth.jwt.as_ref().map(|j| Jwt::new(j, &resource, http)).transpose()?;
        let mut servers = auth.jwt.as_ref().map(|j| j.authorization_servers.clone()).unwrap_or_default();
        if servers.is_empty()
            && let Some(j) = &auth.jwt
        {
            servers.push(j.issuer.clone());
        }
        let scopes = if auth.scopes_supported.is_empty() { &auth.required_scopes } else { &auth.scopes_supported };
        let metadata = serde_json::json!({
            "resource": resource,
            "authorization_servers": servers,
            "scopes_supported": scopes,
            "bearer_methods_supported": ["header"],
            "resource_name": "mcp-gateway",
        })
        .to_string();
        let (metadata_url, metadata_path) = metadata_location(&resource);
        let mut sensitive: Vec<String> = ALWAYS_SENSITIVE.iter().map(|s| (*s).to_owned()).collect();
        sensitive.extend(auth.sensitive_headers.iter().map(|h| h.to_ascii_lowercase()));
        Ok(Authenticator {
            mode: auth.mode.unwrap_or(AuthMode::None),
            api_keys,
            jwt,
            anonymous: Arc::new(Principal::anonymous()),
            required_scopes: auth.required_scopes.clone(),
            metadata,
            metadata_url,
            metadata_path,
            sensitive,
        })
    }

    /// Whether clients must authenticate.
    pub fn required(&self) -> bool {
        self.mode == AuthMode::Required
    }

    /// Who presents `authorization` (the `Authorization` header) or
    /// `api_key` (`X-API-Key`). With `mode = "none"` everyone is
    /// `anonymous`, credentials or not.
    pub async fn authenticate(
        &self,
        authorization: Option<&[u8]>,
        api_key: Option<&[u8]>,
    ) -> Result<Arc<Principal>, AuthError> {
        match self.decide(authorization, api_key) {
            Decided::Now(decided) => decided,
            Decided::Jwt(token) => self.verify_jwt(token).await,
        }
    }

    /// What can be decided without waiting: everything but a bearer JWT
    /// (whose issuer's keys may have to be fetched). The hot path of every
    /// request with `mode = "none"` or an API key, so it never allocates.
    pub fn decide<'t>(&self, authorization: Option<&'t [u8]>, api_key: Option<&'t [u8]>) -> Decided<'t> {
        if self.mode == AuthMode::None {
            return Decided::Now(Ok(self.anonymous.clone()));
        }
        if authorization.is_some() && api_key.is_some() {
            return Decided::Now(Err(AuthError::TwoCredentials));
        }
        let token = match (authorization.and_then(bearer), api_key) {
            (Some(t), _) => t,
            (None, Some(k)) => match std::str::from_utf8(k) {
                Ok(k) => k.trim(),
                Err(_) => return Decided::Now(Err(AuthError::UnknownKey)),
            },
            (None, None) => return Decided::Now(Err(AuthError::Missing)),
        };
        if token.is_empty() {
            return Decided::Now(Err(AuthError::Missing));
        }
        let hash: [u8; 32] = Sha256::digest(token.as_bytes()).into();
        if let Some(p) = self.api_keys.get(&hash) {
            return Decided::Now(Ok(p.clone()));
        }
        match &self.jwt {
            Some(_) if looks_like_jwt(token) => Decided::Jwt(token),
            _ if looks_like_jwt(token) => {
                Decided::Now(Err(AuthError::Invalid("bearer JWTs are not accepted here".into())))
            }
            _ => Decided::Now(Err(AuthError::UnknownKey)),
        }
    }

    /// Verifies a bearer JWT that [`Authenticator::decide`] left to wait
    /// for, and its required scopes.
    pub async fn verify_jwt(&self, token: &str) -> Result<Arc<Principal>, AuthError> {
        let Some(jwt) = &self.jwt else {
            return Err(AuthError::Invalid("bearer JWTs are not accepted here".into()));
        };
        let p = jwt.verify(token).await?;
        if let Some(missing) = self.required_scopes.iter().find(|s| !p.scopes.iter().any(|g| &**g == *s)) {
            tracing::debug!(principal = %p.id, scope = %missing, "A token lacks a required scope.");
            return Err(AuthError::InsufficientScope);
        }
        Ok(Arc::new(p))
    }

    /// The `WWW-Authenticate` value for a refusal.
    pub fn challenge(&self, e: &AuthError) -> String {
        let mut out = format!("Bearer resource_metadata=\"{}\"", self.metadata_url);
        if !self.required_scopes.is_empty() {
            out.push_str(&format!(", scope=\"{}\"", self.required_scopes.join(" ")));
        }
        match e {
            AuthError::Missing => {}
            AuthError::InsufficientScope => out.push_str(", error=\"insufficient_scope\""),
            other => {
                // The description is ours (never token contents), quoted safely.
                let d = other.to_string().replace(['"', '\\'], "'");
                out.push_str(&format!(", error=\"invalid_token\", error_description=\"{d}\""));
            }
        }
        out
    }

    /// RFC 9728 protected-resource metadata (JSON).
    pub fn metadata(&self) -> &str {
        &self.metadata
    }

    /// The path the metadata is served at besides
    /// `/.well-known/oauth-protected-resource` (RFC 9728 §3.1: the
    /// resource's path appended).
    pub fn metadata_path(&self) -> &str {
        &self.metadata_path
    }

    /// Whether request header `name` (lower case) carries credentials.
    pub fn is_sensitive(&self, name: &str) -> bool {
        self.sensitive.iter().any(|s| s.eq_ignore_ascii_case(name))
    }
}

/// The metadata URL and path for `resource` (path insertion, RFC 9728).
fn metadata_location(resource: &str) -> (String, String) {
    const WELL_KNOWN: &str = "/.well-known/oauth-protected-resource";
    match reqwest::Url::parse(resource) {
        Ok(u) => {
            let path = u.path().trim_end_matches('/');
            let full = format!("{WELL_KNOWN}{path}");
            let origin = u.origin().ascii_serialization();
            (format!("{origin}{full}"), full)
        }
        Err(_) => (WELL_KNOWN.to_owned(), WELL_KNOWN.to_owned()),
    }
}

/// The token of `Authorization: Bearer <token>` (scheme case-insensitive).
fn bearer(value: &[u8]) -> Option<&str> {
    let v = std::str::from_utf8(value).ok()?.trim();
    let (scheme, token) = v.split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
}

/// Three base64url parts: worth a signature check.
fn looks_like_jwt(t: &str) -> bool {
    t.split('.').count() == 3 && t.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'='))
}

/// SHA-256 of an API key as the config stores it (`mcp-gateway auth
/// hash-key`).
pub fn hash_key(key: &str) -> String {
    Sha256::digest(key.trim().as_bytes()).iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use serde_json::Value;

    use super::*;

    fn keyed() -> Authenticator {
        let auth = AuthSection {
            mode: Some(AuthMode::Required),
            resource: Some("https://gw.example/mcp".into()),
            api_keys: vec![crate::config::ApiKeySection {
                principal: "ci-bot".into(),
                sha256: hash_key("k-123"),
                groups: vec!["automation".into()],
            }],
            ..AuthSection::default()
        };
        Authenticator::new(&auth, reqwest::Client::new()).unwrap()
    }

    #[tokio::test]
    async fn api_keys_by_bearer_or_header() {
        let a = keyed();
        let p = a.authenticate(Some(b"Bearer k-123"), None).await.unwrap();
        assert_eq!((&*p.id, p.via, p.in_group("automation")), ("ci-bot", Via::ApiKey, true));
        assert_eq!(a.authenticate(Some(b"bearer  k-123 "), None).await.unwrap().id, p.id);
        assert_eq!(a.authenticate(None, Some(b"k-123")).await.unwrap().id, p.id);
        assert_eq!(a.authenticate(None, None).await, Err(AuthError::Missing));
        assert_eq!(a.authenticate(Some(b"Basic abc"), None).await, Err(AuthError::Missing));
        assert_eq!(a.authenticate(Some(b"Bearer nope"), None).await, Err(AuthError::UnknownKey));
        // A JWT when no JWT is configured is refused, not mistaken for a key.
        let e = a.authenticate(Some(b"Bearer eyJh.eyJz.c2ln"), None).await.unwrap_err();
        assert_eq!(e.reason(), "invalid");
    }

    #[test]
    fn challenges_and_metadata_follow_rfc_9728() {
        let a = keyed();
        assert_eq!(a.metadata_path(), "/.well-known/oauth-protected-resource/mcp");
        let m: Value = serde_json::from_str(a.metadata()).unwrap();
        assert_eq!(m["resource"], "https://gw.example/mcp");
        assert_eq!(
            a.challenge(&AuthError::Missing),
            "Bearer resource_metadata=\"https://gw.example/.well-known/oauth-protected-resource/mcp\""
        );
        let c = a.challenge(&AuthError::Expired);
        assert!(c.ends_with(", error=\"invalid_token\", error_description=\"token expired\""), "{c}");
        assert!(a.challenge(&AuthError::InsufficientScope).contains("error=\"insufficient_scope\""));
        assert_eq!(AuthError::InsufficientScope.status(), 403);
    }

    #[tokio::test]
    async fn mode_none_is_anonymous_whatever_is_presented() {
        let a = Authenticator::new(&AuthSection::default(), reqwest::Client::new()).unwrap();
        assert!(!a.required());
        let p = a.authenticate(Some(b"Bearer whatever"), None).await.unwrap();
        assert_eq!((&*p.id, p.via), ("anonymous", Via::Anonymous));
    }

    #[test]
    fn sensitive_headers() {
        let a = keyed();
        assert!(a.is_sensitive("Authorization") && a.is_sensitive("x-api-key") && !a.is_sensitive("accept"));
    }
}
