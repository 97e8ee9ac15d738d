//! Reloading the config as a diff (docs/design.md D11): a new [`Config`],
//! already validated whole by [`Config::load`] (the `check` command's
//! loader, so the same `file:line:col` errors), is compared with the one
//! in force section by section. What the running gateway can take without
//! a new connection is prepared first — everything that can still fail —
//! and then put in force for the next request at once; what it cannot is
//! kept as it runs and named in the [`Report`].
//!
//! What applies at once: `[[access]]`, `[limits]`, `[rules]`, `[pinning]`,
//! the secrets' mask and names, `[auth]` (through a [`Participant`], the
//! HTTP front end) and the `[gateway]` keys read per request
//! ([`APPLIED_GATEWAY_KEYS`]). Every session's grants are recomputed, and a
//! session that now sees other tools, prompts or resources is sent
//! `list_changed`.
//!
//! Upstreams are compared with what runs and added, removed or replaced
//! ([`replace`]). What needs a restart is kept as it runs (the config in
//! force says what really runs) and reported: the listen addresses,
//! `[admin]`, `[traces]`, `[audit]` and the audit key, and the other
//! `[gateway]` keys.
//!
//! Architecture Invariant: a reload is synchronous once prepared — nothing
//! awaits between the first and the last swap, and no request waits for a
//! reload.

use std::collections::HashMap;
use std::sync::Arc;

use super::Gateway;
use super::catalog::Catalog;
use super::refresh;
use super::replace;
use crate::config::{AuthSection, Config};
use crate::security::Ident;
use crate::security::access::{Grants, Kind};
use crate::security::auth::{Principal, Via};
use crate::upstream::ListKind;

/// Names the `[gateway]` keys a reload puts in force at once (each is
/// read from the config in force when it is used) once, for both the list
/// and the copy; the others keep their value until a restart.
macro_rules! applied_gateway_keys {
    ($($k:ident),* $(,)?) => {
        /// The `[gateway]` keys a reload puts in force at once.
        pub const APPLIED_GATEWAY_KEYS: &[&str] = &[$(stringify!($k)),*];

        /// Copies the keys a reload puts in force from `from` into `into`.
        fn take_applied(into: &mut crate::config::GatewaySection, from: &crate::config::GatewaySection) {
            $(into.$k = from.$k.clone();)*
        }
    };
}

applied_gateway_keys!(
    max_message_bytes,
    max_json_depth,
    max_tool_name_length,
    page_size,
    max_client_capabilities_bytes,
    list_ttl,
    list_secret_names,
    secrets_file,
    allowed_hosts,
    allowed_origins,
    response_mode,
    session_idle_timeout,
    warm_start,
    catalog_cache,
    startup_call_wait,
    drain_delay,
);

/// A part of the gateway outside routing that holds its own view of the
/// config (the HTTP front end's authenticator): it prepares its share of
/// a reload, which may still refuse it, and commits it only when every
/// part is prepared.
pub trait Participant: Send + Sync + std::fmt::Debug {
    /// Builds what `next` needs (compared with `now`); `Ok(None)` when its
    /// share did not change. An error refuses the whole reload.
    fn prepare(&self, now: &Config, next: &Config) -> Result<Option<Commit>, String>;
}

/// A participant's prepared share, put in force by calling it.
pub type Commit = Box<dyn FnOnce() + Send>;

/// How a reload ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// Something changed and is in force.
    Applied,
    /// The file says what is running already.
    Unchanged,
    /// Nothing could be applied: everything that changed needs a restart
    /// (named in the report).
    NeedsRestart,
    /// Refused: the config in force stays, whole.
    Refused,
}

impl Outcome {
    /// The `outcome` label of `mcp_gateway_config_reloads_total`.
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Applied => "applied",
            Outcome::Unchanged => "unchanged",
            Outcome::NeedsRestart => "needs_restart",
            Outcome::Refused => "refused",
        }
    }
}

/// What a reload did: the answer of `POST /admin/reload` and what
/// `mcp-gateway reload` prints.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Report {
    /// How it ended.
    pub outcome: Outcome,
    /// What triggered it (`sighup`, `file`, `admin`).
    pub trigger: &'static str,
    /// The keys whose change is in force (`access`, `gateway.page_size`, …).
    pub applied: Vec<String>,
    /// The keys that changed in the file but keep their running value
    /// until a restart.
    pub needs_restart: Vec<String>,
    /// Why it was refused (the loader's `file:line:col` message).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

