//! `prompts/get`: routed by the prompt's exposed name.

use crate::error::CallError;
use crate::routing::core::{Core, Rq};
use crate::routing::outcome::Outcome;
use crate::routing::params;
use crate::security::access::Kind;

/// `prompts/get`.
pub(crate) async fn get(core: &Core, rq: &Rq<'_>, out: &mut Outcome) -> Result<crate::protocol::Reply, CallError> {
    let caller = rq.caller;
    let (mut obj, name) = params::named(rq.params, "name")?;
    let (upstream, original) = {
        let catalog = core.published.load();
        let p = catalog.prompt(&name).ok_or_else(|| core.unknown(Kind::Prompt, &name, caller))?;
        let unknown = || core.unknown(Kind::Prompt, &name, caller);
        core.permit(caller, Kind::Prompt, &name, p.ident(), p.upstream, out, unknown)?;
        (p.upstream, p.original.clone())
    };
    out.name = Some(name);
    obj.set_str("name", &original);
    core.forward(rq, "prompts/get", upstream, obj, out).await
}
