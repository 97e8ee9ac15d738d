//! Session ends shared by every replica: recorded (or kept until Redis
//! answers), announced on `<prefix>ended`, and the sessions a replica
//! holds checked against them.

use std::sync::Arc;
use std::time::Duration;

use redis::Value;

use super::wire::{Keys, hex, millis, unhex};
use super::{KeyHash, MAX_PENDING_ENDS, PendingEnd, REFRESH_BATCH, Shared, SharedError};
use crate::sync::Locked;

impl Shared {
    /// Sessions ended on any replica from now on (a receiver lagging more
    /// than 1024 behind loses the oldest; the next call of such a session
    /// finds it ended anyway).
    pub fn ended(&self) -> tokio::sync::broadcast::Receiver<KeyHash> {
        self.ended.subscribe()
    }

    /// Announces to this replica's listeners that `session` was found
    /// ended (by a call's check).
    pub fn found_ended(&self, session: KeyHash) {
        let _ = self.ended.send(session);
    }

    /// Follows `<prefix>ended` while `self` lives: every session a replica
    /// ends is passed to [`Shared::ended`]'s receivers. Resubscribes after
    /// a lost connection (a second later); ends missed meanwhile are found
    /// by the sessions' next calls.
    pub(super) fn listen_ended(self: &Arc<Self>) {
        let weak = Arc::downgrade(self);
        tokio::spawn(async move {
            use futures_util::StreamExt as _;
            loop {
                let Some(me) = weak.upgrade() else { return };
                let channel = Keys(&me.prefix).channel();
                let connected = tokio::time::timeout(me.timeout.max(Duration::from_secs(1)), async {
                    let mut pubsub = me.client.get_async_pubsub().await?;
                    pubsub.subscribe(&channel).await?;
                    Ok::<_, redis::RedisError>(pubsub)
                })
                .await;
                if let Ok(Ok(pubsub)) = connected {
                    tracing::debug!(%channel, "Following ended sessions.");
                    let mut messages = pubsub.into_on_message();
                    let (sender, down) = (me.ended.clone(), &me.went_down);
                    loop {
                        tokio::select! {
                            msg = messages.next() => match msg {
                                Some(msg) => {
                                    let hash = msg.get_payload::<String>().ok().and_then(|h| unhex(&h));
                                    if let Some(hash) = hash {
                                        let _ = sender.send(hash);
                                    }
                                }
                                None => break,
                            },
                            () = down.notified() => break,
                        }
                    }
                }
                drop(me);
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        });
    }

    /// Checks the sessions this replica holds (each: its hash, and whether
    /// it was used here lately, which records that use): the answer says,
    /// in order, which are still alive (not ended anywhere, used on some
    /// replica within `idle`). One round trip per [`REFRESH_BATCH`].
    pub async fn refresh(&self, sessions: &[(KeyHash, bool)], idle: Duration) -> Result<Vec<bool>, SharedError> {
        let k = Keys(&self.prefix);
        let mut alive = Vec::with_capacity(sessions.len());
        for batch in sessions.chunks(REFRESH_BATCH) {
            let mut inv = self.refresh.prepare_invoke();
            inv.arg(millis(idle));
            for (hash, used) in batch {
                let s = hex(&hash.0);
                inv.key(k.ended(&s)).key(k.used(&s));
                inv.arg(if *used { "1" } else { "0" });
            }
            let mut conn = self.conn.clone();
            let reply: Vec<i64> = self.round_trip(inv.invoke_async(&mut conn)).await?;
            if reply.len() != batch.len() {
                return Err(self.shape());
            }
            alive.extend(reply.iter().map(|v| *v == 1));
        }
        Ok(alive)
    }

    /// Ends a session on every replica: no replica admits its calls or
    /// rebuilds it for `keep` (its longest possible life from now). When
    /// Redis cannot be reached the end is kept and recorded once it
    /// answers again ([`Shared::watch`]); the error says it is not yet.
    pub async fn end(&self, session: KeyHash, principal: Option<KeyHash>, keep: Duration) -> Result<(), SharedError> {
        let result = self.end_now(session, principal, keep).await;
        if result.is_err() {
            let now = tokio::time::Instant::now();
            let until = now + keep;
            let mut pending = self.pending_ends.locked();
            // The same session ended twice waits once; ends past their
            // point go first, then the oldest.
            pending.retain(|p| p.session != session && p.until > now);
            if pending.len() >= MAX_PENDING_ENDS {
                pending.pop_front();
                tracing::error!(
                    max = MAX_PENDING_ENDS,
                    "Gave up the oldest session end waiting for Redis: too many wait."
                );
            }
            pending.push_back(PendingEnd { session, principal, until });
        }
        result
    }

    /// Records the session ends kept while Redis was unreachable; those
    /// that fail again wait for the next try.
    pub(super) async fn record_pending_ends(&self) {
        let now = tokio::time::Instant::now();
        let ends: Vec<PendingEnd> = {
            let mut pending = self.pending_ends.locked();
            pending.drain(..).filter(|p| p.until > now).collect()
        };
        if ends.is_empty() {
            return;
        }
        let mut recorded = 0usize;
        let mut failed = Vec::new();
        let mut down = false;
        for p in ends {
            // Once one fails Redis is gone again: the rest wait for the
            // next try instead of a timeout each.
            if down {
                failed.push(p);
                continue;
            }
            match self.end_now(p.session, p.principal, p.until - now).await {
                Ok(()) => recorded += 1,
                Err(_) => {
                    down = true;
                    failed.push(p);
                }
            }
        }
        tracing::info!(
            recorded,
            waiting = failed.len(),
            "Session ends made while Redis was unreachable are now shared."
        );
        if !failed.is_empty() {
            let mut pending = self.pending_ends.locked();
            for p in failed.into_iter().rev() {
                if pending.len() < MAX_PENDING_ENDS {
                    pending.push_front(p);
                }
            }
        }
    }

    /// One END round trip.
    pub(super) async fn end_now(
        &self,
        session: KeyHash,
        principal: Option<KeyHash>,
        keep: Duration,
    ) -> Result<(), SharedError> {
        let k = Keys(&self.prefix);
        let s = hex(&session.0);
        let mut inv = self.end.prepare_invoke();
        inv.key(k.ended(&s)).key(k.used(&s));
        inv.key(principal.map(|h| k.count(&hex(&h.0))).unwrap_or_default());
        inv.arg(millis(keep).max(1)).arg(&s).arg(k.channel());
        let mut conn = self.conn.clone();
        let _: Value = self.round_trip(inv.invoke_async(&mut conn)).await?;
        Ok(())
    }
}
