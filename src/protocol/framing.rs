//! Newline-delimited framing for stdio with a maximum message size.
//!
//! A line longer than the limit is skipped to its end rather than buffered,
//! so a peer cannot grow the gateway's memory, and the stream stays usable
//! for the next message.

use tokio::io::{AsyncBufRead, AsyncBufReadExt};

/// What [`read_line`] read.
#[derive(Debug, PartialEq, Eq)]
pub enum Line {
    /// A complete line (without `\n` or `\r\n`) is in the buffer.
    Ok,
    /// A line over the limit was skipped; the buffer holds its first
    /// [`HEAD`] bytes at most (enough to find its `id`, see [`id_in_head`]).
    TooLong,
    /// End of input.
    Eof,
}

/// How much of a too-long line is kept.
pub const HEAD: usize = 256;

/// Reads one line into `buf` (cleared first), skipping lines over `max` bytes.
pub async fn read_line<R: AsyncBufRead + Unpin>(r: &mut R, buf: &mut Vec<u8>, max: usize) -> std::io::Result<Line> {
    buf.clear();
    let mut too_long = false;
    loop {
        let available = r.fill_buf().await?;
        if available.is_empty() {
            // EOF; a last line without `\n` still counts.
            return Ok(match (too_long, buf.is_empty()) {
                (true, _) => Line::TooLong,
                (false, true) => Line::Eof,
                (false, false) => Line::Ok,
            });
        }
        // memchr: a byte-at-a-time search cost 4 instructions a byte, most
        // of a stdio hop's own work on a 1 KiB reply.
        let (chunk, found) = match memchr::memchr(b'\n', available) {
            Some(i) => (&available[..i], Some(i)),
            None => (available, None),
        };
        if !too_long && buf.len() + chunk.len() <= max {
            buf.extend_from_slice(chunk);
        } else if !too_long {
            too_long = true;
            let keep = HEAD.min(max);
            if buf.len() < keep {
                let more = (keep - buf.len()).min(chunk.len());
                buf.extend_from_slice(&chunk[..more]);
            }
            buf.truncate(keep);
        }
        let consumed = found.map_or(available.len(), |i| i + 1);
        r.consume(consumed);
        if found.is_some() {
            if too_long {
                return Ok(Line::TooLong);
            }
            if buf.last() == Some(&b'\r') {
                buf.pop();
            }
            return Ok(Line::Ok);
        }
    }
}

/// The top-level `"id"` of a JSON object, from the first bytes of its text:
/// a number or a string without escapes, as raw JSON text. Used to fail
/// the one call whose reply (or request) was too large to read.
///
/// Only a member name at the top level counts: a string is a name when it
/// comes first in the object or right after a top-level comma, so a value
/// that happens to be `"id"` (`{"method":"id","id":3}`) is passed over,
/// and a name spelled with escapes (`"\u0069d"`) is decoded. `None` when
/// the head does not show a whole, usable id.
pub fn id_in_head(head: &[u8]) -> Option<&str> {
    let start = head.iter().position(|b| !b.is_ascii_whitespace())?;
    if head[start] != b'{' {
        return None;
    }
    let (mut depth, mut i, mut at_name) = (1usize, start + 1, true);
    while i < head.len() {
        match head[i] {
            b'{' | b'[' => depth += 1,
            b'}' | b']' => depth = depth.checked_sub(1).filter(|&d| d > 0)?,
            b',' if depth == 1 => at_name = true,
            b'"' => {
                let end = i + 1 + string_end(&head[i + 1..])?;
                if depth == 1 && std::mem::take(&mut at_name) && is_id(&head[i..=end]) {
                    let rest = skip_ws(&head[end + 1..]).strip_prefix(b":")?;
                    return id_value(skip_ws(rest));
                }
                i = end;
            }
            _ => {}
        }
        i += 1;
    }
    None
}

/// Whether the JSON string `quoted` (quotes included) says `id`.
fn is_id(quoted: &[u8]) -> bool {
    let text = &quoted[1..quoted.len() - 1];
    if !text.contains(&b'\\') {
        return text == b"id";
    }
    serde_json::from_slice::<String>(quoted).is_ok_and(|name| name == "id")
}

/// The id value at the start of `value`: a string without escapes, or an
/// integer followed (after whitespace) by `,` or `}`. A number cut off by
/// the end of the head is not whole (it might be 123, not 12), and one
/// followed by `.5` or `e3` is no integer; a string is whole at its quote.
fn id_value(value: &[u8]) -> Option<&str> {
    let (len, end_ok) = match value.first()? {
        b'"' => (string_end(&value[1..]).filter(|&n| !value[1..=n].contains(&b'\\'))? + 2, true),
        b'-' | b'0'..=b'9' => {
            let sign = usize::from(value[0] == b'-');
            let digits = value[sign..].iter().take_while(|b| b.is_ascii_digit()).count();
            ((digits > 0).then_some(sign + digits)?, false)
        }
        _ => return None,
    };
    match skip_ws(&value[len..]).first() {
        Some(b',' | b'}') => {}
        None if end_ok => {}
        _ => return None,
    }
    std::str::from_utf8(&value[..len]).ok()
}

