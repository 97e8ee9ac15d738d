//! Finding the authorization server of an upstream: RFC 9728 protected
//! resource metadata (from the 401's `WWW-Authenticate`, else the
//! well-known URLs), then RFC 8414 / OpenID Connect metadata of the issuer.
//!
//! What comes back is checked before anything is sent to it: the metadata
//! must name our resource, the issuer must be the one asked for, endpoints
//! must be https (or loopback http), and PKCE S256 must be offered.

use reqwest::Url;
use reqwest::header::WWW_AUTHENTICATE;
use serde::Deserialize;

use super::OAuthError;
use crate::config::OAuthSpec;

/// Largest metadata document read.
const MAX_METADATA: usize = 256 * 1024;

/// The parameters of a `Bearer` challenge (RFC 6750 §3, RFC 9728 §5.1).
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub(crate) struct Challenge {
    /// `resource_metadata`.
    pub(crate) resource_metadata: Option<String>,
    /// `scope`.
    pub(crate) scope: Option<String>,
    /// `error`.
    pub(crate) error: Option<String>,
}

/// RFC 9728 protected resource metadata (what the gateway reads of it).
#[derive(Debug, Clone, Deserialize)]
pub(crate) struct ResourceMetadata {
    /// The resource identifier.
    pub(crate) resource: String,
    /// Issuers that may issue tokens for it.
    #[serde(default)]
    pub(crate) authorization_servers: Vec<String>,
    /// Scopes it knows.
    #[serde(default)]
    pub(crate) scopes_supported: Vec<String>,
}

/// RFC 8414 authorization server metadata (what the gateway uses).
#[derive(Debug, Clone, Deserialize)]
pub(crate) struct ServerMetadata {
    /// Its issuer identifier.
    pub(crate) issuer: String,
    /// Where a person logs in.
    #[serde(default)]
    pub(crate) authorization_endpoint: Option<String>,
    /// Where codes, refresh tokens and client credentials become tokens.
    pub(crate) token_endpoint: String,
    /// RFC 7591 dynamic client registration.
    #[serde(default)]
    pub(crate) registration_endpoint: Option<String>,
    /// RFC 7009 revocation.
    #[serde(default)]
    pub(crate) revocation_endpoint: Option<String>,
    /// PKCE methods (MCP: S256 required; absent means no PKCE).
    #[serde(default)]
    pub(crate) code_challenge_methods_supported: Vec<String>,
    /// RFC 9207: the redirect carries `iss`.
    #[serde(default)]
    pub(crate) authorization_response_iss_parameter_supported: bool,
}

/// The outcome of discovery.
#[derive(Debug, Clone)]
pub(crate) struct Discovered {
    /// The authorization server.
    pub(crate) server: ServerMetadata,
    /// Scopes to request when none are configured: the challenge's, else
    /// the resource's `scopes_supported`.
    pub(crate) scopes: Vec<String>,
    /// The RFC 8707 resource to ask tokens for: the configured one, or the
    /// one the metadata names when that is a same-origin prefix of it.
    pub(crate) resource: String,
}

/// Parses the `Bearer` challenge of a `WWW-Authenticate` value (other
/// schemes in the same header are skipped).
pub(crate) fn parse_challenge(value: &str) -> Option<Challenge> {
    let start = find_scheme(value, "bearer")?;
    let mut rest = value[start + "bearer".len()..].trim_start();
    let mut c = Challenge::default();
    while let Some(eq) = rest.find('=') {
        let name = rest[..eq].trim().trim_start_matches(',').trim().to_ascii_lowercase();
        if name.contains(' ') {
            break; // the next scheme began
        }
        rest = rest[eq + 1..].trim_start();
        let value;
        if let Some(quoted) = rest.strip_prefix('"') {
            let mut out = String::new();
            let mut chars = quoted.char_indices();
            let mut end = quoted.len();
            while let Some((i, ch)) = chars.next() {
                match ch {
                    '\\' => {
                        if let Some((_, n)) = chars.next() {
                            out.push(n);
                        }
                    }
                    '"' => {
                        end = i + 1;
                        break;
                    }
                    _ => out.push(ch),
                }
            }
            value = out;
            rest = &quoted[end.min(quoted.len())..];
        } else {
            let end = rest.find(',').unwrap_or(rest.len());
            value = rest[..end].trim().to_owned();
            rest = &rest[end..];
        }
        match name.as_str() {
            "resource_metadata" => c.resource_metadata = Some(value),
            "scope" => c.scope = Some(value),
            "error" => c.error = Some(value),
            _ => {}
        }
        rest = rest.trim_start().trim_start_matches(',').trim_start();
        if rest.is_empty() {
            break;
        }
    }
    Some(c)
}

