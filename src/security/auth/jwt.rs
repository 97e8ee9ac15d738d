//! Bearer JWTs (docs/design.md D9): the validations of `[auth.jwt]`, and
//! the issuer's signing keys, from a PEM or fetched from a JWKS URL and
//! cached (one fetch at a time, not more often than every 30 s when a
//! token names an unknown key).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwapOption;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde_json::{Map, Value};
use tokio::time::Instant;

use super::*;
use crate::config::JwtSection;

/// A JWKS is fetched again for an unknown `kid` at most this often.
const JWKS_REFETCH_MIN: Duration = Duration::from_secs(30);
/// Largest JWKS document read.
const JWKS_MAX_BYTES: usize = 1024 * 1024;

pub(super) struct Jwt {
    /// One validation per accepted algorithm: the library wants every
    /// algorithm of a validation in the key's family.
    validations: Vec<(Algorithm, Validation)>,
    keys: Keys,
    principal_claim: String,
    groups_claim: String,
}

enum Keys {
    Pem(DecodingKey),
    Jwks(Jwks),
}

struct Jwks {
    url: String,
    http: reqwest::Client,
    refresh: Duration,
    cache: ArcSwapOption<KeyCache>,
    /// One fetch at a time; holds when the last one started.
    fetching: tokio::sync::Mutex<Option<Instant>>,
}

struct KeyCache {
    by_kid: HashMap<String, DecodingKey>,
    /// Keys without a `kid` (tried when the token has none).
    unnamed: Vec<DecodingKey>,
    fetched: Instant,
}

// === impl Jwt ===

impl Jwt {
    pub(super) fn new(j: &JwtSection, resource: &str, http: reqwest::Client) -> Result<Self, AuthSetupError> {
        let validations = j
            .algorithms
            .iter()
            .filter_map(|a| a.parse::<Algorithm>().ok())
            .map(|alg| {
                let mut v = Validation::new(alg);
                v.leeway = j.leeway.as_secs();
                v.validate_nbf = true;
                v.set_issuer(&[&j.issuer]);
                v.set_audience(&[j.audience.as_deref().unwrap_or(resource)]);
                v.set_required_spec_claims(&["exp", "iss", "aud"]);
                (alg, v)
            })
            .collect();
        let keys = match (&j.jwks_url, &j.public_key_pem) {
            (_, Some(path)) => {
                let pem = std::fs::read(path)
                    .map_err(|e| AuthSetupError(format!("cannot read public_key_pem {}: {e}", path.display())))?;
                let key = DecodingKey::from_rsa_pem(&pem)
                    .or_else(|_| DecodingKey::from_ec_pem(&pem))
                    .or_else(|_| DecodingKey::from_ed_pem(&pem))
                    .map_err(|e| AuthSetupError(format!("public_key_pem {}: {e}", path.display())))?;
                Keys::Pem(key)
            }
            (Some(url), None) => Keys::Jwks(Jwks {
                url: url.clone(),
                http,
                refresh: j.jwks_refresh,
                cache: ArcSwapOption::empty(),
                fetching: tokio::sync::Mutex::new(None),
            }),
            (None, None) => return Err(AuthSetupError("needs jwks_url or public_key_pem".into())),
        };
        Ok(Jwt { validations, keys, principal_claim: j.principal_claim.clone(), groups_claim: j.groups_claim.clone() })
    }

    pub(super) async fn verify(&self, token: &str) -> Result<Principal, AuthError> {
        let header = jsonwebtoken::decode_header(token).map_err(|e| AuthError::Invalid(e.to_string()))?;
        let validation = self
            .validations
            .iter()
            .find(|(alg, _)| *alg == header.alg)
            .map(|(_, v)| v)
            .ok_or_else(|| AuthError::Invalid(format!("algorithm {:?} is not accepted", header.alg)))?;
        let claims = match &self.keys {
            Keys::Pem(key) => self.decode(token, key, validation)?,
            Keys::Jwks(jwks) => {
                let cache = jwks.keys(header.kid.as_deref()).await?;
                let candidates: Vec<&DecodingKey> = match header.kid.as_deref() {
                    Some(kid) => cache.by_kid.get(kid).into_iter().collect(),
                    None => cache.unnamed.iter().chain(cache.by_kid.values()).collect(),
                };
                if candidates.is_empty() {
                    return Err(AuthError::Invalid("unknown signing key id".into()));
                }
                let mut last = AuthError::Invalid("no key matched".into());
                let mut found = None;
                for key in candidates {
                    match self.decode(token, key, validation) {
                        Ok(c) => {
                            found = Some(c);
                            break;
                        }
                        Err(e) => last = e,
                    }
                }
                found.ok_or(last)?
            }
        };
        let id = claims
            .get(&self.principal_claim)
            .and_then(Value::as_str)
            .filter(|s| !s.is_empty())
            .ok_or_else(|| AuthError::Invalid(format!("no `{}` claim", self.principal_claim)))?;
        let groups = strings(claims.get(&self.groups_claim));
        let mut scopes = strings(claims.get("scope"));
        scopes.extend(strings(claims.get("scp")));
        Ok(Principal::new(
            id,
            Via::Jwt,
            groups.into_iter().map(Arc::from).collect(),
            scopes.into_iter().map(Arc::from).collect(),
        ))
    }

