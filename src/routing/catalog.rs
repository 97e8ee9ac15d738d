//! The merged catalog: tools, prompts, resources and resource templates of
//! every ready upstream (docs/design.md D4).
//!
//! Exposed names are `<id>__<name>` (or the bare name with `prefix =
//! false`); a name longer than the maximum is shortened to a stable
//! `<head>-<8 hex of SHA-256>` and still routes. Resource URIs of a prefixed
//! upstream get the upstream id appended to their scheme,
//! `<scheme>+<id>:<rest>` (`file:///a` → `file+fs:///a`): reversible (ids
//! have no `+`), still a valid URI, and the original scheme is the first
//! thing a host sees. A name or URI that would collide is refused and
//! logged, never silently shadowed: prefixed entries are unique by
//! construction, so they take precedence, then unprefixed upstreams in id
//! order.
//!
//! Each definition is rewritten only in its `name` (`uri`, `uriTemplate`);
//! every other member is forwarded byte-for-byte. Every list is sorted by
//! its exposed key, so the gateway's own cursor is simply the last key of a
//! page: a walk over the pages returns every entry present throughout it
//! exactly once, even when upstream lists change between pages.

use std::collections::HashMap;
use std::collections::hash_map::Entry as MapEntry;
use std::hash::{Hash, Hasher};
use std::sync::Arc;

use super::ix::UpstreamIx;
use crate::config::ToolMatcher;
use crate::protocol::{Checked, CheckedBox, Members};
use crate::security::Ident;
use crate::upstream::{ListKind, Lists, ToolHints};
use serde_json::value::RawValue;
use sha2::{Digest, Sha256};

mod cursor;
mod uri;

use self::cursor::{decode_cursor, encode_cursor};
pub(crate) use self::cursor::{decode_tagged_cursor, encode_tagged_cursor};
pub use self::uri::{namespace_uri, split_uri, template_matches};

/// Separator between the upstream id and the tool name.
pub const SEPARATOR: &str = "__";

/// The input for one upstream.
#[derive(Debug)]
pub struct Source<'a> {
    /// Index of the upstream in the gateway's list.
    pub upstream: UpstreamIx,
    /// Its id.
    pub id: &'a str,
    /// Whether its names and URIs are namespaced.
    pub prefix: bool,
    /// Its tool allow/deny globs.
    pub filter: &'a ToolMatcher,
    /// What it lists, raw.
    pub lists: &'a Lists,
    /// All its tools are hidden (its breaker is not closed).
    pub hidden: bool,
    /// Its tools (original names) hidden by their own breaker.
    pub hidden_tools: &'a [String],
    /// `lists` is the warm-start cache of an upstream still on its first
    /// start, not what it answered (routing/warm.rs).
    pub cached: bool,
}

/// One exposed tool.
#[derive(Debug)]
pub struct Tool {
    /// The name clients see.
    pub name: String,
    /// Its canonical key, `<upstream>__<original>` (docs/design.md D12): what
    /// policy, pins, limits and rules know it by, whatever the name
    /// clients see (shortened, or unprefixed).
    pub key: String,
    /// Its upstream is mounted without a prefix: the bare original name
    /// is a spelling of its identity too.
    pub bare: bool,
    /// Index of the owning upstream.
    pub upstream: UpstreamIx,
    /// The name the upstream knows it by (shared: it is also a metric
    /// label).
    pub original: Arc<str>,
    /// The definition as exposed (renamed).
    pub def: CheckedBox,
    /// What its annotations claim (for retry safety).
    pub hints: ToolHints,
    /// Left out of `tools/list` while a breaker is open, but still routed,
    /// so a call fails fast with `breaker_open` rather than "unknown".
    pub hidden: bool,
    /// Its definition changed since it was pinned (`[pinning]`): calls
    /// are refused until an operator approves it.
    pub quarantined: bool,
    /// Listed from the warm-start cache while its upstream is on its first
    /// start: a call waits for the upstream and is then checked against
    /// the live definition (routing/warm.rs).
    pub cached: bool,
    /// Its parameters mirrored into `Mcp-Param-*` headers (`x-mcp-header`;
    /// nearly always none), found once when the catalog is built.
    pub mirrored: Arc<[crate::protocol::modern::ParamHeader]>,
}

