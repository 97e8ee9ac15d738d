//! What a caller sees of the catalog: pages of a list, and hashes of what a
//! list shows, to tell whom a change concerns.
//!
//! A list's fingerprint is the sum (wrapping) of a hash of each definition
//! it shows: a hash of the set, which is the list, as every list is sorted
//! by a key no two entries share. A sum can be taken over a part of the
//! list, and two catalogs differ only in the entries of the upstreams whose
//! own entries differ: what a caller sees changed exactly when the sum over
//! those upstreams' entries it sees changed ([`Catalog::changed_upstreams`],
//! [`Catalog::visible_fingerprint_in`]), which costs the entries of the
//! upstreams that changed, not the whole list.

use std::collections::HashMap;

use serde_json::value::RawValue;

use super::{Catalog, InvalidCursor, KINDS, Share, UpstreamIx, decode_cursor, encode_cursor};
use crate::protocol::encode;
use crate::security::Ident;
use crate::upstream::ListKind;

/// One page of a list: the definitions on it, as the catalog holds them
/// (each checked when its upstream's list was admitted, and rewritten by
/// the gateway's own writer), for [`encode::list_result`] to write out in
/// one piece.
#[derive(Debug)]
pub struct Page<'a> {
    /// The definitions, in order.
    pub entries: Vec<&'a RawValue>,
    /// The cursor of the next page, when more follow.
    pub next_cursor: Option<String>,
}

/// A hash of an upstream's share of a list that changes with its hidden
/// flag as well.
fn mark(sig: u64, hidden: bool) -> u64 {
    if hidden { sig.rotate_left(29) ^ 0x9e37_79b9_7f4a_7c15 } else { sig }
}

// === impl Catalog ===

