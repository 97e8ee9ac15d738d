//! Shares of what clients can make the gateway hold (docs/design.md D12): a
//! whole limit, and a share of it for each principal, so that one client
//! that fills its own share leaves room for every other.
//!
//! Two are kept: bytes of request bodies in flight
//! (`max_inflight_request_bytes`, `…_per_principal`) and sessions per
//! principal (`max_sessions_per_principal`; the whole count of sessions is
//! the session table's). A [`Held`] gives back what it took when it is
//! dropped, so nothing leaks on an early return or a cancelled request.
//!
//! `anonymous` (no `[auth]`: everyone is the same principal) has no share
//! of its own; only the whole limit applies to it.
//!
//! One short lock per take and give back; never held across `.await`.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use prometheus_client::metrics::gauge::Gauge;

use crate::security::auth::{Principal, Via};
use crate::sync::Locked;

/// A limit on the whole and on each principal's share of it.
#[derive(Debug)]
pub(crate) struct Quota {
    whole: usize,
    each: usize,
    inner: Mutex<Inner>,
    /// What is held now, when exported.
    gauge: Option<Gauge>,
}

#[derive(Debug, Default)]
struct Inner {
    total: usize,
    /// Only principals that hold something: the map stays as small as
    /// the set of clients with something in flight.
    by: HashMap<Arc<str>, usize>,
}

/// Which limit a take would have gone over.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub(crate) enum Over {
    /// The principal's own share.
    #[error("over the principal's share")]
    Share,
    /// The whole limit.
    #[error("over the whole limit")]
    Whole,
}

impl Over {
    /// The `reason` label of its refusal, prefixed by what was limited.
    pub(crate) fn reason(self, what: &'static str) -> &'static str {
        match (what, self) {
            ("bytes", Over::Share) => "principal_inflight_bytes",
            ("bytes", Over::Whole) => "inflight_bytes",
            ("sessions", Over::Share) => "principal_sessions",
            _ => "sessions",
        }
    }
}

/// What one holder took from a [`Quota`]; given back on drop.
#[derive(Debug)]
pub(crate) struct Held {
    quota: Arc<Quota>,
    /// `None` for `anonymous` (no share of its own).
    key: Option<Arc<str>>,
    n: usize,
}

// === impl Quota ===

impl Quota {
    /// A quota of `whole`, with `each` for any one principal; `gauge`
    /// shows what is held.
    pub(crate) fn new(whole: usize, each: usize, gauge: Option<Gauge>) -> Arc<Self> {
        Arc::new(Quota { whole, each, inner: Mutex::default(), gauge })
    }

    /// Takes `n` for `principal`, or says which limit it would pass.
    pub(crate) fn take(self: &Arc<Self>, principal: &Principal, n: usize) -> Result<Held, Over> {
        let key = (principal.via != Via::Anonymous).then(|| principal.identity.clone());
        let mut held = Held { quota: self.clone(), key, n: 0 };
        held.grow(n)?;
        Ok(held)
    }

    /// What is held now, in all.
    pub(crate) fn total(&self) -> usize {
        self.lock().total
    }

    /// What `identity` holds now.
    pub(crate) fn held_by(&self, identity: &str) -> usize {
        self.lock().by.get(identity).copied().unwrap_or(0)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.locked()
    }
}

// === impl Held ===

impl Held {
    /// Takes `n` more, or nothing when either limit would be passed.
    pub(crate) fn grow(&mut self, n: usize) -> Result<(), Over> {
        if n == 0 {
            return Ok(());
        }
        let q = &self.quota;
        let mut inner = q.lock();
        if let Some(key) = &self.key {
            let mine = inner.by.get(key).copied().unwrap_or(0);
            if mine.saturating_add(n) > q.each {
                return Err(Over::Share);
            }
        }
        if inner.total.saturating_add(n) > q.whole {
            return Err(Over::Whole);
        }
        inner.total += n;
        if let Some(key) = &self.key {
            *inner.by.entry(key.clone()).or_insert(0) += n;
        }
        let total = inner.total;
        drop(inner);
        self.n += n;
        if let Some(g) = &q.gauge {
            g.set(total as i64);
        }
        Ok(())
    }

    /// How much this holds.
    pub(crate) fn amount(&self) -> usize {
        self.n
    }
}

impl Drop for Held {
    fn drop(&mut self) {
        if self.n == 0 {
            return;
        }
        let q = &self.quota;
        let mut inner = q.lock();
        inner.total -= self.n;
        if let Some(key) = &self.key
            && let Some(mine) = inner.by.get_mut(key)
        {
            *mine -= self.n;
            if *mine == 0 {
                inner.by.remove(key);
            }
        }
        let total = inner.total;
        drop(inner);
        if let Some(g) = &q.gauge {
            g.set(total as i64);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(name: &str) -> Principal {
        let mut p = Principal::anonymous();
        p.id = name.into();
        p.identity = format!("key:{name}").into();
        p.via = Via::ApiKey;
        p
    }

    #[test]
    fn one_principal_fills_only_its_share_and_everything_is_given_back() {
        let gauge = Gauge::default();
        let q = Quota::new(100, 40, Some(gauge.clone()));
        let (mallory, alice, anon) = (key("mallory"), key("alice"), Principal::anonymous());
        let a = q.take(&mallory, 30).unwrap();
        let mut b = q.take(&mallory, 10).unwrap();
        assert_eq!(q.take(&mallory, 1).unwrap_err(), Over::Share, "mallory's share is full");
        assert_eq!(b.grow(1), Err(Over::Share));
        assert_eq!(b.amount(), 10, "a refused growth takes nothing");
        // Others still get in, up to the whole.
        let c = q.take(&alice, 40).unwrap();
        let d = q.take(&anon, 20).unwrap();
        assert_eq!(q.take(&anon, 1).unwrap_err(), Over::Whole);
        assert_eq!(gauge.get(), 100);
        assert_eq!(q.held_by("key:mallory"), 40);
        drop((a, b, c, d));
        assert_eq!(q.total(), 0);
        assert_eq!(gauge.get(), 0);
        assert!(q.lock().by.is_empty(), "no principal lingers with nothing held");
        // Anonymous has no share: only the whole applies.
        let e = q.take(&anon, 100).unwrap();
        assert_eq!(q.take(&alice, 1).unwrap_err(), Over::Whole);
        drop(e);
        assert_eq!(Over::Share.reason("bytes"), "principal_inflight_bytes");
        assert_eq!(Over::Share.reason("sessions"), "principal_sessions");
    }
}
