//! What callers ask the shared state and what it answers, and how those
//! are written in keys and read back from Redis's replies.

use std::time::Duration;

use redis::Value;

/// A 16-byte hash naming a session or a principal in keys.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct KeyHash(pub [u8; 16]);

/// One rate-limit bucket a call takes a token from.
#[derive(Debug, Clone, Copy)]
pub struct Bucket {
    /// Which bucket of the principal (a stable number of the rule).
    pub id: u64,
    /// Tokens per second.
    pub per_second: f64,
    /// Bucket size.
    pub burst: f64,
}

/// The histories a call reads and appends to.
#[derive(Debug, Clone, Copy)]
pub struct Histories<'a> {
    /// The rules file's fingerprint: histories of other rules are not read.
    pub rules: u64,
    /// Entries kept per history.
    pub capacity: usize,
    /// What the call's entry says (after its time): opaque to Redis.
    pub entry: &'a str,
    /// How long a history outlives its last call.
    pub ttl: Duration,
}

/// What [`Shared::admit`] is asked.
#[derive(Debug, Clone, Copy)]
pub struct AdmitRequest<'a> {
    /// The session, if the call has one.
    pub session: Option<KeyHash>,
    /// The principal: its buckets and its session count.
    pub principal: Option<KeyHash>,
    /// Whether the principal's history is read and appended (not for the
    /// shared anonymous principal).
    pub principal_history: bool,
    /// Buckets to take a token from, all or none.
    pub buckets: &'a [Bucket],
    /// Histories to read and append to; None when no rule needs them.
    pub histories: Option<Histories<'a>>,
    /// `session_idle_timeout`: how long last use is kept.
    pub idle: Duration,
}

/// What [`Shared::admit`] found.
#[derive(Debug)]
pub enum Admit {
    /// The session was ended (on some replica).
    Ended,
    /// A bucket was empty: `buckets[index]`, a token in `retry_after`.
    Limited {
        /// Index into the request's buckets.
        index: usize,
        /// When a token will be there.
        retry_after: Duration,
    },
    /// Redis does not know the session: never opened there (Redis was
    /// down then), or unused on every replica past the idle timeout, or
    /// ended so long ago that the record expired. Nothing was taken.
    Unknown,
    /// Tokens taken and the call appended.
    Admitted(Admitted),
}

/// A history as Redis sends it back: how many calls it holds, and the
/// calls among them that matched an earlier step of some rule.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct SharedHistory {
    /// Calls in the history.
    pub len: usize,
    /// Each marked call's place (0: the newest) and entry, newest first.
    pub marked: Vec<(usize, String)>,
}

/// A call admitted by [`Shared::admit`].
#[derive(Debug, Default)]
pub struct Admitted {
    /// Redis's clock at the call, Unix milliseconds.
    pub now_ms: u64,
    /// The session's history before this call.
    pub session: SharedHistory,
    /// The principal's history before this call.
    pub principal: SharedHistory,
    /// The entry appended (to take back with [`Shared::undo`]).
    pub entry: Option<String>,
}

/// How [`Shared::open`] counts a session.
#[derive(Debug, Clone, Copy)]
pub struct Open {
    /// `max_sessions_per_principal`.
    pub cap: usize,
    /// `session_idle_timeout`.
    pub idle: Duration,
    /// How long the session holds its slot without a call.
    pub hold: Duration,
    /// Its token is older than `idle`.
    pub old: bool,
}

/// What [`Shared::open`] found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Opened {
    /// The session was ended (on some replica).
    Ended,
    /// The principal has this many sessions open, its cap.
    Full(u64),
    /// Its token is old and no replica used it within
    /// `session_idle_timeout`.
    Idle,
    /// Counted, and its use recorded.
    Open,
}

/// A key's hash of `text` (a principal's identity, a session id).
pub fn key_hash(text: &str) -> KeyHash {
    use sha2::Digest as _;
    let digest = sha2::Sha256::digest(text.as_bytes());
    let mut out = [0u8; 16];
    out.copy_from_slice(&digest[..16]);
    KeyHash(out)
}

pub(super) fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        s.push(char::from(DIGITS[usize::from(b >> 4)]));
        s.push(char::from(DIGITS[usize::from(b & 0xf)]));
    }
    s
}