impl Catalog {
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
        let page = self.select(kind, cursor, size, visible)?;
        Ok(encode::list(kind.key(), &page.entries, page.next_cursor.as_deref()))
    }

    /// The entries of [`Catalog::page_visible`], unwritten.
    pub fn select(
        &self,
        kind: ListKind,
        cursor: Option<&str>,
        size: usize,
        visible: &dyn Fn(Ident<'_>) -> bool,
    ) -> Result<Page<'_>, InvalidCursor> {
        let after = cursor.map(|c| decode_cursor(kind, c)).transpose()?;
        let after = after.as_deref();
        // Every list is sorted by its key: the page starts past the cursor.
        let defs: Box<dyn Iterator<Item = (&str, &RawValue)>> = match kind {
            ListKind::Tools => {
                let tools = &self.tools.items;
                let from = after.map_or(0, |a| tools.partition_point(|t| *t.name <= *a));
                Box::new(
                    tools[from..].iter().filter(|t| !t.hidden && visible(t.ident())).map(|t| (&*t.name, t.def.raw())),
                )
            }
            _ => {
                let items = self.items(kind);
                let from = after.map_or(0, |a| items.partition_point(|i| *i.key <= *a));
                Box::new(items[from..].iter().filter(|i| visible(i.ident())).map(|i| (&*i.key, i.def.raw())))
            }
        };
        let size = if size == 0 { usize::MAX } else { size };
        let mut entries = Vec::new();
        let mut last = None;
        let mut more = false;
        for (n, (key, def)) in defs.enumerate() {
            if n == size {
                more = true;
                break;
            }
            entries.push(def);
            last = Some(key);
        }
        let next_cursor = match (more, last) {
            (true, Some(last)) => Some(encode_cursor(kind, last)),
            _ => None,
        };
        Ok(Page { entries, next_cursor })
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

    /// A hash of what a list shows to a caller who sees what `visible`
    /// accepts: whether its `list_changed` concerns that caller.
    pub fn visible_fingerprint(&self, kind: ListKind, visible: &dyn Fn(Ident<'_>) -> bool) -> u64 {
        match kind {
            ListKind::Tools => self
                .tools
                .items
                .iter()
                .filter(|t| !t.hidden && visible(t.ident()))
                .fold(0, |h: u64, t| h.wrapping_add(t.hash)),
            _ => self.items(kind).iter().filter(|i| visible(i.ident())).fold(0, |h: u64, i| h.wrapping_add(i.hash)),
        }
    }

    /// [`Catalog::visible_fingerprint`] of the entries of `upstreams` only.
    pub fn visible_fingerprint_in(
        &self,
        kind: ListKind,
        upstreams: &[UpstreamIx],
        visible: &dyn Fn(Ident<'_>) -> bool,
    ) -> u64 {
        let at = at_of(kind);
        let places = upstreams.iter().filter_map(|u| self.by_upstream.get(u)).flat_map(|s| s.at[at].iter());
        match kind {
            ListKind::Tools => places
                .map(|&i| &self.tools.items[i])
                .filter(|t| !t.hidden && visible(t.ident()))
                .fold(0, |h: u64, t| h.wrapping_add(t.hash)),
            _ => {
                let items = self.items(kind);
                places.map(|&i| &items[i]).filter(|i| visible(i.ident())).fold(0, |h: u64, i| h.wrapping_add(i.hash))
            }
        }
    }

    /// The upstreams whose entries of `kind` differ from `before`'s (a
    /// definition, a name, what policy knows an entry by, or whether it is
    /// hidden): every other upstream shows every caller the same as before.
    pub fn changed_upstreams(&self, before: &Catalog, kind: ListKind) -> Vec<UpstreamIx> {
        let at = at_of(kind);
        let share = |c: &Catalog, u: &UpstreamIx| c.by_upstream.get(u).map_or((0, 0), |s| (s.sigs[at], s.at[at].len()));
        let mut out: Vec<UpstreamIx> = self
            .by_upstream
            .keys()
            .chain(before.by_upstream.keys().filter(|u| !self.by_upstream.contains_key(u)))
            .filter(|u| share(self, u) != share(before, u))
            .copied()
            .collect();
        out.sort_unstable();
        out
    }

    /// Whether upstream `i` has anything `visible` accepts in this catalog.
    pub fn shows_upstream(&self, i: UpstreamIx, visible: &dyn Fn(ListKind, Ident<'_>) -> bool) -> bool {
        let Some(share) = self.by_upstream.get(&i) else { return false };
        share.at[0].iter().any(|&t| visible(ListKind::Tools, self.tools.items[t].ident()))
            || KINDS[1..]
                .iter()
                .zip(&share.at[1..])
                .any(|(&k, at)| at.iter().any(|&n| visible(k, self.items(k)[n].ident())))
    }

    /// Finds every upstream's share of each list and the lists'
    /// fingerprints (after a build, and again after hidden flags change).
    pub(super) fn index(&mut self) {
        let mut by_upstream: HashMap<UpstreamIx, Share> = HashMap::new();
        let mut fingerprints = [0u64; 4];
        let mut add = |at: usize, i: usize, u: UpstreamIx, hash: u64, sig: u64, hidden: bool| {
            let share = by_upstream.entry(u).or_default();
            share.at[at].push(i);
            share.sigs[at] = share.sigs[at].wrapping_add(mark(sig, hidden));
            if !hidden {
                fingerprints[at] = fingerprints[at].wrapping_add(hash);
            }
        };
        for (i, t) in self.tools.items.iter().enumerate() {
            add(0, i, t.upstream, t.hash, t.sig, t.hidden);
        }
        for (at, &kind) in KINDS.iter().enumerate().skip(1) {
            for (i, it) in self.items(kind).iter().enumerate() {
                add(at, i, it.upstream, it.hash, it.sig, false);
            }
        }
        self.by_upstream = by_upstream;
        self.fingerprints = fingerprints;
    }
}

/// The place of `kind` in [`KINDS`].
fn at_of(kind: ListKind) -> usize {
    KINDS.iter().position(|k| *k == kind).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::super::Source;
    use super::*;
    use crate::config::ToolMatcher;
    use crate::protocol::CheckedBox;
    use crate::upstream::Lists;

    fn tools(defs: &[&str]) -> Lists {
        let checked = |t: &&str| CheckedBox::parse(t, &crate::protocol::Limits::default()).unwrap();
        Lists { tools: defs.iter().map(checked).collect::<Arc<[_]>>(), ..Lists::default() }
    }

    /// a (prefixed), b and c (unprefixed), with b's breaker open when
    /// `hidden`.
    fn build(a: &Lists, b: &Lists, c: &Lists, hidden: bool) -> Catalog {
        let all = ToolMatcher::all();
        let src = |i: usize, id, prefix, lists| Source {
            upstream: UpstreamIx::new(i),
            id,
            prefix,
            filter: &all,
            lists,
            hidden: hidden && i == 1,
            hidden_tools: &[],
            cached: false,
        };
        Catalog::build(&[src(0, "a", true, a), src(1, "b", false, b), src(2, "c", false, c)], 128, &["a", "b", "c"])
    }

    #[test]
    fn the_upstreams_that_changed_tell_every_caller_what_the_whole_list_tells() {
        let echo = r#"{"name":"echo"}"#;
        let (a, a2) = (tools(&[echo, r#"{"name":"x"}"#]), tools(&[echo, r#"{"name":"x","description":"new"}"#]));
        let (b, b_none) = (tools(&[echo, r#"{"name":"y"}"#]), tools(&[r#"{"name":"y"}"#]));
        let c = tools(&[echo]);
        let before = build(&a, &b, &c, false);
        let ix = |i: &[usize]| i.iter().map(|&i| UpstreamIx::new(i)).collect::<Vec<_>>();
        // (after, the upstreams whose entries changed)
        let cases = [
            (build(&a, &b, &c, false), ix(&[])),
            (build(&a2, &b, &c, false), ix(&[0])),
            // b no longer lists `echo`: c's, the same text, is exposed.
            (build(&a, &b_none, &c, false), ix(&[1, 2])),
            (build(&a, &b, &c, true), ix(&[1])),
        ];
        let views: [&dyn Fn(Ident<'_>) -> bool; 5] =
            [&|_| true, &|i| i.key.starts_with("a__"), &|i| i.key == "b__echo", &|i| i.key.starts_with("c__"), &|i| {
                i.bare.is_some()
            }];
        for (n, (after, changed)) in cases.iter().enumerate() {
            assert_eq!(after.changed_upstreams(&before, ListKind::Tools), *changed, "case {n}");
            assert!(after.changed_upstreams(&before, ListKind::Prompts).is_empty(), "case {n}");
            for (v, visible) in views.iter().enumerate() {
                let whole = before.visible_fingerprint(ListKind::Tools, visible)
                    != after.visible_fingerprint(ListKind::Tools, visible);
                let part = before.visible_fingerprint_in(ListKind::Tools, changed, visible)
                    != after.visible_fingerprint_in(ListKind::Tools, changed, visible);
                assert_eq!(whole, part, "case {n}, view {v}");
            }
        }
        let seen = |c: &Catalog, v: usize| c.visible_fingerprint(ListKind::Tools, views[v]);
        assert_eq!(seen(&before, 0), seen(&cases[2].0, 0), "the same text from another upstream: the same list");
        assert_ne!(seen(&before, 2), seen(&cases[2].0, 2), "b__echo went");
        assert_ne!(seen(&before, 0), seen(&cases[3].0, 0), "b's tools are hidden");
        assert_eq!(seen(&before, 1), seen(&cases[3].0, 1), "a's are not");
        assert_eq!(cases[1].0.changed_lists(&before), [ListKind::Tools]);
        assert!(cases[0].0.changed_lists(&before).is_empty());
    }

    #[test]
    fn a_page_starts_past_its_cursor_and_is_written_as_the_catalog_holds_it() {
        let defs: Vec<String> = (0..5).map(|i| format!(r#"{{"name":"t{i}","d":"\u00e9\"{i}"}}"#)).collect();
        let l = tools(&defs.iter().map(String::as_str).collect::<Vec<_>>());
        let c = build(&l, &Lists::default(), &Lists::default(), false);
        let first = c.select(ListKind::Tools, None, 2, &|_| true).unwrap();
        assert_eq!(first.entries.len(), 2);
        let rest = c.select(ListKind::Tools, first.next_cursor.as_deref(), 0, &|i| i.key != "a__t3").unwrap();
        assert_eq!(rest.entries.len(), 2, "t2 and t4");
        assert!(rest.entries[0].get().contains("a__t2") && rest.entries[1].get().contains("a__t4"));
        assert!(rest.next_cursor.is_none());
        let page: serde_json::Value = serde_json::from_str(&c.page(ListKind::Tools, None, 2).unwrap()).unwrap();
        assert_eq!(page["tools"][1]["d"], "\u{e9}\"1");
        assert_eq!(page["nextCursor"].as_str(), first.next_cursor.as_deref());
    }
}
