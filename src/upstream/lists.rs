//! The upstream's lists (tools, prompts, resources, templates): fetched
//! page by page at start and again when the upstream says one changed.

use super::*;

impl Upstream {
    /// Fetches every list the upstream's capabilities declare. Only a
    /// failed `tools/list` fails the start; a failed prompt or resource
    /// list is logged and left empty (the tools still serve).
    pub(super) async fn fetch_lists(&self, conn: &Connection, caps: Checked<'_>) -> Result<Lists, CallError> {
        let mut lists = Lists::default();
        if capability(caps, "tools") {
            lists.tools = self.fetch_list(conn, ListKind::Tools).await?.into();
        }
        if capability(caps, "prompts") {
            lists.prompts = self.fetch_or_empty(conn, ListKind::Prompts).await;
        }
        if capability(caps, "resources") {
            lists.resources = self.fetch_or_empty(conn, ListKind::Resources).await;
            lists.templates = self.fetch_or_empty(conn, ListKind::Templates).await;
        }
        Ok(lists)
    }

    pub(super) async fn fetch_or_empty(&self, conn: &Connection, kind: ListKind) -> Arc<[CheckedBox]> {
        match self.fetch_list(conn, kind).await {
            Ok(l) => l.into(),
            // An optional list it does not have (server-postgres has no
            // resource templates): nothing to warn about.
            Err(e) if e.code == crate::protocol::METHOD_NOT_FOUND => {
                tracing::debug!(upstream = %self.id(), "{} is not served (-32601); serving none.", kind.method());
                Arc::new([])
            }
            Err(e) => {
                tracing::warn!(upstream = %self.id(), class = %e.class, "{} failed; serving none: {}.", kind.method(), e.message);
                Arc::new([])
            }
        }
    }

    /// Re-fetches a list after the upstream said it changed, keeping the
    /// old one when that fails.
    pub(super) async fn refresh(&self, conn: &Connection, kind: ListKind, ready: &impl Fn(Lists) -> State) {
        let State::Ready(current) = &*self.state() else { return };
        let mut lists = current.lists.clone();
        let kinds: &[ListKind] = match kind {
            ListKind::Resources | ListKind::Templates => &[ListKind::Resources, ListKind::Templates],
            ListKind::Tools => &[ListKind::Tools],
            ListKind::Prompts => &[ListKind::Prompts],
        };
        for &k in kinds {
            match self.fetch_list(conn, k).await {
                Ok(l) => *lists.get_mut(k) = l.into(),
                Err(e) => {
                    tracing::warn!(upstream = %self.id(), error = %e, "Refreshing {} failed; keeping the old list.", k.method());
                }
            }
        }
        self.set(ready(lists));
    }

    /// How long a client may keep its list `kind`, as its last list said
    /// (`ttlMs`, 2026-07-28); `None` when it said nothing.
    pub fn list_ttl(&self, kind: ListKind) -> Option<u64> {
        Some(self.list_ttls[kind.index()].load(Ordering::Relaxed)).filter(|t| *t != u64::MAX)
    }

    /// Hands a notification that concerns no single call to the gateway.
    pub(super) fn pass_on(&self, msg: Message) {
        tracing::debug!(upstream = %self.id(), method = %msg.method(), "Upstream notification.");
        if let Some(isolated) = &self.isolated {
            return isolated.relay.notify(&msg);
        }
        let method = crate::telemetry::metrics::notification_label(msg.method());
        if self.notes.try_send(Note { upstream: self.label.clone(), msg }).is_err() {
            let labels = NotificationLabels { upstream: self.label.clone(), method, outcome: "dropped" };
            self.metrics.notifications.get_or_create(&labels).inc();
            tracing::debug!(upstream = %self.id(), "Dropped an upstream notification: the gateway is behind.");
        }
    }

    /// Whether a tool of a 2026-07-28 HTTP upstream mirrors parameters
    /// into headers in a way the transport forbids: such a tool is left
    /// out of the catalog (streamable-http.mdx, x-mcp-header), with a
    /// warning naming it and why.
    fn bad_headers(&self, tool: Checked<'_>) -> bool {
        let text = tool.text();
        if !crate::protocol::modern::may_mirror(text) {
            return false;
        }
        let schema = tool.get("inputSchema").map_or("{}", Checked::text);
        let Err(why) = crate::protocol::modern::param_headers(schema) else { return false };
        let name = tool.get("name").and_then(Checked::str).unwrap_or_default();
        tracing::warn!(upstream = %self.id(), tool = %crate::protocol::echo(&name), "Left out a tool whose x-mcp-header is invalid: {why}.");
        true
    }

