//! The four list methods: one page of the merged catalog, as the caller
//! may see it, after the start-up wait.

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
    core.published.wait_for_first_start(|| core.first_starts_listed(), || core.changes.generation()).await;
    let grants = core.gate.grants(rq.caller);
    let what = kind_of(kind);
    let catalog = core.published.load();
    let size = core.config().gateway.page_size;
    let page = match grants.is_open() {
        true => catalog.page(kind, cursor.as_deref(), size),
        false => catalog.page_visible(kind, cursor.as_deref(), size, &|ident| grants.allows(what, ident)),
    };
    let mut page = page.map_err(|e| CallError::protocol(protocol::INVALID_PARAMS, e.to_string()))?;
    if kind == ListKind::Tools && cursor.is_none() && core.builtin_listed(rq.caller) {
        // The gateway's own tool leads the first page.
        let at = "{\"tools\":[".len();
        let sep = if page[at..].starts_with(']') { "" } else { "," };
        page.insert_str(at, &format!("{LIST_SECRET_NAMES_DEF}{sep}"));
    }
    let page = RawValue::from_string(page).expect("the catalog renders valid JSON");
    Ok(encode::result(rq.id, &page))
}

/// What `[[access]]` calls the items of a list.
pub(crate) fn kind_of(list: ListKind) -> Kind {
    match list {
        ListKind::Tools => Kind::Tool,
        ListKind::Prompts => Kind::Prompt,
        ListKind::Resources | ListKind::Templates => Kind::Resource,
    }
}
