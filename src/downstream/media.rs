//! `Content-Type` and `Accept` (RFC 9110 §8.3.1, §12.5.1), parsed rather
//! than searched for a substring: a type and subtype compare without regard
//! to case, parameters are ignored (but for Accept's `q`), and `q=0` means
//! "not acceptable".

use axum::http::{HeaderMap, header};

/// Whether the request has one `Content-Type` and it is `ty/sub`, whatever
/// its parameters (`application/json; charset=utf-8` is JSON). Several
/// Content-Type lines, or one that is not text, are not.
pub(crate) fn content_type_is(headers: &HeaderMap, ty: &str, sub: &str) -> bool {
    let mut all = headers.get_all(header::CONTENT_TYPE).iter();
    let (Some(value), None) = (all.next(), all.next()) else { return false };
    let Ok(value) = value.to_str() else { return false };
    let essence = value.split(';').next().unwrap_or_default();
    media_type(essence).is_some_and(|(t, s)| t.eq_ignore_ascii_case(ty) && s.eq_ignore_ascii_case(sub))
}

/// The media ranges of every `Accept` line of a request, in order,
/// borrowed from the request's headers (read on every POST: owned copies
/// cost four allocations a call).
#[derive(Debug)]
pub(crate) struct Accept<'h> {
    /// Inline for the usual few ranges: no allocation per request.
    ranges: smallvec::SmallVec<[Range<'h>; 4]>,
}

/// One media range: `type/subtype` (either may be `*`) and its quality in
/// thousandths.
#[derive(Debug)]
struct Range<'h> {
    ty: &'h str,
    sub: &'h str,
    q: u16,
}