    /// Pages through one list method, following `nextCursor`.
    pub(super) async fn fetch_list(&self, conn: &Connection, kind: ListKind) -> Result<Vec<CheckedBox>, CallError> {
        let method = kind.method();
        let key = kind.key();
        let mut all = Vec::new();
        let mut cursor: Option<String> = None;
        // The shortest `ttlMs` of its pages (2026-07-28 upstreams say one).
        let mut ttl = u64::MAX;
        for _ in 0..1000 {
            let params = cursor.as_ref().map(|c| CheckedBox::from_value(&serde_json::json!({ "cursor": c })));
            let timeout = self.spec().request_timeout;
            let reply = conn.request(method, params.as_ref().map(CheckedBox::checked), timeout).await?;
            let Some(result) = reply.result() else {
                let error = reply.error();
                let code = error.and_then(|e| e.get("code")).and_then(|c| c.text().parse::<i64>().ok());
                let class = code.map_or(ErrorClass::UpstreamInternal, crate::error::classify_rpc_code);
                let text = error.map(|e| e.text().to_owned()).unwrap_or_default();
                let mut e = self.error(class, format!("{method} answered an error: {}", crate::protocol::echo(&text)));
                e.code = code.unwrap_or(e.code);
                return Err(e);
            };
            let invalid = |e: &dyn std::fmt::Display| {
                self.error(ErrorClass::Protocol, format!("{method} result is invalid: {e}"))
            };
            let page = result.object().ok_or_else(|| invalid(&"not an object"))?;
            let items = match page.get(key) {
                Some(v) => v.items().ok_or_else(|| invalid(&format!("`{key}` is not an array")))?,
                None => return Err(invalid(&format!("no `{key}` array"))),
            };
            let modern_http = conn.era() == crate::protocol::Era::Modern && conn.link.carries_headers();
            all.extend(
                items
                    .into_iter()
                    .filter(|t| !(modern_http && kind == ListKind::Tools && self.bad_headers(*t)))
                    .map(Checked::to_box),
            );
            if let Some(t) = page.get("ttlMs").and_then(|t| t.text().parse::<u64>().ok()) {
                ttl = ttl.min(t);
            }
            match page.str("nextCursor") {
                Some(c) if Some(&c) != cursor.as_ref() => cursor = Some(c),
                _ => {
                    self.list_ttls[kind.index()].store(ttl, Ordering::Relaxed);
                    return Ok(all);
                }
            }
        }
        Err(self.error(ErrorClass::Protocol, format!("{method} returned more than 1000 pages")))
    }
}

/// The lists an upstream serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ListKind {
    /// `tools/list`.
    Tools,
    /// `prompts/list`.
    Prompts,
    /// `resources/list`.
    Resources,
    /// `resources/templates/list`.
    Templates,
}

impl ListKind {
    /// The list method.
    pub fn method(self) -> &'static str {
        match self {
            ListKind::Tools => "tools/list",
            ListKind::Prompts => "prompts/list",
            ListKind::Resources => "resources/list",
            ListKind::Templates => "resources/templates/list",
        }
    }

    /// The member of the result that holds the items.
    pub fn key(self) -> &'static str {
        match self {
            ListKind::Tools => "tools",
            ListKind::Prompts => "prompts",
            ListKind::Resources => "resources",
            ListKind::Templates => "resourceTemplates",
        }
    }

    /// The `list_changed` notification for this list (templates share the
    /// resources one).
    pub fn changed_notification(self) -> &'static str {
        match self {
            ListKind::Tools => "notifications/tools/list_changed",
            ListKind::Prompts => "notifications/prompts/list_changed",
            ListKind::Resources | ListKind::Templates => "notifications/resources/list_changed",
        }
    }

    /// Its place in per-kind arrays.
    fn index(self) -> usize {
        match self {
            ListKind::Tools => 0,
            ListKind::Prompts => 1,
            ListKind::Resources => 2,
            ListKind::Templates => 3,
        }
    }

    /// The list a `list_changed` notification is about.
    pub fn changed_by(method: &str) -> Option<ListKind> {
        match method {
            "notifications/tools/list_changed" => Some(ListKind::Tools),
            "notifications/prompts/list_changed" => Some(ListKind::Prompts),
            "notifications/resources/list_changed" => Some(ListKind::Resources),
            _ => None,
        }
    }
}

impl Lists {
    /// One list.
    pub fn get(&self, kind: ListKind) -> &Arc<[CheckedBox]> {
        match kind {
            ListKind::Tools => &self.tools,
            ListKind::Prompts => &self.prompts,
            ListKind::Resources => &self.resources,
            ListKind::Templates => &self.templates,
        }
    }

    fn get_mut(&mut self, kind: ListKind) -> &mut Arc<[CheckedBox]> {
        match kind {
            ListKind::Tools => &mut self.tools,
            ListKind::Prompts => &mut self.prompts,
            ListKind::Resources => &mut self.resources,
            ListKind::Templates => &mut self.templates,
        }
    }
}

#[cfg(test)]
mod tests {
    //! `ListKind`'s names, and lists fetched from a scripted server: pages
    //! followed, optional lists that fail left empty, a change re-fetched.

    use super::super::tests::{Frozen, conn, fixture, start};
    use super::*;

    const ALL: [ListKind; 4] = [ListKind::Tools, ListKind::Prompts, ListKind::Resources, ListKind::Templates];

