//! The configured upstreams, by index and id, and the connections of their
//! own that sessions (`isolation = "per-session"`) and principals
//! (`per_principal` OAuth) are given.

use std::collections::HashMap;
use std::ops::Index;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};

use arc_swap::ArcSwap;

use super::catalog;
use super::ix::UpstreamIx;
use super::peer::{CallRelay, Peer};
use crate::config::Isolation;
use crate::error::CallError;
use crate::sync::Locked;
use crate::upstream::{Isolated, Relay, State, Upstream};

/// (upstream, principal id): one connection of a principal's own.
type PrincipalKey = (UpstreamIx, Arc<str>);

/// The upstreams at one moment: every one ever started, by index (a
/// replaced or removed upstream keeps its slot, so a catalog or a call
/// that still names it reaches the old one while it drains), and the
/// configured ones among them, in id order.
#[derive(Debug)]
pub(crate) struct Table {
    slots: Vec<Arc<Upstream>>,
    /// The configured upstreams, in id order.
    live: Vec<UpstreamIx>,
    by_id: HashMap<String, UpstreamIx>,
}

impl Index<UpstreamIx> for Table {
    type Output = Arc<Upstream>;

    fn index(&self, i: UpstreamIx) -> &Arc<Upstream> {
        &self.slots[i.index()]
    }
}

// === impl Table ===

impl Table {
    /// The configured upstreams, in id order.
    pub(crate) fn all(&self) -> impl Iterator<Item = &Arc<Upstream>> {
        self.live.iter().map(|i| &self.slots[i.index()])
    }

    /// The configured upstreams with their indexes.
    pub(crate) fn iter(&self) -> impl Iterator<Item = (UpstreamIx, &Arc<Upstream>)> {
        self.live.iter().map(|&i| (i, &self.slots[i.index()]))
    }

    /// Every upstream with a slot: the configured ones and those a reload
    /// replaced or removed (stopped, or draining).
    pub(crate) fn every(&self) -> impl Iterator<Item = &Arc<Upstream>> {
        self.slots.iter()
    }

    /// How many slots (configured or not): an index is below this.
    pub(crate) fn slots(&self) -> usize {
        self.slots.len()
    }

    /// The configured upstream whose id is `id`.
    pub(crate) fn find(&self, id: &str) -> Option<UpstreamIx> {
        self.by_id.get(id).copied()
    }

    /// A copy to change.
    fn copy(&self) -> Table {
        Table { slots: self.slots.clone(), live: self.live.clone(), by_id: self.by_id.clone() }
    }

    /// This table with `u` in a new slot, configured (in id order).
    pub(crate) fn with_added(&self, u: Arc<Upstream>) -> Table {
        let mut t = self.copy();
        let i = t.push(u);
        t.configure(i);
        t
    }

    /// This table without upstream `i` configured (its slot stays).
    pub(crate) fn without(&self, i: UpstreamIx) -> Table {
        let mut t = self.copy();
        t.live.retain(|&x| x != i);
        t.by_id.retain(|_, x| *x != i);
        t
    }

    fn push(&mut self, u: Arc<Upstream>) -> UpstreamIx {
        self.slots.push(u);
        UpstreamIx::new(self.slots.len() - 1)
    }

    /// Configures slot `i` under its id (in place of any upstream that had
    /// it), keeping `live` in id order.
    fn configure(&mut self, i: UpstreamIx) {
        let id = self.slots[i.index()].id().to_owned();
        if let Some(old) = self.by_id.insert(id, i) {
            self.live.retain(|&x| x != old);
        }
        self.live.push(i);
        let slots = &self.slots;
        self.live.sort_by(|a, b| slots[a.index()].id().cmp(slots[b.index()].id()));
    }
}

