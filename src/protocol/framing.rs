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
    /// A line over the limit was skipped; the buffer is empty.
    TooLong,
    /// End of input.
    Eof,
}

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
        let (chunk, found) = match available.iter().position(|&b| b == b'\n') {
            Some(i) => (&available[..i], Some(i)),
            None => (available, None),
        };
        if !too_long && buf.len() + chunk.len() <= max {
            buf.extend_from_slice(chunk);
        } else {
            too_long = true;
            buf.clear();
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

#[cfg(test)]
mod tests {
    use super::*;

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
                (Line::TooLong, String::new()),
                (Line::Ok, "ok".into()),
                (Line::Ok, "last".into())
            ]
        );
    }
}
