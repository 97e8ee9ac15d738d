//! `[limits]`: token-bucket rate limits per principal and per tool, and
//! caps on result size per tool.
//!
//! Buckets live in process (docs/design.md D10 moves them to Redis when
//! replicas share them). Their table is bounded: past [`MAX_BUCKETS`] the
//! full (idle) buckets are forgotten, which loses nothing, since a full
//! bucket is what a new one starts as.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use globset::{Glob, GlobMatcher};
use serde_json::Value;
use tokio::time::Instant;

use super::Ident;
use crate::config::{LimitsSection, OversizeAction, RateSection, ResultCap};
use crate::protocol::{CheckedBox, Limits as JsonLimits};
use crate::sync::Locked;

/// FNV-1a: the same on every replica and every build (std's hasher is
/// seeded per process).
fn stable_hash(text: &str) -> u64 {
    text.bytes().fold(0xcbf2_9ce4_8422_2325, |h, b| (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3))
}

/// A bucket's name in the shared state: its rule (glob, or `principal`)
/// and rate, so a changed rate is another bucket.
fn shared_id(what: &str, rate: Rate) -> u64 {
    stable_hash(&format!("{what}\0{}\0{}", rate.per_second, rate.burst))
}

/// Most buckets kept (principal × rule).
pub const MAX_BUCKETS: usize = 100_000;

/// The compiled `[limits]`.
#[derive(Debug, Default)]
pub struct Limits {
    per_principal: Option<Rate>,
    tools: Vec<(GlobMatcher, Rate)>,
    /// Longest glob first: the most specific cap wins.
    results: Vec<(GlobMatcher, ResultCap)>,
    buckets: Mutex<HashMap<(Arc<str>, usize), Bucket>>,
    /// Each bucket's name in the shared state ([`Applying::id`]), made
    /// once: the principal's, then one per entry of `tools`.
    principal_id: u64,
    tool_ids: Vec<u64>,
}

#[derive(Debug, Clone, Copy, PartialEq)]
struct Rate {
    per_second: f64,
    burst: f64,
}

#[derive(Debug, Clone, Copy)]
struct Bucket {
    tokens: f64,
    at: Instant,
}

/// A call over a rate limit.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("rate limit reached ({what}: {rate} calls per second); retry in {:.1}s", retry_after.as_secs_f64())]
pub struct Limited {
    /// `principal`, or the tool glob.
    pub what: String,
    /// Its rate.
    pub rate: f64,
    /// When a token will be there.
    pub retry_after: Duration,
}

/// A bucket a call takes a token from, as replicas sharing buckets name it
/// (`crate::shared`): the same `[limits]` rule gives the same id on every
/// replica, and a changed rate another id (a fresh bucket).
#[derive(Debug, Clone, PartialEq)]
pub struct Applying {
    /// A hash of the rule (its glob, or `principal`, and its rate).
    pub id: u64,
    /// Tokens added per second.
    pub per_second: f64,
    /// Bucket size.
    pub burst: f64,
    /// `principal`, or the tool glob.
    pub what: String,
}

/// Which bucket of a principal: the principal's own, or a tool rule's.
const PRINCIPAL_BUCKET: usize = usize::MAX;

// === impl Limits ===

impl Limits {
    /// Compiles `[limits]` (already checked by the config loader).
    pub fn new(l: &LimitsSection) -> Self {
        let glob = |g: &str| Glob::new(g).ok().map(|g| g.compile_matcher());
        let mut results: Vec<(GlobMatcher, ResultCap)> =
            l.results.iter().filter_map(|(g, c)| Some((glob(g)?, *c))).collect();
        results.sort_by_key(|(g, _)| std::cmp::Reverse(g.glob().glob().len()));
        let per_principal = l.per_principal.map(Rate::from);
        let tools: Vec<(GlobMatcher, Rate)> =
            l.tools.iter().filter_map(|(g, r)| Some((glob(g)?, Rate::from(*r)))).collect();
        Limits {
            principal_id: per_principal.map_or(0, |r| shared_id("principal", r)),
            tool_ids: tools.iter().map(|(g, r)| shared_id(g.glob().glob(), *r)).collect(),
            per_principal,
            tools,
            results,
            buckets: Mutex::default(),
        }
    }

