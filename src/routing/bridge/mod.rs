//! Bridging the protocol eras (docs/design.md D13, docs/mcp.md "Bridging
//! the eras"): a 2025 upstream's server requests (sampling, elicitation,
//! roots) become input-required results for a 2026-07-28 client
//! ([`to_modern`]), and a 2026-07-28 upstream's input-required results
//! become 2025 server requests to a 2025 client ([`to_legacy`]).
//!
//! Every exchange holds a [`Slot`] while it is open: bounded gateway-wide
//! and per principal (`[bridge]`), counted by direction and outcome, and
//! shown as a gauge. A 2025 upstream's call waiting for a modern client's
//! retry is parked here, by a random id the client only ever sees sealed
//! ([`state`]); the parked call is cancelled upstream when the client does
//! not come back in time.

pub(crate) mod state;
pub(crate) mod through;
pub(crate) mod to_legacy;
pub(crate) mod to_modern;

use std::collections::HashMap;
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use crate::config::BridgeSection;
use crate::sync::Locked;
use crate::telemetry::metrics::{BridgeLabels, DirectionLabels, Metrics};
use crate::upstream::{Called, Request, ToolHints, Upstream};

pub(crate) use to_modern::Exchange;

/// Which way an exchange is bridged.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Direction {
    /// A 2026-07-28 client, a 2025 upstream: input-required results.
    ToModern,
    /// A 2025 client, a 2026-07-28 upstream: server requests.
    ToLegacy,
    /// Both 2026-07-28: the upstream's own state, wrapped ([`through`]).
    Through,
}

impl Direction {
    fn label(self) -> &'static str {
        match self {
            Direction::ToModern => "to_modern",
            Direction::ToLegacy => "to_legacy",
            Direction::Through => "through",
        }
    }
}

/// The exchanges the gateway bridges.
#[derive(Debug)]
pub(crate) struct Bridges {
    sealer: state::Sealer,
    shared: Arc<Shared>,
    /// Confirmations used, by principal, until their expiry (`through`).
    used: Mutex<HashMap<Arc<str>, HashMap<String, u64>>>,
}

#[derive(Debug)]
struct Shared {
    inner: Mutex<Inner>,
    metrics: Arc<Metrics>,
}

#[derive(Debug, Default)]
struct Inner {
    /// Exchanges waiting for their client's retry (or being answered by
    /// one), by id.
    parked: HashMap<u128, Entry>,
    /// Open exchanges (parked or not) by principal.
    by_principal: HashMap<Arc<str>, usize>,
    total: usize,
}

/// A parked exchange, or the mark of one a retry is answering now.
#[derive(Debug)]
enum Entry {
    Parked(Box<Exchange>),
    Busy,
}

/// One open exchange's place in the bounds; given back, and the
/// exchange's outcome counted, when dropped.
#[derive(Debug)]
pub(crate) struct Slot {
    shared: Arc<Shared>,
    principal: Arc<str>,
    direction: Direction,
    /// How the exchange ended: `cancelled` (its client went away, the
    /// gateway stopped) unless it says otherwise before it is dropped.
    pub(crate) outcome: &'static str,
}

/// The mark of an exchange a retry is answering: taken out of the table
/// with it, so a second retry of the same state is told to wait rather
/// than to call again. Removed when dropped, unless the exchange was
/// parked again meanwhile.
#[derive(Debug)]
pub(crate) struct Busy {
    shared: Arc<Shared>,
    id: u128,
}

impl Drop for Busy {
    fn drop(&mut self) {
        let mut inner = self.shared.inner.locked();
        if matches!(inner.parked.get(&self.id), Some(Entry::Busy)) {
            inner.parked.remove(&self.id);
        }
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        let labels = BridgeLabels { direction: self.direction.label(), outcome: self.outcome };
        self.shared.metrics.bridge_exchanges.get_or_create(&labels).inc();
        let mut inner = self.shared.inner.locked();
        inner.total -= 1;
        if let Some(n) = inner.by_principal.get_mut(&self.principal) {
            *n -= 1;
            if *n == 0 {
                inner.by_principal.remove(&self.principal);
            }
        }
        drop(inner);
        self.shared
            .metrics
            .bridge_in_flight
            .get_or_create(&DirectionLabels { direction: self.direction.label() })
            .dec();
    }
}