/// One exposed prompt, resource or resource template.
#[derive(Debug)]
pub struct Item {
    /// The name, URI or URI template clients see.
    pub key: String,
    /// What policy knows it by: a prompt's `<upstream>__<original>`; a
    /// resource's or template's exposed URI (never shortened).
    pub canonical: String,
    /// A prompt of an unprefixed upstream (its bare name counts too).
    pub bare: bool,
    /// Index of the owning upstream.
    pub upstream: UpstreamIx,
    /// What the upstream calls it.
    pub original: Arc<str>,
    /// The definition as exposed.
    pub def: CheckedBox,
}

/// An entry that was not exposed because its name or URI was taken.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Collision {
    /// The refused name or URI.
    pub name: String,
    /// The upstream whose entry was refused.
    pub refused: String,
    /// The upstream that owns the name.
    pub owner: String,
}

// === impl Tool, Item ===

impl Tool {
    /// What policy knows it by.
    pub fn ident(&self) -> Ident<'_> {
        Ident { key: &self.key, bare: self.bare.then_some(&*self.original) }
    }
}

impl Item {
    /// What policy knows it by.
    pub fn ident(&self) -> Ident<'_> {
        Ident { key: &self.canonical, bare: self.bare.then_some(&*self.original) }
    }
}

/// A cursor the gateway did not hand out for this list.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("Invalid cursor")]
pub struct InvalidCursor;

/// A sorted list with an index by key.
#[derive(Debug, Default)]
struct Sorted<T> {
    items: Vec<T>,
    by_key: HashMap<String, usize>,
}

/// The merged catalog.
#[derive(Debug)]
pub struct Catalog {
    tools: Sorted<Tool>,
    prompts: Sorted<Item>,
    resources: Sorted<Item>,
    templates: Sorted<Item>,
    /// Original URIs of prefixed upstreams' resources that only one
    /// upstream lists → index in `resources`, so a URI an upstream handed
    /// out in a tool result (`resource_link`) still routes.
    by_original_uri: HashMap<Arc<str>, usize>,
    /// A hash of what each list shows, to tell which lists changed.
    fingerprints: [u64; 4],
    /// Entries refused for a collision.
    pub collisions: Vec<Collision>,
}

/// What [`Catalog::changed_lists`] compares.
const KINDS: [ListKind; 4] = [ListKind::Tools, ListKind::Prompts, ListKind::Resources, ListKind::Templates];

// === impl Catalog ===

impl Catalog {
    /// An empty catalog.
    pub fn empty() -> Self {
        Self::build(&[], 128, &[])
    }

