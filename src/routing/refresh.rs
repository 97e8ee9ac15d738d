//! The background tasks that keep the catalog current: rebuilt on every
//! upstream change, reviewed against the pins, retagged under the rules;
//! sessions told what changed as they see it; a new upstream connection
//! told the subscriptions and log level of the last one.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use super::catalog::{self, Catalog};
use super::core::Core;
use super::ix::UpstreamIx;
use super::methods::{lists::kind_of, logging, resources};
use super::warm;
use crate::protocol::encode;
use crate::security::access::Grants;
use crate::security::rules::RuleSet;
use crate::telemetry::metrics::Outcome;
use crate::upstream::{ListKind, Lists, State};

/// How long the cache writer lets changes gather before it writes.
const SAVE_COALESCE: Duration = Duration::from_millis(200);

/// How often the pin store is checked for approvals.
const PINS_POLL: Duration = Duration::from_secs(2);

/// Rebuilds the catalog whenever an upstream's state or lists change, and
/// sends every session `list_changed` for each list it would see
/// differently.
pub(crate) async fn catalog_loop(core: Arc<Core>, shutdown: CancellationToken) {
    // Each upstream's connection last seen ready: a new connection has to
    // be told the subscriptions and log level again.
    let mut connections: std::collections::HashMap<UpstreamIx, u64> = Default::default();
    // Each upstream's lists as the last build checked and rewrote them.
    let mut prepared = catalog::Prepared::default();
    loop {
        tokio::select! {
            () = core.changes.changed() => {}
            () = shutdown.cancelled() => return,
        }
        // Read the generation before the states: the catalog built below
        // reflects at least every change up to it.
        let generation = core.changes.generation();
        let started = tokio::time::Instant::now();
        let table = core.upstreams.now();
        // Settled before the state: an upstream read as unsettled and then
        // as `Starting` is still on its first start (a first start that
        // ends in between shows as `Ready` or `Down`, never as missing).
        let settled: Vec<bool> = table.all().map(|u| u.has_settled()).collect();
        let states: Vec<_> = table.all().map(|u| (u.state(), u.hidden_tools(), u.spec())).collect();
        // An upstream on its first start is listed from the warm-start cache.
        let warm = core.config().gateway.warm_start;
        let cached: Vec<Option<Lists>> = states
            .iter()
            .zip(&settled)
            .map(|((s, _, spec), settled)| match &**s {
                State::Starting { .. } if warm && !settled => {
                    core.warm.tools_of(spec).map(|tools| Lists { tools, ..Lists::default() })
                }
                _ => None,
            })
            .collect();
        let sources: Vec<_> = table
            .iter()
            .zip(&states)
            .zip(&cached)
            .filter_map(|(((i, u), (s, hidden_tools, spec)), cached)| {
                let source = |lists, cached| catalog::Source {
                    upstream: i,
                    id: u.id(),
                    prefix: spec.prefix,
                    filter: &spec.tools,
                    lists,
                    hidden: u.tools_hidden(),
                    hidden_tools,
                    cached,
                };
                match (&**s, cached) {
                    (State::Ready(r), _) => Some(source(&r.lists, false)),
                    (_, Some(lists)) => Some(source(lists, true)),
                    _ => None,
                }
            })
            .collect();
        let namespaces: Vec<&str> = table.all().map(|u| u.id()).collect();
        let max_len = core.config().gateway.max_tool_name_length;
        let mut next = Catalog::build_with(&mut prepared, &sources, max_len, &namespaces);
        let built = started.elapsed();
        core.gate.review_pins(&mut next, &core.upstreams);
        let shown: Vec<_> = next.tools().iter().filter(|t| t.cached && !t.hidden).collect();
        core.telemetry.metrics.tools_cached.set(shown.len() as i64);
        core.warm.set_shown(shown.iter().map(|t| table[t.upstream].id().to_owned()).collect());
        // What the ready upstreams list is their last good tools (not a
        // retired one's, draining beside its replacement).
        let config = core.config();
        let configured: Vec<&str> = config.upstreams.iter().map(|s| s.id.as_str()).collect();
        let live = table.all().zip(&states).filter_map(|(u, (s, _, spec))| match &**s {
            State::Ready(r) if !u.is_retired() => Some((&***spec, &r.lists.tools)),
            _ => None,
        });
        core.warm.record(live, &configured);
        drop(config);
        let before = core.published.load_full();
        let changed = next.changed_lists(&before);
        let outcome = if changed.is_empty() { "unchanged" } else { "changed" };
        core.telemetry.metrics.catalog_refreshes.get_or_create(&Outcome { outcome }).inc();
        // Routing data (hints, hidden flags) may differ even when the lists
        // clients see do not.
        let next = Arc::new(next);
        core.published.store(next.clone());
        core.gate.retag(&next, &core.upstreams);
        if !changed.is_empty() {
            let kinds: Vec<&str> = changed.iter().map(|k| k.key()).collect();
            tracing::info!(lists = %kinds.join(","), "Catalog changed.");
        }
        announce(&core, &before, &next, &changed);
        core.published.built(generation);
        let took = started.elapsed();
        core.telemetry.metrics.catalog_rebuild_duration.observe(took.as_secs_f64());
        tracing::debug!(
            tools = next.tools().len(),
            build_ms = built.as_secs_f64() * 1e3,
            total_ms = took.as_secs_f64() * 1e3,
            "Catalog rebuilt."
        );
        for ((i, _), (state, _, _)) in table.iter().zip(&states) {
            if let State::Ready(r) = &**state
                && connections.get(&i) != Some(&r.connection)
            {
                // The first connection too: a log level or subscription may
                // have come while the upstream was still starting.
                tokio::spawn(restore(core.clone(), i));
                connections.insert(i, r.connection);
            }
        }
    }
}

