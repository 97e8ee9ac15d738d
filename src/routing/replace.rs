//! The upstream half of a reload (docs/design.md D11): which configured
//! upstreams to add, remove or replace, and doing it without failing a
//! call.
//!
//! - **Added**: started and configured at once; its tools appear (with
//!   `list_changed`) when it is ready.
//! - **Removed**: no longer configured at once (its tools go); it keeps
//!   its slot while it drains the calls in flight (at most
//!   `drain_timeout`), then stops.
//! - **Replaced, make-before-break** (the default): the new one starts in
//!   a slot of its own beside the old, which keeps serving; once the new
//!   one is ready it takes the old one's place (the catalog moves to it)
//!   and the old one drains and stops. If the new one does not become
//!   ready within its `startup_timeout`, it is stopped and the old one
//!   keeps serving (logged; the next reload tries again).
//! - **Replaced, break-before-make** (`replace = "break-before-make"`):
//!   the old one leaves the configured set at once (its tools go), drains
//!   and stops; then the new one starts.
//!
//! A session's own connections (`isolation = "per-session"`) and a
//! principal's (`per_principal`) are keyed by the upstream's slot, so the
//! first call after the switch opens a new one to the new upstream; the
//! old ones drain and stop with the old upstream.
//!
//! A reload that comes while a make-before-break replacement is still
//! starting lets it go on if it asks for the same, and stops it
//! otherwise. One that would change an id being replaced
//! break-before-make is refused until the new one is configured.
//!
//! A retired upstream is marked first (no new session or principal
//! connection is opened to it: such a call goes to the one configured
//! now), stops being named by the catalog, drains and stops.

use std::sync::Arc;
use std::time::Duration;

use super::core::Core;
use super::ix::UpstreamIx;
use super::upstreams::Table;
use crate::config::{Replace, UpstreamSpec};
use crate::upstream::{State, Upstream};

/// One step of a reload's upstream diff.
#[derive(Debug)]
pub(crate) enum Step {
    /// A new upstream.
    Add(UpstreamSpec),
    /// A configured upstream the file no longer has.
    Remove(UpstreamIx),
    /// A configured upstream whose spec changed.
    Replace(UpstreamIx, UpstreamSpec),
    /// A configured upstream whose settings changed, not what it is: they
    /// apply in place, keeping its connection and breakers' state.
    Settings(UpstreamIx, UpstreamSpec),
    /// A replacement still starting that the file no longer asks for (it
    /// went back to what runs).
    Cancel(UpstreamIx),
}

impl Step {
    /// What the reload report says of it.
    pub(crate) fn describe(&self, table: &Table) -> String {
        match self {
            Step::Add(spec) => format!("upstreams.{}: added", spec.id),
            Step::Remove(i) => format!("upstreams.{}: removed", table[*i].id()),
            Step::Replace(_, spec) => match spec.replace {
                Replace::MakeBeforeBreak => format!("upstreams.{}: replaced (make-before-break)", spec.id),
                Replace::BreakBeforeMake => format!("upstreams.{}: replaced (break-before-make)", spec.id),
            },
            Step::Cancel(i) => format!("upstreams.{}: replacement cancelled", table[*i].id()),
            Step::Settings(_, spec) => format!("upstreams.{}: settings applied in place", spec.id),
        }
    }
}

/// Whether two specs describe the same running upstream: equal in
/// everything but how a reload would replace it.
fn same(a: &UpstreamSpec, b: &UpstreamSpec) -> bool {
    UpstreamSpec { replace: a.replace, ..b.clone() } == *a
}

/// Whether `next` differs from `now` only in settings that apply to the
/// running upstream ([`Upstream::reconfigure`]): not in what it connects
/// to or how (transport, `env`, `headers`, `shutdown_grace`, OAuth,
/// isolation), nor in what is sized or built once (the bulkhead, whether
/// breakers are on and per tool, the retry budget).
fn in_place(now: &UpstreamSpec, next: &UpstreamSpec) -> bool {
    now.id == next.id
        && now.transport == next.transport
        && now.oauth == next.oauth
        && now.isolation == next.isolation
        // Declared to the upstream at `initialize` (the `roots` capability).
        && now.roots == next.roots
        && now.max_concurrency == next.max_concurrency
        && now.max_queue == next.max_queue
        && now.breaker.enabled == next.breaker.enabled
        && now.breaker.per_tool == next.breaker.per_tool
        && now.retry.budget_ratio == next.retry.budget_ratio
        && now.retry.budget_min_per_second == next.retry.budget_min_per_second
}

