//! Downstream sessions of the HTTP transport.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use prometheus_client::metrics::gauge::Gauge;
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::routing::Client;
use crate::telemetry::Metrics;
use crate::telemetry::metrics::TransportLabels;

/// One client session (`Mcp-Session-Id`).
#[derive(Debug)]
pub struct Session {
    /// The id: 32 random bytes, hex.
    pub id: String,
    /// The negotiated protocol revision.
    pub version: String,
    /// The session as the gateway knows it (unregistered when the last
    /// reference to the session goes).
    pub client: Client,
    /// The session's queue of notifications, taken by the open GET stream
    /// (at most one) and put back when it ends.
    pub outbox: Mutex<Option<mpsc::Receiver<String>>>,
    /// Cancelled when the session ends (DELETE, expiry): open streams end.
    pub closed: CancellationToken,
    created: Instant,
    last_seen_ms: AtomicU64,
}

/// The session table.
#[derive(Debug)]
pub struct Sessions {
    map: Mutex<HashMap<String, Arc<Session>>>,
    max: usize,
    /// `mcp_gateway_downstream_sessions{transport="http"}`.
    open: Gauge,
}

/// `N` bytes from the OS random source, as hex: a session id.
pub(crate) fn random_id<const N: usize>() -> String {
    let mut bytes = [0u8; N];
    getrandom::fill(&mut bytes).expect("the OS random source works");
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The session table is full.
#[derive(Debug, thiserror::Error)]
#[error("too many sessions")]
pub struct Full;

// === impl Session ===

impl Session {
    /// Marks the session as used now.
    pub fn touch(&self) {
        let ms = self.created.elapsed().as_millis() as u64;
        self.last_seen_ms.store(ms, Ordering::Relaxed);
    }

    /// Whether a GET stream holds the session's queue now.
    pub fn streaming(&self) -> bool {
        self.outbox.lock().unwrap_or_else(std::sync::PoisonError::into_inner).is_none()
    }

    fn idle_for(&self) -> Duration {
        let seen = self.created + Duration::from_millis(self.last_seen_ms.load(Ordering::Relaxed));
        seen.elapsed()
    }
}

// === impl Sessions ===

impl Sessions {
    /// An empty table holding at most `max` sessions, counted in
    /// `metrics`.
    pub fn new(max: usize, metrics: &Metrics) -> Self {
        let open = metrics.sessions.get_or_create(&TransportLabels { transport: "http" }).clone();
        Sessions { map: Mutex::new(HashMap::new()), max, open }
    }

    /// Creates a session with a cryptographically random id; `client` is
    /// its registration with the gateway and `outbox` the receiving end of
    /// the client's queue.
    pub fn create(
        &self,
        version: String,
        client: Client,
        outbox: mpsc::Receiver<String>,
    ) -> Result<Arc<Session>, Full> {
        let id = random_id::<32>();
        let s = Arc::new(Session {
            id: id.clone(),
            version,
            client,
            outbox: Mutex::new(Some(outbox)),
            closed: CancellationToken::new(),
            created: Instant::now(),
            last_seen_ms: AtomicU64::new(0),
        });
        let mut map = self.lock();
        if map.len() >= self.max {
            return Err(Full);
        }
        map.insert(id, s.clone());
        self.open.set(map.len() as i64);
        Ok(s)
    }

    /// Looks a session up.
    pub fn get(&self, id: &str) -> Option<Arc<Session>> {
        self.lock().get(id).cloned()
    }

    /// Ends a session; false when it did not exist.
    pub fn remove(&self, id: &str) -> bool {
        let mut map = self.lock();
        let removed = map.remove(id);
        self.open.set(map.len() as i64);
        drop(map);
        if let Some(s) = &removed {
            s.closed.cancel();
            s.client.peer.close();
        }
        removed.is_some()
    }

    /// How many sessions are open.
    pub fn len(&self) -> usize {
        self.lock().len()
    }

    /// Whether no session is open.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Removes sessions idle for longer than `idle`; returns how many.
    pub fn expire(&self, idle: Duration) -> usize {
        let mut map = self.lock();
        let before = map.len();
        map.retain(|_, s| {
            let keep = s.idle_for() < idle || s.streaming();
            if !keep {
                s.closed.cancel();
                s.client.peer.close();
            }
            keep
        });
        self.open.set(map.len() as i64);
        before - map.len()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Arc<Session>>> {
        self.map.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn ids_are_random_and_idle_sessions_expire() {
        let config = crate::config::Config::from_str("", std::path::Path::new("gateway.toml")).unwrap();
        let telemetry = crate::telemetry::Telemetry::metrics_only();
        let metrics = telemetry.metrics.clone();
        let gateway = crate::routing::Gateway::start(config, telemetry);
        let t = Sessions::new(2, &metrics);
        let create = || {
            let (tx, rx) = mpsc::channel(1);
            t.create("2025-11-25".into(), gateway.connect(tx, None), rx)
        };
        let a = create().unwrap();
        let b = create().unwrap();
        assert_ne!(a.id, b.id);
        assert_eq!(a.id.len(), 64);
        assert!(create().is_err(), "table is bounded");
        tokio::time::advance(Duration::from_secs(30)).await;
        b.touch();
        tokio::time::advance(Duration::from_secs(40)).await;
        assert_eq!(t.expire(Duration::from_secs(60)), 1);
        assert!(t.get(&a.id).is_none());
        assert!(t.get(&b.id).is_some());
        assert!(metrics.encode().contains("mcp_gateway_downstream_sessions{transport=\"http\"} 1"));
        assert!(t.remove(&b.id));
        assert!(!t.remove(&b.id));
        assert!(metrics.encode().contains("mcp_gateway_downstream_sessions{transport=\"http\"} 0"));
    }
}