    /// Takes over the buckets of `old` (the limits a reload replaces)
    /// whose rule is still here with the same rate: a reload does not
    /// refill what a client has spent. Buckets of a rule that changed or
    /// went start full under the new one (a full bucket is what a new
    /// principal gets too).
    pub fn take_buckets_from(&self, old: &Limits) {
        let moved: HashMap<(Arc<str>, usize), Bucket> = {
            let mut from = old.buckets.locked();
            let index = |i: usize| -> Option<usize> {
                if i == PRINCIPAL_BUCKET {
                    return (self.per_principal.is_some() && self.per_principal == old.per_principal)
                        .then_some(PRINCIPAL_BUCKET);
                }
                let (glob, rate) = old.tools.get(i)?;
                self.tools.iter().position(|(g, r)| g.glob() == glob.glob() && r == rate)
            };
            from.drain().filter_map(|((who, i), b)| Some(((who, index(i)?), b))).collect()
        };
        self.buckets.locked().extend(moved);
    }

    /// Whether any rate limit is set (callers skip [`Limits::check`]).
    pub fn rates(&self) -> bool {
        self.per_principal.is_some() || !self.tools.is_empty()
    }

    /// Takes a token for `principal` (its identity) calling `tool` from
    /// each bucket that applies, or says when to retry. Nothing is taken
    /// when any bucket is empty.
    pub fn check(&self, principal: &Arc<str>, tool: Ident<'_>, now: Instant) -> Result<(), Limited> {
        if !self.rates() {
            return Ok(());
        }
        let applying = self.select(tool);
        if applying.is_empty() {
            return Ok(());
        }
        let mut buckets = self.buckets.locked();
        if buckets.len() >= MAX_BUCKETS {
            let rates: Vec<Rate> = self.tools.iter().map(|(_, r)| *r).collect();
            let per_principal = self.per_principal;
            buckets.retain(|(_, i), b| {
                let rate = if *i == PRINCIPAL_BUCKET { per_principal } else { rates.get(*i).copied() };
                rate.is_some_and(|r| b.refilled(r, now) < r.burst)
            });
        }
        // Refill all, check all, then take from all: a refused call costs
        // no bucket anything.
        for (i, rate, what) in &applying {
            let b = buckets.entry((principal.clone(), *i)).or_insert(Bucket { tokens: rate.burst, at: now });
            b.tokens = b.refilled(*rate, now);
            b.at = now;
            if b.tokens < 1.0 {
                let retry_after = Duration::from_secs_f64((1.0 - b.tokens) / rate.per_second);
                return Err(Limited { what: what.clone(), rate: rate.per_second, retry_after });
            }
        }
        for (i, _, _) in &applying {
            if let Some(b) = buckets.get_mut(&(principal.clone(), *i)) {
                b.tokens -= 1.0;
            }
        }
        Ok(())
    }

    /// The buckets of `tool`'s calls, for a shared check: the principal's
    /// own first, then each tool rule's in file order.
    pub fn applying(&self, tool: Ident<'_>) -> Vec<Applying> {
        self.select(tool)
            .into_iter()
            .map(|(i, rate, what)| {
                let id = if i == PRINCIPAL_BUCKET { self.principal_id } else { self.tool_ids[i] };
                Applying { id, per_second: rate.per_second, burst: rate.burst, what }
            })
            .collect()
    }

    /// Each bucket that applies to `tool`: its index, rate and name.
    fn select(&self, tool: Ident<'_>) -> Vec<(usize, Rate, String)> {
        let mut applying: Vec<(usize, Rate, String)> = Vec::new();
        if let Some(r) = self.per_principal {
            applying.push((PRINCIPAL_BUCKET, r, "principal".to_owned()));
        }
        for (i, (g, r)) in self.tools.iter().enumerate() {
            if tool.is_match(g) {
                applying.push((i, *r, g.glob().glob().to_owned()));
            }
        }
        applying
    }

