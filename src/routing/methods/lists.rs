//! The four list methods: one page of the merged catalog, as the caller
//! may see it, after the start-up wait.

use std::sync::LazyLock;

use serde_json::value::RawValue;

use crate::error::CallError;
use crate::protocol::{self, encode};
use crate::routing::core::{Core, LIST_SECRET_NAMES_DEF, Rq};
use crate::routing::params;
use crate::security::access::Kind;
use crate::upstream::ListKind;

/// `tools/list`, `prompts/list`, `resources/list` or
/// `resources/templates/list`.
pub(crate) async fn page(core: &Core, rq: &Rq<'_>, kind: ListKind) -> Result<String, CallError> {
    let cursor = params::cursor(rq.params)?;
    let gave_up =
        core.published.wait_for_first_start(|| core.first_starts_unlisted().is_empty(), || core.changes.generation());
    if gave_up.await {
        // Once: a client that lists early sees a catalog that will grow,
        // and the operator should know why its tools came later.
        let still_starting: Vec<String> = core.first_starts_unlisted().iter().map(|u| u.id().to_owned()).collect();
        let still_starting = still_starting.join(", ");
        let waited_ms = core.config().gateway.startup_list_wait.as_millis() as u64;
        tracing::info!(
            list = kind.method(),
            still_starting,
            waited_ms,
            "Answered the first list while upstreams were still starting (startup_list_wait ran out); \
             what they offer follows with list_changed notifications."
        );
    }
    let grants = core.gate.grants(rq.caller);
    let what = kind_of(kind);
    let catalog = core.published.load();
    let size = core.config().gateway.page_size;
    let page = match grants.is_open() {
        true => catalog.select(kind, cursor.as_deref(), size, &|_| true),
        false => catalog.select(kind, cursor.as_deref(), size, &|ident| grants.allows(what, ident)),
    };
    let mut page = page.map_err(|e| CallError::protocol(protocol::INVALID_PARAMS, e.to_string()))?;
    if kind == ListKind::Tools && cursor.is_none() && core.builtin_listed(rq.caller) {
        // The gateway's own tool leads the first page.
        page.entries.insert(0, builtin());
    }
    // Not checked again: every definition was checked when its upstream's
    // list was admitted (and the gateway's writer renamed it), the
    // gateway's own tool when it was first listed, and `list_result`
    // writes only those, commas and escaped strings.
    Ok(encode::list_result(rq.id, kind.key(), &page.entries, page.next_cursor.as_deref()))
}

/// The gateway's own tool's definition, checked once.
fn builtin() -> &'static RawValue {
    static DEF: LazyLock<Box<RawValue>> = LazyLock::new(|| {
        RawValue::from_string(LIST_SECRET_NAMES_DEF.to_owned()).expect("the gateway's own tool is valid JSON")
    });
    &DEF
}

/// What `[[access]]` calls the items of a list.
pub(crate) fn kind_of(list: ListKind) -> Kind {
    match list {
        ListKind::Tools => Kind::Tool,
        ListKind::Prompts => Kind::Prompt,
        ListKind::Resources | ListKind::Templates => Kind::Resource,
    }
}
