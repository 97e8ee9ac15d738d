//! The command line: clap's definitions of every command and flag.

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::{Parser, Subcommand};

/// Exit code for a bad config (`EX_USAGE` from sysexits.h).
pub(crate) const EX_USAGE: u8 = 64;

#[derive(Parser)]
#[command(name = "mcp-gateway", version, about = "One MCP endpoint in front of many MCP servers")]
pub(crate) struct Cli {
    #[command(subcommand)]
    pub(crate) command: Command,
}

#[derive(Subcommand)]
pub(crate) enum Command {
    /// Serve Streamable HTTP at http://<listen>/mcp.
    Serve {
        /// Config file.
        #[arg(long, short, default_value = "gateway.toml", env = "MCP_GATEWAY_CONFIG")]
        config: PathBuf,
        /// Listen address; overrides `gateway.listen`.
        #[arg(long)]
        listen: Option<SocketAddr>,
    },
    /// Serve one client over stdin/stdout (for hosts that launch a command).
    Stdio {
        /// Config file.
        #[arg(long, short, default_value = "gateway.toml", env = "MCP_GATEWAY_CONFIG")]
        config: PathBuf,
    },
    /// Validate the config and exit (64 when it is invalid).
    Check {
        /// Config file.
        #[arg(long, short, default_value = "gateway.toml", env = "MCP_GATEWAY_CONFIG")]
        config: PathBuf,
    },
    /// Start the upstreams, print the merged tool catalog, and exit; or
    /// review pinned tool definitions (`pending`, `approve`).
    Tools {
        /// Config file.
        #[arg(long, short, default_value = "gateway.toml", env = "MCP_GATEWAY_CONFIG", global = true)]
        config: PathBuf,
        /// Give up waiting for upstreams after this many seconds
        /// (default: the longest `startup_timeout`).
        #[arg(long)]
        wait: Option<u64>,
        #[command(subcommand)]
        action: Option<ToolsAction>,
    },
    /// Ask a running gateway to reload its config (`POST /admin/reload`,
    /// admin groups only) and print what changed. Exits 1 when the
    /// gateway refused the new config (the old one keeps running).
    Reload {
        /// Config file (for the gateway's address when `--url` is not given).
        #[arg(long, short, default_value = "gateway.toml", env = "MCP_GATEWAY_CONFIG")]
        config: PathBuf,
        /// The gateway's base URL (default: `http://` and `gateway.listen`).
        #[arg(long)]
        url: Option<String>,
        /// The API key to present (`X-API-Key`), when `[auth]` requires one.
        #[arg(long, env = "MCP_GATEWAY_API_KEY", hide_env_values = true)]
        api_key: Option<String>,
    },
    /// Show a running gateway's `/status` as a table: each upstream's
    /// state, breaker, last error, restarts and tools, and the sessions.
    /// An admin's API key or JWT is read from `MCP_GATEWAY_TOKEN` (never a
    /// flag). Exits 1 when an upstream is not ready, 69 when the gateway
    /// cannot be reached, 77 when it wants or refuses the credential.
    Status {
        /// Config file (for the gateway's address when `--url` is not given).
        #[arg(long, short, default_value = "gateway.toml", env = "MCP_GATEWAY_CONFIG")]
        config: PathBuf,
        /// The gateway's base URL (default: `http://` and `gateway.listen`,
        /// else `http://127.0.0.1:8080`).
        #[arg(long)]
        url: Option<String>,
        /// Print `/status`'s JSON instead of the table.
        #[arg(long)]
        json: bool,
    },
    /// Sequence rules: validate a rules file, or replay an audit log.
    Rules {
        #[command(subcommand)]
        command: RulesCommand,
    },
    /// Credentials: `auth hash-key` prints the `sha256` of a client's API
    /// key; `auth login | logout | tokens` manage the gateway's own OAuth
    /// tokens for upstreams.
    Auth {
        #[command(subcommand)]
        command: AuthCommand,
    },
    /// Reads an agent host's MCP config (Claude Desktop, Claude Code,
    /// Cursor, VS Code), writes its servers as upstreams of a gateway.toml
    /// (credentials to the secrets file, 0600) and prints the host entry
    /// that replaces them. The host's file is not changed.
    Import(ImportArgs),
}

