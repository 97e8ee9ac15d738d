//! Resource subscriptions: which sessions watch which upstream URI, and
//! what each upstream has actually been told to watch.
//!
//! An upstream is subscribed to a URI once, while any session is; it is
//! told again when its connection is new ([`Subscriptions::forget_told`]).

use std::collections::{HashMap, HashSet};
use std::future::Future;
use std::sync::{Arc, Mutex};

use super::ix::UpstreamIx;
use crate::error::CallError;
use crate::sync::Locked;

/// A resource subscription upstream: (upstream, original URI).
pub(crate) type Key = (UpstreamIx, Arc<str>);

/// What an upstream is told to bring its subscription in line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Change {
    /// `resources/subscribe`.
    Subscribe,
    /// `resources/unsubscribe`.
    Unsubscribe,
}

impl Change {
    /// The MCP method that says it.
    pub(crate) fn method(self) -> &'static str {
        match self {
            Change::Subscribe => "resources/subscribe",
            Change::Unsubscribe => "resources/unsubscribe",
        }
    }
}

/// The URIs one upstream was told to watch, behind its own lock.
type Told = tokio::sync::Mutex<HashSet<Arc<str>>>;

/// Who wants which subscription, and what each upstream was told.
#[derive(Debug)]
pub(crate) struct Subscriptions {
    /// (upstream, original URI) → the sessions that want it.
    wanted: Mutex<HashMap<Key, HashSet<u64>>>,
    /// Per upstream, the URIs it has actually been told to watch. Each
    /// upstream's lock serialises its `resources/(un)subscribe`, so a last
    /// unsubscribe and a new subscribe cannot reach it in the wrong order.
    /// Upstreams a reload adds get theirs on first use.
    told: Mutex<HashMap<UpstreamIx, Arc<Told>>>,
}

// === impl Subscriptions ===

impl Subscriptions {
    /// No subscriptions.
    pub(crate) fn new() -> Self {
        Self { wanted: Mutex::default(), told: Mutex::default() }
    }

    /// What upstream `i` was told, behind its own lock.
    fn told(&self, i: UpstreamIx) -> Arc<Told> {
        self.told.locked().entry(i).or_default().clone()
    }

    /// Session `peer` wants `key`.
    pub(crate) fn want(&self, peer: u64, key: Key) {
        self.wanted.locked().entry(key).or_default().insert(peer);
    }

    /// Session `peer` no longer wants `keys`; returns those nobody wants
    /// any more (the upstream should be told).
    pub(crate) fn drop_wants(&self, peer: u64, keys: Vec<Key>) -> Vec<Key> {
        let mut wanted = self.wanted.locked();
        let mut last = Vec::new();
        for key in keys {
            if let Some(set) = wanted.get_mut(&key) {
                set.remove(&peer);
                if set.is_empty() {
                    wanted.remove(&key);
                    last.push(key);
                }
            }
        }
        last
    }

    /// The sessions that want `key`.
    pub(crate) fn watchers(&self, key: &Key) -> Vec<u64> {
        self.wanted.locked().get(key).map(|s| s.iter().copied().collect()).unwrap_or_default()
    }

    /// The URIs some session wants of upstream `i`.
    pub(crate) fn uris_of(&self, i: UpstreamIx) -> Vec<Arc<str>> {
        self.wanted.locked().keys().filter(|(u, _)| *u == i).map(|(_, uri)| uri.clone()).collect()
    }

    /// Upstream `i` has a new connection, which watches nothing yet.
    pub(crate) async fn forget_told(&self, i: UpstreamIx) {
        self.told(i).lock().await.clear();
    }