/// The upstreams, in the configured order.
#[derive(Debug)]
pub(crate) struct Upstreams {
    /// Swapped whole when a reload adds, removes or replaces one; read
    /// without a lock.
    table: ArcSwap<Table>,
    /// Serialises the writers of `table` (a reload, a replacement that
    /// became ready); never held across an `.await`.
    write: Mutex<()>,
    /// Connections of one principal's own, started on its first call.
    /// Never held across an `.await`.
    principals: Mutex<HashMap<PrincipalKey, Arc<Upstream>>>,
    /// Replacements still starting (make-before-break), by slot.
    pending: Mutex<HashMap<UpstreamIx, Arc<Upstream>>>,
    /// Connections a retirement took from sessions and principals, until
    /// they stopped (the gateway's shutdown stops those still here).
    retiring: Mutex<Vec<Arc<Upstream>>>,
    /// Ids being replaced break-before-make (old one draining, new one
    /// not configured yet), with the spec they are replaced by.
    breaking: Mutex<HashMap<String, crate::config::UpstreamSpec>>,
    /// Held by a reload from its plan to its last step, and by a
    /// replacement taking its place, so neither acts on a table the other
    /// changed in between. Never held across an `.await`.
    reload: Mutex<()>,
}

// === impl Upstreams ===

impl Upstreams {
    /// The upstreams of `list`, in its order.
    pub(crate) fn new(list: Vec<Arc<Upstream>>) -> Self {
        let by_id = list.iter().enumerate().map(|(i, u)| (u.id().to_owned(), UpstreamIx::new(i))).collect();
        let live = (0..list.len()).map(UpstreamIx::new).collect();
        let table = Table { slots: list, live, by_id };
        Self {
            table: ArcSwap::from_pointee(table),
            write: Mutex::default(),
            principals: Mutex::default(),
            pending: Mutex::default(),
            breaking: Mutex::default(),
            retiring: Mutex::default(),
            reload: Mutex::default(),
        }
    }

    /// The upstreams now.
    pub(crate) fn now(&self) -> Arc<Table> {
        self.table.load_full()
    }

    /// The upstream in slot `i` (configured, or draining after a reload).
    pub(crate) fn get(&self, i: UpstreamIx) -> Arc<Upstream> {
        self.table.load()[i].clone()
    }

    /// The configured upstream whose id is `id`.
    pub(crate) fn find(&self, id: &str) -> Option<UpstreamIx> {
        self.table.load().find(id)
    }

    /// Every configured upstream, in order.
    pub(crate) fn all(&self) -> Vec<Arc<Upstream>> {
        self.table.load().all().cloned().collect()
    }

    /// Changes the table under the writers' lock: `change` gets the
    /// current one and returns the next.
    pub(crate) fn update(&self, change: impl FnOnce(&Table) -> Table) {
        let _writer = self.write.locked();
        let next = change(&self.table.load());
        self.table.store(Arc::new(next));
    }

    /// Gives `new` (a replacement still starting) a slot, not configured.
    pub(crate) fn add_pending(&self, new: Arc<Upstream>) -> UpstreamIx {
        let _writer = self.write.locked();
        let mut t = self.table.load().copy();
        let slot = t.push(new.clone());
        self.table.store(Arc::new(t));
        self.pending.locked().insert(slot, new);
        slot
    }

    /// The replacement of upstream `id` still starting, if any.
    pub(crate) fn pending_of(&self, id: &str) -> Option<(UpstreamIx, Arc<Upstream>)> {
        self.pending.locked().iter().find(|(_, u)| u.id() == id).map(|(i, u)| (*i, u.clone()))
    }

    /// Gives up the replacement in `slot`; false when a newer reload took
    /// it already.
    pub(crate) fn cancel_pending(&self, slot: UpstreamIx) -> bool {
        self.pending.locked().remove(&slot).is_some()
    }