impl<'h> Accept<'h> {
    /// The request's `Accept`, or `None` when it has none. Lines that are
    /// not text and elements that are not media ranges (or have a `q` that
    /// is not a qvalue) are left out, so they allow nothing.
    pub(crate) fn from_headers(headers: &'h HeaderMap) -> Option<Accept<'h>> {
        let mut lines = headers.get_all(header::ACCEPT).iter().peekable();
        lines.peek()?;
        let ranges = lines.filter_map(|v| v.to_str().ok()).flat_map(split_unquoted::<b','>).filter_map(range).collect();
        Some(Accept { ranges })
    }

    /// Whether `ty/sub` is acceptable: the most specific range that
    /// matches it (`ty/sub`, else `ty/*`, else `*/*`) has a quality above
    /// 0. Of equally specific ones the first counts.
    pub(crate) fn allows(&self, ty: &str, sub: &str) -> bool {
        let exact = self.find(|r| r.ty.eq_ignore_ascii_case(ty) && r.sub.eq_ignore_ascii_case(sub));
        let any_sub = || self.find(|r| r.ty.eq_ignore_ascii_case(ty) && r.sub == "*");
        let any = || self.find(|r| r.ty == "*" && r.sub == "*");
        exact.or_else(any_sub).or_else(any).is_some_and(|r| r.q > 0)
    }

    /// Whether `ty/sub` itself (not a wildcard) is listed with a quality
    /// above 0.
    pub(crate) fn names(&self, ty: &str, sub: &str) -> bool {
        self.find(|r| r.ty.eq_ignore_ascii_case(ty) && r.sub.eq_ignore_ascii_case(sub)).is_some_and(|r| r.q > 0)
    }

    fn find(&self, f: impl Fn(&Range<'h>) -> bool) -> Option<&Range<'h>> {
        self.ranges.iter().find(|r| f(r))
    }
}

/// Whether the request's Accept names `ty/sub` itself with a quality above
/// 0 ([`Accept::names`]); `false` without an Accept.
pub(crate) fn accept_names(headers: &HeaderMap, ty: &str, sub: &str) -> bool {
    Accept::from_headers(headers).is_some_and(|a| a.names(ty, sub))
}

/// `type/subtype` (surrounding whitespace allowed), each a token (or `*`).
fn media_type(s: &str) -> Option<(&str, &str)> {
    let (ty, sub) = s.trim_matches([' ', '\t']).split_once('/')?;
    (is_token(ty) && is_token(sub)).then_some((ty, sub))
}

/// RFC 9110 §5.6.2 `token`.
fn is_token(s: &str) -> bool {
    !s.is_empty() && s.bytes().all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
}

/// One element of an Accept list: a media range with its `q` (1 unless
/// given); `None` when it is not one. `*/sub` is not a range.
fn range(element: &str) -> Option<Range<'_>> {
    let mut parts = split_unquoted::<b';'>(element);
    let (ty, sub) = media_type(parts.next()?)?;
    if ty == "*" && sub != "*" {
        return None;
    }
    let mut q = 1000;
    for param in parts {
        let Some((name, value)) = param.split_once('=') else { continue };
        if name.trim_matches([' ', '\t']).eq_ignore_ascii_case("q") {
            q = qvalue(value.trim_matches([' ', '\t']))?;
        }
    }
    Some(Range { ty, sub, q })
}

/// RFC 9110 §12.4.2 `qvalue` in thousandths: `0[.ddd]` or `1[.000]`.
fn qvalue(s: &str) -> Option<u16> {
    let (int, frac) = s.split_once('.').unwrap_or((s, ""));
    if frac.len() > 3 || !frac.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let thousandths =
        frac.bytes().chain(std::iter::repeat(b'0')).take(3).fold(0u16, |n, d| n * 10 + u16::from(d - b'0'));
    match int {
        "0" => Some(thousandths),
        "1" if thousandths == 0 => Some(1000),
        _ => None,
    }
}

/// Splits `s` at each `SEP` that is not inside a quoted string (where `\`
/// escapes the next character), skipping empty pieces. An unterminated
/// quoted string runs to the end.
fn split_unquoted<const SEP: u8>(s: &str) -> impl Iterator<Item = &str> {
    let mut rest = Some(s);
    std::iter::from_fn(move || {
        loop {
            let r = rest?;
            let (piece, next) = match find_unquoted::<SEP>(r.as_bytes()) {
                Some(i) => (&r[..i], Some(&r[i + 1..])),
                None => (r, None),
            };
            rest = next;
            if !piece.trim_matches([' ', '\t']).is_empty() {
                return Some(piece);
            }
        }
    })
}

/// The first `SEP` in `b` outside a quoted string. Jumps from one `SEP` or
/// `"` to the next with `memchr2` (every POST's Accept is split here: a
/// byte-at-a-time state machine cost about 80 instructions a byte).
fn find_unquoted<const SEP: u8>(b: &[u8]) -> Option<usize> {
    let mut from = 0;
    while let Some(j) = memchr::memchr2(SEP, b'"', b.get(from..)?) {
        let at = from + j;
        if b[at] == SEP {
            return Some(at);
        }
        // A quoted string: on past its closing quote.
        let mut k = at + 1;
        loop {
            match b.get(k) {
                None => return None,
                Some(b'\\') => k += 2,
                Some(b'"') => break,
                Some(_) => k += 1,
            }
        }
        from = k + 1;
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    fn headers(name: &header::HeaderName, values: &[&[u8]]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for v in values {
            h.append(name.clone(), HeaderValue::from_bytes(v).unwrap());
        }
        h
    }

    #[test]
    fn content_type_is_parsed() {
        let json = |v: &[&[u8]]| content_type_is(&headers(&header::CONTENT_TYPE, v), "application", "json");
        for ok in [
            &b"application/json"[..],
            b"APPLICATION/Json",
            b"application/json; charset=utf-8",
            b"application/json;",
            b" application/json ",
        ] {
            assert!(json(&[ok]), "{}", String::from_utf8_lossy(ok));
        }
        let bad: [&[u8]; 10] = [
            b"application/jsonx",
            b"text/plain; x=application/json",
            b"application/json-seq",
            b"xapplication/json",
            b"application/ json",
            b"application/json charset=utf-8",
            b"",
            b"application/json\xff",
            b"application",
            b"application/*",
        ];
        for v in bad {
            assert!(!json(&[v]), "{}", String::from_utf8_lossy(v));
        }
        assert!(!json(&[]), "none");
        assert!(!json(&[b"application/json", b"application/json"]), "two lines");
    }

    #[test]
    fn accept_follows_the_most_specific_range() {
        // (allows application/json, names text/event-stream) of Accept lines.
        let answers = |v: &[&[u8]]| {
            let h = headers(&header::ACCEPT, v);
            Accept::from_headers(&h).map(|a| (a.allows("application", "json"), a.names("text", "event-stream")))
        };
        let table: [(&[u8], bool, bool); 22] = [
            // (Accept, allows application/json, names text/event-stream)
            (b"application/json, text/event-stream", true, true),
            (b"APPLICATION/JSON", true, false),
            (b"*/*", true, false),
            (b"application/*", true, false),
            (b"text/*", false, false),
            (b"text/event-stream", false, true),
            (b"text/event-stream;q=0.5", false, true),
            (b"*/*;q=0", false, false),
            (b"*/*; q=0.000", false, false),
            (b"application/json;q=0", false, false),
            (b"application/json;q=0, */*", false, false),
            (b"*/*, application/json;q=0", false, false),
            (b"application/*;q=0, application/json", true, false),
            (b"application/json;q=0.001", true, false),
            (b"text/event-stream;q=0, application/json", true, false),
            (b"application/jsonx", false, false),
            (b"text/html; x=\"application/json, text/event-stream\"", false, false),
            (b"text/html; x=\"a\\\"b,\", application/json", true, false),
            (b"application/json;q=2", false, false),
            (b"application/json;q=abc", false, false),
            (b",, application/json ,", true, false),
            (b"*/json", false, false),
        ];
        for (v, json, sse) in table {
            let (allows, names) = answers(&[v]).expect("an Accept");
            let name = String::from_utf8_lossy(v);
            assert_eq!(allows, json, "{name}: allows json");
            assert_eq!(names, sse, "{name}: names sse");
        }
        assert_eq!(answers(&[b"text/html", b"application/json"]), Some((true, false)), "lines add up");
        assert!(Accept::from_headers(&HeaderMap::new()).is_none());
        let garbage = answers(&[b"\xfftext/html, application/json"]).expect("an Accept");
        assert!(!garbage.0, "a line that is not text allows nothing");
    }

    /// The splitter as it was (a byte-at-a-time state machine), verbatim:
    /// the reference for the memchr one.
    fn split_old<const SEP: u8>(s: &str) -> impl Iterator<Item = &str> {
        let (mut quoted, mut escaped, mut start) = (false, false, 0);
        let mut cuts = s.bytes().enumerate().filter_map(move |(i, b)| {
            match (quoted, escaped, b) {
                (true, true, _) => escaped = false,
                (true, false, b'\\') => escaped = true,
                (_, false, b'"') => quoted = !quoted,
                (false, _, b) if b == SEP => return Some(i),
                _ => {}
            }
            None
        });
        std::iter::from_fn(move || {
            loop {
                if start > s.len() {
                    return None;
                }
                let end = cuts.next().unwrap_or(s.len());
                let piece = &s[start..end];
                start = end + 1;
                if !piece.trim_matches([' ', '\t']).is_empty() {
                    return Some(piece);
                }
            }
        })
    }

    #[test]
    fn splitting_honours_quotes_and_escapes_like_the_reference() {
        // Every string of up to six of these bytes.
        let alphabet = [b',', b';', b'"', b'\\', b'a', b' '];
        let (mut level, mut inputs) = (vec![Vec::new()], vec![Vec::new()]);
        for _ in 0..6 {
            level = level.iter().flat_map(|v| alphabet.map(|c| [v.as_slice(), &[c]].concat())).collect();
            inputs.extend(level.iter().cloned());
        }
        assert_eq!(inputs.len(), (0..=6).map(|n| 6usize.pow(n)).sum::<usize>());
        for input in &inputs {
            let s = std::str::from_utf8(input).expect("ASCII");
            assert_eq!(
                split_unquoted::<b','>(s).collect::<Vec<_>>(),
                split_old::<b','>(s).collect::<Vec<_>>(),
                "{s:?}"
            );
            assert_eq!(
                split_unquoted::<b';'>(s).collect::<Vec<_>>(),
                split_old::<b';'>(s).collect::<Vec<_>>(),
                "{s:?}"
            );
        }
    }

    #[test]
    fn qvalues() {
        for (s, q) in
            [("0", Some(0)), ("0.5", Some(500)), ("0.123", Some(123)), ("1", Some(1000)), ("1.000", Some(1000))]
        {
            assert_eq!(qvalue(s), q, "{s}");
        }
        for s in ["1.5", "0.1234", "2", "", ".5", "0.x", "-0"] {
            assert_eq!(qvalue(s), None, "{s}");
        }
    }
}