/// Why a retry's `requestState` was refused (each answered -32602).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub(crate) enum ResumeError {
    /// Altered, or not sealed by this gateway's key.
    #[error("requestState was altered or was not issued by this gateway")]
    Invalid,
    /// Past its expiry.
    #[error("requestState has expired: call the tool again")]
    Expired,
    /// Issued by another replica, which holds the exchange.
    #[error(
        "the exchange of this requestState is held by another gateway replica: the retry must reach the replica that answered (see docs/mcp.md, Bridging the eras)"
    )]
    Elsewhere,
    /// For another principal, tool or arguments.
    #[error("requestState belongs to another call: retry the same tool with the same arguments")]
    OtherCall,
    /// An earlier round's state.
    #[error("requestState is from an earlier round of this exchange: send the latest")]
    Stale,
    /// Ended: answered, timed out, or cancelled.
    #[error("the exchange of this requestState has ended (answered, timed out or cancelled): call the tool again")]
    Ended,
    /// Being answered by another retry right now.
    #[error("another retry with this requestState is being answered right now: wait for its answer")]
    Busy,
}

impl ResumeError {
    fn reason(self) -> &'static str {
        match self {
            ResumeError::Invalid => "invalid_state",
            ResumeError::Expired => "expired_state",
            ResumeError::Elsewhere => "other_replica",
            ResumeError::OtherCall => "other_call",
            ResumeError::Stale => "stale_state",
            ResumeError::Ended => "ended",
            ResumeError::Busy => "busy",
        }
    }
}

// === impl Bridges ===

impl Bridges {
    /// No exchange open; states sealed under a key derived from
    /// `session_key` when there is one.
    pub(crate) fn new(session_key: Option<&[u8; 32]>, metrics: Arc<Metrics>) -> Self {
        Bridges {
            sealer: state::Sealer::new(session_key),
            shared: Arc::new(Shared { inner: Mutex::new(Inner::default()), metrics }),
            used: Mutex::default(),
        }
    }

    /// A place for one more exchange of `principal`, within the bounds;
    /// `None` (counted `limited`, logged) when there is none.
    pub(crate) fn admit(&self, principal: &Arc<str>, direction: Direction, limits: &BridgeSection) -> Option<Slot> {
        let mut inner = self.shared.inner.locked();
        let mine = inner.by_principal.get(principal).copied().unwrap_or(0);
        if inner.total >= limits.max_exchanges || mine >= limits.max_exchanges_per_principal {
            let everyone = inner.total >= limits.max_exchanges;
            drop(inner);
            tracing::warn!(
                principal = %principal,
                direction = direction.label(),
                bound = if everyone { "max_exchanges" } else { "max_exchanges_per_principal" },
                "Refused to bridge an exchange: too many open."
            );
            self.count(direction, "limited");
            return None;
        }
        inner.total += 1;
        *inner.by_principal.entry(principal.clone()).or_default() += 1;
        drop(inner);
        self.shared.metrics.bridge_in_flight.get_or_create(&DirectionLabels { direction: direction.label() }).inc();
        Some(Slot { shared: self.shared.clone(), principal: principal.clone(), direction, outcome: "cancelled" })
    }

    /// Counts one outcome of an exchange.
    pub(crate) fn count(&self, direction: Direction, outcome: &'static str) {
        self.shared
            .metrics
            .bridge_exchanges
            .get_or_create(&BridgeLabels { direction: direction.label(), outcome })
            .inc();
    }

    /// Parks `ex` until its client retries, and returns the input-required
    /// result that asks the client, with the sealed state it must send
    /// back. A round that got answers gets `wait` from now (then `ex` is
    /// dropped, which cancels its upstream call); one that did not keeps
    /// the deadline it had, so retries that answer nothing cannot keep an
    /// exchange alive.
    pub(crate) fn park(&self, mut ex: Exchange, wait: Duration) -> Option<Box<crate::protocol::RawValue>> {
        let now = tokio::time::Instant::now();
        let (id, round) = (ex.id, ex.round);
        let deadline = match ex.deadline {
            Some((r, d)) if r == round => d,
            _ => {
                let d = now + wait;
                ex.deadline = Some((round, d));
                self.expire_at(id, round, d);
                d
            }
        };
        if deadline <= now {
            // Its time ran out while a retry was being answered.
            tracing::warn!(upstream = %ex.upstream.id(), "A bridged call waited too long for its client's input responses; cancelled upstream.");
            ex.slot.outcome = "timeout";
            return None;
        }
        let expires = unix_now() + deadline.saturating_duration_since(now).as_secs() + 1;
        let claims =
            state::Claims { instance: self.sealer.instance, exchange: id, round, binding: ex.binding, expires };
        let result = ex.input_required(&self.sealer.seal(&claims));
        self.shared.inner.locked().parked.insert(id, Entry::Parked(Box::new(ex)));
        Some(result)
    }