    /// Holds off promotions while a reload plans and applies.
    pub(crate) fn lock_reload(&self) -> std::sync::MutexGuard<'_, ()> {
        self.reload.locked()
    }

    /// Puts the ready replacement in `slot` in the place of whatever is
    /// configured under its id, unless a newer reload overtook it; returns
    /// the slot and upstream it replaced, marked retired.
    pub(crate) fn promote(&self, slot: UpstreamIx) -> Option<(UpstreamIx, Arc<Upstream>)> {
        let _reload = self.reload.locked();
        let _writer = self.write.locked();
        self.pending.locked().remove(&slot)?;
        let mut t = self.table.load().copy();
        let old = t.find(t.slots[slot.index()].id()).map(|i| (i, t.slots[i.index()].clone()));
        // Retired before the table says so: no connection of a session or
        // principal opens to it in between.
        if let Some((_, u)) = &old {
            u.retire();
        }
        t.configure(slot);
        self.table.store(Arc::new(t));
        old
    }

    /// The spec an id is being replaced by break-before-make, if it is.
    pub(crate) fn breaking_of(&self, id: &str) -> Option<crate::config::UpstreamSpec> {
        self.breaking.locked().get(id).cloned()
    }

    /// Gives up a break-before-make replacement that will not finish (the
    /// gateway is shutting down, or its task failed).
    pub(crate) fn abandon_breaking(&self, id: &str) {
        self.breaking.locked().remove(id);
    }

    /// The connections retirements took and have not stopped yet.
    pub(crate) fn take_retiring(&self) -> Vec<Arc<Upstream>> {
        std::mem::take(&mut *self.retiring.locked())
    }

    /// Forgets connections a retirement has stopped.
    pub(crate) fn forget_retiring(&self, stopped: &[Arc<Upstream>]) {
        self.retiring.locked().retain(|u| !stopped.iter().any(|s| Arc::ptr_eq(u, s)));
    }

    /// The ids being replaced break-before-make.
    pub(crate) fn breaking_ids(&self) -> Vec<String> {
        self.breaking.locked().keys().cloned().collect()
    }

    /// Records that `spec.id` is being replaced break-before-make.
    pub(crate) fn begin_breaking(&self, spec: &crate::config::UpstreamSpec) {
        self.breaking.locked().insert(spec.id.clone(), spec.clone());
    }

    /// Configures `new`, which replaced its id break-before-make, and
    /// ends the replacement.
    pub(crate) fn finish_breaking(&self, new: Arc<Upstream>) {
        // The reload lock first, as `promote` does: a reload planning now
        // sees the id either breaking or configured, never neither.
        let _reload = self.reload.locked();
        let _writer = self.write.locked();
        self.breaking.locked().remove(new.id());
        let mut t = self.table.load().copy();
        let i = t.push(new);
        t.configure(i);
        self.table.store(Arc::new(t));
    }

    /// `u` (upstream `i`), or when a reload replaced it, the one
    /// configured under its id now (the table is read only then).
    fn current(&self, i: UpstreamIx, u: Arc<Upstream>) -> (UpstreamIx, Arc<Upstream>) {
        if !u.is_retired() {
            return (i, u);
        }
        let table = self.table.load();
        match table.find(u.id()) {
            Some(j) => (j, table[j].clone()),
            None => (i, u),
        }
    }

    /// The connections of sessions and principals open to slot `i` (they
    /// take new settings with it).
    pub(crate) fn connections_of(&self, i: UpstreamIx, sessions: &[Arc<Peer>]) -> Vec<Arc<Upstream>> {
        let mut own: Vec<Arc<Upstream>> = sessions.iter().filter_map(|p| p.lock_instances().get(&i).cloned()).collect();
        own.extend(self.principals.locked().iter().filter(|((u, _), _)| *u == i).map(|(_, c)| c.clone()));
        own
    }

    /// Takes the connections of sessions (`isolation = "per-session"`)
    /// and principals (`per_principal`) opened to slot `i`: their next
    /// call opens one to whatever is configured now.
    pub(crate) fn take_connections_of(&self, i: UpstreamIx, sessions: &[Arc<Peer>]) -> Vec<Arc<Upstream>> {
        let mut own: Vec<Arc<Upstream>> = sessions.iter().filter_map(|p| p.lock_instances().remove(&i)).collect();
        let mut principals = self.principals.locked();
        let keys: Vec<PrincipalKey> = principals.keys().filter(|(u, _)| *u == i).cloned().collect();
        own.extend(keys.iter().filter_map(|k| principals.remove(k)));
        self.retiring.locked().extend(own.iter().cloned());
        own
    }

    /// Upstream `i` must be serving (else the error says why).
    pub(crate) fn ready(&self, i: UpstreamIx) -> Result<(), CallError> {
        let u = self.get(i);
        let state = u.state();
        match *state {
            State::Ready(_) => Ok(()),
            _ => Err(u.unavailable(&state)),
        }
    }

    /// How many are ready now.
    pub(crate) fn ready_count(&self) -> usize {
        self.table.load().all().filter(|u| matches!(*u.state(), State::Ready(_))).count()
    }

    /// The ids of those not serving now.
    pub(crate) fn not_serving(&self) -> Vec<String> {
        let table = self.table.load();
        table.all().filter(|u| !matches!(*u.state(), State::Ready(_))).map(|u| u.id().to_owned()).collect()
    }

    /// Whether every upstream's first start has ended.
    #[cfg(test)]
    pub(crate) fn all_settled(&self) -> bool {
        self.table.load().all().all(|u| u.has_settled())
    }

    /// The URI clients know upstream `i`'s `original` one by.
    pub(crate) fn exposed_uri(&self, i: UpstreamIx, original: &str) -> String {
        let u = self.get(i);
        match u.spec().prefix {
            true => catalog::namespace_uri(u.id(), original).unwrap_or_else(|| original.to_owned()),
            false => original.to_owned(),
        }
    }

    /// The connection a session's request to upstream `i` goes over: the
    /// shared one, or with `isolation = "per-session"` the session's own,
    /// started on its first request with the client's capabilities (its
    /// sampling, elicitation and `roots/list` requests then go to that
    /// client) and waited for up to `startup_timeout`.
    pub(crate) async fn instance(&self, i: UpstreamIx, peer: Option<&Arc<Peer>>) -> Arc<Upstream> {
        self.instance_of(i, self.get(i), peer).await
    }

    /// [`Upstreams::instance`] of `shared` (upstream `i`), which the caller
    /// has already looked up.
    pub(crate) async fn instance_of(
        &self,
        i: UpstreamIx,
        shared: Arc<Upstream>,
        peer: Option<&Arc<Peer>>,
    ) -> Arc<Upstream> {
        let (i, shared) = self.current(i, shared);
        let shared = &shared;
        if shared.spec().oauth.as_ref().is_some_and(|o| o.per_principal) {
            return self.principal_instance(i, shared, peer.map(|p| &p.principal.identity)).await;
        }
        let per_session = shared.spec().isolation == Isolation::PerSession;
        let Some(peer) = peer.filter(|_| per_session) else { return shared.clone() };
        let own = {
            let mut own = peer.lock_instances();
            // A call still running as its session ends, or one that found
            // an upstream a reload replaced: no new process for it.
            if peer.gone.load(Ordering::Relaxed) || shared.is_retired() {
                return shared.clone();
            }
            own.entry(i)
                .or_insert_with(|| {
                    tracing::info!(upstream = %shared.id(), "Starting a connection of the session's own.");
                    let relay: Arc<dyn Relay> = Arc::new(CallRelay::new(peer.clone(), None, None, shared.label()));
                    shared.start_isolated(Isolated { capabilities: peer.relayable_capabilities(), relay })
                })
                .clone()
        };
        let deadline = tokio::time::Instant::now() + shared.spec().startup_timeout;
        own.wait_settled(deadline).await;
        own
    }

    /// The connection of `principal` to a `per_principal` OAuth upstream
    /// (its calls carry that user's token), started on the principal's
    /// first call. A request without a session has no principal the
    /// gateway may act for: it gets a connection that can never hold a
    /// token (`-`), so it fails with `upstream_auth`.
    async fn principal_instance(
        &self,
        i: UpstreamIx,
        shared: &Arc<Upstream>,
        principal: Option<&Arc<str>>,
    ) -> Arc<Upstream> {
        let principal: Arc<str> = principal.cloned().unwrap_or_else(|| Arc::from("-"));
        let own = {
            let mut map = self.principals.locked();
            if shared.is_retired() {
                return shared.clone();
            }
            map.entry((i, principal.clone()))
                .or_insert_with(|| {
                    tracing::info!(upstream = %shared.id(), principal = %principal, "Starting the principal's own connection.");
                    shared.start_for_principal(principal.clone())
                })
                .clone()
        };
        let deadline = tokio::time::Instant::now() + shared.spec().startup_timeout;
        own.wait_settled(deadline).await;
        own
    }

    /// Takes every principal's own connection (to shut them down).
    pub(crate) fn take_principal_connections(&self) -> Vec<Arc<Upstream>> {
        self.principals.locked().drain().map(|(_, u)| u).collect()
    }
}