/// Writes the warm-start cache file (`gateway.catalog_cache`) when what it
/// holds changed: a burst of changes (upstreams ready together) is one
/// write, and one more is made on shutdown if a change is pending. Never
/// on the catalog task: a slow disk must not hold the catalog.
pub(crate) async fn save_warm(core: Arc<Core>, shutdown: CancellationToken) {
    let mut changed = core.warm.subscribe();
    // The file read at start names upstreams no longer configured: they
    // leave it now, not at the next change.
    let mut stale = core.warm.take_stale();
    loop {
        let stopping = match std::mem::take(&mut stale) {
            true => false,
            false => tokio::select! {
                r = changed.changed() => r.is_err(),
                () = shutdown.cancelled() => true,
            },
        };
        if !stopping {
            tokio::select! {
                () = tokio::time::sleep(SAVE_COALESCE) => {}
                () = shutdown.cancelled() => {}
            }
        }
        if !changed.has_changed().unwrap_or(false) && stopping {
            return;
        }
        changed.borrow_and_update();
        let (on, path) = {
            let gw = &core.config().gateway;
            (gw.warm_start, gw.catalog_cache.clone())
        };
        if let (true, Some(path)) = (on, path) {
            let entries = core.warm.entries();
            let wrote = tokio::task::spawn_blocking(move || {
                let (text, left_out) = warm::render(&entries, warm::MAX_FILE_BYTES as usize);
                if !left_out.is_empty() {
                    tracing::warn!(upstreams = %left_out.join(","), "Left out of the warm-start cache: the file would pass its size limit.");
                }
                warm::write(&path, &text)
            })
            .await;
            let outcome = match wrote {
                Ok(Ok(())) => "saved",
                Ok(Err(e)) => {
                    tracing::warn!(error = %e, "Could not write the warm-start cache; the next restart lists slow upstreams late.");
                    "save_failed"
                }
                Err(e) => {
                    tracing::warn!(error = %e, "Could not write the warm-start cache.");
                    "save_failed"
                }
            };
            core.telemetry.metrics.catalog_cache_operations.get_or_create(&Outcome { outcome }).inc();
        }
        if stopping {
            return;
        }
    }
}

/// Sends each session `list_changed` for the lists that changed as it sees
/// them: a session from which `[[access]]` hides an upstream is not told
/// when that upstream's tools come, go or change (it would learn the
/// upstream exists and when it restarts).
///
/// What a session sees depends only on its grants, and many sessions share
/// them (a group's, everyone's): each set of grants is looked at once, and
/// only at the entries of the upstreams whose entries changed. A change
/// costs the distinct grants times those entries, plus a send per session
/// told.
fn announce(core: &Core, before: &Catalog, after: &Catalog, changed: &[ListKind]) {
    // Also when no whole list changed (`changed` empty): an identical
    // definition that moved between unprefixed upstreams leaves the whole
    // list's fingerprint as it was, yet a session that sees only one of
    // those upstreams sees a change.
    let scope = Scope::new(before, after, changed);
    if scope.lists.is_empty() {
        return;
    }
    #[allow(clippy::mutable_key_type, reason = "grants hash and compare by which entries they hold (access.rs)")]
    let mut told: HashMap<Arc<Grants>, Vec<ListKind>> = HashMap::new();
    // A stateless peer has no stream to tell: its clients listen with
    // `subscriptions/listen`, which has a peer of its own.
    for p in core.sessions.all().into_iter().filter(|p| !p.is_stateless()) {
        let grants = p.grants();
        // Who sees everything is told of what changed as a whole.
        let kinds: &[ListKind] = match grants.is_open() {
            true => changed,
            false => told.entry(grants).or_insert_with_key(|g| scope.seen_changed(g)),
        };
        for &kind in kinds {
            let method = kind.changed_notification();
            p.send(&core.no_label, method, encode::notification(method, None));
        }
    }
}

/// Where two catalogs differ: for each list told of, the upstreams whose
/// entries changed (resources with their templates).
struct Scope<'c> {
    before: &'c Catalog,
    after: &'c Catalog,
    lists: Vec<(ListKind, Vec<Part>)>,
}

/// A list (or templates, part of resources) and the upstreams whose
/// entries of it changed.
type Part = (ListKind, Vec<UpstreamIx>);

