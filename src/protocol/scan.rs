//! The strict scan (docs/design.md D12): one pass over a JSON text that refuses
//! what two parsers could read differently.
//!
//! JSON lets a member name occur twice in one object, and parsers disagree
//! on which copy wins (serde's one-level `RawObject` read the first; Node
//! and Python take the last). They also disagree on numbers out of range
//! (`1e400`: infinity, an error, or a big decimal) and on lone UTF-16
//! surrogates (`"\ud800"`: an error, U+FFFD, or kept). A gateway that reads
//! one copy while the upstream executes another decides on something the
//! upstream never runs. So before anything looks at a message, [`scan`]
//! refuses one with
//!
//! - a member name that occurs twice in one object **after decoding
//!   escapes** (`"n\u0061me"` is `name`), at any depth;
//! - nesting deeper than [`Limits::max_depth`], counted from the root,
//!   arrays and objects alike;
//! - a number whose value is not a finite `f64` (integers too: 400 digits
//!   are out of range; a 30-digit integer is finite and allowed, but the
//!   gateway never routes on one);
//! - a lone UTF-16 surrogate escape, in a name or a value.
//!
//! and says where (`params.arguments.path`, `params.items[3]`).
//!
//! The scan is iterative: its stack holds one small frame per open
//! container and is bounded by the depth limit, so a body of 16 MiB of `[`
//! is refused at the limit instead of overflowing anything. Parts of a text
//! the gateway never reads (the body of an upstream's tool result) can be
//! *skimmed* (their end found, nothing checked, no stack) or *jumped* (their
//! length is known from the envelope parse): see [`Plan`].
//!
//! Duplicate names are found by comparing decoded names: linearly while an
//! object has few members, then by a keyed 128-bit hash of each decoded
//! name (two independent SipHash keys drawn per scan), so a client cannot
//! make the check quadratic; a false "duplicate" would need a 128-bit
//! collision.

use std::collections::HashSet;
use std::hash::RandomState;
use std::ops::Range;

use smallvec::SmallVec;

mod errors;
mod names;
mod skim;

pub(crate) use self::errors::ScanError;
pub use self::errors::{Ambiguous, Reason};
use self::names::{compare_names, decode, hash_name, hex4, push_name};
use self::skim::{has_control, number_grammar};

/// Default nesting limit (`gateway.max_json_depth`).
pub const DEFAULT_MAX_DEPTH: usize = 64;

/// Objects with more members than this switch from linear comparison of
/// names to a hash set.
const LINEAR_MEMBERS: usize = 16;

/// A raw member name longer than this is hashed, never compared linearly.
const COSTLY_NAME_BYTES: usize = 256;

/// What the scan enforces.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Most containers (objects and arrays) open at once, counted from the
    /// root: a message object holding `params` holding `arguments` is
    /// three deep.
    pub max_depth: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits { max_depth: DEFAULT_MAX_DEPTH }
    }
}

/// How much of a value to check.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Plan<'p> {
    /// Everything, at every depth.
    Full,
    /// Nothing: only find its end (no depth limit, no stack). Only for
    /// text whose grammar is known good, or that serde reads whole after
    /// (which refuses it if it is not JSON): on other text the end found
    /// may be wrong.
    Skim,
    /// Its grammar only (that it is JSON), none of D12's checks (no depth
    /// limit; its stack is a bit per level).
    Grammar,
    /// Nothing: its text is known to be this many bytes long (the envelope
    /// parse measured it).
    Jump(usize),
    /// An object whose own member names must be unique; the listed members
    /// get their plan, the others the second one. A value that is not an
    /// object is checked in full.
    Object(&'p [(&'p str, Plan<'p>)], &'p Plan<'p>),
}

/// Where the members named by a root [`Plan::Object`] are in the text:
/// (index in the plan's list, byte range of the value).
pub(crate) type Found = Vec<(usize, Range<usize>)>;

/// Checks `text` in full against `limits`.
pub(crate) fn scan(text: &str, limits: &Limits) -> Result<(), ScanError> {
    scan_with(text, limits, Plan::Full).map(drop)
}

/// Checks `text` as `plan` says; returns where the root plan's named
/// members are (when the root plan is [`Plan::Object`]).
pub(crate) fn scan_with(text: &str, limits: &Limits, plan: Plan<'_>) -> Result<Found, ScanError> {
    Scanner {
        text: text.as_bytes(),
        pos: 0,
        limits,
        // Inline for a usual message: a scan allocates nothing for them
        // (a message is scanned about five times a call).
        frames: SmallVec::new(),
        names: SmallVec::new(),
        scratch: Scratch::default(),
    }
    .run(plan)
}