#[cfg(test)]
mod tests {
    // The upstreams alone: finding them, their readiness, the URIs clients
    // know, and which connection a session's request goes over.

    use std::sync::Arc;
    use std::sync::atomic::Ordering;

    use super::*;
    use crate::error::ErrorClass;
    use crate::routing::tests::{Mock, config_in, core, core_of, down, eventually, principal, session};

    #[tokio::test]
    async fn find_index_and_iter_follow_the_configured_order() {
        let core = core(&format!("{}{}", down("beta", ""), down("alpha", "")));
        let ups = &core.upstreams;
        assert_eq!(ups.all().len(), 2);
        let table = ups.now();
        let ids: Vec<(usize, &str)> = table.iter().map(|(i, u)| (i.index(), u.id())).collect();
        assert_eq!(ids, [(0, "alpha"), (1, "beta")], "id order");
        assert_eq!(ups.find("beta"), Some(UpstreamIx::new(1)));
        assert_eq!(ups.get(ups.find("alpha").unwrap()).id(), "alpha");
        assert_eq!(ups.find("gamma"), None);
        let all: Vec<String> = ups.all().iter().map(|u| u.id().to_owned()).collect();
        assert_eq!(all, ["alpha", "beta"]);
    }

    #[tokio::test]
    async fn readiness_names_the_upstreams_not_serving() {
        let mock = Mock::start(serde_json::json!({ "tools": {} }), serde_json::json!({})).await;
        // Takes the connection but never answers: starting for a minute.
        let silent = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let slow = format!("[upstreams.slow]\nurl = \"http://{}/mcp\"\n", silent.local_addr().unwrap());
        let core = core(&format!("{}{}{slow}", mock.section("up", ""), down("broken", "")));
        let ix = |id| core.upstreams.find(id).unwrap();
        let ups = &core.upstreams;
        eventually("`up` is ready and `broken` down", || ups.ready_count() == 1 && ups.get(ix("broken")).has_settled())
            .await;

        assert!(ups.ready(ix("up")).is_ok());
        let e = ups.ready(ix("broken")).unwrap_err();
        assert_eq!(e.class, ErrorClass::Transport);
        assert!(e.message.starts_with("upstream `broken` is unavailable: "), "{}", e.message);
        let e = ups.ready(ix("slow")).unwrap_err();
        assert!(e.message.starts_with("upstream `slow` is starting"), "{}", e.message);
        assert_eq!(ups.not_serving(), ["broken", "slow"]);
        assert!(!ups.all_settled(), "`slow` is still in its first start");
    }

