//! The only way to read a member of a message: values that passed the
//! strict scan (docs/design.md D12).
//!
//! [`Checked`] is a borrowed JSON text that passed [`super::scan`] (or is a
//! part of one that did, or was written by the gateway), so every parser
//! reads the same members from it: no name occurs twice in any object, no
//! number is out of range, no surrogate is lone. Outside this module a
//! `Checked` can only be had from a [`super::Message`] (whose parts were
//! scanned when it was parsed), from another `Checked`, or from a
//! [`CheckedBox`] the gateway built from a `serde_json::Value` (which
//! cannot hold any of those). [`Members`] reads one level of a checked
//! object and writes it back with members replaced; untouched members are
//! copied byte for byte (D1).

use std::borrow::Cow;
use std::fmt;

use serde::de::{Deserialize, Deserializer, MapAccess, Visitor};
use serde_json::value::RawValue;

use super::scan::Plan;

/// A borrowed JSON value that every parser reads the same way.
#[derive(Debug, Clone, Copy)]
pub struct Checked<'a>(&'a RawValue);

/// An owned [`Checked`].
#[derive(Debug, Clone)]
pub struct CheckedBox(Box<RawValue>);

/// One level of a checked object: names decoded, values raw, order kept.
/// Names are unique (the scan refused duplicates).
#[derive(Debug, Default)]
pub struct Members<'a> {
    members: Vec<(Cow<'a, str>, Val<'a>)>,
    /// Of a result scanned only in part: the members that were scanned,
    /// the only ones [`Members::get`] gives out (all are written back).
    readable: Option<&'static [(&'static str, Plan<'static>)]>,
}

#[derive(Debug)]
enum Val<'a> {
    Borrowed(&'a RawValue),
    Owned(Box<RawValue>),
}

// === impl Checked ===

impl<'a> Checked<'a> {
    /// Only for text that passed the scan (or is part of one that did).
    pub(super) fn trusted(raw: &'a RawValue) -> Self {
        Checked(raw)
    }

    /// The raw value, to forward or hash as it is.
    pub fn raw(self) -> &'a RawValue {
        self.0
    }

    /// The JSON text.
    pub fn text(self) -> &'a str {
        self.0.get()
    }

    /// One level of it, when it is an object.
    pub fn object(self) -> Option<Members<'a>> {
        if !self.text().starts_with('{') {
            return None;
        }
        serde_json::from_str::<Members<'a>>(self.text()).ok()
    }

    /// Its member `key` (parses one level; use [`Checked::object`] to read
    /// several).
    pub fn get(self, key: &str) -> Option<Checked<'a>> {
        let members = self.object()?;
        members.members.into_iter().find(|(k, _)| k == key).and_then(|(_, v)| match v {
            Val::Borrowed(raw) => Some(Checked(raw)),
            Val::Owned(_) => None,
        })
    }

    /// The string it is, decoded (borrowed when it has no escapes).
    pub fn str(self) -> Option<Cow<'a, str>> {
        let text = self.text();
        let inner = text.strip_prefix('"')?.strip_suffix('"')?;
        if !inner.contains('\\') {
            return Some(Cow::Borrowed(inner));
        }
        serde_json::from_str::<String>(text).ok().map(Cow::Owned)
    }

    /// Whether it is `null`.
    pub fn is_null(self) -> bool {
        self.text() == "null"
    }

    /// Whether it is `true`.
    pub fn is_true(self) -> bool {
        self.text() == "true"
    }

    /// Its items, when it is an array.
    pub fn items(self) -> Option<Vec<Checked<'a>>> {
        if !self.text().starts_with('[') {
            return None;
        }
        let items: Vec<&'a RawValue> = serde_json::from_str(self.text()).ok()?;
        Some(items.into_iter().map(Checked).collect())
    }

    /// The whole value, parsed. Every parser agrees on it: no duplicate
    /// names (serde_json's last-wins never has to choose) and no number
    /// it cannot represent.
    pub fn value(self) -> Option<serde_json::Value> {
        serde_json::from_str(self.text()).ok()
    }

    /// An owned copy.
    pub fn to_box(self) -> CheckedBox {
        CheckedBox(self.0.to_owned())
    }
}

impl fmt::Display for Checked<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.text())
    }
}

// === impl CheckedBox ===

impl CheckedBox {
    /// JSON text, scanned in full: `None` when it is not JSON or parsers
    /// would read it differently.
    pub fn parse(text: &str, limits: &super::Limits) -> Option<Self> {
        super::scan::scan(text, limits).ok()?;
        RawValue::from_string(text.to_owned()).ok().map(CheckedBox)
    }

    /// A value the gateway built. A `serde_json::Value` cannot hold a
    /// duplicate name, a non-finite number or a lone surrogate.
    pub fn from_value(value: &serde_json::Value) -> Self {
        CheckedBox(serde_json::value::to_raw_value(value).expect("a Value always serializes"))
    }

    /// A JSON string.
    pub fn string(s: &str) -> Self {
        CheckedBox(serde_json::value::to_raw_value(s).expect("a string always serializes"))
    }

    /// The view to read it through.
    pub fn checked(&self) -> Checked<'_> {
        Checked(&self.0)
    }

    /// The raw value, to forward as it is.
    pub fn raw(&self) -> &RawValue {
        &self.0
    }

    /// The raw value, owned.
    pub fn into_raw(self) -> Box<RawValue> {
        self.0
    }

    /// The JSON text.
    pub fn text(&self) -> &str {
        self.0.get()
    }
}

// === impl Members ===

impl<'a> Members<'a> {
    /// An empty object, to build on.
    pub fn new() -> Self {
        Members::default()
    }

