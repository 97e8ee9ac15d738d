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
                tracing::debug!(upstream = %self.spec.id, "{} is not served (-32601); serving none.", kind.method());
                Arc::new([])
            }
            Err(e) => {
                tracing::warn!(upstream = %self.spec.id, class = %e.class, "{} failed; serving none: {}.", kind.method(), e.message);
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
                    tracing::warn!(upstream = %self.spec.id, error = %e, "Refreshing {} failed; keeping the old list.", k.method());
                }
            }
        }
        self.set(ready(lists));
    }

    /// Hands a notification that concerns no single call to the gateway.
    pub(super) fn pass_on(&self, msg: Message) {
        tracing::debug!(upstream = %self.spec.id, method = %msg.method(), "Upstream notification.");
        if let Some(isolated) = &self.isolated {
            return isolated.relay.notify(&msg);
        }
        let method = crate::telemetry::metrics::notification_label(msg.method());
        if self.notes.try_send(Note { upstream: self.label.clone(), msg }).is_err() {
            let labels = NotificationLabels { upstream: self.label.clone(), method, outcome: "dropped" };
            self.metrics.notifications.get_or_create(&labels).inc();
            tracing::debug!(upstream = %self.spec.id, "Dropped an upstream notification: the gateway is behind.");
        }
    }

    /// Pages through one list method, following `nextCursor`.
    pub(super) async fn fetch_list(&self, conn: &Connection, kind: ListKind) -> Result<Vec<CheckedBox>, CallError> {
        let method = kind.method();
        let key = kind.key();
        let mut all = Vec::new();
        let mut cursor: Option<String> = None;
        for _ in 0..1000 {
            let params = cursor.as_ref().map(|c| CheckedBox::from_value(&serde_json::json!({ "cursor": c })));
            let reply =
                conn.request(method, params.as_ref().map(CheckedBox::checked), self.spec.request_timeout).await?;
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
            all.extend(items.into_iter().map(Checked::to_box));
            match page.str("nextCursor") {
                Some(c) if Some(&c) != cursor.as_ref() => cursor = Some(c),
                _ => return Ok(all),
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