    #[tokio::test]
    async fn all_settled_once_every_first_start_ended() {
        let core = core(&format!("{}{}", down("a", ""), down("b", "")));
        eventually("both failed their first start", || core.upstreams.all_settled()).await;
        assert_eq!(core.upstreams.ready_count(), 0);
        assert_eq!(core.upstreams.not_serving(), ["a", "b"]);
    }

    #[tokio::test]
    async fn exposed_uris_carry_the_namespace_of_prefixed_upstreams_only() {
        let core = core(&format!("{}{}", down("a", ""), down("b", "prefix = false")));
        let (a, b) = (core.upstreams.find("a").unwrap(), core.upstreams.find("b").unwrap());
        assert_eq!(core.upstreams.exposed_uri(a, "file:///srv/x"), "file+a:///srv/x");
        assert_eq!(core.upstreams.exposed_uri(b, "file:///srv/x"), "file:///srv/x");
        // Without a valid scheme there is nothing to namespace.
        assert_eq!(core.upstreams.exposed_uri(a, "1nvalid:x"), "1nvalid:x");
    }

    #[tokio::test]
    async fn a_per_session_upstream_gives_each_session_a_connection_of_its_own() {
        let core = core(&format!("{}{}", down("iso", "isolation = \"per-session\""), down("shared", "")));
        let (iso, shared) = (core.upstreams.find("iso").unwrap(), core.upstreams.find("shared").unwrap());
        let (one, _rx1) = session(&core, principal("bob"), None);
        let (two, _rx2) = session(&core, principal("bob"), None);
        let ups = &core.upstreams;

        let own = ups.instance(iso, Some(&one)).await;
        assert!(!Arc::ptr_eq(&own, &ups.get(iso)), "not the shared connection");
        assert!(Arc::ptr_eq(&own, &ups.instance(iso, Some(&one)).await), "the same one on the next request");
        assert!(!Arc::ptr_eq(&own, &ups.instance(iso, Some(&two)).await), "another session's is another");
        assert_eq!(one.lock_instances().len(), 1);
        assert!(Arc::ptr_eq(&ups.instance(iso, None).await, &ups.get(iso)), "without a session: the shared one");
        assert!(Arc::ptr_eq(&ups.instance(shared, Some(&one)).await, &ups.get(shared)), "a shared upstream");

        // A session that ended starts nothing new.
        let (three, _rx3) = session(&core, principal("bob"), None);
        three.gone.store(true, Ordering::Relaxed);
        assert!(Arc::ptr_eq(&ups.instance(iso, Some(&three)).await, &ups.get(iso)));
        assert!(three.lock_instances().is_empty());
    }

