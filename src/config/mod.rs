//! `gateway.toml`: serde structs that map one-to-one to the file (docs/design.md
//! D11), and [`Config::load`], which validates them into a checked config.
//!
//! Loading goes in three steps, as pingora's config does: serde reads the
//! sections with their defaults; each section's `validate()` checks it
//! ([`FileConfig::validate`] calls them in file order); then the secrets
//! file is read, `${NAME}` expanded and paths resolved into [`Config`]. The
//! environment is passed in ([`Env`]), never read here.
//!
//! Unknown keys are errors (`deny_unknown_fields`): a mistyped resilience key
//! must not silently do nothing. Every error names the file, the line and
//! the key.
//!
//! Architecture Invariant: this module imports nothing from the rest of the
//! crate but [`crate::protocol`]-free helpers; values from the secrets file
//! are only ever held in [`Resolved`] strings whose `Debug` is redacted.

mod audit_key;
mod bridge;
mod env;
mod error;
mod file;
mod filter;
mod paths;
mod redis;
mod secrets;
mod security;
mod session_key;
mod spec;
mod upstream;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

pub use audit_key::{AUDIT_KEY_VAR, AuditKey, AuditKeyError};
pub use bridge::BridgeSection;
pub use env::Env;
pub use error::ConfigError;
pub use file::{
    AdminSection, AuditSection, FileConfig, GatewaySection, LogFormat, OtlpProtocol, ResponseMode, Traces,
    TracesSection,
};
pub use filter::{FilterError, ToolFilter, ToolMatcher};
pub use redis::{Fallback, OnUnreachable, Redis, RedisSection};
pub use secrets::{ExpandError, MASK, Redactor, Resolved, Secrets, SecretsError};
pub use security::{
    AccessSection, ApiKeySection, ArgumentRule, AuthMode, AuthSection, JwtSection, LimitsSection, OAuthGrant,
    OAuthSection, OversizeAction, PinningSection, QuarantineMode, RateSection, ResultCap, RulesSection,
    TokenEndpointAuth,
};
pub use session_key::{SESSION_KEY_PREVIOUS_VAR, SESSION_KEY_VAR, SessionKey, SessionKeyError, SessionKeys};
pub use spec::{OAuthSpec, ToolTimeouts, ToolTimeoutsError, TransportSpec, UpstreamSpec, canonical_resource, valid_id};
pub use upstream::{
    BreakerSection, HealthSection, Isolation, Replace, RetrySection, StderrLevel, TransportKind, UpstreamProtocol,
    UpstreamSection,
};

use secrets::Expander;

/// Name of the environment variable that overrides `gateway.secrets_file`.
pub const ENV_FILE_VAR: &str = "MCP_GATEWAY_ENV_FILE";

/// The namespace of the gateway's own tools (`gateway__…`); no upstream
/// may take it.
pub const BUILTIN_NAMESPACE: &str = "gateway";

/// The warm-start cache's file name when `gateway.catalog_cache` is unset.
pub const CATALOG_CACHE: &str = "catalog-cache.json";