    /// Drops exchange `id` at `deadline` if it is still parked at `round`.
    fn expire_at(&self, id: u128, round: u32, deadline: tokio::time::Instant) {
        let shared: Weak<Shared> = Arc::downgrade(&self.shared);
        tokio::spawn(async move {
            tokio::time::sleep_until(deadline).await;
            let Some(shared) = shared.upgrade() else { return };
            let mut inner = shared.inner.locked();
            if !matches!(inner.parked.get(&id), Some(Entry::Parked(ex)) if ex.round == round) {
                return;
            }
            let Some(Entry::Parked(mut ex)) = inner.parked.remove(&id) else { return };
            drop(inner);
            tracing::warn!(upstream = %ex.upstream.id(), "A bridged call waited too long for its client's input responses; cancelled upstream.");
            ex.slot.outcome = "timeout";
            drop(ex);
        });
    }

    /// The parked exchange `state` names, when it is this caller's call
    /// (`binding`) and still waiting. A refusal is counted and logged.
    pub(crate) fn take(&self, state: &str, binding: &[u8; 32]) -> Result<(Exchange, Busy), ResumeError> {
        let taken = self.open_and_take(state, binding);
        if let Err(e) = &taken {
            tracing::info!(reason = e.reason(), "Refused a retry's requestState.");
            self.count(Direction::ToModern, e.reason());
        }
        taken
    }

    fn open_and_take(&self, state: &str, binding: &[u8; 32]) -> Result<(Exchange, Busy), ResumeError> {
        let claims = self.sealer.open(state).map_err(|_| ResumeError::Invalid)?;
        if claims.instance != self.sealer.instance {
            return Err(ResumeError::Elsewhere);
        }
        if claims.binding != *binding {
            return Err(ResumeError::OtherCall);
        }
        if claims.expires < unix_now() {
            return Err(ResumeError::Expired);
        }
        let mut inner = self.shared.inner.locked();
        match inner.parked.get(&claims.exchange) {
            None => Err(ResumeError::Ended),
            Some(Entry::Busy) => Err(ResumeError::Busy),
            Some(Entry::Parked(ex)) if ex.round != claims.round => Err(ResumeError::Stale),
            Some(Entry::Parked(_)) => {
                let Some(Entry::Parked(ex)) = inner.parked.insert(claims.exchange, Entry::Busy) else {
                    unreachable!("just matched")
                };
                Ok((*ex, Busy { shared: self.shared.clone(), id: claims.exchange }))
            }
        }
    }
}

/// The span of one bridged round (a child of `parent`; none when traces
/// are off): which way, which round. The caller sets the outcome and ends it.
pub(crate) fn span(parent: &crate::telemetry::Span, direction: Direction, round: u32) -> crate::telemetry::Span {
    use opentelemetry::KeyValue;
    if !parent.is_on() {
        return crate::telemetry::Span::NONE;
    }
    let attrs = vec![
        KeyValue::new("mcp_gateway.bridge.direction", direction.label()),
        KeyValue::new("mcp_gateway.bridge.round", i64::from(round)),
    ];
    parent.child(format!("bridge {}", direction.label()), opentelemetry::trace::SpanKind::Internal, attrs)
}

fn unix_now() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

/// A request to an upstream (`tools/call`, `prompts/get`,
/// `resources/read`), owning all it needs, so it can outlive the request
/// that started it (a bridged call waits for a later one) and be sent
/// again with a client's answers.
#[derive(Debug)]
pub(crate) struct Call {
    /// The method.
    pub(crate) method: &'static str,
    /// Its own deadline, instead of the tool's or the upstream's.
    pub(crate) timeout: Option<Duration>,
    /// The instance that serves it.
    pub(crate) upstream: Arc<Upstream>,
    /// The params as the upstream gets them.
    pub(crate) params: crate::protocol::CheckedBox,
    /// The tool's name upstream (`tools/call`).
    pub(crate) tool: Option<Arc<str>>,
    /// What its annotations say.
    pub(crate) hints: ToolHints,
    /// The gateway's progress token for the call.
    pub(crate) progress: Option<String>,
    /// Where related messages go.
    pub(crate) relay: Option<Arc<dyn crate::upstream::Relay>>,
    /// The call's `route` span (ended when the call ends).
    pub(crate) span: crate::telemetry::Span,
    /// `Mcp-Param-*` headers for a 2026-07-28 upstream.
    pub(crate) mirrored: Vec<(String, String)>,
}

