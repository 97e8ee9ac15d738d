//! `completion/complete`, routed by its reference: a prompt by name, a
//! resource template (or resource) by URI.

use crate::error::CallError;
use crate::protocol::{self, Checked};
use crate::routing::core::{Core, Rq};
use crate::routing::outcome::Outcome;
use crate::security::Ident;
use crate::security::access::Kind;

/// `completion/complete`.
pub(crate) async fn complete(core: &Core, rq: &Rq<'_>, out: &mut Outcome) -> Result<protocol::Reply, CallError> {
    let caller = rq.caller;
    let invalid = |m: &str| CallError::protocol(protocol::INVALID_PARAMS, m);
    let mut obj = rq
        .params
        .ok_or_else(|| invalid("completion/complete needs params"))?
        .object()
        .ok_or_else(|| invalid("params must be an object"))?;
    let mut reference =
        obj.get("ref").and_then(Checked::object).ok_or_else(|| invalid("completion/complete needs an object `ref`"))?;
    let (field, upstream, original) = match reference.str("type").as_deref() {
        Some("ref/prompt") => {
            let name = reference.str("name").ok_or_else(|| invalid("ref/prompt needs a string `name`"))?;
            let catalog = core.published.load();
            let p = catalog.prompt(&name).ok_or_else(|| core.unknown(Kind::Prompt, &name, caller))?;
            core.permit(caller, Kind::Prompt, &name, p.ident(), p.upstream, out, || {
                core.unknown(Kind::Prompt, &name, caller)
            })?;
            ("name", p.upstream, p.original.to_string())
        }
        Some("ref/resource") => {
            let uri = reference.str("uri").ok_or_else(|| invalid("ref/resource needs a string `uri`"))?;
            let template = core.published.load().template(&uri).map(|t| (t.upstream, t.original.to_string()));
            let (i, original) = match template {
                Some(t) => t,
                None => core.resource_owner(&uri)?,
            };
            // Checked as what it is, like resources/read: its exposed URI,
            // however the client spelled it.
            let exposed = core.upstreams.exposed_uri(i, &original);
            core.permit(caller, Kind::Resource, &uri, Ident::plain(&exposed), i, out, || core.unknown_resource(&uri))?;
            ("uri", i, original)
        }
        _ => return Err(invalid("ref.type must be ref/prompt or ref/resource")),
    };
    reference.set_str(field, &original);
    obj.set("ref", reference.to_checked());
    core.forward(rq, "completion/complete", upstream, obj, out).await
}