    /// Brings upstream `key.0`'s subscription to `key.1` in line with
    /// whether any session wants it now, telling it through `tell`. Runs
    /// under that upstream's lock, held across `tell` on purpose
    /// (ARCHITECTURE.md names it): whichever of a racing subscribe and
    /// unsubscribe runs last sees the final state. A refused subscribe is
    /// tried again next time; a refused unsubscribe is forgotten anyway,
    /// since nobody wants it.
    pub(crate) async fn sync<F, Fut>(&self, key: &Key, tell: F) -> Result<(), CallError>
    where
        F: FnOnce(Change) -> Fut,
        Fut: Future<Output = Result<(), CallError>>,
    {
        let (i, uri) = key;
        let told = self.told(*i);
        let mut told = told.lock().await;
        let wanted = self.wanted.locked().contains_key(key);
        match (wanted, told.contains(uri)) {
            (true, false) => {
                tell(Change::Subscribe).await?;
                told.insert(uri.clone());
            }
            (false, true) => {
                told.remove(uri);
                tell(Change::Unsubscribe).await?;
            }
            _ => {}
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::ErrorClass;

    fn key(i: usize, uri: &str) -> Key {
        (UpstreamIx::new(i), Arc::from(uri))
    }

    /// Records what an upstream was told; fails when `refuse` says so.
    fn teller(
        log: &Mutex<Vec<Change>>,
        refuse: bool,
    ) -> impl FnOnce(Change) -> std::future::Ready<Result<(), CallError>> + '_ {
        move |c| {
            log.locked().push(c);
            std::future::ready(match refuse {
                true => Err(CallError::new(ErrorClass::UpstreamInternal, None, "refused")),
                false => Ok(()),
            })
        }
    }

    #[test]
    fn the_last_session_to_leave_is_reported() {
        let s = Subscriptions::new();
        s.want(1, key(0, "a"));
        s.want(2, key(0, "a"));
        s.want(1, key(1, "b"));
        assert_eq!(s.drop_wants(1, vec![key(0, "a"), key(1, "b")]), vec![key(1, "b")]);
        assert_eq!(s.watchers(&key(0, "a")), vec![2]);
        assert_eq!(s.uris_of(UpstreamIx::new(0)), vec![Arc::from("a")]);
        assert!(s.uris_of(UpstreamIx::new(1)).is_empty());
        assert_eq!(s.drop_wants(2, vec![key(0, "a")]), vec![key(0, "a")]);
        assert!(s.drop_wants(2, vec![key(0, "a")]).is_empty(), "already gone");
    }

    #[tokio::test]
    async fn an_upstream_is_told_once_per_change() {
        let s = Subscriptions::new();
        let log = Mutex::new(Vec::new());
        let k = key(0, "file:///a");
        s.sync(&k, teller(&log, false)).await.unwrap();
        assert!(log.locked().is_empty(), "nobody wants it, nothing was told");
        s.want(1, k.clone());
        s.want(2, k.clone());
        s.sync(&k, teller(&log, false)).await.unwrap();
        s.sync(&k, teller(&log, false)).await.unwrap();
        assert_eq!(*log.locked(), [Change::Subscribe], "subscribed once for two sessions");
        s.drop_wants(1, vec![k.clone()]);
        s.sync(&k, teller(&log, false)).await.unwrap();
        assert_eq!(log.locked().len(), 1, "one session still wants it");
        s.drop_wants(2, vec![k.clone()]);
        s.sync(&k, teller(&log, false)).await.unwrap();
        assert_eq!(*log.locked(), [Change::Subscribe, Change::Unsubscribe]);
    }

    #[tokio::test]
    async fn a_refused_subscribe_is_tried_again_and_a_refused_unsubscribe_forgotten() {
        let s = Subscriptions::new();
        let log = Mutex::new(Vec::new());
        let k = key(0, "a");
        s.want(1, k.clone());
        assert!(s.sync(&k, teller(&log, true)).await.is_err());
        s.sync(&k, teller(&log, false)).await.unwrap();
        assert_eq!(*log.locked(), [Change::Subscribe, Change::Subscribe]);
        s.drop_wants(1, vec![k.clone()]);
        assert!(s.sync(&k, teller(&log, true)).await.is_err());
        s.sync(&k, teller(&log, false)).await.unwrap();
        assert_eq!(log.locked().len(), 3, "not told to unsubscribe twice");
    }

    #[tokio::test]
    async fn a_new_connection_is_told_again() {
        let s = Subscriptions::new();
        let log = Mutex::new(Vec::new());
        let k = key(0, "a");
        s.want(1, k.clone());
        s.sync(&k, teller(&log, false)).await.unwrap();
        s.forget_told(UpstreamIx::new(0)).await;
        s.sync(&k, teller(&log, false)).await.unwrap();
        assert_eq!(*log.locked(), [Change::Subscribe, Change::Subscribe]);
    }

    #[tokio::test(start_paused = true)]
    async fn racing_changes_end_in_the_state_wanted_last() {
        // An unsubscribe whose telling is slow, and a subscribe that comes
        // meanwhile: the second waits for the first, then sees it wanted.
        let s = Arc::new(Subscriptions::new());
        let log = Arc::new(Mutex::new(Vec::new()));
        let k = key(0, "a");
        s.want(1, k.clone());
        s.sync(&k, teller(&log, false)).await.unwrap();
        s.drop_wants(1, vec![k.clone()]);
        let slow = {
            let (s, log, k) = (s.clone(), log.clone(), k.clone());
            tokio::spawn(async move {
                s.sync(&k, |c| async move {
                    tokio::time::sleep(std::time::Duration::from_secs(1)).await;
                    log.locked().push(c);
                    Ok(())
                })
                .await
            })
        };
        tokio::task::yield_now().await;
        s.want(2, k.clone());
        s.sync(&k, teller(&log, false)).await.unwrap();
        slow.await.unwrap().unwrap();
        assert_eq!(*log.locked(), [Change::Subscribe, Change::Unsubscribe, Change::Subscribe]);
    }
}