/// Every key the scripts touch, named in one place (module docs of
/// `shared`): `session` and `principal` are [`hex`] of their hashes.
pub(super) struct Keys<'a>(pub(super) &'a str);

impl Keys<'_> {
    /// The session was ended (on any replica).
    pub(super) fn ended(&self, session: &str) -> String {
        format!("{}r:{session}", self.0)
    }

    /// The session's last use.
    pub(super) fn used(&self, session: &str) -> String {
        format!("{}u:{session}", self.0)
    }

    /// A history under the rules `rules`: a session's (`s`) or a
    /// principal's (`p`).
    pub(super) fn history(&self, rules: u64, scope: char, whose: &str) -> String {
        format!("{}h:{rules:016x}:{scope}:{whose}", self.0)
    }

    /// The principal's sessions open (a sorted set by expiry).
    pub(super) fn count(&self, principal: &str) -> String {
        format!("{}n:{principal}", self.0)
    }

    /// One of the principal's rate-limit buckets.
    pub(super) fn bucket(&self, principal: &str, id: u64) -> String {
        format!("{}b:{principal}:{id:x}", self.0)
    }

    /// The channel ended sessions are announced on.
    pub(super) fn channel(&self) -> String {
        format!("{}ended", self.0)
    }
}

/// How long a bucket's key outlives its last use: until it would be full
/// again, and a second; at most 30 days.
pub(super) fn bucket_ttl_ms(b: &Bucket) -> u64 {
    let refill = (b.burst / b.per_second * 1000.0).ceil();
    let month = 30.0 * 86_400_000.0;
    if refill.is_finite() && refill >= 0.0 { refill.min(month) as u64 + 1000 } else { month as u64 }
}

/// The hash [`hex`] wrote, or None.
pub(super) fn unhex(text: &str) -> Option<KeyHash> {
    if text.len() != 32 || !text.is_ascii() {
        return None;
    }
    let mut out = [0u8; 16];
    for (i, b) in out.iter_mut().enumerate() {
        *b = u8::from_str_radix(&text[2 * i..2 * i + 2], 16).ok()?;
    }
    Some(KeyHash(out))
}

pub(super) fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX).max(1)
}