/// Index of the closing quote of a string whose text starts at `s[0]`.
fn string_end(s: &[u8]) -> Option<usize> {
    let mut i = 0;
    while i < s.len() {
        match s[i] {
            b'\\' => i += 2,
            b'"' => return Some(i),
            _ => i += 1,
        }
    }
    None
}

fn skip_ws(s: &[u8]) -> &[u8] {
    let n = s.iter().take_while(|b| b.is_ascii_whitespace()).count();
    &s[n..]
}

/// `json` on one line: raw CR and LF become spaces. In JSON they can only
/// be whitespace between tokens (strings escape them), so the meaning is
/// unchanged; a relayed upstream body that was pretty-printed would
/// otherwise break a stdio line or an SSE `data:` field. Returned as it
/// came (no copy) in the usual case.
pub fn one_line(json: String) -> String {
    if !json.bytes().any(|b| b == b'\n' || b == b'\r') {
        return json;
    }
    json.replace(['\n', '\r'], " ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_line_keeps_meaning() {
        let pretty = "{\n  \"a\": \"x\\ny\",\r\n  \"b\": [1,\n2]\n}".to_owned();
        let flat = one_line(pretty.clone());
        assert!(!flat.contains('\n') && !flat.contains('\r'));
        let (a, b): (serde_json::Value, serde_json::Value) =
            (serde_json::from_str(&pretty).unwrap(), serde_json::from_str(&flat).unwrap());
        assert_eq!(a, b);
        assert_eq!(one_line("{}".to_owned()), "{}");
    }

    #[test]
    fn finds_the_top_level_id_only() {
        let table: [(&str, Option<&str>); 24] = [
            (r#"{"jsonrpc":"2.0","id":17,"result":{"x"#, Some("17")),
            (r#"{ "id" : "a-b" , "result"#, Some(r#""a-b""#)),
            (r#"{"result":{"id":3,"content":[{"id":4}]},"id":9,"#, Some("9")),
            (r#"{"result":{"text":"\"id\":5"},"id":-2}"#, Some("-2")),
            (r#"{"jsonrpc":"2.0","result":{"x":"yyyyyy"#, None),
            (r#"{"id":12"#, None), // cut off: might be 123
            (r#"{"id":"a\"b","#, None),
            (r#"{"id":null,"#, None),
            // A top-level value "id" is not the member name.
            (r#"{"method":"id","id":3}"#, Some("3")),
            (r#"{"params":"id","id":3,"#, Some("3")),
            (r#"{"jsonrpc":"2.0","method":"id","id":"x"}"#, Some(r#""x""#)),
            (r#"{"a":["id",1],"b":{"id":2},"id":3}"#, Some("3")),
            (r#"{"a":"id" , "id" :4}"#, Some("4")),
            // A name spelled with escapes is still `id`.
            (r#"{"jsonrpc":"2.0","\u0069d":5,"method":"x"}"#, Some("5")),
            (r#"{"\u0069\u0064":"s","#, Some(r#""s""#)),
            (r#"{"i\u0064x":6,"id":7}"#, Some("7")),
            // Not an object, not at the top level, not a usable integer.
            (r#"[{"id":1}]"#, None),
            (r#" "id":1,"#, None),
            (r#"{"a":{"id":1}}"#, None),
            (r#"{"id":1.5,"#, None),
            (r#"{"id":-,"#, None),
            (r#"{"id":"#, None),
            (r#"{"id":"whole""#, Some(r#""whole""#)),
            (r#"{"id":"x" 1,"#, None),
        ];
        for (head, want) in table {
            assert_eq!(id_in_head(head.as_bytes()), want, "{head}");
        }
    }

    #[tokio::test]
    async fn skips_long_lines_and_keeps_going() {
        let input: &[u8] = b"short\r\nthis line is too long\nok\nlast";
        let mut r = tokio::io::BufReader::with_capacity(4, input);
        let mut buf = Vec::new();
        let mut got = Vec::new();
        loop {
            match read_line(&mut r, &mut buf, 8).await.unwrap() {
                Line::Eof => break,
                l => got.push((l, String::from_utf8(buf.clone()).unwrap())),
            }
        }
        assert_eq!(
            got,
            vec![
                (Line::Ok, "short".into()),
                (Line::TooLong, "this lin".into()),
                (Line::Ok, "ok".into()),
                (Line::Ok, "last".into())
            ]
        );
    }
}
