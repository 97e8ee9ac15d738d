//! `mcp-gateway auth …`: API key hashes and the gateway's own upstream
//! OAuth tokens (login, logout, list).

use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context as _;
use mcp_gateway::config::Config;

use super::args::{AuthCommand, EX_USAGE};
use super::tools::print_table;

/// `mcp-gateway auth hash-key`.
pub(crate) fn hash_key(generate: bool) -> ExitCode {
    use std::io::Read as _;
    let key = if generate {
        let mut bytes = [0u8; 24];
        if getrandom::fill(&mut bytes).is_err() {
            eprintln!("mcp-gateway: no randomness available");
            return ExitCode::FAILURE;
        }
        let key: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
        let key = format!("mgw_{key}");
        println!("key:    {key}   (give it to the client; it is not stored)");
        key
    } else {
        let mut key = String::new();
        if std::io::stdin().read_to_string(&mut key).is_err() || key.trim().is_empty() {
            eprintln!("mcp-gateway: give the key on stdin (or use --generate)");
            return ExitCode::from(EX_USAGE);
        }
        key
    };
    println!("sha256 = \"{}\"", mcp_gateway::security::auth::hash_key(&key));
    ExitCode::SUCCESS
}

/// `mcp-gateway auth login | logout | tokens`.
pub(crate) async fn upstream_auth(config: &Config, command: AuthCommand) -> anyhow::Result<()> {
    use mcp_gateway::oauth;
    let spec = |id: &str| {
        let u = config
            .upstreams
            .iter()
            .find(|u| u.id == id)
            .with_context(|| format!("no upstream `{id}` in the config"))?;
        u.oauth.clone().with_context(|| format!("upstream `{id}` has no [upstreams.{id}.oauth] section"))
    };
    let http = oauth::http_client();
    match command {
        AuthCommand::Login { upstream, principal, scope, login_hint, timeout, .. } => {
            let spec = spec(&upstream)?;
            if spec.grant != mcp_gateway::config::OAuthGrant::AuthorizationCode {
                anyhow::bail!("upstream `{upstream}` uses client credentials: the gateway gets its tokens itself");
            }
            if principal.is_some() && !spec.per_principal {
                anyhow::bail!("upstream `{upstream}` is not `per_principal`: log in without --principal");
            }
            // Tokens are kept by the principal's whole identity.
            let principal = principal
                .map(|p| mcp_gateway::security::auth::identity_for(&config.auth, &p))
                .transpose()
                .map_err(|e| anyhow::anyhow!("--principal: {e}"))?;
            let opts = oauth::LoginOptions {
                principal: principal.clone(),
                scopes: scope.as_deref().map(|s| s.split_whitespace().map(str::to_owned).collect()).unwrap_or_default(),
                login_hint,
                timeout: Duration::from_secs(timeout),
            };
            let out = oauth::login(&http, &spec, &opts, |url, redirect| {
                println!("Open this URL in a browser to log in to `{upstream}`:\n{url}");
                eprintln!("Waiting up to {timeout}s for the redirect to {redirect} …");
            })
            .await?;
            let who = principal.map_or_else(|| "the gateway".to_owned(), |p| format!("principal `{p}`"));
            let expires = out.expires_in.map_or_else(|| "no expiry given".to_owned(), |s| format!("expires in {s}s"));
            let refresh =
                if out.refreshable { "refreshable" } else { "no refresh token: log in again when it expires" };
            println!(
                "Logged in to `{upstream}` for {who} (scope {}; {expires}; {refresh}). Stored in {}.",
                out.scope.as_deref().unwrap_or("-"),
                out.file.display()
            );
            Ok(())
        }
        AuthCommand::Logout { upstream, principal, .. } => {
            let spec = spec(&upstream)?;
            let principal = principal
                .map(|p| mcp_gateway::security::auth::identity_for(&config.auth, &p))
                .transpose()
                .map_err(|e| anyhow::anyhow!("--principal: {e}"))?;
            if oauth::logout(&http, &spec, principal.as_deref()).await? {
                println!("Removed the token of `{upstream}` from {}.", spec.token_file.display());
            } else {
                println!("No token of `{upstream}` was stored.");
            }
            Ok(())
        }
        AuthCommand::Tokens { .. } => {
            let path = &config.gateway.token_file;
            let store = oauth::store::read(path)?;
            let now = oauth::store::now();
            let mut rows = Vec::new();
            for (id, entry) in &store.upstreams {
                let tokens = entry.shared.iter().map(|t| ("(gateway)".to_owned(), t));
                for (who, t) in tokens.chain(entry.principals.iter().map(|(p, t)| (p.clone(), t))) {
                    let expiry = match t.expires_at {
                        Some(e) if e > now => format!("in {}s", e - now),
                        Some(_) => "expired".to_owned(),
                        None => "-".to_owned(),
                    };
                    let refresh = if t.refresh_token.is_some() { "yes" } else { "no" };
                    rows.push([
                        format!("{id}  {who}"),
                        format!("{} {expiry}", t.scope.as_deref().unwrap_or("-")),
                        refresh.to_owned(),
                    ]);
                }
            }
            if rows.is_empty() {
                println!("No upstream tokens in {}.", path.display());
            } else {
                print_table(&["UPSTREAM  PRINCIPAL", "SCOPE EXPIRES", "REFRESH"], &rows);
            }
            Ok(())
        }
        AuthCommand::HashKey { .. } => unreachable!("handled before the config is read"),
    }
}