/// Where `scheme` starts as a whole word, case-insensitively.
fn find_scheme(value: &str, scheme: &str) -> Option<usize> {
    let lower = value.to_ascii_lowercase();
    let mut from = 0;
    while let Some(i) = lower[from..].find(scheme).map(|i| i + from) {
        let before_ok = i == 0 || matches!(lower.as_bytes()[i - 1], b' ' | b',');
        let after_ok = lower.as_bytes().get(i + scheme.len()).is_none_or(|b| *b == b' ');
        if before_ok && after_ok {
            return Some(i);
        }
        from = i + scheme.len();
    }
    None
}

/// RFC 9728 §3.1: the path-aware well-known URL first, then the root one.
pub(crate) fn resource_metadata_urls(resource: &Url) -> Vec<Url> {
    let mut urls = Vec::new();
    let path = resource.path().trim_end_matches('/');
    let mut base = resource.clone();
    base.set_query(None);
    base.set_fragment(None);
    if !path.is_empty() {
        let mut u = base.clone();
        u.set_path(&format!("/.well-known/oauth-protected-resource{path}"));
        urls.push(u);
    }
    base.set_path("/.well-known/oauth-protected-resource");
    urls.push(base);
    urls
}

/// Where an issuer's metadata may be, in the order MCP gives: RFC 8414
/// path insertion, OIDC path insertion, OIDC path appending (for an issuer
/// without a path: RFC 8414, then OIDC).
pub(crate) fn server_metadata_urls(issuer: &Url) -> Vec<Url> {
    let path = issuer.path().trim_end_matches('/');
    let at = |p: String| {
        let mut u = issuer.clone();
        u.set_path(&p);
        u.set_query(None);
        u
    };
    if path.is_empty() {
        vec![at("/.well-known/oauth-authorization-server".into()), at("/.well-known/openid-configuration".into())]
    } else {
        vec![
            at(format!("/.well-known/oauth-authorization-server{path}")),
            at(format!("/.well-known/openid-configuration{path}")),
            at(format!("{path}/.well-known/openid-configuration")),
        ]
    }
}

