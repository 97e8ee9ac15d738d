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

use super::{Bridges, Direction, state};
use crate::error::CallError;
use crate::protocol::{self, CheckedBox, Members, Message, RawValue};

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
        let Some(inner) = reply.result_member("requestState").and_then(|s| s.str()) else { return Ok(None) };
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