    /// Merges `sources` (in the order given) with names under `max_len`.
    /// `namespaces` are the ids of every upstream configured, up or not: an
    /// unprefixed upstream never owns a name or URI in another's (nor in
    /// the gateway's own `gateway__`), so a call meant for a restarting
    /// upstream cannot reach a squatter, and a bare name never matches
    /// globs written for another upstream's canonical names.
    pub fn build(sources: &[Source<'_>], max_len: usize, namespaces: &[&str]) -> Self {
        let mut collisions = Vec::new();
        // Prefixed upstreams first: their names cannot collide with each
        // other, so they always win over an unprefixed upstream. Among the
        // unprefixed, what an upstream answered wins over what the
        // warm-start cache says another once did.
        let unprefixed = |cached: bool| sources.iter().filter(move |s| !s.prefix && s.cached == cached);
        let ordered: Vec<&Source<'_>> =
            sources.iter().filter(|s| s.prefix).chain(unprefixed(false)).chain(unprefixed(true)).collect();
        let squats = |src: &Source<'_>, name: &str| -> Option<String> {
            if src.prefix {
                return None;
            }
            let (ns, _) = name.split_once(SEPARATOR)?;
            (ns == "gateway" || (ns != src.id && namespaces.contains(&ns))).then(|| ns.to_owned())
        };

        let mut candidates: Vec<Candidate<'_>> = Vec::new();
        for src in &ordered {
            for def in src.lists.tools.iter() {
                let Some((obj, original)) = named(def.checked(), "name", src.id, "tool") else { continue };
                if !src.filter.exposes(&original) {
                    continue;
                }
                if let Some(ns) = squats(src, &original) {
                    collisions.push(collide(&original, src.id, &ns, "tool"));
                    continue;
                }
                candidates.push(Candidate::new(src, obj, original, max_len));
            }
        }
        let mut tools: Vec<Tool> = settle(candidates, &mut collisions, "tool")
            .into_iter()
            .map(|c| {
                let mut obj = c.obj;
                obj.set_str("name", &c.exposed);
                Tool {
                    hints: hints(&obj),
                    hidden: c.src.hidden || c.src.hidden_tools.contains(&c.original),
                    quarantined: false,
                    cached: c.src.cached,
                    key: format!("{}{SEPARATOR}{}", c.src.id, c.original),
                    bare: !c.src.prefix,
                    name: c.exposed,
                    upstream: c.src.upstream,
                    original: c.original.as_str().into(),
                    mirrored: mirrored_of(&obj),
                    def: obj.to_checked(),
                }
            })
            .collect();
        tools.sort_by(|a, b| a.name.cmp(&b.name));
        let tools = Sorted::new(tools, |t| &t.name);

        let mut by_original_uri: HashMap<Arc<str>, Option<usize>> = HashMap::new();
        let merge = |kind: ListKind, collisions: &mut Vec<Collision>| {
            let (field, what) = match kind {
                ListKind::Prompts => ("name", "prompt"),
                ListKind::Resources => ("uri", "resource"),
                _ => ("uriTemplate", "resource template"),
            };
            let mut candidates: Vec<Candidate<'_>> = Vec::new();
            for src in &ordered {
                for def in src.lists.get(kind).iter() {
                    let Some((obj, original)) = named(def.checked(), field, src.id, what) else { continue };
                    if kind == ListKind::Prompts {
                        if let Some(ns) = squats(src, &original) {
                            collisions.push(collide(&original, src.id, &ns, what));
                            continue;
                        }
                        candidates.push(Candidate::new(src, obj, original, max_len));
                        continue;
                    }
                    if !src.prefix
                        && let Some((ns, _)) = split_uri(&original)
                        && ns != src.id
                        && namespaces.contains(&ns)
                    {
                        let ns = ns.to_owned();
                        collisions.push(collide(&original, src.id, &ns, what));
                        continue;
                    }
                    let exposed = if src.prefix { namespace_uri(src.id, &original) } else { Some(original.clone()) };
                    let Some(exposed) = exposed else {
                        tracing::warn!(upstream = %src.id, "Skipped a {what} whose URI has no scheme: {original:?}.");
                        continue;
                    };
                    candidates.push(Candidate { full: exposed.clone(), exposed, src, obj, original });
                }
            }
            let mut items: Vec<Item> = settle(candidates, collisions, what)
                .into_iter()
                .map(|c| {
                    let mut obj = c.obj;
                    obj.set_str(field, &c.exposed);
                    let canonical = match kind {
                        ListKind::Prompts => format!("{}{SEPARATOR}{}", c.src.id, c.original),
                        _ => c.exposed.clone(),
                    };
                    Item {
                        canonical,
                        bare: kind == ListKind::Prompts && !c.src.prefix,
                        key: c.exposed,
                        upstream: c.src.upstream,
                        original: c.original.as_str().into(),
                        def: obj.to_checked(),
                    }
                })
                .collect();
            items.sort_by(|a, b| a.key.cmp(&b.key));
            Sorted::new(items, |i| &i.key)
        };
        let prompts = merge(ListKind::Prompts, &mut collisions);
        let resources = merge(ListKind::Resources, &mut collisions);
        let templates = merge(ListKind::Templates, &mut collisions);
        for (i, r) in resources.items.iter().enumerate() {
            if r.key != *r.original {
                by_original_uri.entry(r.original.clone()).and_modify(|v| *v = None).or_insert(Some(i));
            }
        }
        let by_original_uri = by_original_uri.into_iter().filter_map(|(k, v)| Some((k, v?))).collect();
        let mut c = Catalog { tools, prompts, resources, templates, by_original_uri, fingerprints: [0; 4], collisions };
        c.fingerprints = KINDS.map(|k| c.fingerprint(k));
        c
    }

