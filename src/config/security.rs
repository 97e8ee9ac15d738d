//! The serde structs of the security sections (docs/design.md D9): `[auth]`,
//! `[[access]]`, `[pinning]`, `[rules]` and `[limits]`.

use std::collections::{BTreeMap, HashSet};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use globset::Glob;
use serde::Deserialize;

use super::error::ConfigError;
use super::filter::{ToolFilter, ToolMatcher};

/// `[auth]`: how clients prove who they are.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AuthSection {
    /// `"none"` accepts every client as `anonymous`; `"required"` needs an
    /// API key or a JWT. Default: `"required"` when `api_keys` or `jwt` are
    /// set; otherwise `"none"`, which is refused on a listener that is not
    /// loopback unless written out.
    pub mode: Option<AuthMode>,
    /// This gateway's canonical resource URI (RFC 8707/9728): the audience
    /// a JWT must carry and the `resource` of the protected-resource
    /// metadata. Default `http://<gateway.listen>/mcp`.
    pub resource: Option<String>,
    /// Scopes every JWT must carry (403 `insufficient_scope` otherwise).
    pub required_scopes: Vec<String>,
    /// `scopes_supported` in the protected-resource metadata (default: the
    /// required scopes).
    pub scopes_supported: Vec<String>,
    /// API keys, stored as SHA-256 hashes (`mcp-gateway auth hash-key`).
    pub api_keys: Vec<ApiKeySection>,
    /// OAuth 2.1 bearer JWTs.
    pub jwt: Option<JwtSection>,
    /// Request headers treated like `Authorization`: never sent upstream
    /// and never logged (`authorization`, `cookie`, `x-api-key` always are).
    pub sensitive_headers: Vec<String>,
    /// Groups whose principals may read `/metrics` and `/status` on the
    /// main listener (they name every tool, hidden ones included). Others
    /// get 403; `[admin] listen` is unaffected. Default `["admin"]`.
    #[serde(default = "default_admin_groups")]
    pub admin_groups: Vec<String>,
}

fn default_admin_groups() -> Vec<String> {
    vec!["admin".to_owned()]
}

impl Default for AuthSection {
    fn default() -> Self {
        AuthSection {
            mode: None,
            resource: None,
            required_scopes: Vec::new(),
            scopes_supported: Vec::new(),
            api_keys: Vec::new(),
            jwt: None,
            sensitive_headers: Vec::new(),
            admin_groups: default_admin_groups(),
        }
    }
}

/// `[upstreams.<id>.oauth]`: how the gateway gets its own token for an
/// OAuth-protected upstream (never the client's: no passthrough).
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OAuthSection {
    /// `authorization_code` (a person logs in once with `mcp-gateway auth
    /// login`; the refresh token keeps it going) or `client_credentials`
    /// (a confidential client, no person).
    pub grant: OAuthGrant,
    /// A pre-registered client id. Required for `client_credentials`;
    /// without it `auth login` registers a client dynamically (RFC 7591).
    #[serde(default)]
    pub client_id: Option<String>,
    /// Its secret (use `${NAME}` from the secrets file).
    #[serde(default)]
    pub client_secret: Option<String>,
    /// How the secret is sent to the token endpoint: `client_secret_basic`
    /// (default with a secret) or `client_secret_post`.
    #[serde(default)]
    pub token_endpoint_auth: Option<TokenEndpointAuth>,
    /// Scopes to ask for. Default: the `scope` of the upstream's 401, else
    /// its metadata's `scopes_supported`, else none.
    #[serde(default)]
    pub scopes: Vec<String>,
    /// The upstream's canonical resource URI (RFC 8707), sent as `resource`.
    /// Default: `url` without a trailing slash, query or fragment.
    #[serde(default)]
    pub resource: Option<String>,
    /// The authorization server's issuer URL, skipping RFC 9728 discovery.
    #[serde(default)]
    pub authorization_server: Option<String>,
    /// One token per client principal (the upstream sees each user as
    /// themselves): `auth login <id> --principal NAME` for each, and once
    /// without `--principal` for the gateway's own listing connection.
    /// Calls of a principal without a token are refused. Default `false`.
    #[serde(default)]
    pub per_principal: bool,
    /// Port of the login callback (`http://127.0.0.1:<port>/callback`).
    /// Default 0: any free port (fine for dynamic registration and for
    /// servers that follow RFC 8252 §7.3); set it for a pre-registered
    /// client whose redirect URI has a fixed port.
    #[serde(default)]
    pub redirect_port: u16,
}

