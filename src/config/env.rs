//! The environment, passed in: config never reads the process's variables
//! itself, so loading is a function of its inputs and tests need not touch
//! (or race on) the process environment.

use std::collections::BTreeMap;
use std::ffi::OsString;

/// Where config looks up environment variables (`MCP_GATEWAY_ENV_FILE`,
/// and `${NAME}` not in the secrets file). The binary passes the process's
/// environment; tests pass a map.
pub trait Env {
    /// The value of `name`, if set (not necessarily UTF-8).
    fn var_os(&self, name: &str) -> Option<OsString>;

    /// The value of `name` if it is set and UTF-8, as `std::env::var` has it.
    fn var(&self, name: &str) -> Option<String> {
        self.var_os(name).and_then(|v| v.into_string().ok())
    }
}

impl Env for BTreeMap<String, String> {
    fn var_os(&self, name: &str) -> Option<OsString> {
        self.get(name).map(OsString::from)
    }
}
