//! Tasks (MCP 2025-11-25, `basic/utilities/tasks.mdx`): which session owns
//! which upstream task, and the id rewriting that keeps them apart.
//!
//! An upstream's task id is exposed as `<upstream-id>__<task id>`: ids of
//! two upstreams never collide, and the owner is known from the id alone
//! (upstream ids have no `_`, so the first `__` splits it). Being
//! namespaced is not being private: task ids of some servers are
//! guessable, so every `tasks/*` request is checked against this table,
//! which binds a task to the session that created it. Another session's
//! task and a task that does not exist get the same error, so the answer
//! tells nothing about other sessions.
//!
//! A session's tasks are forgotten when the session ends; they are not
//! cancelled upstream (their work may still be wanted, and the upstream's
//! `ttl` reaps them).

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};

use super::ix::UpstreamIx;
use crate::config::ResultCap;
use crate::protocol::{Checked, CheckedBox, Members, RawValue};
use crate::sync::Locked;

/// Most tasks one session keeps; past it, its oldest is forgotten.
pub const MAX_TASKS: usize = 1024;

/// The `_meta` key that ties a message to a task.
pub const RELATED_TASK: &str = "io.modelcontextprotocol/related-task";

/// The tag of a `tasks/list` cursor (see `catalog::encode_tagged_cursor`).
pub(crate) const CURSOR_TAG: u8 = b'k';

/// One task as the gateway knows it.
#[derive(Debug, Clone)]
struct Entry {
    upstream: UpstreamIx,
    original: Arc<str>,
    /// The result cap of the tool that made it (`tasks/result` is capped
    /// like the call would have been).
    cap: Option<ResultCap>,
    /// Creation order, for forgetting the oldest.
    seq: u64,
}

/// The tasks of every session.
#[derive(Debug, Default)]
pub(crate) struct Tasks {
    inner: Mutex<Inner>,
}

#[derive(Debug, Default)]
struct Inner {
    /// (session, exposed id) → task: a lookup is an ownership check, and a
    /// session's tasks are one range, in id order.
    owned: BTreeMap<(u64, Arc<str>), Entry>,
    /// Exposed id → session, for status notifications.
    owner: HashMap<Arc<str>, u64>,
    next: u64,
}

/// A task of a session: its exposed id, upstream and upstream id.
pub(crate) type Owned = (Arc<str>, UpstreamIx, Arc<str>);

impl Tasks {
    /// Records that session `peer` created a task; returns its exposed id.
    pub(crate) fn insert(
        &self,
        peer: u64,
        upstream: UpstreamIx,
        upstream_id: &str,
        original: &str,
        cap: Option<ResultCap>,
    ) -> Arc<str> {
        let exposed: Arc<str> = Arc::from(expose(upstream_id, original));
        let mut inner = self.lock();
        // A reused upstream id (after its old task expired) changes hands.
        if let Some(old) = inner.owner.insert(exposed.clone(), peer) {
            inner.owned.remove(&(old, exposed.clone()));
        }
        let mine = inner.owned.range((peer, Arc::from(""))..).take_while(|((p, _), _)| *p == peer);
        let (count, oldest) = mine.fold((0usize, None::<(u64, Arc<str>)>), |(n, oldest), ((_, id), e)| {
            let older = oldest.as_ref().is_none_or(|(seq, _)| e.seq < *seq);
            (n + 1, if older { Some((e.seq, id.clone())) } else { oldest })
        });
        if count >= MAX_TASKS
            && let Some((_, id)) = oldest
        {
            tracing::info!(session = peer, "A session has {MAX_TASKS} tasks; forgetting its oldest.");
            inner.owned.remove(&(peer, id.clone()));
            inner.owner.remove(&id);
        }
        inner.next += 1;
        let seq = inner.next;
        inner.owned.insert((peer, exposed.clone()), Entry { upstream, original: Arc::from(original), cap, seq });
        exposed
    }

    /// The upstream and upstream id of `exposed`, if `peer` owns it.
    pub(crate) fn get(&self, peer: u64, exposed: &str) -> Option<(UpstreamIx, Arc<str>, Option<ResultCap>)> {
        let inner = self.lock();
        inner.owned.get(&(peer, Arc::from(exposed))).map(|e| (e.upstream, e.original.clone(), e.cap))
    }

    /// The session that owns `exposed`.
    pub(crate) fn owner(&self, exposed: &str) -> Option<u64> {
        self.lock().owner.get(exposed).copied()
    }