/// `[upstreams.<id>.oauth] grant`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OAuthGrant {
    /// Authorization code with PKCE, through `mcp-gateway auth login`.
    AuthorizationCode,
    /// Client credentials (a confidential client).
    ClientCredentials,
}

/// How a client secret reaches the token endpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TokenEndpointAuth {
    /// HTTP Basic.
    ClientSecretBasic,
    /// Form fields.
    ClientSecretPost,
}

/// `[auth] mode`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum AuthMode {
    /// Anyone is `anonymous`.
    None,
    /// An API key or a JWT is required.
    Required,
}

/// `[[auth.api_keys]]`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApiKeySection {
    /// Who presents it (audit log, `[[access]]`, rate limits).
    pub principal: String,
    /// Hex SHA-256 of the key (the key itself is never stored).
    pub sha256: String,
    /// Groups for `[[access]]`.
    #[serde(default)]
    pub groups: Vec<String>,
}

/// `[auth.jwt]`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JwtSection {
    /// Required `iss`.
    pub issuer: String,
    /// Where the signing keys are (JWKS), fetched and cached.
    pub jwks_url: Option<String>,
    /// Or one public key in a PEM file (relative to the config file).
    pub public_key_pem: Option<PathBuf>,
    /// Required `aud` (default: `[auth] resource`).
    pub audience: Option<String>,
    /// Accepted signature algorithms. Default `["RS256", "ES256"]`.
    #[serde(default = "default_algorithms")]
    pub algorithms: Vec<String>,
    /// The claim naming the principal. Default `sub`.
    #[serde(default = "default_principal_claim")]
    pub principal_claim: String,
    /// The claim listing groups (array or space-separated). Default `groups`.
    #[serde(default = "default_groups_claim")]
    pub groups_claim: String,
    /// Clock skew allowed on `exp` and `nbf`. Default 30s.
    #[serde(default = "default_leeway", with = "humantime_serde")]
    pub leeway: Duration,
    /// The JWKS is fetched again after this long (and at most once per
    /// 30 s for a token whose `kid` it lacks). Default 10m.
    #[serde(default = "default_jwks_refresh", with = "humantime_serde")]
    pub jwks_refresh: Duration,
    /// `authorization_servers` in the protected-resource metadata
    /// (default: the issuer).
    #[serde(default)]
    pub authorization_servers: Vec<String>,
}

/// `[[access]]`: what a set of principals may see and call.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AccessSection {
    /// Principal ids this entry applies to (`"*"`: every principal).
    pub principals: Vec<String>,
    /// Groups this entry applies to.
    pub groups: Vec<String>,
    /// Globs over namespaced tool names (empty `allow`: all).
    pub tools: ToolFilter,
    /// Globs over namespaced prompt names.
    pub prompts: ToolFilter,
    /// Globs over exposed resource URIs (and resource templates).
    pub resources: ToolFilter,
    /// Constraints on argument values.
    pub arguments: Vec<ArgumentRule>,
}

/// `[[access.arguments]]`: tool arguments that must stay under a path
/// prefix. The check fails closed: a named argument that is present must be
/// a string or an array of strings, every one under a prefix; `null`,
/// another type, or `arguments` that are not an object are refused. An
/// absent argument passes.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ArgumentRule {
    /// Glob over tool names (canonical `<upstream>__<tool>`; see docs/security.md).
    pub tools: String,
    /// The top-level argument(s): `"path"` or `["path", "paths", …]`.
    #[serde(deserialize_with = "one_or_many")]
    pub argument: Vec<String>,
    /// The value, made lexically normal (`.` and `..` resolved), must
    /// start with one of these (whole path components). A relative prefix
    /// is taken from the config file's folder when the config is loaded.
    pub prefix: Vec<String>,
    /// For a stdio upstream (local files): check the canonical path of the
    /// longest prefix of the value that exists (symlinks followed), not
    /// only its lexical form. A check at call time: a link made between the
    /// check and the tool's run is not seen. Ignored for network
    /// upstreams, whose files the gateway cannot see. Default `false`.
    #[serde(default)]
    pub resolve: bool,
}