impl Report {
    /// A refused reload.
    pub fn refused(trigger: &'static str, error: String) -> Self {
        Report {
            outcome: Outcome::Refused,
            trigger,
            applied: Vec::new(),
            needs_restart: Vec::new(),
            error: Some(error),
        }
    }
}

/// The keys of `[gateway]` that differ.
fn gateway_changes(now: &Config, next: &Config) -> Vec<&'static str> {
    let (a, b) = (&now.gateway, &next.gateway);
    let mut out = Vec::new();
    macro_rules! keys {
        ($($k:ident),* $(,)?) => {
            // Destructured whole: a key added to the section and not named
            // here does not compile.
            let crate::config::GatewaySection { $($k: _),* } = a;
            $(if a.$k != b.$k { out.push(stringify!($k)); })*
        };
    }
    keys!(
        listen,
        secrets_file,
        token_file,
        max_message_bytes,
        max_json_depth,
        max_tool_name_length,
        allowed_hosts,
        allowed_origins,
        page_size,
        response_mode,
        session_idle_timeout,
        max_sessions,
        max_sessions_per_principal,
        max_client_capabilities_bytes,
        list_ttl,
        max_connections,
        connection_idle_timeout,
        max_inflight_request_bytes,
        max_inflight_request_bytes_per_principal,
        startup_list_wait,
        warm_start,
        catalog_cache,
        startup_call_wait,
        log_format,
        log_level,
        drain_timeout,
        drain_delay,
        list_secret_names,
        watch_config,
    );
    out
}

/// Compares `next` with `now`: what applies at once, what needs a
/// restart, and `next` with the restart-only values put back to what
/// runs.
fn diff(now: &Config, mut next: Config) -> (Vec<String>, Vec<String>, Config) {
    let (mut applied, mut restart) = (Vec::new(), Vec::new());
    for key in gateway_changes(now, &next) {
        match APPLIED_GATEWAY_KEYS.contains(&key) {
            true => applied.push(format!("gateway.{key}")),
            false => restart.push(format!("gateway.{key}")),
        }
    }
    // What runs keeps the rest, so that the config in force says what
    // really runs.
    let mut kept = now.gateway.clone();
    take_applied(&mut kept, &next.gateway);
    next.gateway = kept;
    let mut section = |name: &str, changed: bool, at_once: bool| {
        if changed {
            if at_once { applied.push(name.to_owned()) } else { restart.push(name.to_owned()) }
        }
    };
    section("access", now.access != next.access, true);
    section("limits", now.limits != next.limits, true);
    section("rules", now.rules != next.rules, true);
    section("pinning", now.pinning != next.pinning, true);
    section("auth", now.auth != next.auth, true);
    section("secrets", now.redactor != next.redactor || now.secret_names != next.secret_names, true);
    section("admin", now.admin != next.admin, false);
    section("traces", now.traces != next.traces, false);
    section("audit", now.audit != next.audit || now.audit_key != next.audit_key, false);
    // The connection and its keys are made once; a new server or prefix
    // would split replicas' state mid-flight.
    section("redis", now.redis != next.redis, false);
    next.admin = now.admin.clone();
    next.redis = now.redis.clone();
    next.traces = now.traces.clone();
    next.audit = now.audit.clone();
    next.audit_key = now.audit_key.clone();
    // Upstreams are compared with what runs, not with this file's
    // predecessor (`replace::plan`).
    (applied, restart, next)
}

// === impl Gateway ===

impl Gateway {
    /// Registers a part outside routing that takes its share of every
    /// reload (the HTTP front end's authenticator).
    pub fn add_participant(&self, p: Arc<dyn Participant>) {
        self.participants.lock().unwrap_or_else(|e| e.into_inner()).push(p);
    }