/// The steps that take the configured upstreams of `table` to `next`. A
/// replacement still starting counts as what will run: a reload that asks
/// for it again (a second write of the same file) lets it go on. An id
/// being replaced break-before-make may not change again until its new
/// upstream is configured (two of it must never run at once): such a
/// reload is refused.
pub(crate) fn plan(core: &Core, table: &Table, next: &[UpstreamSpec]) -> Result<Vec<Step>, String> {
    let mut steps = Vec::new();
    for spec in next {
        if let Some(breaking) = core.upstreams.breaking_of(&spec.id) {
            if same(&breaking, spec) {
                continue;
            }
            return Err(busy_breaking(&spec.id));
        }
        let Some(i) = table.find(&spec.id) else {
            steps.push(Step::Add(spec.clone()));
            continue;
        };
        match core.upstreams.pending_of(&spec.id) {
            Some((_, p)) if same(&p.spec(), spec) => {}
            Some((slot, _)) if same(&table[i].spec(), spec) => steps.push(Step::Cancel(slot)),
            _ if same(&table[i].spec(), spec) => {}
            _ if in_place(&table[i].spec(), spec) => steps.push(Step::Settings(i, spec.clone())),
            _ => steps.push(Step::Replace(i, spec.clone())),
        }
    }
    for (i, u) in table.iter() {
        if !next.iter().any(|s| s.id == u.id()) {
            steps.push(Step::Remove(i));
        }
    }
    if let Some(id) = core.upstreams.breaking_ids().into_iter().find(|id| !next.iter().any(|s| s.id == *id)) {
        return Err(busy_breaking(&id));
    }
    Ok(steps)
}

fn busy_breaking(id: &str) -> String {
    format!(
        "upstream `{id}` is being replaced break-before-make (its old process is draining or its new one starting); \
         reload again once it is ready"
    )
}

/// Carries out `steps` (see the module's doc). Returns at once: starting,
/// draining and switching happen in the background.
pub(crate) fn apply(core: &Arc<Core>, steps: Vec<Step>) {
    for step in steps {
        // A replacement still starting is overtaken by any step on its id.
        let id = match &step {
            Step::Add(spec) | Step::Replace(_, spec) | Step::Settings(_, spec) => spec.id.clone(),
            Step::Remove(i) | Step::Cancel(i) => core.upstreams.get(*i).id().to_owned(),
        };
        if let Some((slot, pending)) = core.upstreams.pending_of(&id)
            && core.upstreams.cancel_pending(slot)
        {
            tracing::info!(upstream = %id, "A newer reload overtook this replacement; stopping it.");
            tokio::spawn(async move { pending.shutdown().await });
        }
        match step {
            Step::Cancel(_) => {}
            Step::Settings(i, spec) => {
                tracing::info!(upstream = %spec.id, "Applying an upstream's new settings in place.");
                // The shared one first: a session's or principal's own
                // connection opened from now on copies its new spec.
                core.upstreams.get(i).reconfigure(spec.clone());
                for u in core.upstreams.connections_of(i, &core.sessions.all()) {
                    u.reconfigure(spec.clone());
                }
            }
            Step::Add(spec) => {
                tracing::info!(upstream = %spec.id, "Starting an upstream the reload added.");
                let u = core.start_upstream(spec);
                core.upstreams.update(|t| t.with_added(u));
            }
            Step::Remove(i) => {
                let old = core.upstreams.get(i);
                old.retire();
                core.upstreams.update(|t| t.without(i));
                // Its last tools go now: a reload that adds it back must
                // not list them from the cache.
                core.warm.forget(old.id());
                tracing::info!(upstream = %old.id(), "Draining and stopping an upstream the reload removed.");
                tokio::spawn(retire(core.clone(), i, old));
            }
            Step::Replace(i, spec) if spec.replace == Replace::BreakBeforeMake => {
                let old = core.upstreams.get(i);
                old.retire();
                core.upstreams.begin_breaking(&spec);
                core.upstreams.update(|t| t.without(i));
                tracing::info!(upstream = %old.id(), "Replacing an upstream break-before-make: stopping the old one first.");
                let core = core.clone();
                tokio::spawn(async move {
                    // Whatever ends this task (shutdown, a panic), the id
                    // does not stay "being replaced".
                    let mut guard = Abandon { core: core.clone(), id: spec.id.clone(), finished: false };
                    retire(core.clone(), i, old).await;
                    if core.shutdown.is_cancelled() {
                        return;
                    }
                    let u = core.start_upstream(spec);
                    core.upstreams.finish_breaking(u.clone());
                    guard.finished = true;
                    core.changes.bump();
                    // Shutdown may have taken its list of upstreams just
                    // before this one was configured.
                    if core.shutdown.is_cancelled() {
                        u.shutdown().await;
                    }
                });
            }
            Step::Replace(_, spec) => {
                tracing::info!(upstream = %spec.id, "Replacing an upstream make-before-break: starting the new one beside it.");
                let new = core.start_upstream(spec);
                let slot = core.upstreams.add_pending(new.clone());
                tokio::spawn(switch_when_ready(core.clone(), slot, new));
            }
        }
    }
    core.changes.bump();
}