/// A string or an array of strings, as a list.
fn one_or_many<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum OneOrMany {
        One(String),
        Many(Vec<String>),
    }
    Ok(match OneOrMany::deserialize(d)? {
        OneOrMany::One(s) => vec![s],
        OneOrMany::Many(v) => v,
    })
}

/// `[pinning]`: tool definitions pinned by hash.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PinningSection {
    /// The pin store (JSON, relative to the config file). Default: none
    /// (no pinning).
    pub file: Option<PathBuf>,
    /// What a changed tool does until approved: `hide` (default) or
    /// `refuse` (listed, but calls are refused).
    pub on_change: QuarantineMode,
}

/// `[pinning] on_change`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum QuarantineMode {
    /// Left out of `tools/list`; a call is answered like an unknown tool.
    #[default]
    Hide,
    /// Listed, but a call is refused with a message.
    Refuse,
}

/// `[rules]`: sequence rules over tool calls.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RulesSection {
    /// The rules file (relative to the config file). Default: none.
    pub file: Option<PathBuf>,
    /// How often the file is checked for changes. Default 2s.
    #[serde(with = "humantime_serde")]
    pub reload_interval: Duration,
}

impl Default for RulesSection {
    fn default() -> Self {
        RulesSection { file: None, reload_interval: Duration::from_secs(2) }
    }
}

/// `[limits]`: rate limits and result size caps.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LimitsSection {
    /// Every principal's calls (`tools/call`), all tools together.
    pub per_principal: Option<RateSection>,
    /// Per tool glob, each principal's calls of matching tools.
    pub tools: BTreeMap<String, RateSection>,
    /// Per tool glob (namespaced), the largest result passed on; the first
    /// matching glob in order of length (longest first) wins.
    pub results: BTreeMap<String, ResultCap>,
}

/// A token bucket.
#[derive(Debug, Clone, Copy, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RateSection {
    /// Tokens added per second.
    pub rate: f64,
    /// Bucket size (the largest burst). Default: `rate` rounded up, at least 1.
    pub burst: Option<u32>,
}

/// A result size cap.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ResultCap {
    /// Largest result in bytes (its JSON text).
    pub max_bytes: usize,
    /// `truncate` (default: text content cut, with a notice) or `refuse`.
    #[serde(default)]
    pub action: OversizeAction,
}

/// What happens to a result over its cap.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum OversizeAction {
    /// Text content is cut to fit, with a notice for the agent.
    #[default]
    Truncate,
    /// The call fails with a message.
    Refuse,
}

fn default_algorithms() -> Vec<String> {
    vec!["RS256".into(), "ES256".into()]
}
fn default_principal_claim() -> String {
    "sub".into()
}
fn default_groups_claim() -> String {
    "groups".into()
}
fn default_leeway() -> Duration {
    Duration::from_secs(30)
}
fn default_jwks_refresh() -> Duration {
    Duration::from_secs(600)
}

// === impl AuthSection ===

impl AuthSection {
    /// Checks the section for a gateway listening on `listen` (which
    /// decides whether no authentication is allowed, and the default
    /// `resource`); an error names a key of the section.
    pub fn validate(&self, listen: SocketAddr) -> Result<(), ConfigError> {
        let configured = self.configured();
        match self.mode {
            Some(AuthMode::None) if configured => {
                return Err(ConfigError::new(&["mode"], "is \"none\" but api_keys or jwt are configured"));
            }
            Some(AuthMode::Required) if !configured => {
                return Err(ConfigError::new(&["mode"], "is \"required\" but neither api_keys nor jwt is configured"));
            }
            None if !configured && !listen.ip().is_loopback() => {
                return Err(ConfigError::new(
                    &[],
                    format!(
                        "the gateway listens on {listen} (not loopback) without client authentication: configure \
                         [[auth.api_keys]] or [auth.jwt], or write `mode = \"none\"` to accept anyone"
                    ),
                ));
            }
            _ => {}
        }
        match reqwest::Url::parse(&self.resource_for(listen)) {
            Ok(u) if matches!(u.scheme(), "http" | "https") && u.fragment().is_none() => {}
            _ => return Err(ConfigError::new(&["resource"], "must be an absolute http(s) URL without a fragment")),
        }
        let mut seen = HashSet::new();
        for (i, k) in self.api_keys.iter().enumerate() {
            let at = |f: &str, msg: &str| Err(ConfigError::new(&["api_keys", &i.to_string(), f], msg));
            if k.principal.trim().is_empty() {
                return at("principal", "must not be empty");
            }
            if k.principal.contains(':') {
                // `key:<name>` and `jwt:<sub>` name one kind of principal in
                // [[access]]; a `:` in a key's name would blur that.
                return at("principal", "must not contain `:`");
            }
            if k.sha256.len() != 64 || !k.sha256.bytes().all(|b| b.is_ascii_hexdigit()) {
                return at("sha256", "must be 64 hex digits (`mcp-gateway auth hash-key` prints it)");
            }
            if !seen.insert(k.sha256.to_ascii_lowercase()) {
                return at("sha256", "the same key is listed twice");
            }
        }
        if let Some(jwt) = &self.jwt {
            jwt.validate().map_err(|e| e.under(&["jwt"]))?;
        }
        for h in &self.sensitive_headers {
            if reqwest::header::HeaderName::try_from(h.as_str()).is_err() {
                return Err(ConfigError::new(&["sensitive_headers"], format!("`{h}` is not a header name")));
            }
        }
        Ok(())
    }

