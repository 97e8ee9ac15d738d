//! Skimming: a value the gateway forwards but never reads (the body of a
//! tool result, which may be megabytes) is checked only for being JSON
//! ([`Plan::Grammar`](super::Plan::Grammar), when the envelope is read),
//! then only jumped or skimmed ([`Plan::Skim`](super::Plan::Skim)).
//!
//! Its grammar is checked (RFC 8259: what every parser accepts alike), so
//! where it ends, and so where the members the gateway does read are, is
//! the same for every parser; what D12 refuses inside it (a name twice,
//! depth, numbers out of range, lone surrogates) is the reader's concern,
//! and the gateway is not its reader. Since the envelope is read by the
//! scan, not by serde, this is the only check such text gets: it must be
//! at least as strict as a JSON parser, or the gateway would forward text
//! that a client reads differently from the gateway.

use super::{ScanError, Scanner};

/// Where the skim is, like the full scan's states (it keeps no names).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum At {
    Value,
    ValueOrEnd,
    AfterValue,
    NameOrEnd,
    Name,
}

/// The open containers of a skimmed value, one bit each (set: an object):
/// an eighth of a byte per level, so no depth limit is needed to bound it.
#[derive(Default)]
struct Open {
    bits: Vec<u64>,
    len: usize,
}

impl Open {
    fn push(&mut self, object: bool) {
        let (word, bit) = (self.len / 64, self.len % 64);
        if word == self.bits.len() {
            self.bits.push(0);
        }
        if object {
            self.bits[word] |= 1 << bit;
        } else {
            self.bits[word] &= !(1 << bit);
        }
        self.len += 1;
    }

    fn pop(&mut self) {
        self.len -= 1;
    }

    /// Whether the innermost open container is an object (`None`: none).
    fn top(&self) -> Option<bool> {
        let i = self.len.checked_sub(1)?;
        Some(self.bits[i / 64] & (1 << (i % 64)) != 0)
    }
}

impl Scanner<'_, '_, '_> {
    /// Moves past the value at `self.pos`, checking its grammar only (see
    /// the module's comment). Whitespace after it is the caller's.
    pub(super) fn skim_grammar(&mut self) -> Result<(), ScanError> {
        let mut open = Open::default();
        let mut at = At::Value;
        loop {
            if at == At::AfterValue && open.len == 0 {
                return Ok(());
            }
            self.skip_ws();
            let b = self.peek()?;
            match at {
                At::Value | At::ValueOrEnd => {
                    if at == At::ValueOrEnd && b == b']' {
                        self.pos += 1;
                        open.pop();
                        at = At::AfterValue;
                        continue;
                    }
                    match b {
                        b'{' | b'[' => {
                            self.pos += 1;
                            open.push(b == b'{');
                            at = if b == b'{' { At::NameOrEnd } else { At::ValueOrEnd };
                            continue;
                        }
                        b'"' => drop(self.string(false)?),
                        b'-' | b'0'..=b'9' => {
                            self.pos = number_grammar(self.text, self.pos).ok_or(ScanError::Syntax)?.0;
                        }
                        b't' => self.literal(b"true")?,
                        b'f' => self.literal(b"false")?,
                        b'n' => self.literal(b"null")?,
                        _ => return Err(ScanError::Syntax),
                    }
                    at = At::AfterValue;
                }
                At::AfterValue => {
                    let object = open.top().expect("checked at the loop's top");
                    self.pos += 1;
                    match (object, b) {
                        (true, b',') => at = At::Name,
                        (false, b',') => at = At::Value,
                        (true, b'}') | (false, b']') => open.pop(),
                        _ => return Err(ScanError::Syntax),
                    }
                }
                At::NameOrEnd | At::Name => {
                    if at == At::NameOrEnd && b == b'}' {
                        self.pos += 1;
                        open.pop();
                        at = At::AfterValue;
                        continue;
                    }
                    if b != b'"' {
                        return Err(ScanError::Syntax);
                    }
                    self.string(false)?;
                    self.skip_ws();
                    if self.peek()? != b':' {
                        return Err(ScanError::Syntax);
                    }
                    self.pos += 1;
                    at = At::Value;
                }
            }
        }
    }

    /// Moves past the value at `self.pos` checking nothing but where it
    /// ends: strings are skipped by their quotes, containers by counting
    /// brackets (no stack, no depth limit). Only for text whose grammar is
    /// known good ([`Scanner::skim_grammar`] read it, or serde did).
    pub(super) fn skim_value(&mut self) -> Result<(), ScanError> {
        let mut depth = 0usize;
        loop {
            match self.peek()? {
                b'"' => {
                    // Its quotes only: the grammar (control characters,
                    // escapes) was checked by whoever read it first, and a
                    // second look cost a tool result's text 2 more passes.
                    let end = self.string_end(self.pos + 1);
                    if end == self.text.len() {
                        return Err(ScanError::Syntax);
                    }
                    self.pos = end + 1;
                }
                b'{' | b'[' => {
                    depth += 1;
                    self.pos += 1;
                }
                b'}' | b']' => {
                    depth = depth.checked_sub(1).ok_or(ScanError::Syntax)?;
                    self.pos += 1;
                }
                _ => {
                    // A scalar, or the punctuation between values.
                    let rest = &self.text[self.pos..];
                    let n = rest
                        .iter()
                        .position(|b| matches!(b, b'"' | b'{' | b'[' | b'}' | b']') || (depth == 0 && *b == b','))
                        .unwrap_or(rest.len());
                    if n == 0 {
                        // A `,` where a value should start.
                        return Err(ScanError::Syntax);
                    }
                    self.pos += n;
                    if depth == 0 {
                        // A scalar ends at the first delimiter; trailing
                        // whitespace is the caller's.
                        while self.pos > 0 && matches!(self.text[self.pos - 1], b' ' | b'\t' | b'\n' | b'\r') {
                            self.pos -= 1;
                        }
                        return Ok(());
                    }
                    continue;
                }
            }
            if depth == 0 {
                return Ok(());
            }
        }
    }
}

