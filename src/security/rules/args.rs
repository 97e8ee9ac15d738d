//! Argument predicates of a step, over the call's raw `arguments`, which
//! are parsed at most once per call and only when a predicate is reached.

use std::borrow::Cow;
use std::fmt;

use globset::GlobMatcher;
use serde::Deserialize;
use serde::de::{self, Deserializer, MapAccess, Visitor};
use serde_json::Value;
use serde_json::value::RawValue;

/// The tests on one top-level argument; all must hold.
#[derive(Debug)]
pub(super) struct ArgPred {
    key: Box<str>,
    tests: Vec<Test>,
}

/// One test on an argument's value. The string tests take a string, or an
/// array in which any string element passes (`not_prefix`: none has the
/// prefix); any other value, or a missing key, fails them.
#[derive(Debug)]
pub(super) enum Test {
    Equals(Value),
    Prefix(Box<str>),
    NotPrefix(Box<str>),
    Contains(Box<str>),
    Glob(GlobMatcher),
    Exists(bool),
}

/// The call's arguments, parsed on first use: one level, values raw.
/// `None` inside: not a JSON object, so no argument predicate holds.
#[derive(Debug)]
pub(super) struct LazyArgs<'a> {
    raw: Option<&'a RawValue>,
    parsed: Option<Option<Entries<'a>>>,
}

type Entries<'a> = Vec<(Cow<'a, str>, &'a RawValue)>;

/// A top-level object read one level deep, keys borrowed when unescaped.
struct TopLevel<'a>(Entries<'a>);

/// An object key, borrowed from the input unless it has escapes.
struct Key<'a>(Cow<'a, str>);

// === impl ArgPred ===

impl ArgPred {
    pub(super) fn new(key: &str, tests: Vec<Test>) -> Self {
        ArgPred { key: key.into(), tests }
    }

    fn holds(&self, entries: &[(Cow<'_, str>, &RawValue)]) -> bool {
        // A repeated key: the last one counts, as in serde_json's Value.
        let value = entries.iter().rev().find(|(k, _)| *k == *self.key).map(|(_, v)| *v);
        self.tests.iter().all(|t| t.holds(value))
    }
}

/// Whether every predicate holds; parses the arguments if not done yet.
pub(super) fn all_hold(preds: &[ArgPred], args: &mut LazyArgs<'_>) -> bool {
    let Some(entries) = args.get() else { return false };
    preds.iter().all(|p| p.holds(entries))
}

// === impl Test ===

impl Test {
    fn holds(&self, value: Option<&RawValue>) -> bool {
        let Some(raw) = value else { return matches!(self, Test::Exists(false)) };
        match self {
            Test::Exists(want) => *want,
            Test::Equals(Value::String(s)) => json_str(raw).is_some_and(|v| v == s.as_str()),
            Test::Equals(expected) => serde_json::from_str::<Value>(raw.get()).is_ok_and(|v| v == *expected),
            Test::Prefix(p) => any_str(raw, |s| s.starts_with(&**p)),
            Test::NotPrefix(p) => stringish(raw) && !any_str(raw, |s| s.starts_with(&**p)),
            Test::Contains(p) => any_str(raw, |s| s.contains(&**p)),
            Test::Glob(g) => any_str(raw, |s| g.is_match(s)),
        }
    }
}

fn stringish(raw: &RawValue) -> bool {
    matches!(raw.get().trim_start().as_bytes().first(), Some(b'"' | b'['))
}

/// Whether `raw` is a string passing `pred`, or an array with such a string.
fn any_str(raw: &RawValue, pred: impl Fn(&str) -> bool) -> bool {
    match raw.get().trim_start().as_bytes().first() {
        Some(b'"') => json_str(raw).is_some_and(|s| pred(&s)),
        Some(b'[') => serde_json::from_str::<Vec<&RawValue>>(raw.get())
            .is_ok_and(|items| items.iter().any(|i| json_str(i).is_some_and(|s| pred(&s)))),
        _ => false,
    }
}

/// A JSON string's value, borrowed when it has no escapes.
fn json_str(raw: &RawValue) -> Option<Cow<'_, str>> {
    let text = raw.get();
    if !text.trim_start().starts_with('"') {
        return None;
    }
    match serde_json::from_str::<&str>(text) {
        Ok(s) => Some(Cow::Borrowed(s)),
        Err(_) => serde_json::from_str::<String>(text).ok().map(Cow::Owned),
    }
}

// === impl LazyArgs ===

impl<'a> LazyArgs<'a> {
    pub(super) fn new(raw: Option<&'a RawValue>) -> Self {
        LazyArgs { raw, parsed: None }
    }

    fn get(&mut self) -> Option<&[(Cow<'a, str>, &'a RawValue)]> {
        let raw = self.raw;
        self.parsed.get_or_insert_with(|| parse(raw)).as_deref()
    }
}

// Counts parses, so tests can tell that arguments are parsed lazily and once.
#[cfg(test)]
thread_local! {
    pub(super) static PARSES: std::cell::Cell<u32> = const { std::cell::Cell::new(0) };
}

fn parse(raw: Option<&RawValue>) -> Option<Entries<'_>> {
    let Some(raw) = raw else { return Some(Vec::new()) };
    #[cfg(test)]
    PARSES.with(|p| p.set(p.get() + 1));
    match serde_json::from_str::<TopLevel<'_>>(raw.get()) {
        Ok(top) => Some(top.0),
        // `"arguments": null` is the same as none.
        Err(_) if raw.get().trim() == "null" => Some(Vec::new()),
        Err(_) => None,
    }
}

impl<'de> Deserialize<'de> for TopLevel<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Object;
        impl<'de> Visitor<'de> for Object {
            type Value = TopLevel<'de>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
                let mut entries = Vec::with_capacity(map.size_hint().unwrap_or(4));
                while let Some(Key(k)) = map.next_key::<Key<'de>>()? {
                    let v: &'de RawValue = map.next_value()?;
                    entries.push((k, v));
                }
                Ok(TopLevel(entries))
            }
        }
        d.deserialize_map(Object)
    }
}

impl<'de> Deserialize<'de> for Key<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Str;
        impl<'de> Visitor<'de> for Str {
            type Value = Key<'de>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a string")
            }
            fn visit_borrowed_str<E: de::Error>(self, s: &'de str) -> Result<Self::Value, E> {
                Ok(Key(Cow::Borrowed(s)))
            }
            fn visit_str<E: de::Error>(self, s: &str) -> Result<Self::Value, E> {
                Ok(Key(Cow::Owned(s.to_owned())))
            }
            fn visit_string<E: de::Error>(self, s: String) -> Result<Self::Value, E> {
                Ok(Key(Cow::Owned(s)))
            }
        }
        d.deserialize_str(Str)
    }
}