    /// The section as the gateway uses it: `mode` made explicit when keys or
    /// a JWT are configured, `resource` filled in, and the PEM path
    /// resolved against `base` (the config file's folder).
    pub(super) fn resolve(mut self, listen: SocketAddr, base: &Path) -> AuthSection {
        // `None` stays `None` (anonymous because the listener is loopback), so
        // a `--listen` elsewhere can still be refused (`Config::check_exposure`).
        if self.configured() {
            self.mode = Some(AuthMode::Required);
        }
        self.resource = Some(self.resource_for(listen).trim_end_matches('/').to_owned());
        if let Some(jwt) = &mut self.jwt {
            jwt.public_key_pem = jwt.public_key_pem.take().map(|p| base.join(p));
        }
        self
    }

    /// Whether API keys or a JWT are configured.
    fn configured(&self) -> bool {
        !self.api_keys.is_empty() || self.jwt.is_some()
    }

    /// `resource` as written, or the default for `listen`.
    fn resource_for(&self, listen: SocketAddr) -> String {
        self.resource.clone().unwrap_or_else(|| format!("http://{listen}/mcp"))
    }
}

// === impl JwtSection ===

impl JwtSection {
    /// Checks the key source, the issuer and the algorithms; an error names
    /// a key of the section.
    pub fn validate(&self) -> Result<(), ConfigError> {
        match (&self.jwks_url, &self.public_key_pem) {
            (Some(u), None) => {
                if !reqwest::Url::parse(u).is_ok_and(|u| matches!(u.scheme(), "http" | "https")) {
                    return Err(ConfigError::new(&["jwks_url"], "must be an absolute http(s) URL"));
                }
            }
            (None, Some(_)) => {}
            _ => return Err(ConfigError::new(&[], "set exactly one of `jwks_url` and `public_key_pem`")),
        }
        if self.issuer.is_empty() {
            return Err(ConfigError::new(&["issuer"], "must not be empty"));
        }
        for a in &self.algorithms {
            if !matches!(
                a.as_str(),
                "RS256" | "RS384" | "RS512" | "PS256" | "PS384" | "PS512" | "ES256" | "ES384" | "EdDSA"
            ) {
                return Err(ConfigError::new(
                    &["algorithms"],
                    format!("`{a}` is not an asymmetric JWS algorithm (RS*, PS*, ES256, ES384, EdDSA)"),
                ));
            }
        }
        Ok(())
    }
}

// === impl OAuthSection ===

