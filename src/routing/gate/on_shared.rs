//! The gate on the state replicas share (`[redis]`, design D10): one
//! round trip admits a call (session not ended elsewhere, rate-limit
//! tokens, the histories of every replica), and when Redis cannot be
//! reached each feature does as `[redis.on_unreachable]` says.

use std::sync::Arc;
use std::time::Duration;

use super::{Admitted, Answer, Gate, HISTORY_TTL, Policy, Refusal, limited_refusal};
use crate::config::Fallback;
use crate::error::{CallError, ErrorClass};
use crate::protocol::{self, Checked};
use crate::routing::caller::Caller;
use crate::security::DenyReason;
use crate::security::auth::Via;
use crate::security::rules::{Call as RuleCall, History, RuleSet};
use crate::shared::{self, Admit, AdmitRequest, Bucket, Histories, Opened, Shared};
use crate::telemetry::metrics::FallbackLabels;

/// What the shared state said of a call, for the rules.
#[derive(Debug)]
pub(super) enum SharedView {
    /// No `[redis]`: this replica's histories are the whole truth.
    None,
    /// The histories of every replica, at Redis's clock.
    Read { now_ms: u64, session: History, principal: Option<History> },
    /// Redis could not be reached: `[redis.on_unreachable] rules` decides.
    Unreachable,
}

// === impl Gate ===

impl Gate {
    /// Rate limits and rules on the state replicas share: one round trip
    /// ([`Shared::admit`]) takes the tokens, checks that the session was
    /// not ended elsewhere and reads and appends the histories; a call the
    /// rules then refuse is taken back. Without an answer from Redis each
    /// feature does as `[redis.on_unreachable]` says.
    pub(super) async fn check_shared(
        &self,
        shared: &Shared,
        policy: &Policy,
        caller: &Caller<'_>,
        tool_ref: super::ToolRef<'_>,
        upstream_id: &str,
        arguments: Option<Checked<'_>>,
    ) -> Result<Admitted, Refusal> {
        let tool = tool_ref.ident;
        let applying = policy.limits.applying(tool);
        let buckets: Vec<Bucket> =
            applying.iter().map(|a| Bucket { id: a.id, per_second: a.per_second, burst: a.burst }).collect();
        let state = self.rules.load_full().filter(|s| s.set.history_calls() > 0);
        // The call's entry: which earlier steps it matches (its time is
        // Redis's, put in by the script).
        let entry = state.as_ref().map(|state| {
            // The tags computed with the catalog, not a copy of them.
            let computed;
            let tags = match state.tags.get(tool.key) {
                Some(t) => t,
                None => {
                    computed = state.set.tags_for(tool, upstream_id, None);
                    &computed
                }
            };
            let call = RuleCall { tool, tags, arguments: arguments.map(Checked::raw), at_ms: 0 };
            state.set.evaluate(&call, &History::default(), None).entry(fastrand::u64(..))
        });
        let named = caller.peer.is_some_and(|p| p.principal.via != Via::Anonymous);
        let idle = policy.idle;
        let req = AdmitRequest {
            session: caller.peer.and_then(|p| p.shared_key()),
            principal: Some(shared::key_hash(&caller.principal_id())),
            // Read and written only when a rule looks at it.
            principal_history: named && state.as_ref().is_some_and(|s| s.set.has_principal_scope()),
            buckets: &buckets,
            histories: state.as_ref().zip(entry.as_deref()).map(|(s, entry)| Histories {
                rules: s.set.fingerprint(),
                capacity: s.set.history_calls(),
                entry,
                // As long as the longest time window, and at least a day
                // after the last call (a window of calls has no time bound).
                ttl: idle.max(HISTORY_TTL).max(s.set.longest_window()),
            }),
            idle,
        };
        let metrics = &self.telemetry.metrics;
        let fallback =
            |feature, outcome| metrics.redis_fallbacks.get_or_create(&FallbackLabels { feature, outcome }).inc();
        let mut answer = shared.admit(&req).await;
        if let Ok(Admit::Unknown) = answer
            && let Some(peer) = caller.peer
            && (!peer.shared_registered() || peer.is_stateless())
            && let Some(key) = req.session
        {
            // Opened while Redis was unreachable: it is counted and known
            // from now on (or refused, if it was ended or is over the cap).
            // A principal's stateless peer idled out there opens again: no
            // one can end it, and its history is the principal's.
            let who = (named && !peer.is_stateless()).then(|| shared::key_hash(&caller.principal_id()));
            let open = shared::Open { cap: policy.cap, idle, hold: idle, old: false };
            answer = match shared.open(key, who, open).await {
                Ok(Opened::Open) => {
                    peer.set_shared_registered();
                    tracing::info!("A session opened while Redis was unreachable is now shared.");
                    shared.admit(&req).await
                }
                Ok(_) => Ok(Admit::Ended),
                Err(e) => Err(e),
            };
        }
        let (view, admitted) = match answer {
            // Unknown to Redis though it was known: ended or idle there.
            Ok(Admit::Ended | Admit::Unknown) => {
                // Its other requests here end too (downstream lets it go).
                if let Some(key) = req.session {
                    shared.found_ended(key);
                }
                tracing::info!(principal = %caller.principal_id(), "A call of a session ended on another replica was refused.");
                let err = CallError::protocol(protocol::INVALID_REQUEST, "This session was ended: start a new one");
                return Err(Refusal {
                    reason: DenyReason::SessionEnded,
                    answer: Answer::Told(err),
                    policy: Vec::new(),
                    tags: Vec::new(),
                });
            }
            Ok(Admit::Limited { index, retry_after }) => {
                // The index is Redis's answer: never trusted to be in range.
                let what = applying.get(index).map_or_else(|| "a rate limit".to_owned(), |a| a.what.clone());
                let rate = applying.get(index).map_or(0.0, |a| a.per_second);
                let limited = crate::security::limits::Limited { what, rate, retry_after };
                return Err(limited_refusal(&limited));
            }
            Ok(Admit::Admitted(admitted)) => {
                let view = match &state {
                    Some(s) => SharedView::Read {
                        now_ms: admitted.now_ms,
                        session: s.set.history_from(admitted.session.len, &admitted.session.marked),
                        principal: named
                            .then(|| s.set.history_from(admitted.principal.len, &admitted.principal.marked)),
                    },
                    None => SharedView::None,
                };
                (view, Some(admitted))
            }
            Err(_) => {
                let who = caller.principal_id();
                if caller.peer.is_some() && shared.on_unreachable().revocation == Fallback::Closed {
                    fallback("revocation", "refused");
                    tracing::warn!(
                        tool = tool.key,
                        "A call was refused: whether its session was ended elsewhere cannot be checked (on_unreachable.revocation = closed)."
                    );
                    let msg = "Refused: this session cannot be checked now (shared state unreachable); retry shortly";
                    return Err(unreachable(DenyReason::SessionEnded, msg, Vec::new()));
                }
                if !applying.is_empty() {
                    match shared.on_unreachable().limits {
                        Fallback::Local => {
                            fallback("limits", "local");
                            if let Err(limited) = policy.limits.check(&who, tool, tokio::time::Instant::now()) {
                                return Err(limited_refusal(&limited));
                            }
                        }
                        Fallback::Closed => {
                            fallback("limits", "refused");
                            tracing::warn!(
                                tool = tool.key,
                                "A rate-limited call was refused: Redis cannot be reached (on_unreachable.limits = closed)."
                            );
                            let msg = "Rate limits cannot be checked now (shared state unreachable); retry shortly";
                            return Err(unreachable(DenyReason::RateLimit, msg, Vec::new()));
                        }
                    }
                }
                (if state.is_some() { SharedView::Unreachable } else { SharedView::None }, None)
            }
        };
        let ruled = self.apply_rules(tool_ref, upstream_id, arguments.map(Checked::raw), caller, view).await;
        if ruled.is_err() {
            match &admitted {
                Some(a) => shared.undo(&req, a),
                None => policy.limits.give_back(&caller.principal_id(), tool),
            }
        }
        ruled
    }

