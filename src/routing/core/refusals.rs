//! The last refusals by policy, for `/status` (`recent_refusals`) and the
//! status page: a bounded ring that `Core::hide` writes once per refusal.
//!
//! Guarantees: it holds at most [`CAPACITY`] entries, each of bounded size
//! (a name cut to [`NAME_MAX_CHARS`], at most [`RULES_MAX`] rule hits), so
//! what a client can make it hold does not grow with the client. An entry
//! says when, who (the principal's identity, never a session id or a
//! credential), what (the upstream and the name asked for) and why (the
//! reason, and the sequence rules that hit); never an argument's value.
//! Only refusals pay for it (one short lock, no `.await` under it); an
//! admitted call never touches it.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

use crate::sync::Locked;

/// How many refusals are kept: enough to see what a client just ran into,
/// small enough that `/status` stays a page, not a log (the audit log is
/// the record).
pub(crate) const CAPACITY: usize = 100;

/// Longest name kept, in characters (a name comes from the client).
pub(crate) const NAME_MAX_CHARS: usize = 128;

/// Most rule hits kept for one refusal.
pub(crate) const RULES_MAX: usize = 8;

/// The ring of recent refusals.
#[derive(Debug, Default)]
pub(crate) struct Refusals {
    ring: Mutex<VecDeque<Refused>>,
}

/// One refusal, as `/status` shows it.
#[derive(Debug, Clone)]
struct Refused {
    at: SystemTime,
    principal: Arc<str>,
    upstream: Arc<str>,
    name: String,
    reason: &'static str,
    /// `<rule>:<action>` of each sequence rule that hit before the refusal.
    rules: Vec<String>,
}

// === impl Refusals ===

impl Refusals {
    /// Notes a refusal of `name` (as the client asked for it) on
    /// `upstream` for `principal`, because of `reason`; `policy` is the
    /// outcome's policy notes so far, whose `rule:<id>:<action>` entries are
    /// the rule hits kept.
    pub(crate) fn note(&self, principal: &str, upstream: &str, name: &str, reason: &'static str, policy: &[String]) {
        let rules = policy.iter().filter_map(|p| p.strip_prefix("rule:")).take(RULES_MAX).map(str::to_owned).collect();
        let entry = Refused {
            at: SystemTime::now(),
            principal: Arc::from(principal),
            upstream: Arc::from(upstream),
            name: crate::protocol::cut(name, NAME_MAX_CHARS).into_owned(),
            reason,
            rules,
        };
        let mut ring = self.ring.locked();
        if ring.len() == CAPACITY {
            ring.pop_front();
        }
        ring.push_back(entry);
    }

    /// The refusals kept, newest first, as JSON: `at_unix_ms`, `age_ms`,
    /// `principal`, `upstream`, `name`, `reason` and `rules`.
    pub(crate) fn to_json(&self) -> serde_json::Value {
        // Copied out first: the lock is not held while formatting.
        let kept: Vec<Refused> = self.ring.locked().iter().rev().cloned().collect();
        let now = SystemTime::now();
        let ms = |d: std::time::Duration| u64::try_from(d.as_millis()).unwrap_or(u64::MAX);
        kept.into_iter()
            .map(|r| {
                serde_json::json!({
                    "at_unix_ms": r.at.duration_since(UNIX_EPOCH).map_or(0, ms),
                    "age_ms": now.duration_since(r.at).map_or(0, ms),
                    "principal": &*r.principal,
                    "upstream": &*r.upstream,
                    "name": r.name,
                    "reason": r.reason,
                    "rules": r.rules,
                })
            })
            .collect()
    }

    /// How many are kept now.
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.ring.locked().len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_ring_keeps_the_newest_and_stays_bounded() {
        let r = Refusals::default();
        let long = "x".repeat(10 * NAME_MAX_CHARS);
        let many: Vec<String> = (0..3 * RULES_MAX).map(|i| format!("rule:r{i}:block")).collect();
        for i in 0..CAPACITY + 50 {
            let name = if i == CAPACITY + 49 { long.clone() } else { format!("t{i}") };
            r.note("key:bob", "a", &name, "access", &many);
            assert!(r.len() <= CAPACITY);
        }
        assert_eq!(r.len(), CAPACITY);
        let json = r.to_json();
        let kept = json.as_array().unwrap();
        assert_eq!(kept.len(), CAPACITY);
        // Newest first; the oldest 50 are gone.
        assert_eq!(kept[1]["name"], "t148");
        assert_eq!(kept[CAPACITY - 1]["name"], "t50");
        // Each entry is bounded too.
        assert_eq!(kept[0]["name"].as_str().unwrap().chars().count(), NAME_MAX_CHARS + 1, "cut, with `…`");
        assert_eq!(kept[0]["rules"].as_array().unwrap().len(), RULES_MAX);
        assert_eq!(kept[0]["rules"][0], "r0:block");
        assert_eq!(
            (&kept[0]["principal"], &kept[0]["upstream"], &kept[0]["reason"]),
            (&"key:bob".into(), &"a".into(), &"access".into())
        );
        assert!(kept[0]["at_unix_ms"].as_u64().unwrap() > 0);
    }

    #[test]
    fn only_rule_hits_are_kept_from_the_policy_notes() {
        let r = Refusals::default();
        let notes = ["secrets:masked:1".to_owned(), "rule:no-exfil:warn".to_owned(), "rate_limit:denied".to_owned()];
        r.note("anonymous", "a", "a__t", "rate_limit", &notes);
        assert_eq!(r.to_json()[0]["rules"], serde_json::json!(["no-exfil:warn"]));
    }
}