    /// Marks the tools with these canonical keys quarantined (and, with
    /// `hide`, left out of `tools/list`).
    pub fn quarantine(&mut self, keys: &std::collections::HashSet<String>, hide: bool) {
        if keys.is_empty() {
            return;
        }
        for t in &mut self.tools.items {
            if keys.contains(&t.key) {
                t.quarantined = true;
                t.hidden |= hide;
            }
        }
        self.fingerprints = KINDS.map(|k| self.fingerprint(k));
    }

    /// Looks up an exposed tool name.
    pub fn get(&self, name: &str) -> Option<&Tool> {
        self.tools.by_key.get(name).map(|&i| &self.tools.items[i])
    }

    /// Looks up an exposed prompt name.
    pub fn prompt(&self, name: &str) -> Option<&Item> {
        self.prompts.by_key.get(name).map(|&i| &self.prompts.items[i])
    }

    /// Looks up a resource by its exposed URI, or by the URI its upstream
    /// gave it when only one upstream lists that URI.
    pub fn resource(&self, uri: &str) -> Option<&Item> {
        let i = self.resources.by_key.get(uri).or_else(|| self.by_original_uri.get(uri))?;
        Some(&self.resources.items[*i])
    }

    /// Looks up a resource template by its exposed URI template.
    pub fn template(&self, uri_template: &str) -> Option<&Item> {
        self.templates.by_key.get(uri_template).map(|&i| &self.templates.items[i])
    }

    /// The unprefixed upstream whose listed template `uri` matches.
    pub fn template_owner(&self, uri: &str, unprefixed: impl Fn(UpstreamIx) -> bool) -> Option<UpstreamIx> {
        self.templates
            .items
            .iter()
            .find(|t| unprefixed(t.upstream) && template_matches(&t.key, uri))
            .map(|t| t.upstream)
    }

    /// Every routed tool, sorted by name, hidden ones included.
    pub fn tools(&self) -> &[Tool] {
        &self.tools.items
    }

    /// Every exposed prompt, resource or template of `kind`, sorted.
    pub fn items(&self, kind: ListKind) -> &[Item] {
        match kind {
            ListKind::Prompts => &self.prompts.items,
            ListKind::Resources => &self.resources.items,
            ListKind::Templates => &self.templates.items,
            ListKind::Tools => &[],
        }
    }

    /// One page of a list result: at most `size` entries (0: all) after the
    /// cursor, and `nextCursor` when more follow.
    pub fn page(&self, kind: ListKind, cursor: Option<&str>, size: usize) -> Result<String, InvalidCursor> {
        self.page_visible(kind, cursor, size, &|_| true)
    }