impl OAuthSection {
    /// Checks what can be checked before `client_secret` is expanded; an
    /// error names a key of the section.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if let Some(r) = &self.resource {
            match reqwest::Url::parse(r) {
                Ok(u) if matches!(u.scheme(), "http" | "https") && u.fragment().is_none() => {}
                _ => return Err(ConfigError::new(&["resource"], "must be an absolute http(s) URI without a fragment")),
            }
        }
        if let Some(issuer) = &self.authorization_server {
            match reqwest::Url::parse(issuer) {
                Ok(u) if matches!(u.scheme(), "http" | "https") && u.query().is_none() && u.fragment().is_none() => {}
                _ => {
                    return Err(ConfigError::new(
                        &["authorization_server"],
                        "must be an http(s) issuer URL without query or fragment",
                    ));
                }
            }
        }
        if self.client_secret.is_some() && self.client_id.is_none() {
            return Err(ConfigError::new(&["client_secret"], "needs `client_id`"));
        }
        if self.client_id.as_deref().is_some_and(|c| c.trim().is_empty()) {
            return Err(ConfigError::new(&["client_id"], "must not be empty"));
        }
        if let Some(bad) = self.scopes.iter().find(|s| s.is_empty() || s.contains(char::is_whitespace)) {
            return Err(ConfigError::new(&["scopes"], format!("{bad:?} is not a scope (no spaces)")));
        }
        if self.grant == OAuthGrant::ClientCredentials {
            if self.client_id.is_none() || self.client_secret.is_none() {
                return Err(ConfigError::new(&["grant"], "`client_credentials` needs `client_id` and `client_secret`"));
            }
            if self.per_principal {
                return Err(ConfigError::new(
                    &["per_principal"],
                    "per-principal tokens come from `auth login`: use `grant = \"authorization_code\"`",
                ));
            }
        }
        Ok(())
    }
}

// === impl AccessSection ===

impl AccessSection {
    /// Checks one `[[access]]` entry's principals and globs; an error names
    /// a key of the entry.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.principals.is_empty() && self.groups.is_empty() {
            return Err(ConfigError::new(
                &["principals"],
                "an entry needs `principals` or `groups` (\"*\" for everyone)",
            ));
        }
        for (f, filter) in [("tools", &self.tools), ("prompts", &self.prompts), ("resources", &self.resources)] {
            ToolMatcher::new(filter).map_err(|e| ConfigError::new(&[f], e.to_string()))?;
        }
        for r in &self.arguments {
            Glob::new(&r.tools)
                .map_err(|e| ConfigError::new(&["arguments"], format!("invalid glob `{}`: {e}", r.tools)))?;
            if r.argument.is_empty() || r.argument.iter().any(String::is_empty) {
                return Err(ConfigError::new(&["arguments"], "`argument` must name at least one argument"));
            }
            if r.prefix.is_empty() {
                return Err(ConfigError::new(
                    &["arguments"],
                    format!("`{}` needs at least one `prefix`", r.argument.join("`, `")),
                ));
            }
        }
        Ok(())
    }

    /// The entry as the gateway uses it: each relative `prefix` made
    /// absolute against `base` (the config file's folder), as every other
    /// relative path in the file is. Compared as written, a relative prefix
    /// would never hold an absolute path and would deny every call.
    pub(super) fn resolve(mut self, base: &Path) -> AccessSection {
        for p in self.arguments.iter_mut().flat_map(|r| r.prefix.iter_mut()) {
            if !Path::new(p.as_str()).is_absolute() {
                *p = super::paths::absolute(base, Path::new(p.as_str())).display().to_string();
            }
        }
        self
    }
}

// === impl LimitsSection ===

impl LimitsSection {
    /// Checks the rates and globs; an error names a key of the section.
    pub fn validate(&self) -> Result<(), ConfigError> {
        const BAD_RATE: &str = "rate must be > 0 and burst ≥ 1";
        let rate_ok = |r: &RateSection| r.rate.is_finite() && r.rate > 0.0 && r.burst != Some(0);
        if self.per_principal.as_ref().is_some_and(|r| !rate_ok(r)) {
            return Err(ConfigError::new(&["per_principal"], BAD_RATE));
        }
        for (glob, r) in &self.tools {
            let at = |msg: String| ConfigError::new(&["tools", glob], msg);
            Glob::new(glob).map_err(|e| at(format!("invalid glob: {e}")))?;
            if !rate_ok(r) {
                return Err(at(BAD_RATE.into()));
            }
        }
        for (glob, c) in &self.results {
            let at = |msg: String| ConfigError::new(&["results", glob], msg);
            Glob::new(glob).map_err(|e| at(format!("invalid glob: {e}")))?;
            if c.max_bytes < 256 {
                return Err(at("max_bytes must be at least 256".into()));
            }
        }
        Ok(())
    }
}

// === impl RulesSection ===

impl RulesSection {
    /// Checks the reload interval; an error names a key of the section.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.reload_interval.is_zero() {
            return Err(ConfigError::new(&["reload_interval"], "must be greater than zero"));
        }
        Ok(())
    }
}