    /// Gives back the tokens a [`Limits::check`] of the same `principal`
    /// and `tool` took, for a call a later check refused (a sequence rule):
    /// a refused call costs no bucket anything. A bucket is never filled
    /// past its burst.
    pub fn give_back(&self, principal: &Arc<str>, tool: Ident<'_>) {
        if !self.rates() {
            return;
        }
        let mut buckets = self.buckets.locked();
        let mut refund = |i: usize, rate: Rate| {
            if let Some(b) = buckets.get_mut(&(principal.clone(), i)) {
                b.tokens = (b.tokens + 1.0).min(rate.burst);
            }
        };
        if let Some(r) = self.per_principal {
            refund(PRINCIPAL_BUCKET, r);
        }
        for (i, (g, r)) in self.tools.iter().enumerate() {
            if tool.is_match(g) {
                refund(i, *r);
            }
        }
    }

    /// The result cap of `tool`, if any.
    pub fn result_cap(&self, tool: Ident<'_>) -> Option<ResultCap> {
        self.results.iter().find(|(g, _)| tool.is_match(g)).map(|(_, c)| *c)
    }
}

impl From<RateSection> for Rate {
    fn from(r: RateSection) -> Self {
        let burst = r.burst.map_or_else(|| r.rate.ceil().max(1.0), f64::from);
        Rate { per_second: r.rate, burst }
    }
}

impl Bucket {
    fn refilled(&self, rate: Rate, now: Instant) -> f64 {
        let elapsed = now.saturating_duration_since(self.at).as_secs_f64();
        (self.tokens + elapsed * rate.per_second).min(rate.burst)
    }
}

/// What became of a result over its cap.
#[derive(Debug)]
pub enum Capped {
    /// Within the cap: unchanged.
    Fits,
    /// Cut to fit (text content shortened, other content dropped), with a
    /// notice for the agent.
    Truncated(Box<serde_json::value::RawValue>),
    /// Refused (`action = "refuse"`, or nothing could be kept).
    Refused(String),
}

