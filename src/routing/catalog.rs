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
use std::sync::Arc;

use super::ix::UpstreamIx;
use crate::config::ToolMatcher;
use crate::protocol::{Checked, CheckedBox, Members};
use crate::security::Ident;
use crate::upstream::{ListKind, Lists, ToolHints};
use sha2::{Digest, Sha256};

mod cursor;
mod prepare;
mod status;
mod uri;
mod views;

use self::cursor::{decode_cursor, encode_cursor};
pub(crate) use self::cursor::{decode_tagged_cursor, encode_tagged_cursor};
use self::prepare::Entry;
pub use self::prepare::Prepared;
pub use self::uri::{namespace_uri, split_uri, template_matches};
pub use self::views::Page;

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
    /// The definition as exposed (renamed), shared with the entry kept for
    /// the next build (catalog/prepare.rs).
    pub def: Arc<CheckedBox>,
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
    /// A hash of `def`: what a list's fingerprint sums.
    hash: u64,
    /// A hash of `def` and of what policy knows it by.
    sig: u64,
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
    pub def: Arc<CheckedBox>,
    /// A hash of `def`: what a list's fingerprint sums.
    hash: u64,
    /// A hash of `def` and of what policy knows it by.
    sig: u64,
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

/// A list sorted by its key (unique), looked up by binary search: no
/// index to build (and free) on every rebuild.
#[derive(Debug, Default)]
struct Sorted<T> {
    items: Vec<T>,
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
    /// Where each upstream's entries are, and a hash of them, list by
    /// list: a change is looked for only where an upstream's entries
    /// changed.
    by_upstream: HashMap<UpstreamIx, Share>,
    /// Entries refused for a collision.
    pub collisions: Vec<Collision>,
}

/// One upstream's share of the catalog, by list (in [`KINDS`] order).
#[derive(Debug, Default)]
struct Share {
    /// Its entries' places in each list.
    at: [Vec<usize>; 4],
    /// A hash of its entries (definitions, identities and hidden flags).
    sigs: [u64; 4],
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
        Self::build_with(&mut Prepared::default(), sources, max_len, namespaces)
    }

    /// [`Catalog::build`], taking each upstream list that did not change
    /// since the last build with `prepared` as it was checked and rewritten
    /// then (catalog/prepare.rs): the same catalog, at the cost of the
    /// lists that changed plus the merge.
    pub fn build_with(prepared: &mut Prepared, sources: &[Source<'_>], max_len: usize, namespaces: &[&str]) -> Self {
        prepared.start();
        let mut collisions = Vec::new();
        // Prefixed upstreams first: their names cannot collide with each
        // other, so they always win over an unprefixed upstream. Among the
        // unprefixed, what an upstream answered wins over what the
        // warm-start cache says another once did.
        let unprefixed = |cached: bool| sources.iter().filter(move |s| !s.prefix && s.cached == cached);
        let ordered: Vec<&Source<'_>> =
            sources.iter().filter(|s| s.prefix).chain(unprefixed(false)).chain(unprefixed(true)).collect();
        let entries: Vec<[Arc<[Entry]>; 4]> = ordered
            .iter()
            .map(|src| {
                let mut at = 0..;
                KINDS.map(|kind| prepared.entries(src, kind, at.next().unwrap_or_default(), max_len))
            })
            .collect();
        prepared.finish();
        let squats = |src: &Source<'_>, name: &str| -> Option<String> {
            if src.prefix {
                return None;
            }
            let (ns, _) = name.split_once(SEPARATOR)?;
            (ns == "gateway" || (ns != src.id && namespaces.contains(&ns))).then(|| ns.to_owned())
        };

        let mut candidates: Vec<Candidate<'_>> = Vec::new();
        for (src, lists) in ordered.iter().zip(&entries) {
            for e in lists[0].iter() {
                if !src.filter.exposes(&e.original) {
                    continue;
                }
                if let Some(ns) = squats(src, &e.original) {
                    collisions.push(collide(&e.original, src.id, &ns, "tool"));
                    continue;
                }
                candidates.push(Candidate { src, e });
            }
        }
        let tools: Vec<Tool> = settle(candidates, &mut collisions, "tool")
            .into_iter()
            .map(|Candidate { src, e }| Tool {
                hints: e.hints,
                hidden: src.hidden || src.hidden_tools.iter().any(|h| **h == *e.original),
                quarantined: false,
                cached: src.cached,
                key: e.key.clone(),
                bare: !src.prefix,
                name: e.exposed.clone(),
                upstream: src.upstream,
                original: e.original.clone(),
                mirrored: e.mirrored.clone(),
                def: e.def.clone(),
                hash: e.hash,
                sig: e.sig,
            })
            .collect();
        let tools = Sorted::new(tools, |t| &t.name);

        let mut by_original_uri: HashMap<Arc<str>, Option<usize>> = HashMap::new();
        let merge = |at: usize, collisions: &mut Vec<Collision>| {
            let kind = KINDS[at];
            let (_, what) = prepare::field_of(kind);
            let mut candidates: Vec<Candidate<'_>> = Vec::new();
            for (src, lists) in ordered.iter().zip(&entries) {
                for e in lists[at].iter() {
                    if kind == ListKind::Prompts {
                        if let Some(ns) = squats(src, &e.original) {
                            collisions.push(collide(&e.original, src.id, &ns, what));
                            continue;
                        }
                    } else if !src.prefix
                        && let Some((ns, _)) = split_uri(&e.original)
                        && ns != src.id
                        && namespaces.contains(&ns)
                    {
                        let ns = ns.to_owned();
                        collisions.push(collide(&e.original, src.id, &ns, what));
                        continue;
                    }
                    candidates.push(Candidate { src, e });
                }
            }
            let items: Vec<Item> = settle(candidates, collisions, what)
                .into_iter()
                .map(|Candidate { src, e }| Item {
                    canonical: e.key.clone(),
                    bare: kind == ListKind::Prompts && !src.prefix,
                    key: e.exposed.clone(),
                    upstream: src.upstream,
                    original: e.original.clone(),
                    def: e.def.clone(),
                    hash: e.hash,
                    sig: e.sig,
                })
                .collect();
            Sorted::new(items, |i| &i.key)
        };
        let prompts = merge(1, &mut collisions);
        let resources = merge(2, &mut collisions);
        let templates = merge(3, &mut collisions);
        for (i, r) in resources.items.iter().enumerate() {
            if r.key != *r.original {
                by_original_uri.entry(r.original.clone()).and_modify(|v| *v = None).or_insert(Some(i));
            }
        }
        let by_original_uri = by_original_uri.into_iter().filter_map(|(k, v)| Some((k, v?))).collect();
        let mut c = Catalog {
            tools,
            prompts,
            resources,
            templates,
            by_original_uri,
            fingerprints: [0; 4],
            by_upstream: HashMap::new(),
            collisions,
        };
        c.index();
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
        self.index();
    }

    /// Looks up an exposed tool name.
    pub fn get(&self, name: &str) -> Option<&Tool> {
        self.tools.find(name, |t| &t.name)
    }

    /// Looks up an exposed prompt name.
    pub fn prompt(&self, name: &str) -> Option<&Item> {
        self.prompts.find(name, |i| &i.key)
    }

    /// Looks up a resource by its exposed URI, or by the URI its upstream
    /// gave it when only one upstream lists that URI.
    pub fn resource(&self, uri: &str) -> Option<&Item> {
        self.resources.find(uri, |i| &i.key).or_else(|| Some(&self.resources.items[*self.by_original_uri.get(uri)?]))
    }

    /// Looks up a resource template by its exposed URI template.
    pub fn template(&self, uri_template: &str) -> Option<&Item> {
        self.templates.find(uri_template, |i| &i.key)
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
}