    /// Forgets one task (the upstream no longer knows it).
    pub(crate) fn forget(&self, peer: u64, exposed: &str) {
        let mut inner = self.lock();
        let key: Arc<str> = Arc::from(exposed);
        if inner.owned.remove(&(peer, key.clone())).is_some() {
            inner.owner.remove(&key);
        }
    }

    /// Forgets every task of a session that ended.
    pub(crate) fn forget_session(&self, peer: u64) {
        let mut inner = self.lock();
        let ids: Vec<Arc<str>> = inner
            .owned
            .range((peer, Arc::from(""))..)
            .take_while(|((p, _), _)| *p == peer)
            .map(|((_, id), _)| id.clone())
            .collect();
        for id in ids {
            inner.owned.remove(&(peer, id.clone()));
            inner.owner.remove(&id);
        }
    }

    /// Up to `size` (0: all) of a session's tasks after `after`, in id
    /// order, and whether more follow.
    pub(crate) fn page(&self, peer: u64, after: Option<&str>, size: usize) -> (Vec<Owned>, bool) {
        let inner = self.lock();
        let from = (peer, Arc::from(after.unwrap_or("")));
        let mut mine = inner
            .owned
            .range(from..)
            .take_while(|((p, _), _)| *p == peer)
            .filter(|((_, id), _)| after.is_none_or(|a| &**id > a))
            .map(|((_, id), e)| (id.clone(), e.upstream, e.original.clone()));
        let size = if size == 0 { usize::MAX } else { size };
        let page: Vec<Owned> = mine.by_ref().take(size).collect();
        let more = mine.next().is_some();
        (page, more)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.locked()
    }
}

/// The id clients know an upstream's task by.
pub(crate) fn expose(upstream_id: &str, original: &str) -> String {
    format!("{upstream_id}{}{original}", super::catalog::SEPARATOR)
}

/// A `Task` object (a `tasks/get` or `tasks/cancel` result, or the params
/// of `notifications/tasks/status`) with its `taskId` exposed; `None` when
/// it has none.
pub(crate) fn expose_task(task: Checked<'_>, upstream_id: &str) -> Option<CheckedBox> {
    let mut obj = task.object()?;
    let id = obj.str("taskId")?;
    obj.set_str("taskId", &expose(upstream_id, &id));
    expose_related_in(&mut obj, upstream_id);
    Some(obj.to_checked())
}

/// A `CreateTaskResult` with its task's id exposed, and the upstream's id
/// of the task; `None` when `result` is not one (an upstream that ran the
/// call without a task answers its plain result).
pub(crate) fn expose_created(mut result: Members<'_>, upstream_id: &str) -> Option<(Box<RawValue>, String)> {
    let (task, original) = {
        let task = result.get("task")?;
        let original = task.get("taskId")?.str()?.into_owned();
        (expose_task(task, upstream_id)?, original)
    };
    result.set("task", task);
    expose_related_in(&mut result, upstream_id);
    // Raw: a result is scanned only where the gateway reads it.
    Some((result.to_raw(), original))
}

/// A 2026-07-28 `CreateTaskResult` (the tasks extension: the task's
/// fields at the top of the result) with its id exposed, and the
/// upstream's id of the task.
pub(crate) fn expose_created_modern(mut result: Members<'_>, upstream_id: &str) -> Option<(Box<RawValue>, String)> {
    let original = result.str("taskId")?;
    result.set_str("taskId", &expose(upstream_id, &original));
    expose_related_in(&mut result, upstream_id);
    Some((result.to_raw(), original))
}

/// Exposes the task id of `_meta["io.modelcontextprotocol/related-task"]`
/// in params; `None` when there is none (cheap: the text is searched
/// before anything is parsed).
pub(crate) fn expose_related(params: Checked<'_>, upstream_id: &str) -> Option<CheckedBox> {
    if !params.text().contains(RELATED_TASK) {
        return None;
    }
    let mut obj = params.object()?;
    expose_related_in(&mut obj, upstream_id).then(|| obj.to_checked())
}

/// [`expose_related`] of a result read in part: written back raw.
pub(crate) fn expose_related_of(mut obj: Members<'_>, upstream_id: &str) -> Option<Box<RawValue>> {
    expose_related_in(&mut obj, upstream_id).then(|| obj.to_raw())
}

