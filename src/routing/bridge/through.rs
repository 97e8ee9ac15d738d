//! A 2026-07-28 client, a 2026-07-28 upstream: the upstream's own
//! input-required exchanges pass through, but its `requestState` is
//! wrapped. Over a shared connection the upstream sees only the gateway, so
//! it cannot bind its state to one of the gateway's clients: another
//! principal who got hold of it could continue someone else's exchange
//! (and read what the state carries). The gateway seals the upstream's
//! state for the client it was given to, bound to the principal, the
//! upstream and the request, and hands the upstream its own state back
//! only on a retry that matches. Nothing is held: any replica with the
//! session key opens it.

use std::time::Duration;

use std::sync::Arc;

use super::{Bridges, Direction, state};
use crate::error::CallError;
use crate::protocol::{self, CheckedBox, Members, Message, RawValue};
use crate::sync::Locked;

/// What an upstream's wrapped state is bound to: who, which upstream,
/// which request (`method` of `target`, the name or URI as the upstream
/// knows it, with these arguments).
pub(crate) fn binding(principal: &str, upstream: &str, method: &str, target: &str, arguments: &[u8]) -> [u8; 32] {
    state::binding(principal, &format!("{upstream}\0{method}\0{target}"), arguments)
}

fn refused(bridges: &Bridges, reason: &'static str, message: &str) -> CallError {
    tracing::info!(reason, "Refused a retry's requestState for a 2026-07-28 upstream.");
    bridges.count(Direction::Through, reason);
    CallError::protocol(protocol::INVALID_PARAMS, message)
}

impl Bridges {
    /// Puts the upstream's own state back in a retry's `params`, when the
    /// state the client sent is one the gateway wrapped for this principal
    /// and request; anything else is refused (-32602, counted).
    pub(crate) fn unwrap_state(&self, params: &mut Members<'_>, binding: &[u8; 32]) -> Result<(), CallError> {
        if !params.contains("requestState") {
            return Ok(());
        }
        let text = params
            .str("requestState")
            .ok_or_else(|| refused(self, "invalid_state", "requestState must be a string"))?;
        let (bound, expires, inner) = self.sealer.unwrap(&text).map_err(|_| {
            refused(self, "invalid_state", "requestState was altered or was not issued by this gateway")
        })?;
        if bound != *binding {
            return Err(refused(self, "other_call", "requestState belongs to another call: retry the same request"));
        }
        if expires < super::unix_now() {
            return Err(refused(self, "expired_state", "requestState has expired: send the request again"));
        }
        params.set("requestState", CheckedBox::string(&inner));
        Ok(())
    }

    /// `reply`'s result with its `requestState` wrapped for the client
    /// (valid `wait`), when it is an input-required result that has one.
    /// A state over [`state::MAX_WRAPPED`] fails the request.
    pub(crate) fn wrap_state(
        &self,
        reply: &Message,
        binding: &[u8; 32],
        wait: Duration,
    ) -> Result<Option<Box<RawValue>>, CallError> {
        if reply.result_member("resultType").and_then(|t| t.str()).as_deref() != Some("input_required") {
            return Ok(None);
        }
        let Some(inner) = reply.result_member("requestState") else { return Ok(None) };
        // A state the gateway cannot wrap is not passed on unbound.
        let Some(inner) = inner.str() else {
            let m = "the upstream's requestState is not a string";
            return Err(CallError::new(crate::error::ErrorClass::Protocol, None, m));
        };
        let expires = super::unix_now() + wait.as_secs().max(1);
        let Some(wrapped) = self.sealer.wrap(binding, expires, &inner) else {
            let m = format!("the upstream's requestState is over {} KiB", state::MAX_WRAPPED / 1024);
            return Err(CallError::new(crate::error::ErrorClass::Protocol, None, m));
        };
        let Some(mut result) = reply.result_object() else { return Ok(None) };
        result.set_str("requestState", &wrapped);
        self.count(Direction::Through, "asked");
        Ok(Some(result.to_raw()))
    }
}

