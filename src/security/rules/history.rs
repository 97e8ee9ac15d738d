//! What the engine remembers of earlier calls ([`History`]) and what it
//! found about the current one ([`Evaluation`]).

use super::Hit;

/// Step bits an [`Evaluation`] keeps without allocating: 256 steps that a
/// later step follows, plenty for a hundred rules.
const INLINE_WORDS: usize = 4;

/// The recent calls of one session or one principal: for each, its time
/// and which steps (that some later step follows) it matched. Never the
/// arguments.
///
/// Bounded: a ring of [`RuleSet::history_calls`](super::RuleSet::history_calls)
/// entries, allocated at the first record. Bound to the rule set that
/// recorded into it; another rule set sees it as empty and starts it afresh
/// on its first record. Not synchronised: the caller holds it (for a
/// principal's history shared by sessions, under its own lock).
#[derive(Debug, Clone, Default)]
pub struct History {
    /// The rule set this belongs to; 0 for none yet.
    generation: u64,
    capacity: usize,
    /// Step-bit words per entry.
    words: usize,
    len: usize,
    /// The slot the next entry goes to.
    next: usize,
    at_ms: Vec<u64>,
    /// `capacity * words` step bits.
    bits: Vec<u64>,
}

/// What [`RuleSet::evaluate`](super::RuleSet::evaluate) found: the rules
/// that hit, and what [`RuleSet::record`](super::RuleSet::record) will
/// remember of the call.
#[derive(Debug, Clone)]
pub struct Evaluation {
    generation: u64,
    at_ms: u64,
    words: usize,
    /// The call's step bits when `words <= INLINE_WORDS`, else `heap`.
    inline: [u64; INLINE_WORDS],
    heap: Vec<u64>,
    hits: Vec<Hit>,
}

// === impl History ===

impl History {
    pub(super) fn new(generation: u64, capacity: usize, words: usize) -> Self {
        History { generation, capacity, words, ..History::default() }
    }

    /// How many calls it holds.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether it holds no call.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Forgets every call, keeping the memory.
    pub fn clear(&mut self) {
        self.len = 0;
        self.next = 0;
    }

    /// Appends one call, first starting afresh if the history belongs to
    /// another rule set (or none).
    pub(super) fn push(&mut self, generation: u64, capacity: usize, words: usize, eval: &Evaluation) {
        self.push_bits(generation, capacity, words, eval.at_ms, eval.bits());
    }

    /// Appends one call by its time and step bits (`words` long).
    pub(super) fn push_bits(&mut self, generation: u64, capacity: usize, words: usize, at_ms: u64, bits: &[u64]) {
        if self.generation != generation || self.capacity != capacity || self.words != words {
            *self = History::new(generation, capacity, words);
        }
        if capacity == 0 {
            return;
        }
        if self.at_ms.is_empty() {
            self.at_ms = vec![0; capacity];
            self.bits = vec![0; capacity * words];
        }
        let slot = self.next;
        self.at_ms[slot] = at_ms;
        self.bits[slot * words..(slot + 1) * words].copy_from_slice(bits);
        self.next = (slot + 1) % capacity;
        self.len = (self.len + 1).min(capacity);
    }

    /// Whether the calls in the window before `now_ms` matched the steps
    /// `earlier` in order: at most `calls` of the newest entries, and of
    /// those only the ones at most `window_ms` old.
    ///
    /// Scans from the newest entry, matching the last earlier step first:
    /// taking the latest match of each step leaves the most room for the
    /// steps before it, so the greedy scan finds a sequence whenever one
    /// exists.
    pub(super) fn has_sequence(
        &self,
        generation: u64,
        earlier: &[u32],
        calls: u32,
        window_ms: Option<u64>,
        now_ms: u64,
    ) -> bool {
        if self.generation != generation || self.len == 0 {
            return false;
        }
        let mut need = earlier.len();
        let cap = self.capacity;
        for back in 0..self.len.min(calls as usize) {
            let slot = (self.next + cap - 1 - back) % cap;
            // Times only go forward, so the first entry out of the time
            // window ends the scan.
            if window_ms.is_some_and(|ms| now_ms.saturating_sub(self.at_ms[slot]) > ms) {
                return false;
            }
            let step = earlier[need - 1] as usize;
            if self.bits[slot * self.words + step / 64] & (1 << (step % 64)) != 0 {
                need -= 1;
                if need == 0 {
                    return true;
                }
            }
        }
        false
    }
}

// === impl Evaluation ===

impl Evaluation {
    pub(super) fn new(generation: u64, at_ms: u64, words: usize) -> Self {
        let heap = if words > INLINE_WORDS { vec![0; words] } else { Vec::new() };
        Evaluation { generation, at_ms, words, inline: [0; INLINE_WORDS], heap, hits: Vec::new() }
    }

    pub(super) fn generation(&self) -> u64 {
        self.generation
    }

    pub(super) fn set(&mut self, step: usize) {
        let bits = if self.words > INLINE_WORDS { &mut self.heap[..] } else { &mut self.inline[..] };
        bits[step / 64] |= 1 << (step % 64);
    }

    pub(super) fn push_hit(&mut self, hit: Hit) {
        self.hits.push(hit);
    }

    pub(super) fn bits(&self) -> &[u64] {
        if self.words > INLINE_WORDS { &self.heap } else { &self.inline[..self.words] }
    }

    /// Every rule that hit, in rule order.
    pub fn hits(&self) -> &[Hit] {
        &self.hits
    }

    /// The hit to apply: the one with the strongest action, the first such
    /// rule in file order on a tie. `None` when no rule hit.
    pub fn strongest(&self) -> Option<Hit> {
        // `max_by_key` keeps the last of equals; scanning in reverse makes
        // that the first in file order.
        self.hits.iter().rev().max_by_key(|h| h.action).copied()
    }

    /// What a shared history keeps of the call after its time: `|` and its
    /// step bits in hex (nothing when none is set), then `|` and `nonce`
    /// (so that a refused call's entry, taken back, is this one and no
    /// other).
    pub fn entry(&self, nonce: u64) -> String {
        use std::fmt::Write as _;
        let mut s = String::with_capacity(2 + 16 * self.words + 16);
        s.push('|');
        // A call that matches no earlier step (most calls) has no bits:
        // Redis does not send such entries back, only their places.
        if self.bits().iter().any(|w| *w != 0) {
            for w in self.bits() {
                let _ = write!(s, "{w:016x}");
            }
        }
        let _ = write!(s, "|{nonce:x}");
        s
    }

    /// Merges the hits of `other` (the same call, evaluated against other
    /// histories) into these: a rule hits if it hit in either.
    pub fn merge_hits(&mut self, other: &Evaluation) {
        for hit in other.hits() {
            if !self.hits.iter().any(|h| h.rule == hit.rule) {
                self.hits.push(*hit);
            }
        }
        self.hits.sort_by_key(|h| h.rule);
    }

    /// The call's time, as given in [`Call::at_ms`](super::Call::at_ms).
    pub fn at_ms(&self) -> u64 {
        self.at_ms
    }
}