/// A validated configuration.
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    /// The file it was loaded from.
    pub path: PathBuf,
    /// Listener and downstream settings.
    pub gateway: GatewaySection,
    /// Upstreams in id order (the catalog's deterministic order).
    pub upstreams: Vec<UpstreamSpec>,
    /// Masks secret values in text the gateway forwards (upstream stderr).
    pub redactor: Redactor,
    /// `/metrics` on a separate listener.
    pub admin: AdminSection,
    /// OTLP traces.
    pub traces: Traces,
    /// The audit log (its `path` resolved against the config file).
    pub audit: AuditSection,
    /// Client authentication (`resource` filled in, paths resolved).
    pub auth: AuthSection,
    /// `[[access]]` entries, in file order (globs checked).
    pub access: Vec<AccessSection>,
    /// Tool pinning (`file` resolved).
    pub pinning: PinningSection,
    /// Sequence rules (`file` resolved).
    pub rules: RulesSection,
    /// Rate limits and result caps (globs checked).
    pub limits: LimitsSection,
    /// The state replicas share (`[redis]`, URL expanded); None: in process.
    pub redis: Option<Redis>,
    /// Bounds of the exchanges bridged between the protocol eras.
    pub bridge: BridgeSection,
    /// Names in the secrets file (never values), sorted.
    pub secret_names: Vec<String>,
    /// The key of the audit log's argument digests
    /// (`MCP_GATEWAY_AUDIT_KEY` in the secrets file), when set.
    pub audit_key: Option<AuditKey>,
    /// The keys that seal session tokens (`MCP_GATEWAY_SESSION_KEY`, and
    /// `MCP_GATEWAY_SESSION_KEY_PREVIOUS` during a rotation), when set.
    pub session_keys: Option<SessionKeys>,
    /// The secrets file read (`MCP_GATEWAY_ENV_FILE` or
    /// `gateway.secrets_file`, resolved), which a reload watches.
    pub secrets_path: Option<PathBuf>,
}

// === impl Config ===

impl Config {
    /// Reads, parses and validates `path`, with `env` as the environment.
    pub fn load(path: &Path, env: &dyn Env) -> Result<Config, ConfigError> {
        let src = std::fs::read_to_string(path).map_err(|e| ConfigError::io(path, &e))?;
        Self::from_str(&src, path, env)
    }

    /// Parses and validates `src`, reporting errors against `path`, with
    /// `env` as the environment.
    pub fn from_str(src: &str, path: &Path, env: &dyn Env) -> Result<Config, ConfigError> {
        let file: FileConfig = toml::from_str(src).map_err(|e| ConfigError::syntax(path, src, &e))?;
        file.validate().map_err(|e| e.locate(path, src))?;
        let base = path.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
        Self::resolve(file, path, base, env).map_err(|e| e.locate(path, src))
    }