    /// The state replicas share, when `[redis]` is configured.
    pub(crate) fn shared(&self) -> Option<&Arc<Shared>> {
        self.shared.as_ref()
    }

    /// The rules when Redis cannot be reached: a call that could complete
    /// or start a multi-step `block` or `confirm` rule is refused
    /// (`on_unreachable.rules = "closed"`, the default) or decided on this
    /// replica's histories alone (`"local"`); either is counted.
    // The same `Refusal` every gate check returns (the async ones are not
    // linted); built only when Redis is down.
    #[allow(clippy::result_large_err)]
    pub(super) fn rules_unreachable(
        &self,
        set: &RuleSet,
        call: &RuleCall<'_>,
        tags: &mut Vec<String>,
    ) -> Result<(), Refusal> {
        // Both ends of a stopping sequence: its last step cannot see the
        // history, and an earlier step's record could not reach the
        // replica where the sequence would end.
        let could = set.could_complete(call);
        let unseen = could.hits().iter().any(|h| h.action.stops_call() && set.rule(h.rule).steps() > 1)
            || set.starts_stopping_rule(&could);
        if !unseen {
            return Ok(());
        }
        let closed = self.shared.as_ref().is_some_and(|s| s.on_unreachable().rules == Fallback::Closed);
        let outcome = if closed { "refused" } else { "local" };
        self.telemetry.metrics.redis_fallbacks.get_or_create(&FallbackLabels { feature: "rules", outcome }).inc();
        if !closed {
            return Ok(());
        }
        tracing::warn!(
            tool = call.tool.key,
            "A call that is a step of a sequence rule was refused: Redis cannot be reached (on_unreachable.rules = closed)."
        );
        let msg = "Refused: a sequence rule applies to this call and the shared call history cannot be read now; retry shortly";
        Err(unreachable(DenyReason::Rule, msg, std::mem::take(tags)))
    }
}

/// A call refused because Redis cannot be reached and the feature fails
/// closed: class `policy`, retry in a second.
fn unreachable(reason: DenyReason, message: &str, tags: Vec<String>) -> Refusal {
    let err = CallError::new(ErrorClass::Policy, None, message);
    let err = CallError { retry_after: Some(Duration::from_secs(1)), ..err };
    Refusal { reason, answer: Answer::Told(err), policy: Vec::new(), tags }
}