/// Applies `cap` to a `tools/call` result (raw JSON). A result over its
/// cap is cut from what every parser reads the same way: it is scanned in
/// full first (docs/design.md D12; a result is otherwise read only at the
/// members the gateway routes on), and refused when it is ambiguous.
pub fn cap_result(result: &str, cap: ResultCap, tool: &str, json: &JsonLimits) -> Capped {
    let size = result.len();
    if size <= cap.max_bytes {
        return Capped::Fits;
    }
    let refused =
        || Capped::Refused(format!("The result of {tool} is {size} bytes, over its {}-byte limit", cap.max_bytes));
    if cap.action == OversizeAction::Refuse {
        return refused();
    }
    let Some(Value::Object(mut obj)) = CheckedBox::parse(result, json).and_then(|c| c.checked().value()) else {
        return refused();
    };
    let notice = format!(
        "[The gateway truncated this result: it was {size} bytes, over the {}-byte limit for {tool}.]",
        cap.max_bytes
    );
    // What is kept must fit with the notice and the JSON around it.
    let mut budget = cap.max_bytes.saturating_sub(notice.len() + 256);
    obj.remove("structuredContent");
    let content = obj.remove("content").and_then(|c| match c {
        Value::Array(a) => Some(a),
        _ => None,
    });
    let mut kept = Vec::new();
    for item in content.unwrap_or_default() {
        if item.get("type").and_then(Value::as_str) != Some("text") {
            continue;
        }
        let text = item.get("text").and_then(Value::as_str).unwrap_or("");
        // JSON escaping can grow text up to 6×; count the escaped size.
        let mut cut = text.len().min(budget);
        while cut > 0
            && (!text.is_char_boundary(cut) || serde_json::to_string(&text[..cut]).map_or(0, |s| s.len()) > budget)
        {
            cut = cut.saturating_sub(1.max(cut / 16));
            while cut > 0 && !text.is_char_boundary(cut) {
                cut -= 1;
            }
        }
        if cut == 0 {
            break;
        }
        budget -= serde_json::to_string(&text[..cut]).map_or(0, |s| s.len());
        kept.push(serde_json::json!({ "type": "text", "text": &text[..cut] }));
    }
    kept.push(serde_json::json!({ "type": "text", "text": notice }));
    obj.insert("content".into(), Value::Array(kept));
    match serde_json::value::to_raw_value(&Value::Object(obj)) {
        Ok(raw) if raw.get().len() <= cap.max_bytes => Capped::Truncated(raw),
        _ => refused(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits(per_principal: Option<(f64, u32)>, tools: &[(&str, f64, u32)]) -> Limits {
        Limits::new(&LimitsSection {
            per_principal: per_principal.map(|(rate, burst)| RateSection { rate, burst: Some(burst) }),
            tools: tools
                .iter()
                .map(|(g, rate, burst)| ((*g).to_owned(), RateSection { rate: *rate, burst: Some(*burst) }))
                .collect(),
            results: Default::default(),
        })
    }

    #[test]
    fn a_bucket_allows_its_burst_then_refills_at_its_rate() {
        let l = limits(Some((2.0, 3)), &[]);
        let (alice, bob): (Arc<str>, Arc<str>) = ("alice".into(), "bob".into());
        let t0 = Instant::now();
        for _ in 0..3 {
            assert!(l.check(&alice, Ident::plain("x__y"), t0).is_ok());
        }
        let e = l.check(&alice, Ident::plain("x__y"), t0).unwrap_err();
        assert_eq!((e.what.as_str(), e.retry_after), ("principal", Duration::from_millis(500)));
        assert!(l.check(&bob, Ident::plain("x__y"), t0).is_ok(), "each principal has its own bucket");
        assert!(
            l.check(&alice, Ident::plain("x__y"), t0 + Duration::from_millis(500)).is_ok(),
            "one token back after 1/rate"
        );
        assert!(l.check(&alice, Ident::plain("x__y"), t0 + Duration::from_millis(600)).is_err());
    }

    #[test]
    fn tool_buckets_apply_to_matching_tools_and_a_refusal_costs_nothing() {
        let l = limits(Some((100.0, 100)), &[("db__*", 1.0, 1)]);
        let p: Arc<str> = "p".into();
        let t0 = Instant::now();
        assert!(l.check(&p, Ident::plain("db__query"), t0).is_ok());
        let e = l.check(&p, Ident::plain("db__query"), t0).unwrap_err();
        assert_eq!(e.what, "db__*");
        // Other tools still go; the refused calls took no principal token.
        for _ in 0..99 {
            assert!(l.check(&p, Ident::plain("fs__read"), t0).is_ok());
        }
        assert!(l.check(&p, Ident::plain("fs__read"), t0).is_err(), "exactly 100: the refused db call cost nothing");
    }

    #[test]
    fn tokens_given_back_return_to_every_bucket_taken_from_but_never_past_the_burst() {
        let l = limits(Some((0.001, 2)), &[("db__*", 0.001, 1)]);
        let p: Arc<str> = "p".into();
        let t0 = Instant::now();
        assert!(l.check(&p, Ident::plain("db__query"), t0).is_ok());
        assert!(l.check(&p, Ident::plain("db__query"), t0).is_err(), "the tool bucket is empty");
        l.give_back(&p, Ident::plain("db__query"));
        assert!(l.check(&p, Ident::plain("db__query"), t0).is_ok(), "its token came back");
        l.give_back(&p, Ident::plain("db__query"));
        // Given back more than taken: the principal bucket stays at its burst.
        l.give_back(&p, Ident::plain("fs__read"));
        l.give_back(&p, Ident::plain("fs__read"));
        assert!(l.check(&p, Ident::plain("fs__read"), t0).is_ok());
        assert!(l.check(&p, Ident::plain("fs__read"), t0).is_ok());
        assert!(l.check(&p, Ident::plain("fs__read"), t0).is_err(), "never past the burst of 2");
    }

    #[test]
    fn a_reload_keeps_what_was_spent_under_rules_that_stayed_and_refills_changed_ones() {
        let old = limits(Some((0.001, 2)), &[("db__*", 0.001, 1), ("fs__*", 0.001, 1)]);
        let p: Arc<str> = "p".into();
        let t0 = Instant::now();
        assert!(old.check(&p, Ident::plain("db__query"), t0).is_ok());
        assert!(old.check(&p, Ident::plain("fs__read"), t0).is_ok());
        // db__* moves to index 0 of a different list and keeps its rate;
        // fs__* changes its rate; the principal's rate stays.
        let new = limits(Some((0.001, 2)), &[("fs__*", 0.002, 1), ("db__*", 0.001, 1)]);
        new.take_buckets_from(&old);
        assert!(new.check(&p, Ident::plain("db__query"), t0).is_err(), "db__* stayed: its spent token stays spent");
        assert!(new.check(&p, Ident::plain("fs__read"), t0).is_err(), "the principal bucket (2) is spent: kept");
        let fresh: Arc<str> = "q".into();
        assert!(new.check(&fresh, Ident::plain("fs__read"), t0).is_ok());
        // With the principal's rate changed too, only fs__*'s spent token
        // would have been forgotten; check that a changed rule starts full.
        let changed = limits(None, &[("fs__*", 0.002, 1)]);
        let before = limits(None, &[("fs__*", 0.001, 1)]);
        assert!(before.check(&p, Ident::plain("fs__read"), t0).is_ok());
        assert!(before.check(&p, Ident::plain("fs__read"), t0).is_err());
        changed.take_buckets_from(&before);
        assert!(changed.check(&p, Ident::plain("fs__read"), t0).is_ok(), "a changed rule starts full");
        assert!(old.buckets.locked().is_empty(), "the old limits gave their buckets away");
    }

    #[test]
    fn shared_buckets_are_named_alike_on_every_replica_and_anew_when_their_rate_changes() {
        let a = limits(Some((1.0, 5)), &[("db__*", 2.0, 3), ("fs__*", 1.0, 1)]);
        let b = limits(Some((1.0, 5)), &[("db__*", 2.0, 3), ("fs__*", 1.0, 1)]);
        let ids = |l: &Limits, tool: &str| l.applying(Ident::plain(tool)).iter().map(|x| x.id).collect::<Vec<_>>();
        assert_eq!(ids(&a, "db__query"), ids(&b, "db__query"), "another replica, the same names");
        assert_eq!(ids(&a, "db__query").len(), 2, "the principal's bucket, then the tool rule's");
        assert_ne!(ids(&a, "db__query")[1], ids(&a, "fs__read")[1]);
        let faster = limits(Some((1.0, 5)), &[("db__*", 4.0, 3)]);
        assert_eq!(ids(&a, "db__query")[0], ids(&faster, "db__query")[0], "the principal's rule did not change");
        assert_ne!(ids(&a, "db__query")[1], ids(&faster, "db__query")[1], "a new rate is a new bucket");
        assert_eq!(a.applying(Ident::plain("db__query"))[1].what, "db__*");
    }

    #[test]
    fn results_over_the_cap_are_truncated_with_a_notice_or_refused() {
        let big = "é".repeat(5000);
        let result = serde_json::json!({"content":[{"type":"text","text":big},{"type":"image","data":"AAAA","mimeType":"image/png"}],
            "structuredContent":{"x":1}});
        let raw = serde_json::value::to_raw_value(&result).unwrap();
        let cap = ResultCap { max_bytes: 2048, action: OversizeAction::Truncate };
        let Capped::Truncated(out) = cap_result(raw.get(), cap, "u__t", &JsonLimits::default()) else {
            panic!("truncated")
        };
        assert!(out.get().len() <= 2048);
        let v: Value = serde_json::from_str(out.get()).unwrap();
        let content = v["content"].as_array().unwrap();
        assert!(content[0]["text"].as_str().unwrap().starts_with("éé"));
        assert!(content.last().unwrap()["text"].as_str().unwrap().contains("truncated"));
        assert!(v.get("structuredContent").is_none());
        let refuse = ResultCap { max_bytes: 2048, action: OversizeAction::Refuse };
        assert!(
            matches!(cap_result(raw.get(), refuse, "u__t", &JsonLimits::default()), Capped::Refused(m) if m.contains("over its 2048-byte limit"))
        );
        let small = serde_json::value::to_raw_value(&serde_json::json!({"content":[]})).unwrap();
        assert!(matches!(cap_result(small.get(), cap, "u__t", &JsonLimits::default()), Capped::Fits));
    }
}
