//! The session registry: every client session the gateway serves, by id.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use super::peer::Peer;
use crate::sync::Locked;

/// Client sessions by peer id. Lookups clone the `Arc` out: the lock is
/// never held while a session is written to or awaited.
#[derive(Debug)]
pub(crate) struct Sessions {
    peers: Mutex<HashMap<u64, Arc<Peer>>>,
    next: AtomicU64,
}

impl Default for Sessions {
    fn default() -> Self {
        // Ids start at 1, so a zero in a log line is never a session.
        Self { peers: Mutex::default(), next: AtomicU64::new(1) }
    }
}

// === impl Sessions ===

impl Sessions {
    /// Registers the session `make` builds with a fresh id.
    pub(crate) fn register(&self, make: impl FnOnce(u64) -> Peer) -> Arc<Peer> {
        let id = self.next.fetch_add(1, Ordering::Relaxed);
        let peer = Arc::new(make(id));
        self.peers.locked().insert(id, peer.clone());
        peer
    }

    /// Forgets session `id`; false when it was not registered.
    pub(crate) fn remove(&self, id: u64) -> bool {
        self.peers.locked().remove(&id).is_some()
    }

    /// Session `id`, if registered.
    pub(crate) fn get(&self, id: u64) -> Option<Arc<Peer>> {
        self.peers.locked().get(&id).cloned()
    }

    /// The sessions of `ids` still registered.
    pub(crate) fn some(&self, ids: &[u64]) -> Vec<Arc<Peer>> {
        let all = self.peers.locked();
        ids.iter().filter_map(|id| all.get(id).cloned()).collect()
    }

    /// Every session registered now.
    pub(crate) fn all(&self) -> Vec<Arc<Peer>> {
        self.peers.locked().values().cloned().collect()
    }

    /// The most verbose log level any session asked for (index in
    /// [`super::peer::LEVELS`]).
    pub(crate) fn most_verbose_level(&self) -> Option<usize> {
        self.peers.locked().values().filter_map(|p| p.level()).min()
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::security::access::Access;
    use crate::security::auth::Principal;

    /// A session with a queue of `queue` for unit tests.
    pub(crate) fn peer(id: u64, queue: usize) -> (Peer, tokio::sync::mpsc::Receiver<String>) {
        let (tx, rx) = tokio::sync::mpsc::channel(queue);
        let principal = Arc::new(Principal::anonymous());
        let grants = Access::new(&[]).grants(&principal);
        let metrics = Arc::new(crate::telemetry::metrics::Metrics::new());
        (Peer::new(id, tx, None, metrics, principal, grants, crate::config::Redactor::default()), rx)
    }

    #[test]
    fn sessions_get_unique_ids_and_leave_once() {
        let s = Sessions::default();
        let a = s.register(|id| peer(id, 1).0);
        let b = s.register(|id| peer(id, 1).0);
        assert_ne!(a.id, b.id);
        assert_eq!(s.all().len(), 2);
        assert!(s.get(a.id).is_some());
        assert_eq!(s.some(&[a.id, 999]).len(), 1, "an unknown id is skipped");
        assert!(s.remove(a.id));
        assert!(!s.remove(a.id), "a session leaves once");
        assert!(s.get(a.id).is_none());
        assert_eq!(s.all().len(), 1);
    }

    #[test]
    fn the_most_verbose_level_wins() {
        let s = Sessions::default();
        assert_eq!(s.most_verbose_level(), None);
        let a = s.register(|id| peer(id, 1).0);
        let b = s.register(|id| peer(id, 1).0);
        a.set_level(3);
        assert_eq!(s.most_verbose_level(), Some(3));
        b.set_level(1);
        assert_eq!(s.most_verbose_level(), Some(1));
        s.remove(b.id);
        assert_eq!(s.most_verbose_level(), Some(3), "a session that left stops counting");
    }
}
