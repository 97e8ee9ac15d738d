//! A JSON object whose members stay raw and in order.

use std::fmt;

use serde::de::{Deserialize, Deserializer, MapAccess, Visitor};
use serde_json::value::RawValue;

/// A JSON object parsed one level deep: keys are decoded, values stay raw,
/// order and duplicates are kept. Used to read or replace the one member the
/// gateway routes on (a tool's `name`) and put everything else back as it
/// came.
#[derive(Debug, Default)]
pub struct RawObject {
    members: Vec<(String, Box<RawValue>)>,
}

// === impl RawObject ===

impl RawObject {
    /// Parses `raw`, which must be a JSON object.
    pub fn parse(raw: &str) -> Result<Self, serde_json::Error> {
        serde_json::from_str(raw)
    }

    /// The raw value of the first member named `key`.
    pub fn get(&self, key: &str) -> Option<&RawValue> {
        self.members.iter().find(|(k, _)| k == key).map(|(_, v)| &**v)
    }

    /// The first member named `key`, decoded as a string.
    pub fn get_str(&self, key: &str) -> Option<String> {
        self.get(key).and_then(|v| serde_json::from_str::<String>(v.get()).ok())
    }

    /// Replaces the first member named `key`, or appends it.
    pub fn set(&mut self, key: &str, value: Box<RawValue>) {
        match self.members.iter_mut().find(|(k, _)| k == key) {
            Some((_, v)) => *v = value,
            None => self.members.push((key.to_owned(), value)),
        }
    }

    /// Replaces (or appends) `key` with a JSON string.
    pub fn set_str(&mut self, key: &str, value: &str) {
        let raw = serde_json::value::to_raw_value(value).expect("a string always serializes");
        self.set(key, raw);
    }

    /// Removes every member named `key`.
    pub fn remove(&mut self, key: &str) {
        self.members.retain(|(k, _)| k != key);
    }

    /// Writes the object back out. Members the gateway did not touch are
    /// copied byte-for-byte.
    pub fn to_raw(&self) -> Box<RawValue> {
        let len = self.members.iter().map(|(k, v)| k.len() + v.get().len() + 4).sum::<usize>();
        let mut out = String::with_capacity(len + 2);
        out.push('{');
        for (i, (k, v)) in self.members.iter().enumerate() {
            if i > 0 {
                out.push(',');
            }
            out.push_str(&serde_json::to_string(k).expect("a string always serializes"));
            out.push(':');
            out.push_str(v.get());
        }
        out.push('}');
        RawValue::from_string(out).expect("members were valid JSON")
    }
}

impl<'de> Deserialize<'de> for RawObject {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = RawObject;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<RawObject, A::Error> {
                let mut members = Vec::with_capacity(map.size_hint().unwrap_or(4));
                while let Some((k, v)) = map.next_entry::<String, Box<RawValue>>()? {
                    members.push((k, v));
                }
                Ok(RawObject { members })
            }
        }
        d.deserialize_map(V)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rename_keeps_everything_else() {
        let src = r#"{"zeta":{"x":[1, 2]},"name":"fs__read","x-unknown":"\u00e9","arguments":{"b":1,"a":2}}"#;
        let mut o = RawObject::parse(src).unwrap();
        assert_eq!(o.get_str("name").unwrap(), "fs__read");
        o.set_str("name", "read");
        assert_eq!(
            o.to_raw().get(),
            r#"{"zeta":{"x":[1, 2]},"name":"read","x-unknown":"\u00e9","arguments":{"b":1,"a":2}}"#
        );
    }

    #[test]
    fn rejects_non_objects() {
        assert!(RawObject::parse("[1]").is_err());
        assert!(RawObject::parse("\"a\"").is_err());
    }
}