fn expose_related_in(obj: &mut Members<'_>, upstream_id: &str) -> bool {
    let meta = {
        let Some(mut meta) = obj.get("_meta").and_then(Checked::object) else { return false };
        let related = {
            let Some(mut related) = meta.get(RELATED_TASK).and_then(Checked::object) else { return false };
            let Some(id) = related.str("taskId") else { return false };
            related.set_str("taskId", &expose(upstream_id, &id));
            related.to_checked()
        };
        meta.set(RELATED_TASK, related);
        meta.to_checked()
    };
    obj.set("_meta", meta);
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A value as a client's message would carry it (scanned whole).
    fn msg(s: &str) -> crate::protocol::Message {
        let text = format!(r#"{{"jsonrpc":"2.0","id":1,"result":{s}}}"#);
        crate::protocol::Message::parse(text.as_bytes(), &crate::protocol::Limits::default()).unwrap()
    }

    #[test]
    fn tasks_belong_to_the_session_that_made_them() {
        let t = Tasks::default();
        let a = t.insert(1, UpstreamIx::new(0), "ev", "abc", None);
        assert_eq!(&*a, "ev__abc");
        let b = t.insert(2, UpstreamIx::new(1), "other", "abc", None);
        assert_eq!(&*b, "other__abc", "the same upstream id on two upstreams stays two tasks");
        assert_eq!(t.get(1, "ev__abc").map(|(i, o, _)| (i.index(), o)), Some((0, Arc::from("abc"))));
        assert_eq!(t.get(2, "ev__abc"), None, "another session's task is unknown to it");
        assert_eq!(t.get(1, "other__abc"), None);
        assert_eq!(t.owner("other__abc"), Some(2));
        t.forget_session(1);
        assert_eq!(t.get(1, "ev__abc"), None);
        assert_eq!(t.owner("ev__abc"), None);
        assert_eq!(t.owner("other__abc"), Some(2));
    }

    #[test]
    fn pages_walk_one_sessions_tasks_in_id_order() {
        let t = Tasks::default();
        for id in ["c", "a", "b", "d"] {
            t.insert(7, UpstreamIx::new(0), "u", id, None);
        }
        t.insert(6, UpstreamIx::new(0), "u", "x", None);
        t.insert(8, UpstreamIx::new(0), "u", "y", None);
        let (first, more) = t.page(7, None, 3);
        let ids: Vec<&str> = first.iter().map(|(id, _, _)| &**id).collect();
        assert_eq!(ids, ["u__a", "u__b", "u__c"]);
        assert!(more);
        let (rest, more) = t.page(7, Some("u__c"), 3);
        assert_eq!(rest.len(), 1);
        assert_eq!(&*rest[0].0, "u__d");
        assert!(!more);
        assert_eq!(t.page(7, None, 0).0.len(), 4, "0 means one page");
    }

    #[test]
    fn a_session_keeps_at_most_max_tasks() {
        let t = Tasks::default();
        for n in 0..=MAX_TASKS {
            t.insert(1, UpstreamIx::new(0), "u", &format!("{n:05}"), None);
        }
        assert_eq!(t.page(1, None, 0).0.len(), MAX_TASKS);
        assert_eq!(t.get(1, "u__00000"), None, "the oldest went");
        assert!(t.get(1, &format!("u__{MAX_TASKS:05}")).is_some());
    }

    #[test]
    fn ids_are_exposed_in_tasks_results_and_related_meta() {
        let created = msg(r#"{"task":{"taskId":"t1","status":"working","ttl":60000},"_meta":{"x":1}}"#);
        let (out, original) = expose_created(created.result_object().unwrap(), "ev").unwrap();
        assert_eq!(original, "t1");
        assert_eq!(out.get(), r#"{"task":{"taskId":"ev__t1","status":"working","ttl":60000},"_meta":{"x":1}}"#);
        let plain = msg(r#"{"content":[]}"#);
        assert!(expose_created(plain.result_object().unwrap(), "ev").is_none(), "a plain result is not a task");

        let status = msg(r#"{"taskId":"t1","status":"completed"}"#);
        assert_eq!(
            expose_task(status.result().unwrap(), "ev").unwrap().text(),
            r#"{"taskId":"ev__t1","status":"completed"}"#
        );

        let result =
            msg(r#"{"content":[],"_meta":{"io.modelcontextprotocol/related-task":{"taskId":"t1"},"other":true}}"#);
        assert_eq!(
            expose_related(result.result().unwrap(), "ev").unwrap().text(),
            r#"{"content":[],"_meta":{"io.modelcontextprotocol/related-task":{"taskId":"ev__t1"},"other":true}}"#
        );
        assert!(expose_related(plain.result().unwrap(), "ev").is_none());
    }
}
