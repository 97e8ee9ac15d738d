//! `resources/read`, `resources/subscribe` and `resources/unsubscribe`:
//! routed by URI, checked as the URI clients know, and answered with it.

use std::sync::Arc;

use crate::error::{CallError, ErrorClass};
use crate::protocol::{self, CheckedBox, Message, encode};
use crate::routing::core::{Core, Rq};
use crate::routing::ix::UpstreamIx;
use crate::routing::outcome::Outcome;
use crate::routing::params;
use crate::routing::peer::{self, Peer};
use crate::routing::subscriptions::{Change, Key};
use crate::security::Ident;
use crate::security::access::Kind;
use crate::upstream::Request;

/// `resources/read`.
pub(crate) async fn read(core: &Core, rq: &Rq<'_>, out: &mut Outcome) -> Result<String, CallError> {
    let (mut obj, uri) = params::named(rq.params, "uri")?;
    let (upstream, original) = core.resource_owner(&uri)?;
    let exposed = core.upstreams.exposed_uri(upstream, &original);
    let ident = Ident::plain(&exposed);
    core.permit(rq.caller, Kind::Resource, &exposed, ident, upstream, out, || core.unknown_resource(&uri))?;
    out.name = Some(uri);
    obj.set_str("uri", &original);
    let fwd = core.forward_raw(rq, "resources/read", upstream, obj, out, None).await?;
    if let Some(result) = fwd.wrapped {
        return Ok(encode::result(rq.id, &result));
    }
    Ok(core.reply_with(rq.id, upstream, &fwd.reply, |i, r| expose_contents(core, i, r).map(CheckedBox::into_raw)))
}

/// `resources/read` contents carry the URI the client knows.
fn expose_contents(core: &Core, i: UpstreamIx, reply: &Message) -> Option<CheckedBox> {
    if !core.upstreams.get(i).spec().prefix {
        return None;
    }
    let mut obj = reply.result()?.object()?;
    let contents: Vec<CheckedBox> = obj
        .get("contents")?
        .items()?
        .into_iter()
        .map(|c| {
            let renamed = c.object().and_then(|mut o| {
                let uri = o.str("uri")?;
                o.set_str("uri", &core.upstreams.exposed_uri(i, &uri));
                Some(o.to_checked())
            });
            renamed.unwrap_or_else(|| c.to_box())
        })
        .collect();
    let mut list = String::from("[");
    for (n, c) in contents.iter().enumerate() {
        if n > 0 {
            list.push(',');
        }
        list.push_str(c.text());
    }
    list.push(']');
    obj.set("contents", CheckedBox::parse(&list, &core.config().json_limits())?);
    Some(obj.to_checked())
}

/// `resources/subscribe`: the upstream is subscribed once, while any
/// session is; its updates reach only subscribed sessions.
pub(crate) async fn subscribe(core: &Core, rq: &Rq<'_>) -> Result<String, CallError> {
    let (peer, key) = subscription(core, rq)?;
    // Checked and taken under one lock: two subscribes of one session on
    // two workers cannot both pass the bound.
    let fresh = {
        let mut mine = peer.lock_subscriptions();
        if mine.len() >= peer::MAX_SUBSCRIPTIONS && !mine.contains(&key) {
            return Err(CallError::protocol(
                protocol::INVALID_REQUEST,
                format!("Too many subscriptions (at most {} per session)", peer::MAX_SUBSCRIPTIONS),
            ));
        }
        mine.insert(key.clone())
    };
    core.subscriptions.want(peer.id, key.clone());
    if let Err(e) = sync(core, &key).await {
        // Undone only if this request made it: a repeated subscribe that
        // fails leaves the session's earlier one in place.
        if fresh {
            peer.lock_subscriptions().remove(&key);
            core.subscriptions.drop_wants(peer.id, vec![key]);
        }
        return Err(e);
    }
    Ok(encode::result(rq.id, &params::empty()))
}

/// `resources/unsubscribe`.
pub(crate) async fn unsubscribe(core: &Core, rq: &Rq<'_>) -> Result<String, CallError> {
    let (peer, key) = subscription(core, rq)?;
    peer.lock_subscriptions().remove(&key);
    for last in core.subscriptions.drop_wants(peer.id, vec![key]) {
        sync(core, &last).await?;
    }
    Ok(encode::result(rq.id, &params::empty()))
}

/// The session and the upstream URI a `resources/(un)subscribe` is about.
fn subscription<'c>(core: &Core, rq: &Rq<'c>) -> Result<(&'c Arc<Peer>, Key), CallError> {
    let caller = rq.caller;
    let peer =
        caller.peer.ok_or_else(|| CallError::protocol(protocol::INVALID_REQUEST, "Subscriptions need a session"))?;
    let (_, uri) = params::named(rq.params, "uri")?;
    let (i, original) = core.resource_owner(&uri)?;
    let exposed = core.upstreams.exposed_uri(i, &original);
    let mut out = Outcome::default();
    let ident = Ident::plain(&exposed);
    core.permit(caller, Kind::Resource, &exposed, ident, i, &mut out, || core.unknown_resource(&uri))?;
    Ok((peer, (i, Arc::from(original))))
}

/// Brings the upstream's subscription to `key` in line with whether any
/// session wants it now.
pub(crate) async fn sync(core: &Core, key: &Key) -> Result<(), CallError> {
    let (i, uri) = key;
    core.subscriptions.sync(key, |change| tell(core, *i, change, uri)).await
}

/// Sends `resources/subscribe` or `unsubscribe` for `uri` upstream.
async fn tell(core: &Core, i: UpstreamIx, change: Change, uri: &str) -> Result<(), CallError> {
    let method = change.method();
    let upstream = &core.upstreams.get(i);
    let params = CheckedBox::from_value(&serde_json::json!({ "uri": uri }));
    let called = upstream.call(Request::method(method, Some(params.checked()))).await;
    let reply = called.result?;
    match reply.error() {
        Some(e) => Err(CallError::new(
            ErrorClass::UpstreamInternal,
            Some(upstream.id()),
            format!("upstream `{}` refused {method}: {}", upstream.id(), protocol::echo(e.text())),
        )),
        None => Ok(()),
    }
}