impl Call {
    /// Makes the call (with its retries) and ends its span.
    pub(crate) async fn run(self) -> Called {
        let called = self.send(Some(self.params.checked())).await;
        self.end(&called);
        called
    }

    /// Sends the call with `params` (a bridged retry's), span left open.
    pub(crate) async fn send(&self, params: Option<crate::protocol::Checked<'_>>) -> Called {
        let req = Request {
            method: self.method,
            params,
            tool: self.tool.as_deref(),
            hints: self.hints,
            progress: self.progress.as_deref(),
            relay: self.relay.as_ref(),
            span: &self.span,
            timeout: self.timeout,
            params_headers: &self.mirrored,
        };
        self.upstream.call(req).await
    }

    /// Ends the span with what `called` says.
    pub(crate) fn end(self, called: &Called) {
        use opentelemetry::KeyValue;
        self.span.set(|| KeyValue::new("mcp_gateway.attempts", i64::from(called.attempts)));
        self.span.outcome(called.class, || match &called.result {
            Err(e) => e.message.clone(),
            Ok(_) => "failed".into(),
        });
        self.span.end();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bridges() -> Bridges {
        Bridges::new(Some(&[3u8; 32]), Arc::new(Metrics::new()))
    }

    fn limits(total: usize, each: usize) -> BridgeSection {
        BridgeSection { max_exchanges: total, max_exchanges_per_principal: each, ..BridgeSection::default() }
    }

    #[test]
    fn exchanges_are_bounded_per_principal_and_in_all_and_given_back_when_dropped() {
        let b = bridges();
        let (alice, bob): (Arc<str>, Arc<str>) = ("alice".into(), "bob".into());
        let l = limits(3, 2);
        let a1 = b.admit(&alice, Direction::ToModern, &l).unwrap();
        let _a2 = b.admit(&alice, Direction::ToLegacy, &l).unwrap();
        assert!(b.admit(&alice, Direction::ToModern, &l).is_none(), "alice's bound");
        let _b1 = b.admit(&bob, Direction::ToModern, &l).unwrap();
        assert!(b.admit(&bob, Direction::ToModern, &l).is_none(), "the gateway's bound");
        drop(a1);
        assert!(b.admit(&bob, Direction::ToModern, &l).is_some(), "a place given back");
        let limited = b
            .shared
            .metrics
            .bridge_exchanges
            .get_or_create(&BridgeLabels { direction: "to_modern", outcome: "limited" })
            .get();
        assert_eq!(limited, 2);
    }

    #[test]
    fn a_state_is_refused_for_what_it_says_before_any_exchange_is_looked_up() {
        let b = bridges();
        let binding = state::binding("alice", "up__t", b"{}");
        let claims = |instance, binding, expires| state::Claims { instance, exchange: 1, round: 0, binding, expires };
        let ok = claims(b.sealer.instance, binding, unix_now() + 60);
        assert_eq!(b.take(&b.sealer.seal(&ok), &binding).err(), Some(ResumeError::Ended), "no such exchange");
        let other = state::binding("bob", "up__t", b"{}");
        assert_eq!(b.take(&b.sealer.seal(&ok), &other).err(), Some(ResumeError::OtherCall));
        let old = claims(b.sealer.instance, binding, unix_now() - 1);
        assert_eq!(b.take(&b.sealer.seal(&old), &binding).err(), Some(ResumeError::Expired));
        // Another replica sharing the key: it says where the exchange is.
        let replica = bridges();
        let theirs = claims(replica.sealer.instance, binding, unix_now() + 60);
        assert_eq!(b.take(&replica.sealer.seal(&theirs), &binding).err(), Some(ResumeError::Elsewhere));
        // Another deployment's key: not ours at all.
        let foreign = Bridges::new(None, Arc::new(Metrics::new()));
        assert_eq!(b.take(&foreign.sealer.seal(&ok), &binding).err(), Some(ResumeError::Invalid));
        let counted = |outcome| {
            b.shared.metrics.bridge_exchanges.get_or_create(&BridgeLabels { direction: "to_modern", outcome }).get()
        };
        assert_eq!((counted("ended"), counted("other_call"), counted("other_replica")), (1, 1, 1));
    }
}