    /// [`Catalog::page`] of the entries `visible` accepts (a principal's
    /// grants). Cursors name the last key served, so a filtered walk pages
    /// as correctly as a whole one.
    pub fn page_visible(
        &self,
        kind: ListKind,
        cursor: Option<&str>,
        size: usize,
        visible: &dyn Fn(Ident<'_>) -> bool,
    ) -> Result<String, InvalidCursor> {
        let after = cursor.map(|c| decode_cursor(kind, c)).transpose()?;
        let defs: Box<dyn Iterator<Item = (&str, &RawValue)>> = match kind {
            ListKind::Tools => Box::new(
                self.tools.items.iter().filter(|t| !t.hidden && visible(t.ident())).map(|t| (&*t.name, t.def.raw())),
            ),
            _ => Box::new(self.items(kind).iter().filter(|i| visible(i.ident())).map(|i| (&*i.key, i.def.raw()))),
        };
        let size = if size == 0 { usize::MAX } else { size };
        let mut out = String::with_capacity(1024);
        out.push_str("{\"");
        out.push_str(kind.key());
        out.push_str("\":[");
        let mut last = None;
        let mut more = false;
        for (n, (key, def)) in defs.skip_while(|(k, _)| after.as_deref().is_some_and(|a| *k <= a)).enumerate() {
            if n == size {
                more = true;
                break;
            }
            if n > 0 {
                out.push(',');
            }
            out.push_str(def.get());
            last = Some(key);
        }
        out.push(']');
        if let (true, Some(last)) = (more, last) {
            out.push_str(",\"nextCursor\":");
            out.push_str(&serde_json::to_string(&encode_cursor(kind, last)).expect("a string"));
        }
        out.push('}');
        Ok(out)
    }

    /// The lists (tools, prompts, resources: templates count as resources)
    /// whose visible content differs from `before`.
    pub fn changed_lists(&self, before: &Catalog) -> Vec<ListKind> {
        let mut out: Vec<ListKind> = Vec::new();
        for (i, kind) in KINDS.iter().enumerate() {
            let kind = if *kind == ListKind::Templates { ListKind::Resources } else { *kind };
            if self.fingerprints[i] != before.fingerprints[i] && !out.contains(&kind) {
                out.push(kind);
            }
        }
        out
    }

    fn fingerprint(&self, kind: ListKind) -> u64 {
        self.visible_fingerprint(kind, &|_| true)
    }

    /// A hash of what a list shows to a caller who sees what `visible`
    /// accepts (for resources, templates too): whether its `list_changed`
    /// concerns that caller.
    pub fn visible_fingerprint(&self, kind: ListKind, visible: &dyn Fn(Ident<'_>) -> bool) -> u64 {
        let mut h = std::collections::hash_map::DefaultHasher::new();
        match kind {
            ListKind::Tools => self
                .tools
                .items
                .iter()
                .filter(|t| !t.hidden && visible(t.ident()))
                .for_each(|t| t.def.text().hash(&mut h)),
            _ => self.items(kind).iter().filter(|i| visible(i.ident())).for_each(|i| i.def.text().hash(&mut h)),
        }
        h.finish()
    }

    /// Whether upstream `i` has anything `visible` accepts in this catalog.
    pub fn shows_upstream(&self, i: UpstreamIx, visible: &dyn Fn(ListKind, Ident<'_>) -> bool) -> bool {
        self.tools.items.iter().any(|t| t.upstream == i && visible(ListKind::Tools, t.ident()))
            || [ListKind::Prompts, ListKind::Resources, ListKind::Templates]
                .into_iter()
                .any(|k| self.items(k).iter().any(|it| it.upstream == i && visible(k, it.ident())))
    }
}

impl<T> Sorted<T> {
    fn new(items: Vec<T>, key: impl Fn(&T) -> &String) -> Self {
        let by_key = items.iter().enumerate().map(|(i, t)| (key(t).clone(), i)).collect();
        Sorted { items, by_key }
    }
}

/// An entry on its way into the catalog.
struct Candidate<'s> {
    /// The name or URI clients would see.
    exposed: String,
    /// The same before shortening: two candidates with the same `exposed`
    /// and different `full` collided only by shortening.
    full: String,
    src: &'s Source<'s>,
    obj: Members<'s>,
    original: String,
}

impl<'s> Candidate<'s> {
    /// A tool or prompt: `<id>__<name>` (or the bare name), shortened.
    fn new(src: &'s Source<'s>, obj: Members<'s>, original: String, max_len: usize) -> Self {
        let full = if src.prefix { format!("{}{SEPARATOR}{original}", src.id) } else { original.clone() };
        Candidate { exposed: shorten(&full, max_len), full, src, obj, original }
    }
}

/// Which candidates are exposed: the first for each exposed name, in the
/// order given (prefixed upstreams first); the later ones are collisions.
/// When two different names were shortened to the same one, which one a
/// client means cannot be told: all of them are refused.
fn settle<'s>(candidates: Vec<Candidate<'s>>, collisions: &mut Vec<Collision>, what: &str) -> Vec<Candidate<'s>> {
    let mut fulls: HashMap<&str, Vec<&str>> = HashMap::new();
    for c in &candidates {
        let names = fulls.entry(&c.exposed).or_default();
        if !names.contains(&c.full.as_str()) {
            names.push(&c.full);
        }
    }
    let ambiguous: std::collections::HashSet<String> =
        fulls.into_iter().filter(|(_, f)| f.len() > 1).map(|(e, _)| e.to_owned()).collect();
    let mut owner: HashMap<String, String> = HashMap::new();
    let mut kept = Vec::new();
    for c in candidates {
        if ambiguous.contains(&c.exposed) && c.exposed != c.full {
            tracing::error!(
                upstream = %c.src.id, name = %c.full, shortened = %c.exposed,
                "Two {what} names shorten to the same name; both refused (raise gateway.max_tool_name_length or deny one)."
            );
            collisions.push(Collision { name: c.exposed.clone(), refused: c.src.id.to_owned(), owner: String::new() });
            continue;
        }
        match owner.entry(c.exposed.clone()) {
            MapEntry::Occupied(e) => collisions.push(collide(e.key(), c.src.id, e.get(), what)),
            MapEntry::Vacant(e) => {
                e.insert(c.src.id.to_owned());
                kept.push(c);
            }
        }
    }
    kept
}

