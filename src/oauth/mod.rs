//! The gateway as an OAuth 2.1 client of its upstreams (docs/design.md D9,
//! spec.md §1.12): each OAuth-protected upstream gets the gateway's own
//! token, never the client's (no token passthrough).
//!
//! - `discovery`: RFC 9728 resource metadata and RFC 8414 server metadata.
//! - `flow`: PKCE, dynamic registration, the code, refresh, client
//!   credentials and revocation requests; `auth login` and `auth logout`.
//! - `callback`: the loopback redirect listener of `auth login`.
//! - `store`: the 0600 token file, locked for every read-modify-write.
//! - `credential`: the live bearer token of one upstream connection.
//!
//! Architecture Invariant: depends on `config` and `telemetry` only;
//! `upstream` uses it, and nothing here knows of connections or sessions.
//! Token values never reach a log line, a metric or an error message.

mod callback;
mod credential;
mod discovery;
mod flow;
pub mod store;

pub use credential::Credential;
pub(crate) use discovery::parse_challenge;
pub use flow::{LoginOptions, LoginOutcome, login, logout};

/// The HTTP client for authorization servers: it never follows a
/// redirect (a 307 would resend a refresh token or client secret to
/// wherever it points) and gives up after 30 s. One per process.
pub fn http_client() -> reqwest::Client {
    static CLIENT: std::sync::OnceLock<reqwest::Client> = std::sync::OnceLock::new();
    CLIENT
        .get_or_init(|| {
            reqwest::Client::builder()
                .redirect(reqwest::redirect::Policy::none())
                .connect_timeout(std::time::Duration::from_secs(10))
                .timeout(std::time::Duration::from_secs(30))
                .build()
                .expect("the TLS backend initializes")
        })
        .clone()
}

/// The command that gives `upstream` a token for `principal` (`None`: the
/// gateway's own), for messages that tell an operator what to run.
pub(crate) fn login_command(upstream: &str, principal: Option<&str>) -> String {
    match principal {
        Some(p) => format!("mcp-gateway auth login {upstream} --principal {p}"),
        None => format!("mcp-gateway auth login {upstream}"),
    }
}

/// Why the gateway has no usable token for an upstream.
#[derive(Debug, thiserror::Error)]
pub enum OAuthError {
    /// Nothing stored, or the stored grant is dead: a person must log in.
    #[error("no usable token for upstream `{upstream}`{}: {why}; run `{}`",
        principal.as_deref().map(|p| format!(" (principal `{p}`)")).unwrap_or_default(),
        login_command(upstream, principal.as_deref()))]
    NoToken {
        /// The upstream id.
        upstream: String,
        /// Whose token (`None`: the shared one).
        principal: Option<String>,
        /// What is wrong.
        why: String,
    },
    /// The upstream's authorization server could not be found or is not
    /// fit to use.
    #[error("OAuth discovery for upstream `{upstream}` failed: {message}")]
    Discovery {
        /// The upstream id.
        upstream: String,
        /// What failed.
        message: String,
    },
    /// The upstream's resource metadata names another authorization server
    /// than the one the configured client was used with (SEP-2352): the
    /// client is not shown to the new one.
    #[error("the authorization server of upstream `{upstream}` changed from {from} to {to}; {what}")]
    ServerChanged {
        /// The upstream id.
        upstream: String,
        /// The issuer the client was used with.
        from: String,
        /// The issuers the upstream names now.
        to: String,
        /// What the operator must do.
        what: String,
    },
    /// The authorization server answered with an OAuth error.
    #[error("the authorization server refused: {error}{}{description}", if description.is_empty() { "" } else { ": " })]
    Refused {
        /// The `error` code.
        error: String,
        /// `error_description`.
        description: String,
    },
    /// A request to the authorization server failed.
    #[error("{0}")]
    Http(String),
    /// The configuration cannot work with this server.
    #[error("{0}")]
    Config(String),
    /// The login itself failed (callback, state, timeout).
    #[error("login failed: {0}")]
    Login(String),
    /// The token file could not be read or written.
    #[error("token file {path}: {message}")]
    Store {
        /// The file.
        path: String,
        /// What failed.
        message: String,
    },
}