impl<T> Sorted<T> {
    /// `items`, sorted by `key`.
    fn new(mut items: Vec<T>, key: impl Fn(&T) -> &str) -> Self {
        items.sort_unstable_by(|a, b| key(a).cmp(key(b)));
        Sorted { items }
    }

    /// The item whose `key` is `wanted`.
    fn find(&self, wanted: &str, key: impl Fn(&T) -> &str) -> Option<&T> {
        self.items.binary_search_by(|t| key(t).cmp(wanted)).ok().map(|i| &self.items[i])
    }
}

/// An entry on its way into the catalog.
#[derive(Clone, Copy)]
struct Candidate<'s> {
    src: &'s Source<'s>,
    e: &'s Entry,
}

/// Which candidates are exposed: the first for each exposed name, in the
/// order given (prefixed upstreams first); the later ones are collisions.
/// When two different names were shortened to the same one, which one a
/// client means cannot be told: all of them are refused.
fn settle<'s>(candidates: Vec<Candidate<'s>>, collisions: &mut Vec<Collision>, what: &str) -> Vec<Candidate<'s>> {
    // Two full names can share an exposed name only when one of them was
    // shortened (nearly never): only those names are looked at. Each one's
    // first full name, and whether another full name has it too.
    let shortened: std::collections::HashSet<&'s str> =
        candidates.iter().map(|c| c.e).filter(|e| e.exposed != e.full).map(|e| e.exposed.as_str()).collect();
    let mut fulls: HashMap<&'s str, (&'s str, bool)> = HashMap::with_capacity(shortened.len());
    for e in candidates.iter().map(|c| c.e).filter(|e| shortened.contains(e.exposed.as_str())) {
        fulls.entry(&e.exposed).and_modify(|(first, two)| *two |= *first != e.full).or_insert((&e.full, false));
    }
    let mut owner: HashMap<&'s str, &'s str> = HashMap::with_capacity(candidates.len());
    let mut kept = Vec::with_capacity(candidates.len());
    for c in candidates {
        let e: &'s Entry = c.e;
        if e.exposed != e.full && fulls[e.exposed.as_str()].1 {
            tracing::error!(
                upstream = %c.src.id, name = %e.full, shortened = %e.exposed,
                "Two {what} names shorten to the same name; both refused (raise gateway.max_tool_name_length or deny one)."
            );
            collisions.push(Collision { name: e.exposed.clone(), refused: c.src.id.to_owned(), owner: String::new() });
            continue;
        }
        match owner.entry(&e.exposed) {
            MapEntry::Occupied(o) => collisions.push(collide(o.key(), c.src.id, o.get(), what)),
            MapEntry::Vacant(v) => {
                v.insert(c.src.id);
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
