//! The catalog clients see now, how often it was rebuilt, and the
//! start-up wait of the first lists.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use arc_swap::ArcSwap;
use tokio::sync::watch;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::catalog::Catalog;

/// How long a waiting list sleeps when no rebuild wakes it: covers a change
/// that has not reached the catalog task yet.
const RECHECK: Duration = Duration::from_millis(25);

/// The current catalog: swapped whole by the catalog task, read lock-free
/// by every request.
#[derive(Debug)]
pub(crate) struct Published {
    catalog: ArcSwap<Catalog>,
    /// Counts catalog builds (what a session's cached visibility is for).
    version: AtomicU64,
    /// The upstream-change generation the current catalog was built from.
    built: watch::Sender<u64>,
    /// Set once the start-up wait is over, so later lists skip it.
    startup_done: AtomicBool,
    started: Instant,
    startup_list_wait: Duration,
}

// === impl Published ===

impl Published {
    /// An empty catalog, with the start-up wait measured from now.
    pub(crate) fn new(startup_list_wait: Duration) -> Self {
        Self {
            catalog: ArcSwap::from_pointee(Catalog::empty()),
            version: AtomicU64::new(0),
            built: watch::Sender::new(0),
            startup_done: AtomicBool::new(false),
            started: Instant::now(),
            startup_list_wait,
        }
    }

    /// The current catalog, for one request (cheap; never held across an
    /// upstream call).
    pub(crate) fn load(&self) -> arc_swap::Guard<Arc<Catalog>> {
        self.catalog.load()
    }

    /// The current catalog, to keep.
    pub(crate) fn load_full(&self) -> Arc<Catalog> {
        self.catalog.load_full()
    }

    /// How many catalogs were published.
    pub(crate) fn version(&self) -> u64 {
        self.version.load(Ordering::Acquire)
    }

    /// Makes `next` the catalog clients see.
    pub(crate) fn store(&self, next: Arc<Catalog>) {
        self.catalog.store(next);
        self.version.fetch_add(1, Ordering::Release);
    }

    /// The catalog now reflects every upstream change up to `generation`.
    pub(crate) fn built(&self, generation: u64) {
        self.built.send_replace(generation);
    }

    /// Waits until the catalog reflects every upstream change up to
    /// `generation`, at most `patience`.
    pub(crate) async fn wait_built(&self, generation: u64, patience: Duration, stop: &CancellationToken) {
        let mut built = self.built.subscribe();
        tokio::select! {
            _ = tokio::time::timeout(patience, built.wait_for(|b| *b >= generation)) => {}
            () = stop.cancelled() => {}
        }
    }

    /// When the gateway started.
    pub(crate) fn started(&self) -> Instant {
        self.started
    }

    /// Right after start, waits (at most `startup_list_wait` since start)
    /// until every upstream has settled (`settled`) and the catalog
    /// reflects that moment's change `generation`. Never waits afterwards.
    /// Returns `true` to the one caller that ended the start-up wait at its
    /// deadline with upstreams still unsettled (to say so, once).
    pub(crate) async fn wait_for_first_start(&self, settled: impl Fn() -> bool, generation: impl Fn() -> u64) -> bool {
        if self.startup_done.load(Ordering::Relaxed) {
            return false;
        }
        let deadline = self.started + self.startup_list_wait;
        let mut built = self.built.subscribe();
        let gave_up = loop {
            // Settled first, then the generation: see `Upstream::set`.
            let all_settled = settled();
            let generation = generation();
            if all_settled && *built.borrow_and_update() >= generation {
                break false;
            }
            // Woken by each rebuild.
            tokio::select! {
                _ = built.changed() => {}
                () = tokio::time::sleep(RECHECK) => {}
                () = tokio::time::sleep_until(deadline) => break !settled(),
            }
        };
        // Of lists that ended the wait together, only the first says so.
        let first = !self.startup_done.swap(true, Ordering::Relaxed);
        first && gave_up
    }

    /// Whether start-up is over: the wait ended, every upstream settled
    /// (`all_settled`), or `startup_list_wait` passed.
    pub(crate) fn started_up(&self, all_settled: bool) -> bool {
        self.startup_done.load(Ordering::Relaxed) || all_settled || self.started.elapsed() >= self.startup_list_wait
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicBool;

    #[tokio::test(start_paused = true)]
    async fn the_first_list_waits_for_settled_upstreams_and_their_catalog() {
        let p = Arc::new(Published::new(Duration::from_secs(30)));
        let settled = Arc::new(AtomicBool::new(false));
        let wait = {
            let (p, settled) = (p.clone(), settled.clone());
            tokio::spawn(async move {
                let gave_up = p.wait_for_first_start(|| settled.load(Ordering::Relaxed), || 2).await;
                assert!(!gave_up, "every upstream settled in time: nothing to say");
                Instant::now()
            })
        };
        tokio::time::sleep(Duration::from_secs(1)).await;
        settled.store(true, Ordering::Relaxed);
        tokio::time::sleep(Duration::from_secs(1)).await;
        assert!(!wait.is_finished(), "settled, but the catalog is of an older generation");
        p.built(2);
        let at = wait.await.unwrap();
        assert!(at - p.started() < Duration::from_secs(3), "woken by the build, not the deadline");
        assert!(p.started_up(false));
        // Afterwards nothing waits, whatever the upstreams do.
        tokio::time::timeout(Duration::from_millis(1), p.wait_for_first_start(|| false, || 9)).await.unwrap();
    }

    #[tokio::test(start_paused = true)]
    async fn the_wait_ends_at_the_deadline() {
        let p = Published::new(Duration::from_secs(5));
        assert!(!p.started_up(false));
        p.wait_for_first_start(|| false, || 0).await;
        assert!(p.started.elapsed() >= Duration::from_secs(5));
        assert!(p.started.elapsed() < Duration::from_secs(6));
        assert!(p.started_up(false));
    }

    #[tokio::test(start_paused = true)]
    async fn one_list_says_that_the_wait_ran_out_with_upstreams_unsettled() {
        let p = Arc::new(Published::new(Duration::from_secs(5)));
        let lists: Vec<_> = (0..3)
            .map(|_| {
                let p = p.clone();
                tokio::spawn(async move { p.wait_for_first_start(|| false, || 0).await })
            })
            .collect();
        let mut said = 0;
        for l in lists {
            said += usize::from(l.await.unwrap());
        }
        assert_eq!(said, 1, "three lists ended the wait together; one says so");
        assert!(!p.wait_for_first_start(|| false, || 0).await, "later lists neither wait nor say it again");

        // Settled at the deadline, only the catalog behind: nobody is starting.
        let p = Published::new(Duration::from_secs(5));
        assert!(!p.wait_for_first_start(|| true, || 1).await);
    }

    #[test]
    fn each_store_counts_a_version() {
        let p = Published::new(Duration::ZERO);
        assert_eq!(p.version(), 0);
        p.store(Arc::new(Catalog::empty()));
        p.store(Arc::new(Catalog::empty()));
        assert_eq!(p.version(), 2);
        assert!(p.started_up(false), "a zero wait is over at once");
    }
}
