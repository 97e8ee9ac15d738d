//! The one-view property (design.md D12), shared by the seeded
//! differential test in `one_view.rs` and the `cargo fuzz` target
//! `fuzz/fuzz_targets/one_view.rs` (which includes this file by path).
//!
//! For any bytes: either `Message::parse` refuses them, or every parser
//! reads the same message — one that keeps the first copy of a member and
//! one that keeps the last (serde_json's `Value`) build the same tree, every
//! number is a finite `f64` and every string decodes (no lone surrogate),
//! nesting stays within the limit — and every member the gateway routes on,
//! read through its `Checked` view, equals what `Value` reads.

use std::fmt;

use mcp_gateway::protocol::{Checked, Limits, Message};
use serde::de::{Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_json::Value;

/// The members the gateway routes, authorizes, audits or retries on,
/// as paths under `params`.
pub(crate) const ROUTED: &[&[&str]] = &[
    &["name"],
    &["arguments"],
    &["uri"],
    &["taskId"],
    &["cursor"],
    &["level"],
    &["requestId"],
    &["protocolVersion"],
    &["capabilities"],
    &["ref", "type"],
    &["ref", "name"],
    &["ref", "uri"],
    &["_meta", "progressToken"],
    &["_meta", "traceparent"],
    &["arguments", "path"],
    &["arguments", "paths"],
];

/// Checks the property for `data`; says what broke it.
pub(crate) fn one_view(data: &[u8], limits: &Limits) -> Result<(), String> {
    let Ok(msg) = Message::parse(data, limits) else { return Ok(()) };
    let text = std::str::from_utf8(data).map_err(|e| format!("accepted non-UTF-8: {e}"))?;
    let last: Value =
        serde_json::from_str(text).map_err(|e| format!("accepted, but serde_json cannot read it: {e}"))?;
    let first = serde_json::from_str::<FirstWins>(text).map_err(|e| format!("accepted, first-wins fails: {e}"))?.0;
    if first != last {
        return Err("accepted, but first-wins and last-wins parsers read different messages".into());
    }
    if let Some(pair) = case_variants(&last) {
        return Err(format!("accepted names that differ only in letter case: {pair:?}"));
    }
    let depth = depth(&last);
    if depth > limits.max_depth {
        return Err(format!("accepted nesting {depth} deep (limit {})", limits.max_depth));
    }
    if Some(msg.method()) != last.get("method").and_then(Value::as_str).or(Some("")) {
        return Err("the method differs".into());
    }
    let id = msg.id.as_deref().map(|i| serde_json::from_str::<Value>(i.get()).unwrap());
    if id.as_ref() != last.get("id") {
        return Err("the id differs".into());
    }
    let Some(params) = msg.params() else { return Ok(()) };
    if params.value().as_ref() != last.get("params") {
        return Err("params differ".into());
    }
    for path in ROUTED {
        let ours = walk(params, path).map(|c| c.value().expect("checked text parses"));
        let theirs = path.iter().try_fold(&last["params"], |v, k| v.get(k));
        if ours.as_ref() != theirs {
            return Err(format!("params.{} differs: gateway {ours:?}, serde_json {theirs:?}", path.join(".")));
        }
    }
    Ok(())
}

/// A member through the gateway's view.
fn walk<'a>(at: Checked<'a>, path: &[&str]) -> Option<Checked<'a>> {
    path.iter().try_fold(at, |c, k| c.get(k))
}

/// Two names of one object that a case-insensitive parser (Go's
/// `encoding/json`) would take for one, anywhere in `v`.
fn case_variants(v: &Value) -> Option<(String, String)> {
    let fold = |k: &str| -> String {
        k.chars()
            .map(|c| match c {
                '\u{17f}' => 's',
                '\u{212a}' => 'k',
                c => c.to_lowercase().next().filter(|_| c.to_lowercase().count() == 1).unwrap_or(c),
            })
            .collect()
    };
    match v {
        Value::Object(o) => {
            let keys: Vec<&String> = o.keys().collect();
            for (i, a) in keys.iter().enumerate() {
                if let Some(b) = keys[i + 1..].iter().find(|b| fold(b) == fold(a)) {
                    return Some(((*a).clone(), (*b).clone()));
                }
            }
            o.values().find_map(case_variants)
        }
        Value::Array(a) => a.iter().find_map(case_variants),
        _ => None,
    }
}

fn depth(v: &Value) -> usize {
    match v {
        Value::Array(a) => 1 + a.iter().map(depth).max().unwrap_or(0),
        Value::Object(o) => 1 + o.values().map(depth).max().unwrap_or(0),
        _ => 0,
    }
}

/// A `Value` built keeping the first copy of a repeated member (serde's
/// one-level reads did; `Value` keeps the last).
struct FirstWins(Value);

impl<'de> Deserialize<'de> for FirstWins {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = FirstWins;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("JSON")
            }
            fn visit_bool<E>(self, b: bool) -> Result<FirstWins, E> {
                Ok(FirstWins(Value::Bool(b)))
            }
            fn visit_i64<E>(self, n: i64) -> Result<FirstWins, E> {
                Ok(FirstWins(n.into()))
            }
            fn visit_u64<E>(self, n: u64) -> Result<FirstWins, E> {
                Ok(FirstWins(n.into()))
            }
            fn visit_f64<E: serde::de::Error>(self, n: f64) -> Result<FirstWins, E> {
                serde_json::Number::from_f64(n).map(|n| FirstWins(Value::Number(n))).ok_or_else(|| E::custom("NaN"))
            }
            fn visit_str<E>(self, s: &str) -> Result<FirstWins, E> {
                Ok(FirstWins(Value::String(s.to_owned())))
            }
            fn visit_unit<E>(self) -> Result<FirstWins, E> {
                Ok(FirstWins(Value::Null))
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<FirstWins, A::Error> {
                let mut out = Vec::new();
                while let Some(FirstWins(v)) = seq.next_element()? {
                    out.push(v);
                }
                Ok(FirstWins(Value::Array(out)))
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<FirstWins, A::Error> {
                let mut out = serde_json::Map::new();
                while let Some((k, FirstWins(v))) = map.next_entry::<String, FirstWins>()? {
                    out.entry(k).or_insert(v);
                }
                Ok(FirstWins(Value::Object(out)))
            }
        }
        d.deserialize_any(V)
    }
}