/// The grammar of a JSON number at `start`: where it ends, whether it is a
/// plain integer, and how many digits its integer part has. `None`: not a
/// number (no digits, a leading zero, a bare `.` or exponent).
pub(super) fn number_grammar(text: &[u8], start: usize) -> Option<(usize, bool, usize)> {
    let mut i = start + usize::from(text.get(start) == Some(&b'-'));
    let digits = |i: &mut usize| {
        let from = *i;
        while text.get(*i).is_some_and(u8::is_ascii_digit) {
            *i += 1;
        }
        *i - from
    };
    let integer = digits(&mut i);
    if integer == 0 || (integer > 1 && text[i - integer] == b'0') {
        return None;
    }
    let mut plain = true;
    if text.get(i) == Some(&b'.') {
        i += 1;
        plain = false;
        if digits(&mut i) == 0 {
            return None;
        }
    }
    if let Some(b'e' | b'E') = text.get(i) {
        i += 1;
        plain = false;
        if let Some(b'+' | b'-') = text.get(i) {
            i += 1;
        }
        if digits(&mut i) == 0 {
            return None;
        }
    }
    Some((i, plain, integer))
}

/// Whether `bytes` (the inside of a string, between escapes) holds a
/// control character, which JSON strings must escape. Written without an
/// early exit so that it compiles to vector instructions: text is the bulk
/// of a large result.
pub(super) fn has_control(bytes: &[u8]) -> bool {
    // (Tried: the same fold over `b.wrapping_sub(0x20) & !b` as bytes; it
    // cost more, 29.4 M instructions for a 10 MiB result against 28.2 M.)
    bytes.chunks(64).any(|chunk| chunk.iter().fold(false, |seen, &b| seen | (b < 0x20)))
}

#[cfg(test)]
mod tests {
    use super::has_control;

    #[test]
    fn control_characters_are_found_wherever_they_are() {
        for b in 0..=255u8 {
            for len in [1, 15, 64, 65, 200] {
                for at in [0, len / 2, len - 1] {
                    let mut text = vec![b'a'; len];
                    text[at] = b;
                    assert_eq!(has_control(&text), b < 0x20, "byte {b:#04x} at {at} of {len}");
                }
            }
        }
        assert!(!has_control(b""));
        assert!(!has_control("é€😀\u{7f}".as_bytes()));
    }
}