impl<'c> Scope<'c> {
    /// Every list that changed as a whole (`changed`) or in some upstream's
    /// share of it.
    fn new(before: &'c Catalog, after: &'c Catalog, changed: &[ListKind]) -> Self {
        let lists = [ListKind::Tools, ListKind::Prompts, ListKind::Resources]
            .iter()
            .map(|&kind| {
                let parts: &[ListKind] = match kind {
                    ListKind::Resources => &[ListKind::Resources, ListKind::Templates],
                    _ => std::slice::from_ref(&kind),
                };
                let parts: Vec<Part> =
                    parts.iter().map(|&part| (part, after.changed_upstreams(before, part))).collect();
                (kind, parts)
            })
            .filter(|(kind, parts)| changed.contains(kind) || parts.iter().any(|(_, ups)| !ups.is_empty()))
            .collect();
        Scope { before, after, lists }
    }

    /// The lists whose content `grants` see differently: where the
    /// upstreams that changed show them other entries.
    fn seen_changed(&self, grants: &Grants) -> Vec<ListKind> {
        let what = |kind| kind_of(kind);
        self.lists
            .iter()
            .filter(|(_, parts)| {
                parts.iter().any(|(part, upstreams)| {
                    let visible = |ident: crate::security::Ident<'_>| grants.allows(what(*part), ident);
                    self.before.visible_fingerprint_in(*part, upstreams, &visible)
                        != self.after.visible_fingerprint_in(*part, upstreams, &visible)
                })
            })
            .map(|(kind, _)| *kind)
            .collect()
    }
}

/// The lists a session is told of (`list_changed`): templates count as
/// resources.
pub(crate) const TOLD: [ListKind; 3] = [ListKind::Tools, ListKind::Prompts, ListKind::Resources];

/// A fingerprint of what `grants` see of `catalog`'s list `kind`
/// (resources with their templates).
pub(crate) fn seen_by(catalog: &Catalog, kind: ListKind, grants: &Grants) -> u64 {
    let what = kind_of(kind);
    let visible = |ident: crate::security::Ident<'_>| grants.allows(what, ident);
    let mut h = catalog.visible_fingerprint(kind, &visible);
    if kind == ListKind::Resources {
        h ^= catalog.visible_fingerprint(ListKind::Templates, &visible).rotate_left(1);
    }
    h
}

/// Tells an upstream that just became ready what its previous connection
/// knew: the subscriptions and the log level.
async fn restore(core: Arc<Core>, i: UpstreamIx) {
    core.subscriptions.forget_told(i).await;
    for uri in core.subscriptions.uris_of(i) {
        if let Err(e) = resources::sync(&core, &(i, uri)).await {
            tracing::warn!(upstream = %core.upstreams.get(i).id(), error = %e.message, "Could not renew a resource subscription.");
        }
    }
    if let Some(level) = core.levels.applied() {
        logging::tell(&core, i, level).await;
    }
}

/// Watches the pin store for approvals (`mcp-gateway tools approve`
/// rewrites it) and rebuilds the catalog when it changes. It runs with or
/// without a store: a reload may add one.
pub(crate) async fn watch_pins(core: Arc<Core>, shutdown: CancellationToken) {
    let mut tick = tokio::time::interval(PINS_POLL);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            () = shutdown.cancelled() => return,
        }
        if core.gate.pins_changed() {
            tracing::info!("The pin store changed; reviewing the catalog again.");
            core.changes.bump();
        }
    }
}

/// Reloads the rules file when it changes; a bad new file is refused and
/// the rules in force stay. The file and the interval are those of the
/// config in force at each tick (a reload may change them; the reload
/// itself loads a newly named file).
pub(crate) async fn watch_rules(core: Arc<Core>, shutdown: CancellationToken) {
    let modified = |p: &std::path::Path| std::fs::metadata(p).and_then(|m| m.modified()).ok();
    let mut watched = core.config().rules.file.clone().map(|p| (modified(&p), p));
    loop {
        let interval = core.config().rules.reload_interval;
        tokio::select! {
            () = tokio::time::sleep(interval) => {}
            () = shutdown.cancelled() => return,
        }
        let Some(path) = core.config().rules.file.clone() else {
            watched = None;
            continue;
        };
        let now = modified(&path);
        match &watched {
            Some((seen, p)) if *p == path && *seen == now => continue,
            // Another file: the reload that named it loaded it.
            Some((_, p)) if *p != path => {
                watched = Some((now, path));
                continue;
            }
            None => {
                watched = Some((now, path));
                continue;
            }
            _ => {}
        }
        watched = Some((now, path.clone()));
        match RuleSet::load(&path) {
            // A reload may have named another file while this one loaded.
            Ok(_) if core.config().rules.file.as_ref() != Some(&path) => {}
            Ok(set) => {
                tracing::info!(rules = set.rules().len(), "Sequence rules reloaded.");
                core.gate.load_rules(set);
                core.gate.retag(&core.published.load(), &core.upstreams);
            }
            Err(e) => tracing::error!(error = %e, "The changed rules file is refused; the rules in force stay."),
        }
    }
}

#[cfg(test)]
mod tests;
