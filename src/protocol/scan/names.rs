//! Member names as the strict scan compares them: decoded (escapes), folded
//! for the case-variant check, hashed with the scan's keys past
//! `LINEAR_MEMBERS`, and written into the path of a refusal.

use std::hash::{BuildHasher, Hasher, RandomState};
use std::ops::Range;

use super::{Reason, Scratch};

/// Appends `.name`, or `["name"]` (as written) when it is not plain.
pub(super) fn push_name(path: &mut String, raw: &[u8], escaped: bool) {
    let plain =
        !escaped && !raw.is_empty() && raw.iter().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'$' | b'-'));
    let raw = String::from_utf8_lossy(raw);
    if plain {
        if !path.is_empty() {
            path.push('.');
        }
        path.push_str(&raw);
    } else {
        path.push_str("[\"");
        path.push_str(&raw);
        path.push_str("\"]");
    }
}

/// The UTF-16 unit of the 4 hex digits at `at`.
pub(super) fn hex4(text: &[u8], at: usize) -> Option<u32> {
    let digits = text.get(at..at + 4)?;
    digits.iter().try_fold(0u32, |acc, &d| Some(acc * 16 + char::from(d).to_digit(16)?))
}

/// Whether two raw member names clash: the same text once decoded
/// (`DuplicateMember`), or the same but for letter case (`CaseVariant`).
pub(super) fn compare_names(
    text: &[u8],
    a: (&Range<usize>, bool),
    b: (&Range<usize>, bool),
    scratch: &mut Scratch,
) -> Option<Reason> {
    let (ra, rb) = (&text[a.0.clone()], &text[b.0.clone()]);
    if !a.1 && !b.1 && ra.is_ascii() && rb.is_ascii() {
        // The usual case: plain ASCII names, compared in place.
        return match (ra == rb, ra.eq_ignore_ascii_case(rb)) {
            (true, _) => Some(Reason::DuplicateMember),
            (false, true) => Some(Reason::CaseVariant),
            (false, false) => None,
        };
    }
    let Scratch { a: buf_a, b: buf_b, fold_a, fold_b } = scratch;
    let da: &[u8] = if a.1 {
        decode(ra, buf_a);
        buf_a
    } else {
        ra
    };
    let db: &[u8] = if b.1 {
        decode(rb, buf_b);
        buf_b
    } else {
        rb
    };
    if da == db {
        return Some(Reason::DuplicateMember);
    }
    fold(da, fold_a);
    fold(db, fold_b);
    (fold_a == fold_b).then_some(Reason::CaseVariant)
}

/// `bytes` (UTF-8) under Unicode simple case folding, as case-insensitive
/// JSON decoders compare names: each character to the lower case of its
/// upper case when both are one character (`ſ` and `S` are `s`, the Kelvin
/// sign is `k`), else to its lower case.
pub(super) fn fold(bytes: &[u8], out: &mut Vec<u8>) {
    out.clear();
    if bytes.is_ascii() {
        out.extend(bytes.iter().map(u8::to_ascii_lowercase));
        return;
    }
    fn one(mut it: impl Iterator<Item = char>) -> Option<char> {
        match (it.next(), it.next()) {
            (Some(c), None) => Some(c),
            _ => None,
        }
    }
    let mut utf8 = [0u8; 4];
    for c in String::from_utf8_lossy(bytes).chars() {
        let folded = match one(c.to_uppercase()) {
            Some(upper) => one(upper.to_lowercase()).unwrap_or(c),
            None => one(c.to_lowercase()).unwrap_or(c),
        };
        out.extend_from_slice(folded.encode_utf8(&mut utf8).as_bytes());
    }
}

/// The 128-bit keyed hash of a decoded member name (case-folded with
/// `folded`).
pub(super) fn hash_name(
    keys: &(RandomState, RandomState),
    text: &[u8],
    name: &Range<usize>,
    escaped: bool,
    folded: bool,
    scratch: &mut Scratch,
) -> u128 {
    let raw = &text[name.clone()];
    let decoded: &[u8] = if escaped {
        decode(raw, &mut scratch.a);
        &scratch.a
    } else {
        raw
    };
    let bytes: &[u8] = if folded {
        fold(decoded, &mut scratch.fold_a);
        &scratch.fold_a
    } else {
        decoded
    };
    let (mut h1, mut h2) = (keys.0.build_hasher(), keys.1.build_hasher());
    h1.write(bytes);
    h2.write(bytes);
    (u128::from(h1.finish()) << 64) | u128::from(h2.finish())
}

/// Decodes the escapes of a raw JSON string's text into UTF-8 bytes.
/// Escapes were checked by the scan; a malformed one decodes as U+FFFD
/// (never reached for checked names).
pub(super) fn decode(raw: &[u8], out: &mut Vec<u8>) {
    out.clear();
    let mut i = 0;
    while i < raw.len() {
        let Some(off) = memchr::memchr(b'\\', &raw[i..]) else {
            out.extend_from_slice(&raw[i..]);
            return;
        };
        out.extend_from_slice(&raw[i..i + off]);
        i += off;
        let simple = match raw.get(i + 1) {
            Some(b'"') => Some(b'"'),
            Some(b'\\') => Some(b'\\'),
            Some(b'/') => Some(b'/'),
            Some(b'b') => Some(0x08),
            Some(b'f') => Some(0x0C),
            Some(b'n') => Some(b'\n'),
            Some(b'r') => Some(b'\r'),
            Some(b't') => Some(b'\t'),
            _ => None,
        };
        if let Some(b) = simple {
            out.push(b);
            i += 2;
            continue;
        }
        let unit = hex4(raw, i + 2);
        let (c, len) = match unit {
            Some(hi @ 0xD800..=0xDBFF) => {
                match (raw.get(i + 6..i + 8) == Some(b"\\u")).then(|| hex4(raw, i + 8)).flatten() {
                    Some(lo @ 0xDC00..=0xDFFF) => (char::from_u32(0x10000 + ((hi - 0xD800) << 10) + (lo - 0xDC00)), 12),
                    _ => (None, 6),
                }
            }
            Some(u) => (char::from_u32(u), 6),
            None => (None, 2),
        };
        let mut utf8 = [0u8; 4];
        out.extend_from_slice(c.unwrap_or('\u{FFFD}').encode_utf8(&mut utf8).as_bytes());
        i += len;
    }
}