/// One open container.
struct Frame<'p> {
    object: bool,
    /// Objects: the plan of the members by name (`None`: all in full).
    members: Option<(&'p [(&'p str, Plan<'p>)], &'p Plan<'p>)>,
    /// Objects: members so far; arrays: index of the current item.
    count: usize,
    /// Objects: the current member's name (raw, between the quotes).
    name: Range<usize>,
    name_escaped: bool,
    /// Objects in linear mode: where their names start in `Scanner::names`.
    names_from: usize,
    /// Objects in hash mode: the 128-bit hashes of their decoded names.
    hashes: Option<Box<Hashes>>,
}

struct Hashes {
    /// Of the case-folded names.
    folded: HashSet<u128>,
    /// Of the names as decoded (to tell a duplicate from a case variant).
    exact: HashSet<u128>,
    keys: (RandomState, RandomState),
}

/// Reused buffers for decoding and folding names.
#[derive(Default)]
struct Scratch {
    a: Vec<u8>,
    b: Vec<u8>,
    fold_a: Vec<u8>,
    fold_b: Vec<u8>,
}

struct Scanner<'t, 'l, 'p> {
    text: &'t [u8],
    pos: usize,
    limits: &'l Limits,
    frames: SmallVec<[Frame<'p>; 8]>,
    /// Names of the objects in linear mode, innermost last: (raw range,
    /// escaped).
    names: SmallVec<[(Range<usize>, bool); 16]>,
    scratch: Scratch,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// A value (after `:`, or at the root).
    Value,
    /// A value or `]` (right after `[`).
    ValueOrEnd,
    /// `,` or the end of the container (after a value).
    AfterValue,
    /// A member name or `}` (right after `{`).
    NameOrEnd,
    /// A member name (after `,`).
    Name,
}

impl<'p> Scanner<'_, '_, 'p> {
    fn run(mut self, root: Plan<'p>) -> Result<Found, ScanError> {
        let mut found = Found::new();
        // The root plan's named member whose value is being read, and where
        // it started.
        let mut recording: Option<(usize, usize)> = None;
        let mut plan = root;
        let mut state = State::Value;
        loop {
            self.skip_ws();
            match state {
                State::Value | State::ValueOrEnd => {
                    let b = self.peek()?;
                    if state == State::ValueOrEnd && b == b']' {
                        self.pos += 1;
                        self.pop();
                        state = State::AfterValue;
                        continue;
                    }
                    match plan {
                        Plan::Skim => self.skim_value()?,
                        Plan::Grammar => self.skim_grammar()?,
                        Plan::Jump(n) => {
                            self.pos = self
                                .pos
                                .checked_add(n)
                                .filter(|&end| end <= self.text.len())
                                .ok_or(ScanError::Syntax)?;
                        }
                        Plan::Full | Plan::Object(..) => match b {
                            b'{' => {
                                self.open(true, plan)?;
                                state = State::NameOrEnd;
                                continue;
                            }
                            b'[' => {
                                self.open(false, plan)?;
                                plan = Plan::Full;
                                state = State::ValueOrEnd;
                                continue;
                            }
                            b'"' => {
                                self.string(true)?;
                            }
                            b'-' | b'0'..=b'9' => self.number()?,
                            b't' => self.literal(b"true")?,
                            b'f' => self.literal(b"false")?,
                            b'n' => self.literal(b"null")?,
                            _ => return Err(ScanError::Syntax),
                        },
                    }
                    state = State::AfterValue;
                }
                State::AfterValue => {
                    if self.frames.len() == 1
                        && let Some((index, start)) = recording.take()
                    {
                        // The whitespace after it was skipped already; no
                        // value ends with whitespace.
                        let end = start + self.text[start..self.pos].trim_ascii_end().len();
                        found.push((index, start..end));
                    }
                    if self.frames.is_empty() {
                        // The root value is complete: nothing may follow.
                        return if self.pos == self.text.len() { Ok(found) } else { Err(ScanError::Syntax) };
                    }
                    let b = self.peek()?;
                    self.pos += 1;
                    let top = self.frames.last_mut().expect("checked above");
                    match (top.object, b) {
                        (true, b',') => state = State::Name,
                        (false, b',') => {
                            top.count += 1;
                            plan = Plan::Full;
                            state = State::Value;
                        }
                        (true, b'}') | (false, b']') => self.pop(),
                        _ => return Err(ScanError::Syntax),
                    }
                }
                State::NameOrEnd | State::Name => {
                    let b = self.peek()?;
                    if state == State::NameOrEnd && b == b'}' {
                        self.pos += 1;
                        self.pop();
                        state = State::AfterValue;
                        continue;
                    }
                    if b != b'"' {
                        return Err(ScanError::Syntax);
                    }
                    let start = self.pos + 1;
                    let escaped = match self.string(true) {
                        Ok(escaped) => escaped,
                        Err(e) => {
                            // A lone surrogate in the name itself: point at it.
                            let name = start..self.string_end(start);
                            return Err(self.at_name(e, name, true));
                        }
                    };
                    let name = start..self.pos - 1;
                    self.add_name(name.clone(), escaped)?;
                    self.skip_ws();
                    if self.peek()? != b':' {
                        return Err(ScanError::Syntax);
                    }
                    self.pos += 1;
                    let depth = self.frames.len();
                    let members = self.frames.last().expect("a name is read inside an object").members;
                    plan = match members {
                        None => Plan::Full,
                        Some((listed, rest)) => {
                            match listed.iter().position(|(n, _)| self.name_is(&name, escaped, n.as_bytes())) {
                                Some(i) => {
                                    if depth == 1 {
                                        self.skip_ws();
                                        recording = Some((i, self.pos));
                                    }
                                    listed[i].1
                                }
                                None => *rest,
                            }
                        }
                    };
                    state = State::Value;
                }
            }
        }
    }

