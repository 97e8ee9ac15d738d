//! The `mcp-gateway` command, one file per command: `args` (the flags),
//! `serve` (also `stdio`), `tools`, `rules`, `auth`, `reload`, `status`. `main.rs` parses,
//! loads the config and dispatches here.

pub(crate) mod args;
pub(crate) mod auth;
pub(crate) mod import;
pub(crate) mod reload;
pub(crate) mod rules;
pub(crate) mod serve;
pub(crate) mod status;
pub(crate) mod tools;

use std::ffi::OsString;

use mcp_gateway::config::{Config, Env};

/// The process's environment, which config is given rather than reading it
/// itself (tests give it a map).
pub(crate) struct ProcessEnv;

impl Env for ProcessEnv {
    fn var_os(&self, name: &str) -> Option<OsString> {
        std::env::var_os(name)
    }
}

pub(crate) fn plural(n: usize, noun: &str) -> String {
    if n == 1 { format!("1 {noun}") } else { format!("{n} {noun}s") }
}

pub(crate) fn ids(config: &Config) -> String {
    config.upstreams.iter().map(|u| u.id.as_str()).collect::<Vec<_>>().join(", ")
}
