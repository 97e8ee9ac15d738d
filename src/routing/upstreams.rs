//! The configured upstreams, by index and id, and the connections of their
//! own that sessions (`isolation = "per-session"`) and principals
//! (`per_principal` OAuth) are given.

use std::collections::HashMap;
use std::ops::Index;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};

use super::catalog;
use super::ix::UpstreamIx;
use super::peer::{CallRelay, Peer};
use crate::config::Isolation;
use crate::error::CallError;
use crate::sync::Locked;
use crate::upstream::{Isolated, Relay, State, Upstream};

/// (upstream, principal id): one connection of a principal's own.
type PrincipalKey = (UpstreamIx, Arc<str>);

/// The upstreams, in the configured order.
#[derive(Debug)]
pub(crate) struct Upstreams {
    list: Vec<Arc<Upstream>>,
    by_id: HashMap<String, UpstreamIx>,
    /// Connections of one principal's own, started on its first call.
    /// Never held across an `.await`.
    principals: Mutex<HashMap<PrincipalKey, Arc<Upstream>>>,
}

impl Index<UpstreamIx> for Upstreams {
    type Output = Arc<Upstream>;

    fn index(&self, i: UpstreamIx) -> &Arc<Upstream> {
        &self.list[i.index()]
    }
}

// === impl Upstreams ===

impl Upstreams {
    /// The upstreams of `list`, in its order.
    pub(crate) fn new(list: Vec<Arc<Upstream>>) -> Self {
        let by_id = list.iter().enumerate().map(|(i, u)| (u.id().to_owned(), UpstreamIx::new(i))).collect();
        Self { list, by_id, principals: Mutex::default() }
    }

    /// The upstream whose id is `id`.
    pub(crate) fn find(&self, id: &str) -> Option<UpstreamIx> {
        self.by_id.get(id).copied()
    }

    /// Every upstream, in order.
    pub(crate) fn all(&self) -> &[Arc<Upstream>] {
        &self.list
    }

    /// Every upstream with its index.
    pub(crate) fn iter(&self) -> impl Iterator<Item = (UpstreamIx, &Arc<Upstream>)> {
        self.list.iter().enumerate().map(|(i, u)| (UpstreamIx::new(i), u))
    }

    /// How many are configured.
    pub(crate) fn len(&self) -> usize {
        self.list.len()
    }

    /// Upstream `i` must be serving (else the error says why).
    pub(crate) fn ready(&self, i: UpstreamIx) -> Result<(), CallError> {
        let state = self[i].state();
        match *state {
            State::Ready(_) => Ok(()),
            _ => Err(self[i].unavailable(&state)),
        }
    }

    /// How many are ready now.
    pub(crate) fn ready_count(&self) -> usize {
        self.list.iter().filter(|u| matches!(*u.state(), State::Ready(_))).count()
    }

    /// The ids of those not serving now.
    pub(crate) fn not_serving(&self) -> Vec<&str> {
        self.list.iter().filter(|u| !matches!(*u.state(), State::Ready(_))).map(|u| u.id()).collect()
    }

    /// Whether every upstream's first start has ended.
    pub(crate) fn all_settled(&self) -> bool {
        self.list.iter().all(|u| u.has_settled())
    }

    /// The URI clients know upstream `i`'s `original` one by.
    pub(crate) fn exposed_uri(&self, i: UpstreamIx, original: &str) -> String {
        let u = &self[i];
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
        let shared = &self[i];
        if shared.spec().oauth.as_ref().is_some_and(|o| o.per_principal) {
            return self.principal_instance(i, peer.map(|p| &p.principal.identity)).await;
        }
        let per_session = shared.spec().isolation == Isolation::PerSession;
        let Some(peer) = peer.filter(|_| per_session) else { return shared.clone() };
        let own = {
            let mut own = peer.lock_instances();
            // A call still running as its session ends: no new process.
            if peer.gone.load(Ordering::Relaxed) {
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
        own.wait_settled(tokio::time::Instant::now() + shared.spec().startup_timeout).await;
        own
    }

    /// The connection of `principal` to a `per_principal` OAuth upstream
    /// (its calls carry that user's token), started on the principal's
    /// first call. A request without a session has no principal the
    /// gateway may act for: it gets a connection that can never hold a
    /// token (`-`), so it fails with `upstream_auth`.
    async fn principal_instance(&self, i: UpstreamIx, principal: Option<&Arc<str>>) -> Arc<Upstream> {
        let shared = &self[i];
        let principal: Arc<str> = principal.cloned().unwrap_or_else(|| Arc::from("-"));
        let own = {
            let mut map = self.principals.locked();
            map.entry((i, principal.clone()))
                .or_insert_with(|| {
                    tracing::info!(upstream = %shared.id(), principal = %principal, "Starting the principal's own connection.");
                    shared.start_for_principal(principal.clone())
                })
                .clone()
        };
        own.wait_settled(tokio::time::Instant::now() + shared.spec().startup_timeout).await;
        own
    }

    /// Takes every principal's own connection (to shut them down).
    pub(crate) fn take_principal_connections(&self) -> Vec<Arc<Upstream>> {
        self.principals.locked().drain().map(|(_, u)| u).collect()
    }
}