    fn peek(&self) -> Result<u8, ScanError> {
        self.text.get(self.pos).copied().ok_or(ScanError::Syntax)
    }

    fn skip_ws(&mut self) {
        while let Some(b' ' | b'\t' | b'\n' | b'\r') = self.text.get(self.pos) {
            self.pos += 1;
        }
    }

    /// Opens an object or array at `self.pos` under `plan`.
    fn open(&mut self, object: bool, plan: Plan<'p>) -> Result<(), ScanError> {
        if self.frames.len() >= self.limits.max_depth {
            return Err(self.ambiguous(Reason::TooDeep, None));
        }
        self.pos += 1;
        let members = match plan {
            Plan::Object(listed, rest) if object => Some((listed, rest)),
            _ => None,
        };
        self.frames.push(Frame {
            object,
            members,
            count: 0,
            name: 0..0,
            name_escaped: false,
            names_from: self.names.len(),
            hashes: None,
        });
        Ok(())
    }

    fn pop(&mut self) {
        if let Some(f) = self.frames.pop()
            && f.object
            && f.hashes.is_none()
        {
            self.names.truncate(f.names_from);
        }
    }

    /// Records a member name of the innermost object; a duplicate fails.
    fn add_name(&mut self, name: Range<usize>, escaped: bool) -> Result<(), ScanError> {
        let text = self.text;
        let Scanner { frames, names, scratch, .. } = self;
        let top = frames.last_mut().expect("a name is read inside an object");
        top.name = name.clone();
        top.name_escaped = escaped;
        top.count += 1;
        // Hash mode past LINEAR_MEMBERS names, and at once for a name that
        // is costly to compare (escaped, non-ASCII or long): compared
        // linearly, such a name was decoded and folded again against every
        // earlier one (16 names of 1 MB: 2 s of CPU), hashed it is once.
        let costly = || escaped || name.len() > COSTLY_NAME_BYTES || !text[name.clone()].is_ascii();
        if top.hashes.is_none() && (names.len() - top.names_from >= LINEAR_MEMBERS || costly()) {
            let keys = (RandomState::new(), RandomState::new());
            let mut exact = HashSet::with_capacity(2 * LINEAR_MEMBERS);
            let mut folded = HashSet::with_capacity(2 * LINEAR_MEMBERS);
            // Names so far are distinct (each was checked as it came).
            for (n, e) in names.drain(top.names_from..) {
                exact.insert(hash_name(&keys, text, &n, e, false, scratch));
                folded.insert(hash_name(&keys, text, &n, e, true, scratch));
            }
            top.hashes = Some(Box::new(Hashes { folded, exact, keys }));
        }
        let clash = match &mut top.hashes {
            Some(h) => {
                let exact = !h.exact.insert(hash_name(&h.keys, text, &name, escaped, false, scratch));
                let folded = !h.folded.insert(hash_name(&h.keys, text, &name, escaped, true, scratch));
                match (exact, folded) {
                    (true, _) => Some(Reason::DuplicateMember),
                    (false, true) => Some(Reason::CaseVariant),
                    (false, false) => None,
                }
            }
            None => {
                let clash = names[top.names_from..].iter().find_map(|(other, other_escaped)| {
                    compare_names(text, (&name, escaped), (other, *other_escaped), scratch)
                });
                if clash.is_none() {
                    names.push((name, escaped));
                }
                clash
            }
        };
        match clash {
            Some(reason) => Err(self.ambiguous(reason, None)),
            None => Ok(()),
        }
    }