    /// The `name`s of a list's items.
    fn names(items: &[CheckedBox]) -> Vec<String> {
        items.iter().map(|i| i.checked().get("name").and_then(|n| n.str()).unwrap_or_default().into_owned()).collect()
    }

    fn lists(state: &State) -> Lists {
        match state {
            State::Ready(r) => r.lists.clone(),
            other => panic!("not ready: {other:?}"),
        }
    }

    #[test]
    fn each_list_has_its_method_key_and_change_notification() {
        let got: Vec<_> = ALL.iter().map(|k| (k.method(), k.key(), k.changed_notification())).collect();
        assert_eq!(
            got,
            [
                ("tools/list", "tools", "notifications/tools/list_changed"),
                ("prompts/list", "prompts", "notifications/prompts/list_changed"),
                ("resources/list", "resources", "notifications/resources/list_changed"),
                ("resources/templates/list", "resourceTemplates", "notifications/resources/list_changed"),
            ]
        );
        // A change notification names the list it is about; templates share
        // the resources one (and a resources change re-fetches both).
        let back: Vec<_> = ALL.iter().map(|k| ListKind::changed_by(k.changed_notification())).collect();
        assert_eq!(
            back,
            [Some(ListKind::Tools), Some(ListKind::Prompts), Some(ListKind::Resources), Some(ListKind::Resources)]
        );
        for other in ["notifications/resources/updated", "notifications/message", "tools/list", ""] {
            assert_eq!(ListKind::changed_by(other), None, "{other}");
        }
    }

    #[test]
    fn lists_get_and_get_mut_pick_the_same_list() {
        let mut l = Lists::default();
        for (n, k) in ALL.into_iter().enumerate() {
            *l.get_mut(k) = vec![CheckedBox::from_value(&serde_json::json!({ "name": "x" })); n + 1].into();
        }
        let lens: Vec<_> = ALL.iter().map(|k| l.get(*k).len()).collect();
        assert_eq!(lens, [1, 2, 3, 4]);
        assert_eq!((l.tools.len(), l.prompts.len(), l.resources.len(), l.templates.len()), (1, 2, 3, 4));
    }

    #[tokio::test(start_paused = true)]
    async fn lists_are_fetched_across_pages_and_a_failed_optional_one_is_empty() {
        let _frozen = Frozen::new();
        let h = start(fixture("health.interval = \"0s\""));
        let ready = h.ready(1).await;
        let l = lists(&ready);
        assert_eq!(names(&l.tools), ["a", "b", "c", "d"], "three pages, in order");
        assert_eq!(names(&l.prompts), ["first", "again"], "a cursor that repeats ends the list");
        assert!(l.resources.is_empty() && l.templates.is_empty());

        // Why those two are empty.
        let c = conn(&ready);
        let e = h.up.fetch_list(&c, ListKind::Resources).await.unwrap_err();
        assert_eq!((e.class, e.code), (ErrorClass::Protocol, crate::protocol::METHOD_NOT_FOUND));
        assert!(e.message.starts_with("upstream `x` resources/list answered an error: "), "{}", e.message);
        let e = h.up.fetch_list(&c, ListKind::Templates).await.unwrap_err();
        assert_eq!(e.class, ErrorClass::Protocol);
        assert_eq!(
            e.message,
            "upstream `x` resources/templates/list result is invalid: `resourceTemplates` is not an array"
        );
        h.stop().await;
    }

    #[tokio::test(start_paused = true)]
    async fn a_list_change_refetches_that_list_on_the_same_connection() {
        let _frozen = Frozen::new();
        let h = start(fixture("health.interval = \"0s\""));
        let ready = h.ready(1).await;
        let generation = h.changes.generation();
        let c = conn(&ready);
        c.request("test/change", None, Duration::from_secs(5)).await.expect("answered");
        let changed = h.wait_for("tools changed", |s| matches!(s, State::Ready(r) if r.lists.tools.len() == 1)).await;
        let State::Ready(r) = &*changed else { unreachable!() };
        assert_eq!(names(&r.lists.tools), ["e"]);
        assert_eq!(names(&r.lists.prompts), ["first", "again"], "the other lists are kept");
        assert_eq!(r.connection, 1, "no restart");
        assert!(h.changes.generation() > generation, "the catalog is told");
        h.stop().await;
    }

    #[tokio::test(start_paused = true)]
    async fn a_notification_about_no_call_goes_to_the_gateway() {
        let _frozen = Frozen::new();
        let mut h = start(fixture("health.interval = \"0s\""));
        let ready = h.ready(1).await;
        conn(&ready).request("test/note", None, Duration::from_secs(5)).await.expect("answered");
        let note =
            tokio::time::timeout(Duration::from_secs(3600), h.notes.recv()).await.expect("a note").expect("open");
        assert_eq!(&*note.upstream, "x");
        assert_eq!(note.msg.method(), "notifications/resources/updated");
        assert_eq!(note.msg.params().and_then(|p| p.get("uri")).and_then(|u| u.str()).as_deref(), Some("file:///x"));
        h.stop().await;
    }
}
