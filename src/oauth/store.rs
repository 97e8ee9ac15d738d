//! The token file: every upstream's OAuth tokens, one JSON document,
//! written 0600 and atomically (a temporary file renamed over it).
//!
//! `mcp-gateway auth login` and running gateways (refreshing, and rotating
//! refresh tokens) write it. Each read-modify-write holds an exclusive lock
//! on `<file>.lock`, so a login and a refresh, or two gateways sharing the
//! file, never lose each other's tokens, and a rotated refresh token is
//! used by one of them only.

use std::collections::BTreeMap;
use std::fmt;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use super::OAuthError;

/// The whole file.
#[derive(Debug, Default, Serialize, Deserialize)]
pub struct Store {
    /// Format version (1).
    #[serde(default = "one")]
    pub version: u32,
    /// By upstream id.
    #[serde(default)]
    pub upstreams: BTreeMap<String, Entry>,
}

fn one() -> u32 {
    1
}

/// One upstream's tokens.
#[derive(Debug, Default, Serialize, Deserialize)]
pub struct Entry {
    /// The gateway's own (`auth login <id>`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shared: Option<Token>,
    /// Per client principal, by identity (`key:alice`, `jwt:alice`:
    /// `auth login <id> --principal P`). Entries written before identities
    /// (docs/design.md D12) are keyed by the bare name; see [`Entry::get`].
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub principals: BTreeMap<String, Token>,
}

impl Entry {
    /// The token of `principal` (an identity; `None`: the shared one). A
    /// token stored under the bare name before principals had identities
    /// (`alice` for `key:alice` or `jwt:alice`) is still found: nothing a
    /// login stored is lost. The next write under the identity moves it.
    pub fn get(&self, principal: Option<&str>) -> Option<&Token> {
        match principal {
            None => self.shared.as_ref(),
            Some(p) => self.principals.get(p).or_else(|| self.principals.get(legacy(p)?)),
        }
    }

    /// Stores the token of `principal` (`None`: the shared one), and drops
    /// a token stored for it under its bare name (its refresh token may
    /// just have been spent).
    pub fn put(&mut self, principal: Option<&str>, token: Token) {
        match principal {
            None => self.shared = Some(token),
            Some(p) => {
                if let Some(bare) = legacy(p) {
                    self.principals.remove(bare);
                }
                self.principals.insert(p.to_owned(), token);
            }
        }
    }

    /// Removes the token of `principal` (and one under its bare name),
    /// returning it.
    pub fn take(&mut self, principal: Option<&str>) -> Option<Token> {
        match principal {
            None => self.shared.take(),
            Some(p) => {
                let old = legacy(p).and_then(|bare| self.principals.remove(bare));
                self.principals.remove(p).or(old)
            }
        }
    }
}

/// The bare name an identity was stored under before identities. A name
/// that is itself an identity (a JWT subject `key:admin`) had none: its
/// "bare name" would be the API key `admin`'s identity.
fn legacy(identity: &str) -> Option<&str> {
    let bare = identity.strip_prefix("key:").or_else(|| identity.strip_prefix("jwt:"))?;
    (!bare.contains(':') && !matches!(bare, "anonymous" | "stdio")).then_some(bare)
}

/// One grant's tokens and what refreshing them needs (the client it was
/// issued to and the token endpoint).
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Token {
    /// The bearer token.
    pub access_token: String,
    /// The refresh token, when the server gave one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub refresh_token: Option<String>,
    /// Unix seconds when the access token expires (`None`: not said).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<u64>,
    /// Unix seconds when it was issued.
    pub obtained_at: u64,
    /// The granted scope, as the server said it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scope: Option<String>,
    /// The authorization server's issuer.
    pub issuer: String,
    /// Where to refresh it.
    pub token_endpoint: String,
    /// Where to revoke it (RFC 7009), when the server has one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revocation_endpoint: Option<String>,
    /// The RFC 8707 resource it was issued for.
    pub resource: String,
    /// The client it was issued to.
    pub client_id: String,
    /// The client's secret (dynamically registered confidential clients).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_secret: Option<String>,
    /// `none`, `client_secret_basic` or `client_secret_post`.
    pub auth_method: String,
}

impl fmt::Debug for Token {
    // Tokens and secrets never reach a log line.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Token")
            .field("expires_at", &self.expires_at)
            .field("scope", &self.scope)
            .field("issuer", &self.issuer)
            .field("client_id", &self.client_id)
            .finish_non_exhaustive()
    }
}

impl Token {
    /// Seconds the access token was issued for, when known.
    pub fn lifetime(&self) -> Option<u64> {
        self.expires_at.map(|e| e.saturating_sub(self.obtained_at))
    }
}

/// Seconds since the Unix epoch.
pub fn now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

/// The file, locked for a read-modify-write. Blocking: call it off the
/// async workers (`spawn_blocking`). The lock is released on drop.
#[derive(Debug)]
pub struct Locked {
    path: PathBuf,
    _lock: File,
}

