//! Downstream sessions of the HTTP transport.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use prometheus_client::metrics::gauge::Gauge;
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::routing::Client;
use crate::sync::Locked;
use crate::telemetry::Metrics;
use crate::telemetry::metrics::TransportLabels;

/// One client session (`Mcp-Session-Id`).
#[derive(Debug)]
pub struct Session {
    /// The id: a sealed session token ([`super::token`]).
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
    /// The events sent on the session's streams, for `Last-Event-ID`.
    pub replay: Replay,
    created: Instant,
    /// Set by the first request after `initialize`: a session never used
    /// again here (its requests hashed to another replica, which rebuilt
    /// it) is let go after [`UNUSED_GRACE`], not held for the idle timeout.
    used: std::sync::atomic::AtomicBool,
    last_seen_ms: AtomicU64,
    /// Its place among its principal's sessions, given back when the last
    /// reference to the session goes.
    _quota: super::bounds::Held,
}

/// The session table.
#[derive(Debug)]
pub struct Sessions {
    map: Mutex<HashMap<String, Arc<Session>, IdHash>>,
    /// Sessions ended here (DELETE), until their token's age is up: a
    /// token of one is never rebuilt by this replica. At most
    /// 4 × `max` entries; past that, the one nearest its end goes first.
    ended: Mutex<HashMap<[u8; 16], std::time::SystemTime>>,
    max: usize,
    /// `mcp_gateway_downstream_sessions{transport="http"}`.
    open: Gauge,
}

/// How long a session may go unused after `initialize` before it is let
/// go: behind a load balancer that hashes `Mcp-Session-Id`, the replica
/// that answered `initialize` (sent without the header) often never sees
/// the session again, and must not hold one of its principal's sessions
/// for the whole idle timeout.
pub(crate) const UNUSED_GRACE: Duration = Duration::from_secs(60);

/// Hashes a session id by its last [`ID_TAIL`] bytes: every request looks
/// its session up, and a token is hundreds of bytes whose tail (the AEAD
/// tag) is already random. Only ids the gateway made are ever inserted
/// (its tokens, random legacy ids), so no client can choose colliding
/// keys; a lookup still compares the whole id. Keyed per process like the
/// standard hasher.
#[derive(Debug, Clone, Default)]
struct IdHash(std::collections::hash_map::RandomState);

/// How many bytes of a session id are hashed.
const ID_TAIL: usize = 24;

/// [`IdHash`]'s hasher.
struct TailHasher(std::collections::hash_map::DefaultHasher);

impl std::hash::BuildHasher for IdHash {
    type Hasher = TailHasher;

    fn build_hasher(&self) -> TailHasher {
        TailHasher(self.0.build_hasher())
    }
}

impl std::hash::Hasher for TailHasher {
    fn write(&mut self, bytes: &[u8]) {
        self.0.write(&bytes[bytes.len().saturating_sub(ID_TAIL)..]);
    }

    fn finish(&self) -> u64 {
        self.0.finish()
    }
}

/// A short fingerprint of a session id (what a tombstone is kept by).
fn fingerprint(id: &str) -> [u8; 16] {
    use sha2::Digest as _;
    let digest = sha2::Sha256::digest(id.as_bytes());
    let mut out = [0u8; 16];
    out.copy_from_slice(&digest[..16]);
    out
}