/// Make-before-break: waits for `new` (in `slot`) to become ready, then
/// puts it in the place of the upstream configured under its id and
/// retires that one. A new one that is not ready within its
/// `startup_timeout` is stopped; the old one keeps serving.
async fn switch_when_ready(core: Arc<Core>, slot: UpstreamIx, new: Arc<Upstream>) {
    let deadline = tokio::time::Instant::now() + new.spec().startup_timeout;
    // Ready, or the deadline: a first start that fails is retried by its
    // supervisor meanwhile.
    loop {
        if matches!(*new.state(), State::Ready(_)) {
            break;
        }
        if core.shutdown.is_cancelled() {
            if core.upstreams.cancel_pending(slot) {
                new.shutdown().await;
            }
            return;
        }
        if tokio::time::Instant::now() >= deadline {
            if core.upstreams.cancel_pending(slot) {
                tracing::error!(
                    upstream = %new.id(),
                    "The replacement did not become ready within its startup_timeout; the old one keeps serving. \
                     Fix the config and reload again."
                );
                new.shutdown().await;
            }
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let Some((old, retired)) = core.upstreams.promote(slot) else {
        // A newer reload overtook it (and stopped it).
        return;
    };
    tracing::info!(upstream = %new.id(), "The replacement is ready and takes new calls; draining the old one.");
    retire(core, old, retired).await;
}

/// Removes `id` from the break-before-make replacements in progress when
/// its task ends without finishing it (shutdown, a panic).
struct Abandon {
    core: Arc<Core>,
    id: String,
    finished: bool,
}

impl Drop for Abandon {
    fn drop(&mut self) {
        if !self.finished {
            self.core.upstreams.abandon_breaking(&self.id);
        }
    }
}

/// Lets `old` (in slot `i`, retired: no longer configured) finish its
/// calls in flight, at most `drain_timeout`, then stops it, with the
/// connections of sessions and principals that were opened to it. It
/// first waits (briefly) for the catalog to stop naming it, so a call
/// that looked a tool up a moment ago still finds it serving.
async fn retire(core: Arc<Core>, i: UpstreamIx, old: Arc<Upstream>) {
    core.changes.bump();
    let generation = core.changes.generation();
    core.published.wait_built(generation, Duration::from_secs(5), &core.shutdown).await;
    let own = core.upstreams.take_connections_of(i, &core.sessions.all());
    let drain = core.config().gateway.drain_timeout;
    let deadline = tokio::time::Instant::now() + drain;
    let busy = || old.busy() + own.iter().map(|u| u.busy()).sum::<usize>();
    while busy() > 0 && tokio::time::Instant::now() < deadline && !core.shutdown.is_cancelled() {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    if busy() > 0 {
        tracing::warn!(upstream = %old.id(), in_flight = busy(), "Drain time is over; stopping a retired upstream with calls in flight.");
    }
    futures_util::future::join_all(std::iter::once(&old).chain(&own).map(|u| u.shutdown())).await;
    core.upstreams.forget_retiring(&own);
    tracing::info!(upstream = %old.id(), "A retired upstream stopped.");
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::path::Path;

    use super::*;
    use crate::config::Config;
    use crate::routing::tests::{core, down};

    fn spec(toml: &str) -> UpstreamSpec {
        let c = Config::from_str(toml, Path::new("/etc/gw/gateway.toml"), &BTreeMap::new()).expect("valid");
        c.upstreams.into_iter().next().expect("one upstream")
    }

    #[test]
    fn settings_apply_in_place_and_what_it_is_replaces_it() {
        let now = spec("[upstreams.a]\ncommand = \"a\"\n");
        for settings in [
            "request_timeout = \"5s\"",
            "tools = { deny = [\"x\"] }",
            "trusted = true",
            "idempotent_tools = [\"read_*\"]",
            "retry.attempts = 2",
            "breaker.cooldown = \"1s\"",
            "health.interval = \"5s\"",
        ] {
            let next = spec(&format!("[upstreams.a]\ncommand = \"a\"\n{settings}\n"));
            assert!(!same(&now, &next) && in_place(&now, &next), "{settings}");
        }
        for identity in [
            "args = [\"-v\"]",
            "env = { A = \"1\" }",
            "shutdown_grace = \"5s\"",
            "isolation = \"per-session\"",
            "max_concurrency = 3",
            "breaker.enabled = false",
            "retry.budget_ratio = 0.5",
            "roots = [\"file:///srv\"]",
        ] {
            let next = spec(&format!("[upstreams.a]\ncommand = \"a\"\n{identity}\n"));
            assert!(!in_place(&now, &next), "{identity}");
        }
    }

    #[test]
    fn specs_are_the_same_upstream_whatever_replace_says_and_differ_in_anything_else() {
        let a = spec("[upstreams.a]\ncommand = \"a\"\ntools = { allow = [\"x*\"] }\n");
        let bbm =
            spec("[upstreams.a]\ncommand = \"a\"\ntools = { allow = [\"x*\"] }\nreplace = \"break-before-make\"\n");
        assert!(same(&a, &bbm), "how it is replaced is not what it is");
        for other in [
            "[upstreams.a]\ncommand = \"a\"\ntools = { allow = [\"y*\"] }\n",
            "[upstreams.a]\ncommand = \"a\"\nargs = [\"-v\"]\ntools = { allow = [\"x*\"] }\n",
            "[upstreams.a]\ncommand = \"a\"\ntools = { allow = [\"x*\"] }\nrequest_timeout = \"5s\"\n",
        ] {
            assert!(!same(&a, &spec(other)), "{other}");
        }
    }

    fn specs(src: &str) -> Vec<UpstreamSpec> {
        Config::from_str(src, Path::new("gateway.toml"), &BTreeMap::new()).expect("valid").upstreams
    }

    fn described(core: &Core, steps: &[Step]) -> Vec<String> {
        let table = core.upstreams.now();
        steps.iter().map(|s| s.describe(&table)).collect()
    }

    #[tokio::test]
    async fn the_plan_adds_removes_and_replaces_against_what_runs() {
        let core = core(&format!("{}{}{}", down("keep", ""), down("gone", ""), down("swap", "")));
        let table = core.upstreams.now();
        let next =
            specs(&format!("{}{}{}", down("keep", ""), down("swap", "request_timeout = \"5s\""), down("new", "")));
        let steps = plan(&core, &table, &next).unwrap();
        assert_eq!(
            described(&core, &steps),
            ["upstreams.new: added", "upstreams.swap: settings applied in place", "upstreams.gone: removed"]
        );
        // What it connects to: replaced.
        let moved = specs(&format!("{}{}", down("keep", "args = [\"-v\"]"), down("swap", "")));
        let steps = plan(&core, &table, &moved).unwrap();
        assert_eq!(
            described(&core, &steps),
            ["upstreams.keep: replaced (make-before-break)", "upstreams.gone: removed"]
        );
        assert!(
            plan(&core, &table, &specs(&format!("{}{}{}", down("gone", ""), down("keep", ""), down("swap", ""))))
                .unwrap()
                .is_empty()
        );
    }

    #[tokio::test]
    async fn a_pending_replacement_goes_on_when_asked_again_and_is_cancelled_when_the_file_goes_back() {
        let core = core(&down("swap", ""));
        let changed = specs(&down("swap", "request_timeout = \"5s\""));
        let pending = core.start_upstream(changed[0].clone());
        let slot = core.upstreams.add_pending(pending);
        let table = core.upstreams.now();
        assert!(plan(&core, &table, &changed).unwrap().is_empty(), "the same again: it goes on");
        let back = plan(&core, &table, &specs(&down("swap", ""))).unwrap();
        assert!(matches!(back[..], [Step::Cancel(s)] if s == slot), "{back:?}");
    }

    #[tokio::test]
    async fn an_id_being_replaced_break_before_make_may_not_change_or_go_until_it_is_done() {
        let core = core(&format!("{}{}", down("a", ""), down("bbm", "replace = \"break-before-make\"")));
        let next = specs(&format!(
            "{}{}",
            down("a", ""),
            down("bbm", "replace = \"break-before-make\"\nrequest_timeout = \"5s\"")
        ));
        core.upstreams.begin_breaking(&next[1]);
        let table = core.upstreams.now();
        assert!(plan(&core, &table, &next).unwrap().is_empty(), "asking for the same: nothing to do");
        let other = specs(&format!("{}{}", down("a", ""), down("bbm", "request_timeout = \"9s\"")));
        assert!(plan(&core, &table, &other).unwrap_err().contains("break-before-make"));
        assert!(plan(&core, &table, &specs(&down("a", ""))).unwrap_err().contains("`bbm`"), "nor be removed");
    }
}