    /// Whether the raw name `name` decodes to `plain`.
    fn name_is(&mut self, name: &Range<usize>, escaped: bool, plain: &[u8]) -> bool {
        let raw = &self.text[name.clone()];
        if !escaped {
            return raw == plain;
        }
        decode(raw, &mut self.scratch.a);
        self.scratch.a == plain
    }

    /// Reads a string at `self.pos` (on its opening quote) and moves past
    /// it; returns whether it has escapes. With `check`, a lone surrogate
    /// escape fails.
    fn string(&mut self, check: bool) -> Result<bool, ScanError> {
        let text = self.text;
        let mut i = self.pos + 1;
        let mut escaped = false;
        loop {
            let at =
                i + memchr::memchr2(b'"', b'\\', text.get(i..).ok_or(ScanError::Syntax)?).ok_or(ScanError::Syntax)?;
            if has_control(&text[i..at]) {
                // Control characters must be escaped (RFC 8259 §7).
                return Err(ScanError::Syntax);
            }
            if text[at] == b'"' {
                self.pos = at + 1;
                return Ok(escaped);
            }
            escaped = true;
            match text.get(at + 1) {
                Some(b'u') => {
                    let unit = hex4(text, at + 2).ok_or(ScanError::Syntax)?;
                    i = at + 6;
                    if !check {
                        continue;
                    }
                    match unit {
                        0xD800..=0xDBFF => {
                            let low = (text.get(at + 6..at + 8) == Some(b"\\u")).then(|| hex4(text, at + 8)).flatten();
                            if !matches!(low, Some(0xDC00..=0xDFFF)) {
                                self.pos = at;
                                return Err(self.ambiguous(Reason::LoneSurrogate, None));
                            }
                            i = at + 12;
                        }
                        0xDC00..=0xDFFF => {
                            self.pos = at;
                            return Err(self.ambiguous(Reason::LoneSurrogate, None));
                        }
                        _ => {}
                    }
                }
                Some(b'"' | b'\\' | b'/' | b'b' | b'f' | b'n' | b'r' | b't') => i = at + 2,
                _ => return Err(ScanError::Syntax),
            }
        }
    }

    /// Where the string whose text starts at `start` ends (its closing
    /// quote), or the end of the text.
    fn string_end(&self, start: usize) -> usize {
        let mut i = start;
        while let Some(off) = self.text.get(i..).and_then(|t| memchr::memchr2(b'"', b'\\', t)) {
            let at = i + off;
            if self.text[at] == b'"' {
                return at;
            }
            i = at + 2;
        }
        self.text.len()
    }

    fn number(&mut self) -> Result<(), ScanError> {
        let (text, start) = (self.text, self.pos);
        let (i, plain, integer) = number_grammar(text, start).ok_or(ScanError::Syntax)?;
        self.pos = i;
        // f64::MAX is about 1.8e308: an integer of up to 308 digits is
        // finite; anything else is parsed to be sure.
        let finite = (plain && integer <= 308)
            || std::str::from_utf8(&text[start..i])
                .ok()
                .and_then(|s| s.parse::<f64>().ok())
                .is_some_and(f64::is_finite);
        if finite {
            Ok(())
        } else {
            self.pos = start;
            Err(self.ambiguous(Reason::NumberOutOfRange, None))
        }
    }

    fn literal(&mut self, word: &[u8]) -> Result<(), ScanError> {
        if self.text.get(self.pos..self.pos + word.len()) != Some(word) {
            return Err(ScanError::Syntax);
        }
        self.pos += word.len();
        Ok(())
    }

    /// An [`Ambiguous`] at the current path; with `name`, the innermost
    /// object's member being read is that one (a name that could not be
    /// read whole).
    fn ambiguous(&self, reason: Reason, name: Option<(&Range<usize>, bool)>) -> ScanError {
        let mut path = String::new();
        let last = self.frames.len().saturating_sub(1);
        for (i, f) in self.frames.iter().enumerate() {
            if !f.object {
                path.push_str(&format!("[{}]", f.count));
            } else if let (true, Some((range, escaped))) = (i == last, name) {
                push_name(&mut path, &self.text[range.clone()], escaped);
            } else if f.count > 0 {
                push_name(&mut path, &self.text[f.name.clone()], f.name_escaped);
            }
        }
        if path.is_empty() {
            path.push('$');
        }
        let path = super::echo(&path).into_owned();
        ScanError::Ambiguous(Ambiguous { reason, path })
    }

    /// A problem inside a member name: the path ends with that name.
    fn at_name(&self, e: ScanError, name: Range<usize>, escaped: bool) -> ScanError {
        match e {
            ScanError::Ambiguous(a) => self.ambiguous(a.reason, Some((&name, escaped))),
            syntax => syntax,
        }
    }
}

#[cfg(test)]
mod tests;