    /// Only the `readable` members of a partly scanned object can be read.
    pub(super) fn partly(mut self, readable: &'static [(&'static str, Plan<'static>)]) -> Self {
        self.readable = Some(readable);
        self
    }

    /// The member `key` (of a partly scanned result: when it is one of
    /// those scanned).
    pub fn get(&self, key: &str) -> Option<Checked<'_>> {
        if self.readable.is_some_and(|r| !r.iter().any(|(n, _)| *n == key)) {
            return None;
        }
        self.members.iter().find(|(k, _)| k == key).map(|(_, v)| match v {
            Val::Borrowed(raw) => Checked(raw),
            Val::Owned(raw) => Checked(raw),
        })
    }

    /// The member `key`, when it is a string, decoded.
    pub fn str(&self, key: &str) -> Option<String> {
        self.get(key)?.str().map(Cow::into_owned)
    }

    /// Whether it has a member `key`.
    pub fn contains(&self, key: &str) -> bool {
        self.members.iter().any(|(k, _)| k == key)
    }

    /// Member names, in order.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.members.iter().map(|(k, _)| &**k)
    }

    /// Replaces `key` (or appends it) with a checked value.
    pub fn set(&mut self, key: &str, value: CheckedBox) {
        self.put(key, Val::Owned(value.0));
    }

    /// Replaces `key` (or appends it) with a JSON string.
    pub fn set_str(&mut self, key: &str, value: &str) {
        self.set(key, CheckedBox::string(value));
    }

    /// Removes `key`.
    pub fn remove(&mut self, key: &str) {
        self.members.retain(|(k, _)| k != key);
    }

    fn put(&mut self, key: &str, value: Val<'a>) {
        match self.members.iter_mut().find(|(k, _)| k == key) {
            Some((_, v)) => *v = value,
            None => self.members.push((Cow::Owned(key.to_owned()), value)),
        }
    }

    /// Writes the object out: untouched members byte for byte. Not for a
    /// result scanned only in part (its other members were not checked):
    /// write that with [`Members::to_raw`].
    pub fn to_checked(&self) -> CheckedBox {
        debug_assert!(self.readable.is_none(), "a partly scanned object is not checked");
        CheckedBox(self.write())
    }

    fn write(&self) -> Box<RawValue> {
        let raw = |v: &Val<'_>| -> usize {
            match v {
                Val::Borrowed(r) => r.get().len(),
                Val::Owned(r) => r.get().len(),
            }
        };
        let len = self.members.iter().map(|(k, v)| k.len() + raw(v) + 4).sum::<usize>();
        let mut out = String::with_capacity(len + 2);
        out.push('{');
        for (i, (k, v)) in self.members.iter().enumerate() {
            if i > 0 {
                out.push(',');
            }
            out.push_str(&serde_json::to_string(k).expect("a string always serializes"));
            out.push(':');
            out.push_str(match v {
                Val::Borrowed(r) => r.get(),
                Val::Owned(r) => r.get(),
            });
        }
        out.push('}');
        RawValue::from_string(out).expect("members were valid JSON")
    }

    /// The object written out, raw (also for a partly scanned one).
    pub fn to_raw(&self) -> Box<RawValue> {
        self.write()
    }
}

/// A member name, borrowed from the text when it has no escapes.
struct Name<'a>(Cow<'a, str>);

impl<'de> Deserialize<'de> for Name<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Name<'de>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a member name")
            }
            fn visit_borrowed_str<E>(self, s: &'de str) -> Result<Name<'de>, E> {
                Ok(Name(Cow::Borrowed(s)))
            }
            fn visit_str<E>(self, s: &str) -> Result<Name<'de>, E> {
                Ok(Name(Cow::Owned(s.to_owned())))
            }
            fn visit_string<E>(self, s: String) -> Result<Name<'de>, E> {
                Ok(Name(Cow::Owned(s)))
            }
        }
        d.deserialize_str(V)
    }
}

impl<'de> Deserialize<'de> for Members<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Members<'de>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Members<'de>, A::Error> {
                let mut members = Vec::with_capacity(map.size_hint().unwrap_or(4));
                while let Some((Name(k), v)) = map.next_entry::<Name<'de>, &'de RawValue>()? {
                    members.push((k, Val::Borrowed(v)));
                }
                Ok(Members { members, readable: None })
            }
        }
        d.deserialize_map(V)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn checked(text: &str) -> CheckedBox {
        CheckedBox::parse(text, &crate::protocol::Limits::default()).unwrap()
    }

    #[test]
    fn rename_keeps_everything_else() {
        let src = checked(r#"{"zeta":{"x":[1, 2]},"name":"fs__read","x-unknown":"\u00e9","arguments":{"b":1,"a":2}}"#);
        let mut o = src.checked().object().unwrap();
        assert_eq!(o.str("name").unwrap(), "fs__read");
        o.set_str("name", "read");
        assert_eq!(
            o.to_raw().get(),
            r#"{"zeta":{"x":[1, 2]},"name":"read","x-unknown":"\u00e9","arguments":{"b":1,"a":2}}"#
        );
    }

    #[test]
    fn reads_strings_items_and_members() {
        let v = checked(r#"{"a":"pl\u0061in","b":["x",{"c":null}],"n\u0061me":"q"}"#);
        let c = v.checked();
        assert_eq!(c.get("a").unwrap().str().unwrap(), "plain");
        assert_eq!(c.get("name").unwrap().str().unwrap(), "q", "names are decoded");
        let items = c.get("b").unwrap().items().unwrap();
        assert_eq!(items[0].str().unwrap(), "x");
        assert!(items[1].get("c").unwrap().is_null());
        assert!(c.get("b").unwrap().str().is_none() && c.get("zz").is_none());
        assert!(checked("[1]").checked().object().is_none() && checked("\"a\"").checked().object().is_none());
    }
}