/// `mcp-gateway import`.
#[derive(clap::Args)]
pub(crate) struct ImportArgs {
    /// The host's file: `claude_desktop_config.json`, `.mcp.json`,
    /// Cursor's `mcp.json` or `.vscode/mcp.json`.
    pub(crate) file: PathBuf,
    /// Merge the servers into this existing config (an id it has already
    /// is refused).
    #[arg(long, conflicts_with_all = ["output", "force"])]
    pub(crate) into: Option<PathBuf>,
    /// The config to write.
    #[arg(long, short, default_value = "gateway.toml")]
    pub(crate) output: PathBuf,
    /// Replace the config at `--output` when it exists.
    #[arg(long)]
    pub(crate) force: bool,
    /// The host that wrote the file (default: from its name and shape).
    #[arg(long, value_enum)]
    pub(crate) host: Option<super::import::HostArg>,
}

#[derive(Subcommand)]
pub(crate) enum ToolsAction {
    /// Lists tools held because their definition changed, with what changed.
    Pending,
    /// Accepts the changed definition of these tools (a running gateway
    /// picks it up within seconds).
    Approve {
        /// Exposed tool names.
        names: Vec<String>,
        /// Every pending tool.
        #[arg(long, conflicts_with = "names")]
        all: bool,
    },
}

#[derive(Subcommand)]
pub(crate) enum RulesCommand {
    /// Validates a rules file (exit 64 when invalid) and lists its rules,
    /// tags and warnings.
    Check {
        /// The rules file.
        file: PathBuf,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Reports which sessions and principals each rule would have hit in an
    /// audit log, as if every rule were in shadow mode.
    Replay {
        /// The audit log (JSON lines).
        audit: PathBuf,
        /// The rules file (default: `[rules] file` of the config).
        #[arg(long)]
        rules: Option<PathBuf>,
        /// Config file, for `[rules] file`.
        #[arg(long, short, default_value = "gateway.toml", env = "MCP_GATEWAY_CONFIG")]
        config: PathBuf,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
}

#[derive(Subcommand)]
pub(crate) enum AuthCommand {
    /// Reads an API key from stdin (or makes a random one with
    /// `--generate`) and prints its SHA-256 for `[[auth.api_keys]]`.
    HashKey {
        /// Make a new random key, print it once, then its hash.
        #[arg(long)]
        generate: bool,
    },
    /// Logs the gateway in to an OAuth upstream (authorization code with
    /// PKCE): prints a URL to open, receives the redirect on 127.0.0.1 and
    /// stores the tokens (0600) for running gateways to use and refresh.
    Login {
        /// The upstream id (`[upstreams.<id>.oauth]`).
        upstream: String,
        /// Store the token for this client principal (upstreams with
        /// `per_principal = true`): `key:NAME` (an API key), `jwt:SUB` (a
        /// JWT subject), or a bare name when only one of them can be meant.
        /// Without it, the gateway's own token.
        #[arg(long)]
        principal: Option<String>,
        /// Scopes to ask for, space-separated (default: configured, else
        /// discovered).
        #[arg(long)]
        scope: Option<String>,
        /// `login_hint` for the authorization server (who logs in).
        #[arg(long)]
        login_hint: Option<String>,
        /// Give up after this many seconds without the redirect.
        #[arg(long, default_value_t = 300)]
        timeout: u64,
        /// Config file.
        #[arg(long, short, default_value = "gateway.toml", env = "MCP_GATEWAY_CONFIG")]
        config: PathBuf,
    },
    /// Removes a stored upstream token and revokes it at the server.
    Logout {
        /// The upstream id.
        upstream: String,
        /// Whose token (default: the gateway's own).
        #[arg(long)]
        principal: Option<String>,
        /// Config file.
        #[arg(long, short, default_value = "gateway.toml", env = "MCP_GATEWAY_CONFIG")]
        config: PathBuf,
    },
    /// Lists stored upstream tokens: whose, scope, expiry (never values).
    Tokens {
        /// Config file.
        #[arg(long, short, default_value = "gateway.toml", env = "MCP_GATEWAY_CONFIG")]
        config: PathBuf,
    },
}