    /// Puts `next` (validated whole by [`Config::load`]) in force as a
    /// diff: prepares every part (a failure refuses the whole reload and
    /// changes nothing), then swaps each in turn, with no `.await` between
    /// the first swap and the last. Sessions are never dropped; each gets
    /// `list_changed` for what it now sees differently.
    pub fn reload(&self, trigger: &'static str, next: Config) -> Report {
        let core = &self.core;
        let now = core.config().clone();
        if let Err(why) = self.guard(&now, &next) {
            return Report::refused(trigger, why);
        }
        let (mut applied, needs_restart, next) = diff(&now, next);
        // No replacement takes its place between this plan and its steps.
        let _reload = core.upstreams.lock_reload();
        let table = core.upstreams.now();
        let steps = match replace::plan(core, &table, &next.upstreams) {
            Ok(steps) => steps,
            Err(why) => return Report::refused(trigger, why),
        };
        applied.extend(steps.iter().map(|s| s.describe(&table)));
        if applied.is_empty() {
            let outcome = if needs_restart.is_empty() { Outcome::Unchanged } else { Outcome::NeedsRestart };
            return Report { outcome, trigger, applied, needs_restart, error: None };
        }
        let gate = match core.gate.prepare(&now, &next) {
            Ok(g) => g,
            Err(e) => return Report::refused(trigger, e.to_string()),
        };
        let participants = self.participants.lock().unwrap_or_else(|e| e.into_inner()).clone();
        let mut commits = Vec::new();
        for p in &participants {
            match p.prepare(&now, &next) {
                Ok(c) => commits.extend(c),
                Err(e) => return Report::refused(trigger, e),
            }
        }
        // Everything is prepared: from here on nothing fails.
        let before = core.published.load_full();
        // Upstreams keep the values they were started with: mask both.
        let redactor = core.mask().union(&next.redactor);
        // A cache file named or turned on now is written now.
        let (a, b) = (&now.gateway, &next.gateway);
        let rewrite = b.warm_start && (a.catalog_cache != b.catalog_cache || !a.warm_start);
        core.set_config(Arc::new(next));
        if rewrite {
            core.warm.touch();
        }
        core.set_mask(redactor.clone());
        core.gate.apply(gate);
        replace::apply(core, steps);
        // A new rule set is tagged at once, not at the next catalog build.
        core.gate.retag(&core.published.load(), &core.upstreams);
        for commit in commits {
            commit();
        }
        let sessions = core.sessions.all();
        // What a set of grants sees is worked out once, however many
        // sessions share it (a session's fingerprints are shared too).
        #[allow(clippy::mutable_key_type, reason = "grants hash and compare by which entries they hold (access.rs)")]
        let mut memo: HashMap<(Arc<Grants>, bool), Arc<[u64]>> = HashMap::new();
        let mut seen = |grants: Arc<Grants>, builtin: bool| {
            memo.entry((grants, builtin)).or_insert_with_key(|(g, b)| visible(&before, g, *b).into()).clone()
        };
        let seen_before: Vec<_> = sessions.iter().map(|p| seen(p.grants(), now.gateway.list_secret_names)).collect();
        for p in &sessions {
            p.reconfigure(self.grants_under(&p.principal, &core.config().auth), redactor.clone());
        }
        // The catalog is rebuilt (pins, the tool-name limit, the rules'
        // tags) by the catalog task, which tells sessions what changed in
        // it; what changed by the grants or the gateway's own tool alone is
        // told here.
        let builtin = core.config().gateway.list_secret_names;
        for (p, was) in sessions.iter().zip(seen_before) {
            let now_seen = seen(p.grants(), builtin);
            for (kind, (a, b)) in refresh::TOLD.iter().zip(was.iter().zip(now_seen.iter())) {
                if a != b {
                    let method = kind.changed_notification();
                    p.send(&core.no_label, method, crate::protocol::encode::notification(method, None));
                }
            }
        }
        core.changes.bump();
        Report { outcome: Outcome::Applied, trigger, applied, needs_restart, error: None }
    }
}

impl Gateway {
    /// The grants of a session's principal under the policy in force. An
    /// API key's groups come from `[[auth.api_keys]]`, so they are looked
    /// up again (a reload may have moved the key to other groups); a
    /// session whose key is gone may use nothing more. A JWT's groups are
    /// the token's, fixed for the session.
    fn grants_under(&self, p: &Principal, auth: &AuthSection) -> Arc<Grants> {
        if p.via != Via::ApiKey {
            return self.core.gate.grants_of(p);
        }
        let keys: Vec<_> = auth.api_keys.iter().filter(|k| *k.principal == *p.id).collect();
        if keys.is_empty() {
            return Grants::none();
        }
        let mut groups: Vec<Arc<str>> =
            keys.iter().flat_map(|k| k.groups.iter().map(|g| Arc::from(g.as_str()))).collect();
        groups.sort();
        groups.dedup();
        let now = Principal::new(&p.id, Via::ApiKey, groups.into(), p.scopes.clone());
        self.core.gate.grants_of(&now)
    }