impl Locked {
    /// Waits for the exclusive lock on `<path>.lock` (creating it 0600).
    pub fn acquire(path: &Path) -> Result<Locked, OAuthError> {
        use std::os::unix::fs::OpenOptionsExt as _;
        let lock_path = lock_path(path);
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|e| store_error(path, &e))?;
        }
        let lock = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o600)
            .open(&lock_path)
            .map_err(|e| store_error(&lock_path, &e))?;
        lock.lock().map_err(|e| store_error(&lock_path, &e))?;
        Ok(Locked { path: path.to_path_buf(), _lock: lock })
    }

    /// Reads the file (missing: empty).
    pub fn read(&self) -> Result<Store, OAuthError> {
        read(&self.path)
    }

    /// Replaces the file atomically, 0600.
    pub fn write(&self, store: &Store) -> Result<(), OAuthError> {
        use std::io::Write as _;
        use std::os::unix::fs::OpenOptionsExt as _;
        let path = &self.path;
        let io = |e: std::io::Error| store_error(path, &e);
        let tmp = path.with_extension("tmp");
        let mut f =
            std::fs::OpenOptions::new().write(true).create(true).truncate(true).mode(0o600).open(&tmp).map_err(io)?;
        let mut text = serde_json::to_string_pretty(store).expect("the store serializes");
        text.push('\n');
        f.write_all(text.as_bytes()).map_err(io)?;
        f.sync_all().map_err(io)?;
        std::fs::rename(&tmp, path).map_err(io)
    }
}

/// Reads the store without locking (a missing file is empty). Writers
/// rename whole files over it, so a reader never sees half of one.
pub fn read(path: &Path) -> Result<Store, OAuthError> {
    match std::fs::read(path) {
        Ok(bytes) => serde_json::from_slice(&bytes).map_err(|e| OAuthError::Store {
            path: path.display().to_string(),
            message: format!("not a token file: {e}"),
        }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Store::default()),
        Err(e) => Err(store_error(path, &e)),
    }
}

/// When the file last changed (`None`: missing).
pub fn mtime(path: &Path) -> Option<SystemTime> {
    std::fs::metadata(path).and_then(|m| m.modified()).ok()
}

fn lock_path(path: &Path) -> PathBuf {
    let mut s = path.as_os_str().to_owned();
    s.push(".lock");
    PathBuf::from(s)
}

fn store_error(path: &Path, e: &std::io::Error) -> OAuthError {
    OAuthError::Store { path: path.display().to_string(), message: e.to_string() }
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt as _;

    use super::*;

    fn token(access: &str) -> Token {
        Token {
            access_token: access.into(),
            refresh_token: Some(format!("r-{access}")),
            expires_at: Some(2000),
            obtained_at: 1000,
            scope: Some("mcp:tools".into()),
            issuer: "http://127.0.0.1:1".into(),
            token_endpoint: "http://127.0.0.1:1/token".into(),
            revocation_endpoint: None,
            resource: "http://127.0.0.1:1/mcp".into(),
            client_id: "c".into(),
            client_secret: None,
            auth_method: "none".into(),
        }
    }

    #[test]
    fn tokens_are_kept_per_upstream_and_principal_in_a_0600_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub/tokens.json");
        let locked = Locked::acquire(&path).unwrap();
        let mut store = locked.read().unwrap();
        assert!(store.upstreams.is_empty(), "a missing file is an empty store");
        store.upstreams.entry("bb".into()).or_default().put(None, token("shared"));
        store.upstreams.entry("bb".into()).or_default().put(Some("alice"), token("alice"));
        locked.write(&store).unwrap();
        drop(locked);
        assert_eq!(std::fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o600);
        let back = read(&path).unwrap();
        let e = &back.upstreams["bb"];
        assert_eq!(e.get(None).unwrap().access_token, "shared");
        assert_eq!(e.get(Some("alice")).unwrap().access_token, "alice");
        assert!(e.get(Some("bob")).is_none());
        assert_eq!(e.get(None).unwrap().lifetime(), Some(1000));
    }

    #[test]
    fn tokens_stored_under_a_bare_name_are_found_and_moved_to_the_identity() {
        let mut e = Entry::default();
        e.principals.insert("alice".into(), token("old"));
        assert_eq!(e.get(Some("key:alice")).unwrap().access_token, "old", "found, not lost");
        assert_eq!(e.get(Some("jwt:alice")).unwrap().access_token, "old");
        assert!(e.get(Some("key:bob")).is_none());
        e.put(Some("key:alice"), token("refreshed"));
        let keys: Vec<&str> = e.principals.keys().map(String::as_str).collect();
        assert_eq!(keys, ["key:alice"], "moved on write");
        assert!(e.get(Some("jwt:alice")).is_none(), "now the API key's alone");
        assert_eq!(e.take(Some("key:alice")).unwrap().access_token, "refreshed");
        // A JWT subject that looks like an identity finds no one else's token.
        e.principals.insert("key:admin".into(), token("admin's"));
        assert!(e.get(Some("jwt:key:admin")).is_none());
        e.put(Some("jwt:key:admin"), token("theirs"));
        assert_eq!(e.get(Some("key:admin")).unwrap().access_token, "admin's", "not deleted by the other's write");
    }

    #[test]
    fn debug_never_shows_a_token() {
        let shown = format!("{:?}", token("at_SECRET"));
        assert!(!shown.contains("SECRET"), "{shown}");
    }

    #[test]
    fn a_corrupt_file_is_an_error_not_an_empty_store() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("tokens.json");
        std::fs::write(&path, "{not json").unwrap();
        let e = read(&path).unwrap_err().to_string();
        assert!(e.contains("not a token file"), "{e}");
    }
}