/// Sends an unauthenticated `ping` to the MCP endpoint for its 401
/// challenge (a protected server refuses before reading the body).
pub(crate) async fn probe(http: &reqwest::Client, url: &str) -> Option<Challenge> {
    let resp = http
        .post(url)
        .header(reqwest::header::ACCEPT, "application/json, text/event-stream")
        .header(reqwest::header::CONTENT_TYPE, "application/json")
        .body(r#"{"jsonrpc":"2.0","id":0,"method":"ping"}"#)
        .send()
        .await
        .ok()?;
    if resp.status() != reqwest::StatusCode::UNAUTHORIZED {
        return None;
    }
    resp.headers().get_all(WWW_AUTHENTICATE).iter().filter_map(|v| v.to_str().ok()).find_map(parse_challenge)
}

/// Finds and checks the upstream's authorization server.
pub(crate) async fn discover(
    http: &reqwest::Client,
    spec: &OAuthSpec,
    challenge: Option<Challenge>,
) -> Result<Discovered, OAuthError> {
    let fail = |m: String| OAuthError::Discovery { upstream: spec.upstream.clone(), message: m };
    let challenge = match challenge {
        Some(c) => Some(c),
        None => probe(http, &spec.url).await,
    };
    let challenge_scopes = challenge.as_ref().and_then(|c| c.scope.as_deref()).map(split_scopes);
    let (issuer, resource_scopes, resource) = match &spec.authorization_server {
        Some(issuer) => (issuer.clone(), Vec::new(), spec.resource.clone()),
        None => {
            let meta = resource_metadata(http, spec, challenge.as_ref()).await?;
            let issuer = meta
                .authorization_servers
                .first()
                .ok_or_else(|| fail("its metadata names no authorization server".into()))?
                .clone();
            (issuer, meta.scopes_supported, meta.resource.trim_end_matches('/').to_owned())
        }
    };
    let issuer_url = Url::parse(&issuer).map_err(|_| fail(format!("bad issuer URL {issuer:?}")))?;
    secure(&issuer_url).map_err(|e| fail(e.to_string()))?;
    let mut tried = Vec::new();
    let mut server = None;
    for u in server_metadata_urls(&issuer_url) {
        match fetch_json::<ServerMetadata>(http, &u).await {
            Ok(m) => {
                server = Some(m);
                break;
            }
            Err(e) => tried.push(format!("{u}: {e}")),
        }
    }
    let server = server.ok_or_else(|| {
        fail(format!("no authorization server metadata (RFC 8414) for {issuer}; tried {}", tried.join("; ")))
    })?;
    if !same_issuer(&server.issuer, &issuer) {
        return Err(fail(format!("the metadata of {issuer} names issuer {:?}", server.issuer)));
    }
    for e in
        [Some(&server.token_endpoint), server.authorization_endpoint.as_ref(), server.registration_endpoint.as_ref()]
            .into_iter()
            .flatten()
    {
        let u = Url::parse(e).map_err(|_| fail(format!("bad endpoint URL {e:?}")))?;
        secure(&u).map_err(|e| fail(e.to_string()))?;
    }
    let scopes = match challenge_scopes {
        Some(s) if !s.is_empty() => s,
        _ => resource_scopes,
    };
    Ok(Discovered { server, scopes, resource })
}

/// The upstream's RFC 9728 protected resource metadata: from the
/// challenge's `resource_metadata` URL, else the well-known ones; refused
/// when it is for another resource.
pub(crate) async fn resource_metadata(
    http: &reqwest::Client,
    spec: &OAuthSpec,
    challenge: Option<&Challenge>,
) -> Result<ResourceMetadata, OAuthError> {
    let fail = |m: String| OAuthError::Discovery { upstream: spec.upstream.clone(), message: m };
    let resource_url = Url::parse(&spec.url).map_err(|e| fail(e.to_string()))?;
    let mut candidates = Vec::new();
    if let Some(u) = challenge.and_then(|c| c.resource_metadata.as_deref()) {
        candidates.push(Url::parse(u).map_err(|_| fail(format!("bad resource_metadata URL {u:?}")))?);
    }
    candidates.extend(resource_metadata_urls(&resource_url));
    let mut tried = Vec::new();
    let mut found = None;
    for u in candidates {
        match fetch_json::<ResourceMetadata>(http, &u).await {
            Ok(m) => {
                found = Some(m);
                break;
            }
            Err(e) => tried.push(format!("{u}: {e}")),
        }
    }
    let meta = found
        .ok_or_else(|| fail(format!("no protected resource metadata (RFC 9728) found; tried {}", tried.join("; "))))?;
    // RFC 9728 §3.3: metadata for another resource must not be used (it
    // would send our users to someone else's server). Metadata from the
    // root fallback names the origin: a same-origin prefix of our resource
    // is the same protected resource, and tokens are then asked for the
    // resource it names.
    if !resource_allowed(&spec.resource, &meta.resource) {
        return Err(fail(format!(
            "its metadata is for resource {:?}, not {:?}; set `resource` if that is right",
            meta.resource, spec.resource
        )));
    }
    Ok(meta)
}

/// Whether two issuer identifiers name the same authorization server (as
/// discovery compares them: a trailing slash aside).
pub(crate) fn same_issuer(a: &str, b: &str) -> bool {
    a.trim_end_matches('/') == b.trim_end_matches('/')
}

/// Whether metadata naming `advertised` may serve `configured`: the same
/// origin, and `advertised`'s path a whole-segment prefix of ours (what the
/// official TypeScript SDK accepts too).
fn resource_allowed(configured: &str, advertised: &str) -> bool {
    let (Ok(ours), Ok(theirs)) = (Url::parse(configured), Url::parse(advertised)) else { return false };
    if ours.origin() != theirs.origin() {
        return false;
    }
    let (ours, theirs) = (ours.path().trim_end_matches('/'), theirs.path().trim_end_matches('/'));
    ours == theirs || ours.strip_prefix(theirs).is_some_and(|rest| rest.starts_with('/'))
}

/// Authorization server endpoints must be https, except on loopback.
fn secure(u: &Url) -> Result<(), Insecure> {
    let host = u.host_str().unwrap_or("");
    let ip = host.trim_start_matches('[').trim_end_matches(']').parse::<std::net::IpAddr>();
    let loopback = host == "localhost" || ip.is_ok_and(|ip| ip.is_loopback());
    if u.scheme() == "https" || (u.scheme() == "http" && loopback) { Ok(()) } else { Err(Insecure(u.clone())) }
}

/// An OAuth endpoint that is neither https nor on loopback.
#[derive(Debug, thiserror::Error)]
#[error("{0} is not https (OAuth endpoints must be, except on loopback)")]
pub(crate) struct Insecure(Url);

/// Why a metadata document or an authorization server's answer could not
/// be read.
#[derive(Debug, thiserror::Error)]
pub(crate) enum FetchError {
    /// The request or the body failed (the URL stripped: it may hold
    /// secrets).
    #[error("{0}")]
    Http(reqwest::Error),
    /// A status other than 2xx.
    #[error("HTTP {0}")]
    Status(u16),
    /// A body over the bound.
    #[error("answer larger than {0} bytes")]
    TooLarge(usize),
    /// Not the JSON expected.
    #[error("not the expected JSON: {0}")]
    Json(#[source] serde_json::Error),
}

impl From<reqwest::Error> for FetchError {
    fn from(e: reqwest::Error) -> Self {
        FetchError::Http(e.without_url())
    }
}

/// Splits a space-separated scope string.
pub(crate) fn split_scopes(s: &str) -> Vec<String> {
    s.split_ascii_whitespace().map(str::to_owned).collect()
}

async fn fetch_json<T: serde::de::DeserializeOwned>(http: &reqwest::Client, url: &Url) -> Result<T, FetchError> {
    let resp = http.get(url.clone()).header(reqwest::header::ACCEPT, "application/json").send().await?;
    if !resp.status().is_success() {
        return Err(FetchError::Status(resp.status().as_u16()));
    }
    let body = read_limited(resp, MAX_METADATA).await?;
    serde_json::from_slice(&body).map_err(FetchError::Json)
}

/// Reads a body of at most `max` bytes.
pub(crate) async fn read_limited(mut resp: reqwest::Response, max: usize) -> Result<Vec<u8>, FetchError> {
    let mut body = Vec::new();
    while let Some(chunk) = resp.chunk().await? {
        if body.len() + chunk.len() > max {
            return Err(FetchError::TooLarge(max));
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bearer_challenges_are_parsed_with_quotes_escapes_and_other_schemes() {
        let c = parse_challenge(
            r#"Bearer error="insufficient_scope", scope="mcp:tools mcp:admin", resource_metadata="http://a/.well-known/oauth-protected-resource/mcp""#,
        )
        .unwrap();
        assert_eq!(c.error.as_deref(), Some("insufficient_scope"));
        assert_eq!(c.scope.as_deref(), Some("mcp:tools mcp:admin"));
        assert_eq!(c.resource_metadata.as_deref(), Some("http://a/.well-known/oauth-protected-resource/mcp"));
        let c = parse_challenge(r#"Basic realm="x", Bearer realm="a\"b", error=invalid_token"#).unwrap();
        assert_eq!(c.error.as_deref(), Some("invalid_token"));
        assert_eq!(parse_challenge("bearer").unwrap(), Challenge::default());
        assert!(parse_challenge(r#"Basic realm="bearer""#).is_none());
        assert!(parse_challenge("Bearerish x=1").is_none());
    }

    #[test]
    fn well_known_urls_follow_rfc_9728_and_8414() {
        let u = |s: &str| Url::parse(s).unwrap();
        let prm: Vec<_> =
            resource_metadata_urls(&u("https://h:8443/api/mcp/?q=1")).iter().map(Url::to_string).collect();
        assert_eq!(
            prm,
            [
                "https://h:8443/.well-known/oauth-protected-resource/api/mcp",
                "https://h:8443/.well-known/oauth-protected-resource"
            ]
        );
        let root: Vec<_> = resource_metadata_urls(&u("https://h/")).iter().map(Url::to_string).collect();
        assert_eq!(root, ["https://h/.well-known/oauth-protected-resource"]);
        let plain: Vec<_> = server_metadata_urls(&u("https://as")).iter().map(Url::to_string).collect();
        assert_eq!(
            plain,
            ["https://as/.well-known/oauth-authorization-server", "https://as/.well-known/openid-configuration"]
        );
        let tenant: Vec<_> = server_metadata_urls(&u("https://as/t/1")).iter().map(Url::to_string).collect();
        assert_eq!(
            tenant,
            [
                "https://as/.well-known/oauth-authorization-server/t/1",
                "https://as/.well-known/openid-configuration/t/1",
                "https://as/t/1/.well-known/openid-configuration",
            ]
        );
    }

    #[test]
    fn metadata_may_name_our_resource_or_a_same_origin_prefix_of_it() {
        let ours = "https://h:8443/api/mcp";
        for ok in ["https://h:8443/api/mcp", "https://h:8443/api/mcp/", "https://h:8443", "https://h:8443/api"] {
            assert!(resource_allowed(ours, ok), "{ok}");
        }
        for bad in [
            "https://h:8444/api/mcp",
            "http://h:8443/api/mcp",
            "https://evil/api/mcp",
            "https://h:8443/ap",
            "https://h:8443/api/mcp/x",
            "nope",
        ] {
            assert!(!resource_allowed(ours, bad), "{bad}");
        }
    }

    #[test]
    fn only_https_or_loopback_endpoints_are_used() {
        for ok in ["https://as.example/token", "http://127.0.0.1:9/token", "http://localhost/t", "http://[::1]/t"] {
            assert!(secure(&Url::parse(ok).unwrap()).is_ok(), "{ok}");
        }
        for bad in ["http://as.example/token", "http://10.0.0.1/token", "ftp://127.0.0.1/x"] {
            assert!(secure(&Url::parse(bad).unwrap()).is_err(), "{bad}");
        }
    }
}