/// A definition and the string member `field` it is known by (logged and
/// skipped when it has none).
fn named<'a>(def: Checked<'a>, field: &str, upstream: &str, what: &str) -> Option<(Members<'a>, String)> {
    let Some(obj) = def.object() else {
        tracing::warn!(upstream = %upstream, "Skipped a {what} definition that is not a JSON object.");
        return None;
    };
    let Some(name) = obj.str(field) else {
        tracing::warn!(upstream = %upstream, "Skipped a {what} without a string `{field}`.");
        return None;
    };
    Some((obj, name))
}

fn collide(name: &str, refused: &str, owner: &str, what: &str) -> Collision {
    tracing::error!(
        upstream = %refused, name = %name, owner = %owner,
        "A {what} collides with an exposed one; refused (set `prefix = true` or a deny glob)."
    );
    Collision { name: name.to_owned(), refused: refused.to_owned(), owner: owner.to_owned() }
}

/// `annotations.readOnlyHint` and `annotations.idempotentHint`.
fn hints(def: &Members<'_>) -> ToolHints {
    let Some(a) = def.get("annotations").and_then(Checked::object) else {
        return ToolHints::default();
    };
    let yes = |k: &str| a.get(k).is_some_and(Checked::is_true);
    ToolHints { read_only: yes("readOnlyHint"), idempotent: yes("idempotentHint") }
}

/// The parameters a tool definition mirrors into headers. A modern HTTP
/// upstream's tool with an invalid annotation was left out when it was
/// listed; any other's mirrors nothing (the annotation is for HTTP).
fn mirrored_of(def: &Members<'_>) -> Arc<[crate::protocol::modern::ParamHeader]> {
    let schema = def.get("inputSchema").filter(|s| crate::protocol::modern::may_mirror(s.text()));
    schema.and_then(|s| crate::protocol::modern::param_headers(s.text()).ok()).unwrap_or_default().into()
}

/// Shortens `name` to at most `max` bytes, deterministically: the head of
/// the name, `-`, and the first 8 hex digits of its SHA-256.
pub fn shorten(name: &str, max: usize) -> String {
    if name.len() <= max {
        return name.to_owned();
    }
    let digest = Sha256::digest(name.as_bytes());
    let hash: String = digest.iter().take(4).map(|b| format!("{b:02x}")).collect();
    let mut head = max.saturating_sub(hash.len() + 1);
    while !name.is_char_boundary(head) {
        head -= 1;
    }
    format!("{}-{hash}", &name[..head])
}

#[cfg(test)]
mod tests;