    /// A checked file made into a config: the secrets file read, `${NAME}`
    /// expanded, and paths made relative to `base` (the config file's
    /// folder), once. Errors are not located yet.
    fn resolve(file: FileConfig, path: &Path, base: &Path, env: &dyn Env) -> Result<Config, ConfigError> {
        let secrets_path = match (env.var_os(ENV_FILE_VAR).map(PathBuf::from), &file.gateway.secrets_file) {
            (Some(p), _) => Some(p),
            (None, Some(p)) => Some(base.join(p)),
            (None, None) => None,
        };
        let secrets = match (env.var_os(ENV_FILE_VAR).map(PathBuf::from), &file.gateway.secrets_file) {
            (Some(p), _) => {
                Secrets::load(&p).map_err(|e| ConfigError::plain(format!("{ENV_FILE_VAR}={}: {e}", p.display())))?
            }
            (None, Some(p)) => Secrets::load(&base.join(p))
                .map_err(|e| ConfigError::new(&["gateway", "secrets_file"], e.to_string()))?,
            (None, None) => Secrets::default(),
        };
        let audit_key = match secrets.value(AUDIT_KEY_VAR) {
            None => None,
            Some(v) => Some(AuditKey::decode(v).map_err(|e| ConfigError::plain(format!("{AUDIT_KEY_VAR}: {e}")))?),
        };
        let key = |name: &str| {
            secrets
                .value(name)
                .map(|v| SessionKey::decode(v).map_err(|e| ConfigError::plain(format!("{name}: {e}"))))
                .transpose()
        };
        let session_keys = match (key(SESSION_KEY_VAR)?, key(SESSION_KEY_PREVIOUS_VAR)?) {
            (Some(current), previous) => Some(SessionKeys { current, previous }),
            (None, None) => None,
            (None, Some(_)) => {
                return Err(ConfigError::plain(format!(
                    "{SESSION_KEY_PREVIOUS_VAR} is set without {SESSION_KEY_VAR}: the previous key only opens tokens; set the key that seals them"
                )));
            }
        };
        // One key, one use: an HMAC key must not also be an AEAD key.
        if let (Some(keys), Some(audit)) = (&session_keys, &audit_key)
            && audit.bytes() == keys.current.bytes()
        {
            return Err(ConfigError::plain(format!("{SESSION_KEY_VAR} must differ from {AUDIT_KEY_VAR}")));
        }
        let x = Expander { secrets: &secrets, env };
        let FileConfig {
            gateway,
            upstreams,
            admin,
            traces,
            audit,
            auth,
            access,
            pinning,
            rules,
            limits,
            redis,
            bridge,
        } = file;
        let redis = redis.map(|r| r.resolve(x).map_err(|e| e.under(&["redis"]))).transpose()?;
        let token_file = base.join(&gateway.token_file);
        let upstreams = upstreams
            .into_iter()
            .filter(|(_, u)| u.enabled)
            .map(|(id, u)| UpstreamSpec::new(&id, u, base, &token_file, x).map_err(|e| e.under(&["upstreams", &id])))
            .collect::<Result<_, _>>()?;
        let traces = traces.resolve(x).map_err(|e| e.under(&["traces"]))?;
        let auth = auth.resolve(gateway.listen, base);
        let access = access.into_iter().map(|a| a.resolve(base)).collect();
        let pins = pinning.file.map(|p| base.join(p));
        // Beside the pin store: one folder holds what the gateway learned.
        let catalog_cache = Some(match &gateway.catalog_cache {
            Some(p) => base.join(p),
            None => pins.as_deref().and_then(Path::parent).unwrap_or(base).join(CATALOG_CACHE),
        });
        // The cache is rewritten whole: never over a file that holds
        // something else.
        let audit_path = audit.path.as_ref().map(|p| base.join(p));
        let rules_path = rules.file.as_ref().map(|p| base.join(p));
        let others = [
            ("the config file", Some(path.to_path_buf())),
            ("the pin store", pins.clone()),
            ("gateway.token_file", Some(token_file.clone())),
            ("the secrets file", secrets_path.clone()),
            ("the audit log", audit_path),
            ("the rules file", rules_path),
        ];
        if let Some((what, _)) = others.iter().find(|(_, p)| p.is_some() && *p == catalog_cache) {
            return Err(ConfigError::new(
                &["gateway", "catalog_cache"],
                format!("must be a file of its own, not {what}"),
            ));
        }
        Ok(Config {
            path: path.to_path_buf(),
            gateway: GatewaySection { token_file, catalog_cache, ..gateway },
            upstreams,
            redactor: secrets.redactor(),
            admin,
            traces,
            audit: AuditSection { path: audit.path.map(|p| base.join(p)), ..audit },
            auth,
            access,
            pinning: PinningSection { file: pins, ..pinning },
            rules: RulesSection { file: rules.file.map(|p| base.join(p)), ..rules },
            limits,
            redis,
            bridge,
            secret_names: secrets.names(),
            audit_key,
            session_keys,
            secrets_path,
        })
    }

    /// What the strict scan of every message enforces (docs/design.md D12).
    pub fn json_limits(&self) -> crate::protocol::Limits {
        crate::protocol::Limits { max_depth: self.gateway.max_json_depth }
    }

    /// The listen address (`gateway.listen`).
    pub fn listen(&self) -> SocketAddr {
        self.gateway.listen
    }

    /// Refuses to serve unauthenticated clients on `addr` when it is not
    /// loopback and `[auth] mode = "none"` was not written out.
    pub fn check_exposure(&self, addr: SocketAddr) -> Result<(), ConfigError> {
        if self.auth.mode.is_none() && !addr.ip().is_loopback() {
            return Err(ConfigError::plain(format!(
                "{}: listening on {addr} (not loopback) without client authentication: configure \
                 [[auth.api_keys]] or [auth.jwt], or write `mode = \"none\"` in [auth] to accept anyone",
                self.path.display()
            )));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests;