/// `{0}`, `{4}`, `{1, i, ms}` or `{2, now, {len, place, entry, …}` for
/// the session, the same for the principal, `entry?}` (an empty table
/// for a history not asked for).
pub(super) fn parse_admit(reply: Value) -> Option<Admit> {
    let Value::Array(items) = reply else { return None };
    let int = |v: &Value| match v {
        Value::Int(i) => Some(*i),
        _ => None,
    };
    let history = |v: &Value| -> Option<SharedHistory> {
        let Value::Array(a) = v else { return None };
        let Some((len, rest)) = a.split_first() else { return Some(SharedHistory::default()) };
        if rest.len() % 2 != 0 {
            return None;
        }
        let len = usize::try_from(int(len)?).ok()?;
        let marked = rest
            .chunks(2)
            .map(|pair| match pair {
                [Value::Int(at), Value::BulkString(b)] => {
                    Some((usize::try_from(*at).ok().filter(|at| *at < len)?, String::from_utf8(b.clone()).ok()?))
                }
                _ => None,
            })
            .collect::<Option<Vec<_>>>()?;
        Some(SharedHistory { len, marked })
    };
    match int(items.first()?)? {
        0 => Some(Admit::Ended),
        4 => Some(Admit::Unknown),
        1 => {
            let index = usize::try_from(int(items.get(1)?)?).ok()?.checked_sub(1)?;
            let ms = u64::try_from(int(items.get(2)?)?).unwrap_or(0);
            Some(Admit::Limited { index, retry_after: Duration::from_millis(ms) })
        }
        2 => Some(Admit::Admitted(Admitted {
            now_ms: u64::try_from(int(items.get(1)?)?).ok()?,
            session: history(items.get(2)?)?,
            principal: history(items.get(3)?)?,
            entry: match items.get(4) {
                Some(Value::BulkString(b)) => Some(String::from_utf8(b.clone()).ok()?),
                _ => None,
            },
        })),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bulk(s: &str) -> Value {
        Value::BulkString(s.as_bytes().to_vec())
    }

    #[test]
    fn admit_replies_are_read_by_their_shape() {
        assert!(matches!(parse_admit(Value::Array(vec![Value::Int(0)])), Some(Admit::Ended)));
        match parse_admit(Value::Array(vec![Value::Int(1), Value::Int(2), Value::Int(1500)])) {
            Some(Admit::Limited { index: 1, retry_after }) => assert_eq!(retry_after, Duration::from_millis(1500)),
            other => panic!("{other:?}"),
        }
        let full = Value::Array(vec![
            Value::Int(2),
            Value::Int(1_700_000_000_123),
            Value::Array(vec![Value::Int(5), Value::Int(0), bulk("1|01|a"), Value::Int(3), bulk("0|02|b")]),
            Value::Array(vec![Value::Int(4)]),
            bulk("1700000000123|03|c"),
        ]);
        match parse_admit(full) {
            Some(Admit::Admitted(a)) => {
                assert_eq!(a.now_ms, 1_700_000_000_123);
                let marked = vec![(0, "1|01|a".to_owned()), (3, "0|02|b".to_owned())];
                assert_eq!(a.session, SharedHistory { len: 5, marked });
                assert_eq!(a.principal, SharedHistory { len: 4, marked: Vec::new() }, "4 calls, none marked");
                assert_eq!(a.entry.as_deref(), Some("1700000000123|03|c"));
            }
            other => panic!("{other:?}"),
        }
        // No histories asked: no entry.
        let bare = Value::Array(vec![Value::Int(2), Value::Int(5), Value::Array(vec![]), Value::Array(vec![])]);
        assert!(matches!(parse_admit(bare), Some(Admit::Admitted(Admitted { entry: None, .. }))));
    }

    #[test]
    fn replies_of_another_shape_are_refused_not_guessed() {
        let cases = [
            Value::Nil,
            Value::Int(2),
            Value::Array(vec![]),
            Value::Array(vec![Value::Int(9)]),
            // Bucket index 0 does not exist (Lua counts from 1).
            Value::Array(vec![Value::Int(1), Value::Int(0), Value::Int(5)]),
            Value::Array(vec![Value::Int(1), Value::Int(1)]),
            Value::Array(vec![Value::Int(2), Value::Int(-1), Value::Array(vec![]), Value::Array(vec![])]),
            // A place without its entry; a place past the length; a length
            // that is not a number.
            Value::Array(vec![
                Value::Int(2),
                Value::Int(1),
                Value::Array(vec![Value::Int(3), Value::Int(0)]),
                Value::Array(vec![]),
            ]),
            Value::Array(vec![
                Value::Int(2),
                Value::Int(1),
                Value::Array(vec![Value::Int(1), Value::Int(1), bulk("1|01|a")]),
                Value::Array(vec![]),
            ]),
            Value::Array(vec![Value::Int(2), Value::Int(1), Value::Array(vec![bulk("3")]), Value::Array(vec![])]),
            Value::Array(vec![Value::Int(2), Value::Int(1), Value::Array(vec![bulk("\u{0}ok")]), Value::Nil]),
            Value::Array(vec![Value::Int(2), Value::Int(1), Value::Array(vec![]), Value::Array(vec![]), bulk_bad()]),
        ];
        for reply in cases {
            let shown = format!("{reply:?}");
            assert!(parse_admit(reply).is_none(), "{shown}");
        }
    }

    fn bulk_bad() -> Value {
        Value::BulkString(vec![0xff, 0xfe])
    }

    #[test]
    fn keys_hold_hashes_in_hex() {
        let h = key_hash("alice@example.com");
        assert_eq!(h, key_hash("alice@example.com"));
        assert_ne!(h, key_hash("alice@example.con"));
        let hexed = hex(&h.0);
        assert_eq!(hexed.len(), 32);
        assert!(hexed.chars().all(|c| c.is_ascii_hexdigit() && !c.is_ascii_uppercase()));
        // SHA-256("abc") begins ba7816bf…
        assert_eq!(hex(&key_hash("abc").0[..4]), "ba7816bf");
        assert_eq!(unhex(&hexed), Some(h), "read back");
        assert_eq!(unhex(&hexed[1..]), None);
        assert_eq!(unhex(&format!("{}zz", &hexed[..30])), None);
        assert_eq!(unhex(&format!("{}é", &hexed[..30])), None);
        assert_eq!(millis(Duration::ZERO), 1, "Redis refuses a zero expiry");
        assert_eq!(millis(Duration::from_secs(2)), 2000);
    }
}