    fn decode(&self, token: &str, key: &DecodingKey, v: &Validation) -> Result<Map<String, Value>, AuthError> {
        use jsonwebtoken::errors::ErrorKind as K;
        jsonwebtoken::decode::<Map<String, Value>>(token, key, v).map(|d| d.claims).map_err(|e| match e.kind() {
            K::ExpiredSignature => AuthError::Expired,
            K::ImmatureSignature => AuthError::NotYetValid,
            K::InvalidAudience => AuthError::Audience,
            K::InvalidIssuer => AuthError::Issuer,
            K::MissingRequiredClaim(c) if c == "aud" => AuthError::Audience,
            K::MissingRequiredClaim(c) if c == "iss" => AuthError::Issuer,
            _ => AuthError::Invalid(e.to_string()),
        })
    }
}

/// A claim that is an array of strings or a space-separated string.
fn strings(v: Option<&Value>) -> Vec<String> {
    match v {
        Some(Value::String(s)) => s.split_whitespace().map(str::to_owned).collect(),
        Some(Value::Array(a)) => a.iter().filter_map(Value::as_str).map(str::to_owned).collect(),
        _ => Vec::new(),
    }
}

// === impl Jwks ===

impl Jwks {
    /// The cached keys, fetched when missing, stale, or lacking `kid`
    /// (then at most once per [`JWKS_REFETCH_MIN`]). A failed fetch keeps
    /// serving the keys it had.
    async fn keys(&self, kid: Option<&str>) -> Result<Arc<KeyCache>, AuthError> {
        let usable = |c: &KeyCache| c.fetched.elapsed() < self.refresh && kid.is_none_or(|k| c.by_kid.contains_key(k));
        if let Some(c) = self.cache.load_full()
            && usable(&c)
        {
            return Ok(c);
        }
        let mut last = self.fetching.lock().await;
        // Another request may have fetched while this one waited.
        let current = self.cache.load_full();
        if let Some(c) = &current
            && usable(c)
        {
            return Ok(c.clone());
        }
        let stale_enough = current.as_ref().is_none_or(|c| c.fetched.elapsed() >= self.refresh);
        if !stale_enough && last.is_some_and(|t| t.elapsed() < JWKS_REFETCH_MIN) {
            // An unknown kid shortly after a fetch: do not hammer the IdP.
            return current.ok_or_else(|| AuthError::Keys("no keys yet".into()));
        }
        *last = Some(Instant::now());
        match self.fetch().await {
            Ok(fresh) => {
                let fresh = Arc::new(fresh);
                self.cache.store(Some(fresh.clone()));
                Ok(fresh)
            }
            Err(e) => {
                tracing::warn!(url = %self.url, error = %e, "Could not fetch the JWKS.");
                current.ok_or_else(|| AuthError::Keys(e.to_string()))
            }
        }
    }

    async fn fetch(&self) -> Result<KeyCache, JwksError> {
        use futures_util::StreamExt as _;
        let resp = self.http.get(&self.url).timeout(Duration::from_secs(5)).send().await.map_err(JwksError::Http)?;
        if !resp.status().is_success() {
            return Err(JwksError::Status(resp.status()));
        }
        let mut body = Vec::new();
        let mut stream = resp.bytes_stream();
        while let Some(chunk) = stream.next().await {
            let chunk = chunk.map_err(JwksError::Http)?;
            if body.len() + chunk.len() > JWKS_MAX_BYTES {
                return Err(JwksError::TooLarge);
            }
            body.extend_from_slice(&chunk);
        }
        let set: jsonwebtoken::jwk::JwkSet = serde_json::from_slice(&body).map_err(JwksError::Json)?;
        let mut cache = KeyCache { by_kid: HashMap::new(), unnamed: Vec::new(), fetched: Instant::now() };
        for jwk in &set.keys {
            // Keys we cannot use (symmetric, unknown curve) are skipped.
            let Ok(key) = DecodingKey::from_jwk(jwk) else { continue };
            if matches!(key.kind(), jsonwebtoken::DecodingKeyKind::SecretOrDer(_)) && jwk.common.key_id.is_none() {
                continue;
            }
            match &jwk.common.key_id {
                Some(kid) => {
                    cache.by_kid.insert(kid.clone(), key);
                }
                None => cache.unnamed.push(key),
            }
        }
        tracing::info!(url = %self.url, keys = set.keys.len(), "Fetched the JWKS.");
        Ok(cache)
    }
}

/// Why the signing keys could not be fetched.
#[derive(Debug, thiserror::Error)]
enum JwksError {
    #[error("{0}")]
    Http(reqwest::Error),
    #[error("HTTP {0}")]
    Status(reqwest::StatusCode),
    #[error("larger than {JWKS_MAX_BYTES} bytes")]
    TooLarge,
    #[error("not a JWKS: {0}")]
    Json(#[source] serde_json::Error),
}