    /// What a reload may not do, whatever the file says, because a file
    /// can be half-written, truncated or wrong (docs/operations.md):
    /// serve without authentication on a listener that is not loopback,
    /// turn client authentication off, or leave no upstream at all. Each
    /// of these needs a restart, which `check_exposure` and a person see.
    fn guard(&self, now: &Config, next: &Config) -> Result<(), String> {
        if let Some(addr) = self.bound.get() {
            next.check_exposure(*addr).map_err(|e| e.to_string())?;
        }
        let required = |c: &Config| c.auth.mode == Some(crate::config::AuthMode::Required);
        if required(now) && !required(next) {
            return Err(format!(
                "{}: this reload would turn client authentication off ([auth]); that needs a restart",
                next.path.display()
            ));
        }
        if next.access.is_empty() && !now.access.is_empty() {
            return Err(format!(
                "{}: this reload would remove every [[access]] entry, which opens every tool to every client; \
                 that needs a restart",
                next.path.display()
            ));
        }
        if next.upstreams.is_empty() && !now.upstreams.is_empty() {
            return Err(format!(
                "{}: the new config has no upstream (a truncated file?); removing every upstream needs a restart",
                next.path.display()
            ));
        }
        Ok(())
    }
}

/// What a principal with `grants` sees of `catalog`, list by list (a
/// fingerprint of each list [`refresh::TOLD`] names), with the gateway's
/// own tool when `builtin` is on and the grants allow it.
fn visible(catalog: &Catalog, grants: &Grants, builtin: bool) -> Vec<u64> {
    let own = builtin && grants.allows(Kind::Tool, Ident::plain(super::LIST_SECRET_NAMES));
    refresh::TOLD
        .iter()
        .map(|&kind| refresh::seen_by(catalog, kind, grants) ^ u64::from(own && kind == ListKind::Tools))
        .collect()
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::path::Path;

    use super::*;

    fn config(toml: &str) -> Config {
        Config::from_str(toml, Path::new("/etc/gw/gateway.toml"), &BTreeMap::new()).expect("a valid config")
    }

    const UPSTREAMS: &str = "[upstreams.a]\ncommand = \"a\"\n[upstreams.b]\ncommand = \"b\"\n";

    #[test]
    fn per_request_keys_apply_and_the_rest_are_named_and_kept_as_they_run() {
        let now = config(&format!("[gateway]\npage_size = 10\nmax_connections = 100\n{UPSTREAMS}"));
        let next = config(
            "[gateway]\npage_size = 20\nmax_connections = 200\n\
             [[access]]\nprincipals = [\"p\"]\ntools = { allow = [\"*\"] }\n\
             [traces]\nendpoint = \"http://127.0.0.1:4318\"\n\
             [upstreams.a]\ncommand = \"a2\"\n[upstreams.c]\ncommand = \"c\"\n",
        );
        let (applied, restart, kept) = diff(&now, next.clone());
        assert_eq!(applied, ["gateway.page_size", "access"]);
        assert_eq!(restart, ["gateway.max_connections", "traces"]);
        // What runs: the new page size and access, the old connection
        // limit and traces; upstreams are planned against what runs.
        assert_eq!(kept.gateway.page_size, 20);
        assert_eq!(kept.access, next.access);
        assert_eq!(kept.gateway.max_connections, 100);
        assert_eq!(kept.traces, now.traces);
        assert_eq!(kept.upstreams, next.upstreams);
    }

    #[test]
    fn the_same_file_is_unchanged_and_a_changed_secret_value_is_seen() {
        let now = config(UPSTREAMS);
        let (applied, restart, _) = diff(&now, config(UPSTREAMS));
        assert!(applied.is_empty() && restart.is_empty());
        // Equal names, other values: the mask changes.
        let mut next = config(UPSTREAMS);
        next.redactor = crate::config::Redactor::from_values(vec!["a-new-secret".into()]);
        let (applied, _, _) = diff(&now, next);
        assert_eq!(applied, ["secrets"]);
    }

    #[test]
    fn the_front_door_keys_apply_and_every_applied_key_is_taken_over() {
        let now = config(UPSTREAMS);
        let next = config(&format!(
            "[gateway]\nallowed_hosts = [\"gw.example\"]\nresponse_mode = \"sse\"\nsession_idle_timeout = \"5m\"\n{UPSTREAMS}"
        ));
        let (applied, restart, kept) = diff(&now, next.clone());
        assert_eq!(applied, ["gateway.allowed_hosts", "gateway.response_mode", "gateway.session_idle_timeout"]);
        assert!(restart.is_empty());
        assert_eq!(kept.gateway, next.gateway, "every key named applied is in force");
    }
}
