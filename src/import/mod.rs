//! An agent host's MCP config (Claude Desktop, Claude Code, Cursor, VS
//! Code) made gateway upstreams: `host` reads the file and its variables,
//! `creds` says what is a credential, `convert` makes the upstreams and
//! moves credentials out into secrets named `<UPSTREAM_ID>_<NAME>`, and
//! `write` gives the text of `[upstreams.<id>]` tables, secrets file lines
//! and the host's replacement entry, and writes files whole.
//! `mcp-gateway import` (`src/cli/import.rs`) puts them together;
//! docs/import.md has the rules.

mod convert;
mod creds;
mod host;
mod write;

use std::path::PathBuf;

pub use convert::{Mixed, Plan, Upstream, sanitize};
pub use host::{Host, HostFile, HostServer, Piece, Pieces, Transport};
pub use write::{Staged, host_entry, render, secret_line, text, upstreams, with_secrets_file};

/// A host's file that cannot be imported. Messages name the file and,
/// for one server, the server; none holds a value of it.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    /// The file cannot be read.
    #[error("cannot read {}: {error}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        error: std::io::Error,
    },
    /// It is not JSON (comments and trailing commas allowed).
    #[error("{}: not JSON: {error}", path.display())]
    NotJson {
        /// The file.
        path: PathBuf,
        /// Where and why.
        error: serde_json::Error,
    },
    /// It is JSON of another shape.
    #[error("{}: {what}", path.display())]
    Shape {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        what: String,
    },
    /// One server entry cannot be imported.
    #[error("{}: server {server:?}: {what}", path.display())]
    Server {
        /// The file.
        path: PathBuf,
        /// The server's name in it.
        server: String,
        /// What is wrong.
        what: String,
    },
}