/// `N` bytes from the OS random source, as hex: a session id.
pub(crate) fn random_id<const N: usize>() -> String {
    let mut bytes = [0u8; N];
    getrandom::fill(&mut bytes).expect("the OS random source works");
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Most events a session keeps for replay, and most bytes (the newest
/// event is kept whatever its size).
pub(crate) const REPLAY_EVENTS: usize = 256;
/// See [`REPLAY_EVENTS`].
pub(crate) const REPLAY_BYTES: usize = 1 << 20;

/// The SSE events of a session's streams, numbered session-wide, kept in a
/// bounded buffer so a client that lost a stream can resume it with
/// `Last-Event-ID` (transports.mdx §Resumability and Redelivery). Stream 0
/// is the GET stream; each request answered as SSE has a stream of its own.
/// An event id is `<stream>-<n>`: unique in the session, and it names the
/// stream to resume, so one stream's events are never replayed on another.
#[derive(Debug)]
pub struct Replay {
    inner: Mutex<ReplayInner>,
    /// The number of the newest event, or of a stream that just ended.
    latest: tokio::sync::watch::Sender<u64>,
}

#[derive(Debug, Default)]
struct ReplayInner {
    next_event: u64,
    next_stream: u64,
    /// (stream, number, the framed SSE event).
    events: VecDeque<(u64, u64, Bytes)>,
    bytes: usize,
    /// Request streams: whether each has ended (its reply is in, or the
    /// request was cancelled). Forgotten once ended with nothing kept.
    streams: HashMap<u64, bool>,
}

/// What [`Replay::after`] found.
#[derive(Debug, Default)]
pub struct Replayed {
    /// The stream's events after the one asked for: (number, framed).
    pub events: Vec<(u64, Bytes)>,
    /// The stream has ended: nothing follows these.
    pub ended: bool,
}

impl Default for Replay {
    fn default() -> Self {
        Replay { inner: Mutex::default(), latest: tokio::sync::watch::Sender::new(0) }
    }
}

impl Replay {
    /// A new request stream's number (never 0).
    pub fn open_stream(&self) -> u64 {
        let mut inner = self.lock();
        inner.next_stream += 1;
        let s = inner.next_stream;
        inner.streams.insert(s, false);
        s
    }

    /// Frames a message as an SSE event of `stream` and keeps it; returns
    /// the event (framed once: sending and replaying share the bytes).
    pub fn record(&self, stream: u64, data: String) -> Bytes {
        self.keep(stream, |id| sse_event(Some(id), data))
    }

    /// Starts `stream` with a priming event (SEP-1699): an id and empty
    /// data, and the reconnection time, so a client that loses the stream
    /// before its first message can still resume it with `Last-Event-ID`.
    pub fn prime(&self, stream: u64, retry: Duration) {
        let retry = retry.as_millis();
        self.keep(stream, |(s, n)| format!("id: {s}-{n}\nretry: {retry}\ndata: \n\n"));
    }

    fn keep(&self, stream: u64, frame: impl FnOnce((u64, u64)) -> String) -> Bytes {
        let mut inner = self.lock();
        inner.next_event += 1;
        let n = inner.next_event;
        let event = Bytes::from(frame((stream, n)));
        inner.bytes += event.len();
        inner.events.push_back((stream, n, event.clone()));
        while inner.events.len() > 1 && (inner.events.len() > REPLAY_EVENTS || inner.bytes > REPLAY_BYTES) {
            if let Some((s, _, d)) = inner.events.pop_front() {
                inner.bytes -= d.len();
                // A stream that ended and has nothing left to replay is gone.
                if inner.streams.get(&s) == Some(&true) && !inner.events.iter().any(|(t, _, _)| *t == s) {
                    inner.streams.remove(&s);
                }
            }
        }
        drop(inner);
        self.latest.send_replace(n);
        event
    }

    /// Marks a request stream as ended (its reply is recorded, or there is
    /// none: the request was cancelled).
    pub fn end(&self, stream: u64) {
        let mut inner = self.lock();
        if inner.events.iter().any(|(s, _, _)| *s == stream) {
            inner.streams.insert(stream, true);
        } else {
            inner.streams.remove(&stream);
        }
        drop(inner);
        // Wakes readers even though no event was added.
        self.latest.send_modify(|_| {});
    }

    /// The kept events of `stream` after event `after`, and whether the
    /// stream ended. An unknown request stream reads as ended.
    pub fn after(&self, stream: u64, after: u64) -> Replayed {
        let inner = self.lock();
        let events = inner
            .events
            .iter()
            .filter(|(s, n, _)| *s == stream && *n > after)
            .map(|(_, n, d)| (*n, d.clone()))
            .collect();
        let ended = stream != 0 && inner.streams.get(&stream).is_none_or(|ended| *ended);
        Replayed { events, ended }
    }

    /// Changes on every new event or ended stream.
    pub fn subscribe(&self) -> tokio::sync::watch::Receiver<u64> {
        self.latest.subscribe()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, ReplayInner> {
        self.inner.locked()
    }
}

/// A message as one SSE event, with its id `<stream>-<n>` when it has one.
/// One `data:` line carries the whole message (relayed upstream bytes may
/// have been pretty-printed).
pub(crate) fn sse_event(id: Option<(u64, u64)>, data: String) -> String {
    let data = crate::protocol::framing::one_line(data);
    match id {
        Some((stream, n)) => format!("id: {stream}-{n}\nevent: message\ndata: {data}\n\n"),
        None => format!("event: message\ndata: {data}\n\n"),
    }
}

/// Parses a `Last-Event-ID` of ours: (stream, event number).
pub(crate) fn parse_event_id(id: &str) -> Option<(u64, u64)> {
    let (stream, n) = id.split_once('-')?;
    Some((stream.parse().ok()?, n.parse().ok()?))
}

/// The session table is full.
#[derive(Debug, thiserror::Error)]
#[error("too many sessions")]
pub(crate) struct Full;

// === impl Session ===

impl Session {
    /// Marks the session as used now.
    pub fn touch(&self) {
        self.used.store(true, Ordering::Relaxed);
        let ms = self.created.elapsed().as_millis() as u64;
        self.last_seen_ms.store(ms, Ordering::Relaxed);
    }

    /// Whether a GET stream holds the session's queue now.
    pub fn streaming(&self) -> bool {
        self.outbox.locked().is_none()
    }

    fn new(
        id: String,
        version: String,
        client: Client,
        outbox: mpsc::Receiver<String>,
        quota: super::bounds::Held,
    ) -> Arc<Self> {
        client.peer.share_as(&id);
        Arc::new(Session {
            id,
            version,
            client,
            outbox: Mutex::new(Some(outbox)),
            closed: CancellationToken::new(),
            replay: Replay::default(),
            created: Instant::now(),
            used: Default::default(),
            last_seen_ms: AtomicU64::new(0),
            _quota: quota,
        })
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
        Sessions { map: Mutex::new(HashMap::default()), ended: Mutex::new(HashMap::new()), max, open }
    }

    /// Creates the session `id` (its sealed token, [`super::token`]);
    /// `client` is its registration with the gateway and `outbox` the
    /// receiving end of the client's queue; `others` sessions elsewhere
    /// share the limit.
    pub(crate) fn create(
        &self,
        id: String,
        version: String,
        client: Client,
        outbox: mpsc::Receiver<String>,
        quota: super::bounds::Held,
        others: usize,
    ) -> Result<Arc<Session>, Full> {
        let s = Session::new(id, version, client, outbox, quota);
        let mut map = self.lock();
        // `others`: sessions of the legacy transport, which count too.
        if map.len() + others >= self.max {
            return Err(Full);
        }
        map.insert(s.id.clone(), s.clone());
        self.open.set(map.len() as i64);
        Ok(s)
    }

    /// Takes in a session another replica opened (rebuilt from its token);
    /// when a concurrent request rebuilt it first, that one is the session
    /// (this one's registration is dropped). `None` when it was ended here
    /// (checked under the table's lock, so a DELETE racing the rebuild
    /// wins).
    pub(crate) fn adopt(
        &self,
        id: &str,
        version: String,
        client: Client,
        outbox: mpsc::Receiver<String>,
        quota: super::bounds::Held,
        others: usize,
    ) -> Result<Option<Arc<Session>>, Full> {
        self.take_in(id, version, client, outbox, quota, others, true)
    }

    /// Takes in a principal's stateless peer (2026-07-28), or the one a
    /// concurrent request took in first. Unlike a session it is never ended
    /// for good: no client can name it, and its principal may come back.
    pub(crate) fn adopt_stateless(
        &self,
        id: &str,
        version: String,
        client: Client,
        outbox: mpsc::Receiver<String>,
        quota: super::bounds::Held,
        others: usize,
    ) -> Result<Arc<Session>, Full> {
        let taken = self.take_in(id, version, client, outbox, quota, others, false)?;
        Ok(taken.expect("a stateless peer is never refused as ended"))
    }

    /// The session `id` already held, or this one taken in: `None` when
    /// `ends` are honoured and it was ended here; `Full` past `max`.
    #[allow(clippy::too_many_arguments)]
    fn take_in(
        &self,
        id: &str,
        version: String,
        client: Client,
        outbox: mpsc::Receiver<String>,
        quota: super::bounds::Held,
        others: usize,
        ends: bool,
    ) -> Result<Option<Arc<Session>>, Full> {
        let mut map = self.lock();
        if let Some(s) = map.get(id) {
            return Ok(Some(s.clone()));
        }
        if ends && self.was_ended(id) {
            return Ok(None);
        }
        if map.len() + others >= self.max {
            return Err(Full);
        }
        let s = Session::new(id.to_owned(), version, client, outbox, quota);
        map.insert(s.id.clone(), s.clone());
        self.open.set(map.len() as i64);
        Ok(Some(s))
    }

    /// The id of the session known by `hash` in the shared state, if this
    /// replica holds it (a walk over the table: for the rare session ended
    /// elsewhere).
    pub(crate) fn find_shared(&self, hash: crate::shared::KeyHash) -> Option<String> {
        self.lock().values().find(|s| s.client.peer.shared_key() == Some(hash)).map(|s| s.id.clone())
    }

    /// The sessions held here that Redis knows: id, hash, and whether it
    /// was used within `lately`.
    pub(crate) fn held_shared(&self, lately: Duration) -> Vec<(String, crate::shared::KeyHash, bool)> {
        let map = self.lock();
        map.values()
            // A principal's stateless peer is not a session Redis ends: one
            // Redis forgot is opened again at its next call (gate/on_shared.rs).
            .filter(|s| s.client.peer.shared_registered() && !s.client.peer.is_stateless())
            .filter_map(|s| Some((s.id.clone(), s.client.peer.shared_key()?, s.idle_for() < lately)))
            .collect()
    }

    /// Looks a session up.
    pub fn get(&self, id: &str) -> Option<Arc<Session>> {
        self.lock().get(id).cloned()
    }

    /// Ends a session; false when it did not exist. Its token is not
    /// rebuilt here until `until` (when its age is up anyway).
    pub fn remove_until(&self, id: &str, until: std::time::SystemTime) -> bool {
        // The tombstone first: a rebuild racing this removal finds it.
        self.end(id, until);
        self.remove(id)
    }

    /// Records that the session `id` ended here, until `until`: its token
    /// is not rebuilt here (a DELETE of a session this replica never held
    /// records it too). At most 4 × `max_sessions` are kept; past that the
    /// one nearest its end goes first.
    pub fn end(&self, id: &str, until: std::time::SystemTime) {
        let mut ended = self.ended.locked();
        let now = std::time::SystemTime::now();
        if ended.len() >= 4 * self.max {
            ended.retain(|_, t| *t > now);
        }
        if ended.len() >= 4 * self.max
            && let Some(first) = ended.iter().min_by_key(|(_, t)| **t).map(|(k, _)| *k)
        {
            ended.remove(&first);
        }
        ended.insert(fingerprint(id), until);
    }

    /// Whether the session `id` was ended here and may not be rebuilt.
    pub fn was_ended(&self, id: &str) -> bool {
        self.ended.locked().get(&fingerprint(id)).is_some_and(|t| *t > std::time::SystemTime::now())
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
            let unused = !s.used.load(Ordering::Relaxed) && s.created.elapsed() >= UNUSED_GRACE.min(idle);
            let keep = !unused && (s.idle_for() < idle || s.streaming());
            if !keep {
                s.closed.cancel();
                s.client.peer.close();
            }
            keep
        });
        self.open.set(map.len() as i64);
        let expired = before - map.len();
        drop(map);
        let now = std::time::SystemTime::now();
        self.ended.locked().retain(|_, t| *t > now);
        expired
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Arc<Session>, IdHash>> {
        self.map.locked()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replay_keeps_each_streams_events_bounded() {
        let r = Replay::default();
        let s = r.open_stream();
        assert_eq!(s, 1);
        let first = r.record(s, "{\"a\":\n1}".into());
        assert_eq!(&first[..], b"id: 1-1\nevent: message\ndata: {\"a\": 1}\n\n");
        r.record(0, "{}".into());
        r.record(s, "{\"b\":2}".into());
        let got = r.after(s, 0);
        assert_eq!(got.events.iter().map(|(n, _)| *n).collect::<Vec<_>>(), [1, 3], "only its own stream");
        assert!(!got.ended, "open until its reply");
        assert_eq!(r.after(s, 1).events.len(), 1);
        r.end(s);
        assert!(r.after(s, 3).ended);
        assert!(r.after(99, 0).ended, "an unknown stream has nothing to wait for");
        assert!(!r.after(0, 0).ended, "the GET stream never ends");
        // Bounded: old events go, and an ended stream with none left is gone.
        for _ in 0..REPLAY_EVENTS {
            r.record(0, "{}".into());
        }
        assert!(r.after(s, 0).events.is_empty());
        assert_eq!(r.after(0, 0).events.len(), REPLAY_EVENTS);
        let big = format!("\"{}\"", "x".repeat(REPLAY_BYTES));
        r.record(0, big);
        assert_eq!(r.after(0, 0).events.len(), 1, "the newest stays, whatever its size");
        assert_eq!(parse_event_id("3-17"), Some((3, 17)));
        let p = r.open_stream();
        r.prime(p, Duration::from_millis(1500));
        let primed = r.after(p, 0);
        assert_eq!(
            &primed.events[0].1[..],
            format!("id: {p}-{}\nretry: 1500\ndata: \n\n", primed.events[0].0).as_bytes()
        );
        assert_eq!(parse_event_id("x-1"), None);
    }

    #[test]
    fn ids_are_hashed_by_their_tail_and_compared_whole() {
        use std::hash::BuildHasher as _;
        let h = IdHash::default();
        let a = format!("{}{}", "a".repeat(100), "tail-0123456789abcdefghij");
        let b = format!("{}{}", "b".repeat(100), "tail-0123456789abcdefghij");
        assert_eq!(h.hash_one(&a), h.hash_one(&b), "only the tail is hashed");
        assert_ne!(h.hash_one("x-0123456789abcdefghijklmn"), h.hash_one("x-0123456789abcdefghijklmo"));
        let mut m: HashMap<String, u8, IdHash> = HashMap::default();
        m.insert(a.clone(), 1);
        m.insert(b.clone(), 2);
        assert_eq!((m[&a], m[&b]), (1, 2), "a lookup compares the whole id");
    }

    /// A gateway with no upstream, and its metrics.
    fn gateway() -> (Arc<crate::routing::Gateway>, Arc<Metrics>) {
        let config = crate::config::Config::from_str(
            "",
            std::path::Path::new("gateway.toml"),
            &std::collections::BTreeMap::new(),
        )
        .unwrap();
        let telemetry = crate::telemetry::Telemetry::metrics_only();
        let metrics = telemetry.metrics.clone();
        (crate::routing::Gateway::start(config, telemetry), metrics)
    }

    #[tokio::test(start_paused = true)]
    async fn ids_are_random_and_idle_sessions_expire() {
        let (gateway, metrics) = gateway();
        let t = Sessions::new(2, &metrics);
        let quota = super::super::bounds::Quota::new(usize::MAX, 10, None);
        let create = || {
            let (tx, rx) = mpsc::channel(1);
            let anonymous = Arc::new(crate::security::auth::Principal::anonymous());
            let held = quota.take(&anonymous, 1).unwrap();
            t.create(random_id::<32>(), "2025-11-25".into(), gateway.connect(tx, None, anonymous), rx, held, 0)
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
        drop(a);
        assert_eq!(quota.total(), 1, "an expired session gives its place back");
        assert!(t.remove(&b.id));
        assert!(!t.remove(&b.id));
        drop(b);
        assert_eq!(quota.total(), 0);
        assert!(metrics.encode().contains("mcp_gateway_downstream_sessions{transport=\"http\"} 0"));
    }

    #[tokio::test(start_paused = true)]
    async fn a_rebuilt_session_is_one_per_token_an_ended_one_is_never_taken_in_and_unused_ones_go_early() {
        let (gateway, metrics) = gateway();
        let t = Sessions::new(1, &metrics);
        let quota = super::super::bounds::Quota::new(usize::MAX, 10, None);
        let anonymous = Arc::new(crate::security::auth::Principal::anonymous());
        let adopt = |id: &str| {
            let (tx, rx) = mpsc::channel(1);
            let held = quota.take(&anonymous, 1).unwrap();
            t.adopt(id, "2025-11-25".into(), gateway.connect(tx, None, anonymous.clone()), rx, held, 0)
        };
        let a = adopt("mgw1.a").unwrap().unwrap();
        let again = adopt("mgw1.a").unwrap().unwrap();
        assert!(Arc::ptr_eq(&a, &again), "a concurrent rebuild finds the first");
        assert_eq!(quota.total(), 1, "the loser's place is given back");
        assert!(adopt("mgw1.b").is_err(), "the table is bounded");
        let later = std::time::SystemTime::now() + Duration::from_secs(3600);
        assert!(t.remove_until("mgw1.a", later));
        assert!(t.was_ended("mgw1.a") && !t.was_ended("mgw1.b"));
        assert!(adopt("mgw1.a").unwrap().is_none(), "ended here: never taken in again");
        drop((a, again));

        // Never used after initialize: let go after the grace, not the
        // idle timeout; one in use stays.
        let unused = adopt("mgw1.c").unwrap().unwrap();
        tokio::time::advance(UNUSED_GRACE + Duration::from_secs(1)).await;
        assert_eq!(t.expire(Duration::from_secs(3600)), 1);
        assert!(t.get(&unused.id).is_none());
        let used = adopt("mgw1.d").unwrap().unwrap();
        used.touch();
        tokio::time::advance(UNUSED_GRACE + Duration::from_secs(1)).await;
        assert_eq!(t.expire(Duration::from_secs(3600)), 0);

        // Tombstones are bounded (4 × max_sessions); the one nearest its
        // end goes first.
        let now = std::time::SystemTime::now();
        for (i, id) in ["e1", "e2", "e3", "e4", "e5"].iter().enumerate() {
            t.end(id, now + Duration::from_secs(100 + 10 * i as u64));
        }
        assert_eq!(t.ended.locked().len(), 4);
        assert!(t.was_ended("mgw1.a") && t.was_ended("e5") && t.was_ended("e3"), "the latest ends stay");
        assert!(!t.was_ended("e1") && !t.was_ended("e2"), "the nearest ends went first");
    }
}
