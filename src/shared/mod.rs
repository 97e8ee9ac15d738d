//! State replicas share, in Redis (`[redis]`, docs/design.md D10): sequence
//! rule histories of both scopes, rate-limit buckets, per-principal session
//! counts, and ended sessions.
//!
//! One `tools/call` costs one round trip: [`Shared::admit`] runs one Lua
//! script that checks that the session was not ended elsewhere, takes a
//! token from each rate-limit bucket (all or none), records the session's
//! last use, and returns the session's and the principal's histories while
//! appending the call to both, atomically. A call the rules then refuse is
//! taken back by [`Shared::undo`], sent without waiting (rare, and on the
//! strict side: a refused call is seen by a concurrent one for that long).
//! Every time is Redis's own clock (`TIME`), so replicas' clocks do not
//! matter.
//!
//! Keys hold hashes, never a principal's name or a session id:
//! `<prefix>r:<session>` (ended), `<prefix>u:<session>` (last use),
//! `<prefix>h:<rules>:s:<session>` / `…:p:<principal>` (histories of one
//! rules file), `<prefix>b:<principal>:<bucket>` (buckets),
//! `<prefix>n:<principal>` (sessions open, a sorted set by expiry). Every
//! key expires. The scripts use several keys at once: one Redis server (or
//! a primary with replicas/Sentinel), not Redis Cluster.
//!
//! This module knows nothing of rules or limits: it moves opaque entries
//! and rates. What to do when Redis cannot be reached is the caller's
//! (`[redis.on_unreachable]`); every failure is counted
//! (`mcp_gateway_redis_requests_total{outcome}`) and flips
//! `mcp_gateway_redis_up`.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::{Script, Value};
use tokio::time::Instant;

mod ends;
mod scripts;
mod wire;

pub use wire::{Admit, AdmitRequest, Admitted, Bucket, Histories, KeyHash, Open, Opened, SharedHistory, key_hash};

use scripts::{ADMIT, END, OPEN, REFRESH, UNDO};
use wire::{Keys, bucket_ttl_ms, hex, millis, parse_admit};

use crate::config::{OnUnreachable, Redis};
use crate::telemetry::Metrics;
use crate::telemetry::metrics::Outcome;

/// The key names of one [`AdmitRequest`] ([`Shared::request_keys`]).
struct RequestKeys {
    /// The session's hash in hex (empty without a session).
    session: String,
    ended: String,
    used: String,
    /// The session's history, then the principal's.
    histories: [String; 2],
    count: String,
    buckets: Vec<String>,
}

/// Sessions checked per round trip by [`Shared::refresh`].
pub const REFRESH_BATCH: usize = 500;

/// How often [`Shared::watch`] pings Redis.
pub const WATCH_EVERY: Duration = Duration::from_secs(5);

/// The shared state's client: one multiplexed connection, reconnected in
/// the background.
pub struct Shared {
    /// For the subscription to ended sessions (a connection of its own).
    client: redis::Client,
    conn: ConnectionManager,
    /// Sessions ended on any replica, as announced on `<prefix>ended`
    /// (and by this replica's own calls that found one ended).
    ended: tokio::sync::broadcast::Sender<KeyHash>,
    /// Wakes the subscription when Redis stops answering: a connection
    /// that died silently is not waited on.
    went_down: tokio::sync::Notify,
    prefix: String,
    timeout: Duration,
    on_unreachable: OnUnreachable,
    /// Whether the last round trip succeeded (`mcp_gateway_redis_up`).
    up: AtomicBool,
    admit: Script,
    undo: Script,
    open: Script,
    end: Script,
    refresh: Script,
    metrics: Arc<Metrics>,
    /// Session ends made while Redis could not be reached, recorded there
    /// by [`Shared::watch`] once it answers again (at most
    /// [`MAX_PENDING_ENDS`]; each until it would have expired anyway).
    pending_ends: std::sync::Mutex<std::collections::VecDeque<PendingEnd>>,
}

/// Most session ends kept to record once Redis answers again; past it the
/// oldest is given up (logged).
pub const MAX_PENDING_ENDS: usize = 10_000;

/// A session end not yet recorded in Redis.
#[derive(Debug, Clone, Copy)]
struct PendingEnd {
    session: KeyHash,
    principal: Option<KeyHash>,
    /// Until when the end matters (the session's longest possible life).
    until: tokio::time::Instant,
}