    #[tokio::test]
    async fn a_per_principal_upstream_gives_each_principal_a_connection_of_its_own() {
        let dir = tempfile::tempdir().unwrap();
        // Nobody logged in: each connection is down for want of a token,
        // before it reaches the network.
        let src = "[upstreams.o]\nurl = \"http://127.0.0.1:9/mcp\"\nstartup_timeout = \"5s\"\n\
                   [upstreams.o.oauth]\ngrant = \"authorization_code\"\nper_principal = true\n";
        let core = core_of(config_in(dir.path(), src));
        let o = core.upstreams.find("o").unwrap();
        let ups = &core.upstreams;
        let (bob1, _r1) = session(&core, principal("bob"), None);
        let (bob2, _r2) = session(&core, principal("bob"), None);
        let (alice, _r3) = session(&core, principal("alice"), None);

        let bobs = ups.instance(o, Some(&bob1)).await;
        assert!(!Arc::ptr_eq(&bobs, &ups.get(o)));
        assert!(Arc::ptr_eq(&bobs, &ups.instance(o, Some(&bob2)).await), "one connection for all of bob's sessions");
        let alices = ups.instance(o, Some(&alice)).await;
        assert!(!Arc::ptr_eq(&bobs, &alices));
        let nobody = ups.instance(o, None).await;
        assert!(!Arc::ptr_eq(&nobody, &ups.get(o)) && !Arc::ptr_eq(&nobody, &bobs) && !Arc::ptr_eq(&nobody, &alices));
        assert!(bob1.lock_instances().is_empty(), "a principal's connection is not the session's");

        let taken = ups.take_principal_connections();
        assert_eq!(taken.len(), 3, "bob's, alice's and the one without a principal");
        assert!(ups.take_principal_connections().is_empty());
    }
}
