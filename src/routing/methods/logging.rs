//! `logging/setLevel`: the session's own level filters what it gets;
//! upstreams get the most verbose level any session asked for.

use futures_util::future::join_all;

use crate::error::CallError;
use crate::protocol::{self, Checked, CheckedBox, encode};
use crate::routing::core::{Core, Rq};
use crate::routing::ix::UpstreamIx;
use crate::routing::params;
use crate::routing::peer::LEVELS;
use crate::upstream::{Request, State};

/// `logging/setLevel`.
pub(crate) async fn set_level(core: &Core, rq: &Rq<'_>) -> Result<String, CallError> {
    let (_, level) = params::named(rq.params, "level")?;
    let index = LEVELS.iter().position(|l| *l == level).ok_or_else(|| {
        CallError::protocol(
            protocol::INVALID_PARAMS,
            format!("Unknown log level {:?}; one of {}", protocol::echo(&level), LEVELS.join(", ")),
        )
    })?;
    if let Some(p) = rq.caller.peer {
        p.set_level(index);
    }
    apply(core).await;
    Ok(encode::result(rq.id, &params::empty()))
}

/// Sends the most verbose level of any session to every upstream that
/// declares `logging`, when it changed.
pub(crate) async fn apply(core: &Core) {
    let Some(level) = core.levels.next(core.sessions.most_verbose_level()) else { return };
    let ixs: Vec<UpstreamIx> = core.upstreams.now().iter().map(|(i, _)| i).collect();
    join_all(ixs.into_iter().map(|i| tell(core, i, level))).await;
}

/// Tells upstream `i` the log `level` (index in [`LEVELS`]), if it logs.
pub(crate) async fn tell(core: &Core, i: UpstreamIx, level: usize) {
    let u = &core.upstreams.get(i);
    if !matches!(&*u.state(), State::Ready(r) if r.has_capability("logging")) {
        return;
    }
    let params = CheckedBox::from_value(&serde_json::json!({ "level": LEVELS[level] }));
    let called = u.call(Request::method("logging/setLevel", Some(params.checked()))).await;
    match called.result {
        Ok(r) if r.error().is_none() => {
            tracing::debug!(upstream = %u.id(), level = LEVELS[level], "Upstream log level set.")
        }
        Ok(r) => {
            tracing::warn!(upstream = %u.id(), error = %r.error().map_or("", Checked::text), "Upstream refused logging/setLevel.")
        }
        Err(e) => tracing::warn!(upstream = %u.id(), error = %e.message, "Could not set the upstream's log level."),
    }
}