/// Why a round trip failed. The caller applies the feature's
/// `on_unreachable` choice.
#[derive(Debug, thiserror::Error)]
pub enum SharedError {
    /// No answer within `[redis] timeout`.
    #[error("Redis did not answer within {0:?}")]
    Timeout(Duration),
    /// Connection refused or lost, or an error reply.
    #[error("Redis: {0}")]
    Redis(#[from] redis::RedisError),
    /// A reply of an unexpected shape (another program's key?).
    #[error("Redis answered in an unexpected shape")]
    Shape,
}

// === impl Shared ===

impl std::fmt::Debug for Shared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Shared").field("prefix", &self.prefix).field("up", &self.up).finish_non_exhaustive()
    }
}

impl Shared {
    /// A client of `config`'s server. Connects lazily: the gateway serves
    /// while Redis is down, each feature as `on_unreachable` says.
    pub fn new(config: &Redis, metrics: Arc<Metrics>) -> Result<Shared, SharedError> {
        let client = redis::Client::open(config.url.expose())?;
        let manager = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(config.timeout))
            .set_response_timeout(Some(config.timeout))
            // Reconnect attempts per failed command: few, so a down server
            // costs a call one timeout, not several.
            .set_number_of_retries(1)
            .set_max_delay(Duration::from_secs(2));
        let conn = ConnectionManager::new_lazy_with_config(client.clone(), manager)?;
        for outcome in ["ok", "failed", "timeout"] {
            let _ = metrics.redis_requests.get_or_create(&Outcome { outcome });
        }
        Ok(Shared {
            client,
            conn,
            ended: tokio::sync::broadcast::channel(1024).0,
            went_down: tokio::sync::Notify::new(),
            prefix: config.key_prefix.clone(),
            timeout: config.timeout,
            on_unreachable: config.on_unreachable,
            up: AtomicBool::new(true),
            admit: Script::new(ADMIT),
            undo: Script::new(UNDO),
            open: Script::new(OPEN),
            end: Script::new(END),
            refresh: Script::new(REFRESH),
            metrics,
            pending_ends: Default::default(),
        })
    }

    /// Pings Redis every [`WATCH_EVERY`] while `self` lives, so that
    /// `mcp_gateway_redis_up` and the log say whether it can be reached
    /// even when no call has tried it lately (and from the start).
    pub fn watch(self: &Arc<Self>) {
        self.listen_ended();
        let weak = Arc::downgrade(self);
        tokio::spawn(async move {
            let mut every = tokio::time::interval(WATCH_EVERY);
            every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                every.tick().await;
                let Some(me) = weak.upgrade() else { return };
                let mut conn = me.conn.clone();
                let ping = redis::cmd("PING");
                if me.round_trip(ping.query_async::<Value>(&mut conn)).await.is_ok() {
                    me.record_pending_ends().await;
                }
            }
        });
    }

    /// What each feature does while Redis cannot be reached.
    pub fn on_unreachable(&self) -> OnUnreachable {
        self.on_unreachable
    }

    /// The keys of `req` (an empty name for a key it has none of): the
    /// session's ended and last-use keys, its and its principal's
    /// histories, the principal's session count, and the buckets.
    fn request_keys(&self, req: &AdmitRequest<'_>) -> RequestKeys {
        let k = Keys(&self.prefix);
        let session = req.session.map(|s| hex(&s.0));
        let principal = req.principal.map(|s| hex(&s.0));
        let h = req.histories;
        let named = principal.as_ref().filter(|_| req.principal_history);
        let who = principal.as_deref().unwrap_or("anonymous");
        RequestKeys {
            ended: session.as_ref().map(|s| k.ended(s)).unwrap_or_default(),
            used: session.as_ref().map(|s| k.used(s)).unwrap_or_default(),
            histories: [
                h.zip(session.as_ref()).map(|(h, s)| k.history(h.rules, 's', s)).unwrap_or_default(),
                h.zip(named).map(|(h, p)| k.history(h.rules, 'p', p)).unwrap_or_default(),
            ],
            count: principal.as_ref().filter(|_| session.is_some()).map(|p| k.count(p)).unwrap_or_default(),
            buckets: req.buckets.iter().map(|b| k.bucket(who, b.id)).collect(),
            session: session.unwrap_or_default(),
        }
    }

    /// Checks, limits and records one call in one round trip (module docs).
    pub async fn admit(&self, req: &AdmitRequest<'_>) -> Result<Admit, SharedError> {
        let keys = self.request_keys(req);
        let mut inv = self.admit.prepare_invoke();
        inv.key(&keys.ended).key(&keys.used).key(&keys.histories[0]).key(&keys.histories[1]).key(&keys.count);
        inv.key(""); // KEYS[6], unused: buckets start at 7.
        for b in &keys.buckets {
            inv.key(b);
        }
        let h = req.histories;
        inv.arg(req.buckets.len());
        inv.arg(h.map_or(0, |h| h.capacity));
        inv.arg(h.map_or(String::new(), |h| h.entry.to_owned()));
        inv.arg(h.map_or(1, |h| millis(h.ttl)));
        inv.arg(millis(req.idle));
        inv.arg(&keys.session);
        for b in req.buckets {
            inv.arg(b.per_second).arg(b.burst).arg(bucket_ttl_ms(b));
        }
        let mut conn = self.conn.clone();
        let reply: Value = self.round_trip(inv.invoke_async(&mut conn)).await?;
        parse_admit(reply).ok_or_else(|| self.shape())
    }

    /// Takes back an admitted call the rules refused (not awaited: spawned).
    pub fn undo(&self, req: &AdmitRequest<'_>, admitted: &Admitted) {
        let RequestKeys { histories, buckets, .. } = self.request_keys(req);
        let keys: Vec<String> = histories.into_iter().chain(buckets).collect();
        let mut args = vec![admitted.entry.clone().unwrap_or_default()];
        args.extend(req.buckets.iter().map(|b| b.burst.to_string()));
        let (script, mut conn, timeout) = (self.undo.clone(), self.conn.clone(), self.timeout);
        let metrics = self.metrics.clone();
        tokio::spawn(async move {
            let mut inv = script.prepare_invoke();
            for k in &keys {
                inv.key(k);
            }
            for a in &args {
                inv.arg(a);
            }
            let done = tokio::time::timeout(timeout, inv.invoke_async::<Value>(&mut conn)).await;
            if !matches!(done, Ok(Ok(_))) {
                metrics.redis_requests.get_or_create(&Outcome { outcome: "failed" }).inc();
                tracing::warn!("A refused call's history entry and tokens could not be taken back from Redis.");
            }
        });
    }

    /// Records a session opened (or rebuilt) here, counted against its
    /// principal's `cap` on all replicas (`None`: not counted, as for the
    /// shared anonymous principal) for `hold` at least (a session never
    /// used after `initialize` gives its slot back soon). `old`: its token
    /// is older than `idle`, so it is taken only if a replica used it
    /// within `idle`.
    pub async fn open(&self, session: KeyHash, principal: Option<KeyHash>, open: Open) -> Result<Opened, SharedError> {
        let Open { cap, idle, hold, old } = open;
        let k = Keys(&self.prefix);
        let s = hex(&session.0);
        let mut inv = self.open.prepare_invoke();
        inv.key(k.ended(&s)).key(k.used(&s));
        inv.key(principal.map(|h| k.count(&hex(&h.0))).unwrap_or_default());
        inv.arg(&s).arg(cap).arg(millis(idle)).arg(if old { "1" } else { "0" }).arg(millis(hold.min(idle)));
        let mut conn = self.conn.clone();
        let reply: Vec<i64> = self.round_trip(inv.invoke_async(&mut conn)).await?;
        match reply.as_slice() {
            [0] => Ok(Opened::Ended),
            [1, open] => Ok(Opened::Full(u64::try_from(*open).unwrap_or(0))),
            [2, _] => Ok(Opened::Open),
            [3] => Ok(Opened::Idle),
            _ => Err(self.shape()),
        }
    }

    /// A reply of an unexpected shape: counted as failed and logged (the
    /// round trip itself was counted as ok).
    fn shape(&self) -> SharedError {
        self.metrics.redis_requests.get_or_create(&Outcome { outcome: "failed" }).inc();
        tracing::error!(
            "Redis answered a shared-state script in an unexpected shape (another program's keys under key_prefix?)."
        );
        SharedError::Shape
    }

    /// One round trip within the timeout, counted.
    async fn round_trip<T>(&self, fut: impl Future<Output = redis::RedisResult<T>>) -> Result<T, SharedError> {
        let started = Instant::now();
        let result = match tokio::time::timeout(self.timeout, fut).await {
            Ok(Ok(v)) => Ok(v),
            Ok(Err(e)) => Err(SharedError::Redis(e)),
            Err(_) => Err(SharedError::Timeout(self.timeout)),
        };
        let outcome = match &result {
            Ok(_) => "ok",
            Err(SharedError::Timeout(_)) => "timeout",
            Err(_) => "failed",
        };
        self.metrics.redis_requests.get_or_create(&Outcome { outcome }).inc();
        self.metrics.redis_request_duration.observe(started.elapsed().as_secs_f64());
        let was_up = self.up.swap(result.is_ok(), Ordering::Relaxed);
        self.metrics.redis_up.set(i64::from(result.is_ok()));
        match (&result, was_up) {
            (Err(e), true) => {
                self.went_down.notify_waiters();
                tracing::error!(error = %e, "Redis (shared state) cannot be reached: features fall back as [redis.on_unreachable] says.")
            }
            (Ok(_), false) => tracing::info!("Redis (shared state) answers again."),
            _ => {}
        }
        result
    }
}
