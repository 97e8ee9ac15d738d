//! Notifications from upstreams that concern no single call: resource
//! updates to their subscribers, task status to the task's session, a
//! withdrawn server request to the client it was relayed to, log messages
//! to the sessions that asked and may see something of the upstream.

use std::sync::Arc;

use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::core::Core;
use super::ix::UpstreamIx;
use super::methods::lists::kind_of;
use super::peer::{self, Peer};
use super::tasks;
use crate::config::Isolation;
use crate::protocol::{Checked, CheckedBox, encode};
use crate::upstream::Note;

/// Routes notifications from upstreams that concern no single call.
pub(crate) async fn notes_loop(core: Arc<Core>, mut notes: mpsc::Receiver<Note>, shutdown: CancellationToken) {
    loop {
        let note = tokio::select! {
            n = notes.recv() => match n {
                Some(n) => n,
                None => return,
            },
            () = shutdown.cancelled() => return,
        };
        let Some(i) = core.upstreams.find(&note.upstream) else { continue };
        match note.msg.method() {
            "notifications/resources/updated" => resource_updated(&core, i, &note),
            "notifications/tasks/status" => task_status(&core, &note),
            "notifications/cancelled" => {
                // The upstream withdrew a request it sent us: the client it
                // was relayed to is told, under its own id.
                let (id, reason) = peer::cancelled_params(note.msg.params());
                // A per-session upstream's requests come over the sessions'
                // own connections (and their relays).
                let per_session = core.upstreams.get(i).spec().isolation == Isolation::PerSession;
                let Some(id) = id.filter(|_| !per_session) else { continue };
                let told = core.sessions.all().iter().any(|p| p.cancel_relayed(&note.upstream, id.text(), reason));
                if !told {
                    tracing::debug!(upstream = %note.upstream, "Upstream cancelled a request no client has.");
                }
            }
            "notifications/message" => {
                let params = note.msg.params();
                let Some(level) = peer::message_level(params) else { continue };
                let body = encode::notification(
                    "notifications/message",
                    peer::with_logger(params, &note.upstream).as_ref().map(CheckedBox::raw),
                );
                // Not about any call: only sessions that asked for logs and
                // may see something of the upstream get it.
                let sessions = core.sessions.all();
                for p in sessions.iter().filter(|p| p.level().is_some_and(|min| level >= min) && hears(&core, p, i)) {
                    p.send(&note.upstream, "notifications/message", body.clone());
                }
            }
            other => {
                tracing::debug!(upstream = %note.upstream, method = %other, "Upstream notification not relayed.")
            }
        }
    }
}

/// Whether `peer` may hear what upstream `i` says about no call (its log
/// messages): it sees at least one of its tools, prompts or resources.
/// Cached per catalog.
fn hears(core: &Core, peer: &Peer, i: UpstreamIx) -> bool {
    if peer.grants().is_open() {
        return true;
    }
    let key = core.published.version();
    let catalog = core.published.load();
    let mut cache = peer.lock_hears();
    if cache.as_ref().is_none_or(|(k, _)| *k != key) {
        let slots = core.upstreams.now().slots();
        let grants = peer.grants();
        let sees: Vec<bool> = (0..slots)
            .map(|u| catalog.shows_upstream(UpstreamIx::new(u), &|kind, ident| grants.allows(kind_of(kind), ident)))
            .collect();
        *cache = Some((key, sees.into()));
    }
    cache.as_ref().is_some_and(|(_, sees)| sees.get(i.index()).copied().unwrap_or(false))
}

/// `notifications/tasks/status` that came outside the creating call (a
/// stdio pipe, a GET stream): to the session that owns the task. One that
/// arrives before the task is known (some servers send it ahead of the
/// `CreateTaskResult`) has no owner yet and is dropped; clients poll with
/// `tasks/get` anyway.
fn task_status(core: &Core, note: &Note) {
    let Some(params) = note.msg.params() else { return };
    let Some(original) = params.get("taskId").and_then(Checked::str) else { return };
    let owner = core.tasks.owner(&tasks::expose(&note.upstream, &original)).and_then(|p| core.sessions.get(p));
    let Some(peer) = owner else {
        tracing::debug!(upstream = %note.upstream, "Task status for a task no session owns (yet); dropped.");
        return;
    };
    if let Some(exposed) = tasks::expose_task(params, &note.upstream) {
        let body = encode::notification("notifications/tasks/status", Some(exposed.raw()));
        peer.send(&note.upstream, "notifications/tasks/status", body);
    }
}

/// `notifications/resources/updated`: to the sessions subscribed to the
/// URI, with the URI they know.
fn resource_updated(core: &Core, i: UpstreamIx, note: &Note) {
    let params = note.msg.params();
    let Some(uri) = params.and_then(|p| p.get("uri")).and_then(Checked::str) else {
        return;
    };
    let watchers = core.subscriptions.watchers(&(i, Arc::from(&*uri)));
    if watchers.is_empty() {
        return;
    }
    let exposed = core.upstreams.exposed_uri(i, &uri);
    let params = peer::rewrite(params, |o| o.set_str("uri", &exposed));
    let body = encode::notification("notifications/resources/updated", params.as_ref().map(CheckedBox::raw));
    for p in core.sessions.some(&watchers) {
        p.send(&note.upstream, "notifications/resources/updated", body.clone());
    }
}

#[cfg(test)]
mod tests;