/// What the inside of a confirmation state starts with. (An upstream's
/// state may start with anything; what keeps the two apart is the binding:
/// an upstream's names the upstream, `[a-z0-9-]{1,32}`, never empty, so
/// it can never equal a confirmation's.)
const CONFIRM: &str = "\0confirm\0";

/// Most confirmations one principal has used and the replica remembers
/// (until they expire); past it, that principal's confirmations are asked
/// again rather than trusted. Per principal, so no one can fill it for
/// everyone.
const MAX_USED: usize = 4096;

/// What a confirmation state is bound to: who, which tool (as the client
/// names it), which arguments.
pub(crate) fn confirm_binding(principal: &str, tool: &str, arguments: &[u8]) -> [u8; 32] {
    state::binding(principal, &format!("\0confirm\0{tool}"), arguments)
}

impl Bridges {
    /// The input-required result that asks a 2026-07-28 client to confirm
    /// a call a rule stopped: `ask` (an elicitation), and a state bound to
    /// the principal and the call, and naming `rule` (the rule's
    /// [`confirm_token`](crate::routing::gate::confirm_token)), valid
    /// `wait`. Nothing is held. `None` when the token is too long to seal.
    pub(crate) fn ask_confirmation(
        &self,
        binding: &[u8; 32],
        rule: &str,
        ask: &CheckedBox,
        wait: Duration,
    ) -> Option<Box<RawValue>> {
        let expires = super::unix_now() + wait.as_secs().max(1);
        let once = format!("{:032x}", state::exchange_id());
        let state = self.sealer.wrap(binding, expires, &format!("{CONFIRM}{once}\0{rule}"))?;
        let mut requests = Members::new();
        let mut ask_members = Members::new();
        ask_members.set_str("method", "elicitation/create");
        ask_members.set("params", ask.clone());
        requests.set("confirm", ask_members.to_checked());
        let mut result = Members::new();
        result.set_str("resultType", "input_required");
        result.set("inputRequests", requests.to_checked());
        result.set_str("requestState", &state);
        self.count(Direction::Through, "confirm_asked");
        Some(result.to_raw())
    }

    /// The rule token a retry's `state` confirms the call for, when it is a
    /// confirmation state the gateway gave `principal` for this call, still
    /// good and not used before (a confirmation allows one call: this
    /// replica remembers the ones used until they expire); `None` for any
    /// other state (an upstream's).
    pub(crate) fn confirmation(&self, state: &str, binding: &[u8; 32], principal: &Arc<str>) -> Option<String> {
        let (bound, expires, inner) = self.sealer.unwrap(state).ok()?;
        let (once, rule) = inner.strip_prefix(CONFIRM)?.split_once('\0')?;
        let now = super::unix_now();
        if bound != *binding || expires < now {
            return None;
        }
        let mut used = self.used.locked();
        let mine = used.entry(principal.clone()).or_default();
        if mine.len() >= MAX_USED {
            mine.retain(|_, e| *e >= now);
        }
        if mine.len() >= MAX_USED || mine.insert(once.to_owned(), expires).is_some() {
            return None;
        }
        // Principals whose confirmations all expired are forgotten.
        if used.len() > 1024 {
            used.retain(|_, m| m.values().any(|e| *e >= now));
        }
        Some(rule.to_owned())
    }

    /// Whether `state` is one the gateway wrapped for this principal's
    /// call of a 2026-07-28 upstream (`binding`) and still good: a retry
    /// continuing the upstream's input-required exchange, which the
    /// call's rate limits and rules counted on its first leg.
    pub(crate) fn continues(&self, state: &str, binding: &[u8; 32]) -> bool {
        self.sealer.unwrap(state).is_ok_and(|(bound, expires, inner)| {
            bound == *binding && expires >= super::unix_now() && !inner.starts_with(CONFIRM)
        })
    }
}
