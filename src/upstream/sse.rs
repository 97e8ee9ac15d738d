//! A Server-Sent Events decoder with a size limit.
//!
//! Off-the-shelf decoders buffer an event of any size; an upstream that never
//! ends an event would grow the gateway without bound. This one refuses an
//! event (or a line) over `max` bytes.

use bytes::{Buf, BytesMut};

/// One decoded event.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub(crate) struct Event {
    /// `event:` field; `None` means the default type, `message`.
    pub(crate) event: Option<String>,
    /// `data:` lines joined with `\n`.
    pub(crate) data: String,
    /// `id:` field.
    pub(crate) id: Option<String>,
    /// `retry:` field: the reconnection time the server asks for, in
    /// milliseconds (ignored unless all ASCII digits, as the SSE spec says).
    pub(crate) retry: Option<u64>,
}

/// An event or line larger than the limit.
#[derive(Debug, thiserror::Error)]
#[error("SSE event larger than {0} bytes")]
pub(crate) struct TooLarge(pub(crate) usize);

/// Incremental decoder: feed bytes, take events.
#[derive(Debug)]
pub(crate) struct Decoder {
    buf: BytesMut,
    current: Event,
    has_fields: bool,
    data_lines: usize,
    max: usize,
}

// === impl Decoder ===

impl Decoder {
    pub(crate) fn new(max: usize) -> Self {
        Decoder { buf: BytesMut::new(), current: Event::default(), has_fields: false, data_lines: 0, max }
    }

    /// Appends a chunk and returns the events it completed.
    pub(crate) fn feed(&mut self, chunk: &[u8]) -> Result<Vec<Event>, TooLarge> {
        self.buf.extend_from_slice(chunk);
        let mut out = Vec::new();
        while let Some(nl) = memchr::memchr(b'\n', &self.buf) {
            let mut line = &self.buf[..nl];
            if line.last() == Some(&b'\r') {
                line = &line[..line.len() - 1];
            }
            let line = String::from_utf8_lossy(line).into_owned();
            self.buf.advance(nl + 1);
            if line.is_empty() {
                if self.has_fields {
                    out.push(std::mem::take(&mut self.current));
                    self.has_fields = false;
                    self.data_lines = 0;
                }
                continue;
            }
            self.field(&line);
            if self.current.data.len() > self.max {
                return Err(TooLarge(self.max));
            }
        }
        if self.buf.len() > self.max {
            return Err(TooLarge(self.max));
        }
        Ok(out)
    }

    fn field(&mut self, line: &str) {
        if line.starts_with(':') {
            return; // A comment (keep-alive).
        }
        let (name, value) = match line.split_once(':') {
            Some((n, v)) => (n, v.strip_prefix(' ').unwrap_or(v)),
            None => (line, ""),
        };
        match name {
            "data" => {
                if self.data_lines > 0 {
                    self.current.data.push('\n');
                }
                self.current.data.push_str(value);
                self.data_lines += 1;
            }
            "event" => self.current.event = Some(value.to_owned()),
            // The SSE spec ignores an id with a NUL; one with a lone CR
            // could not be sent back as `Last-Event-ID` either.
            "id" if value.contains(['\0', '\r']) => {}
            "id" => self.current.id = Some(value.to_owned()),
            "retry" if !value.is_empty() && value.bytes().all(|b| b.is_ascii_digit()) => {
                self.current.retry = value.parse().ok();
            }
            _ => {} // Unknown fields are ignored.
        }
        self.has_fields = true;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_across_chunks() {
        let mut d = Decoder::new(1024);
        assert!(d.feed(b"id: 0\ndata:\n\nevent: mess").unwrap().len() == 1);
        let ev = d.feed(b"age\r\ndata: {\"a\":1}\ndata: x\n\n: keepalive\n\n").unwrap();
        assert_eq!(
            ev,
            vec![Event { event: Some("message".into()), data: "{\"a\":1}\nx".into(), id: None, retry: None }]
        );
    }

    #[test]
    fn keeps_the_retry_time_when_it_is_a_number() {
        let mut d = Decoder::new(1024);
        let ev = d.feed(b"id: e-1\nretry: 500\ndata:\n\nretry: 5s\ndata: x\n\n").unwrap();
        assert_eq!((ev[0].id.as_deref(), ev[0].retry), (Some("e-1"), Some(500)));
        assert_eq!(ev[1].retry, None, "not all digits: ignored");
        let ev = d.feed(b"id: a\rb\ndata: x\n\nid: a\0b\ndata: y\n\n").unwrap();
        assert_eq!((ev[0].id.as_deref(), ev[1].id.as_deref()), (None, None), "ids that cannot be sent back");
    }

    #[test]
    fn refuses_oversized_events() {
        let mut d = Decoder::new(8);
        assert!(d.feed(b"data: 0123456789\n").is_err());
        let mut d = Decoder::new(8);
        assert!(d.feed(b"data: 0123456789").is_err());
    }
}
