//! A reply to a client: a text the gateway wrote, or a forwarded result
//! left in the upstream's message it came in and sent from there.
//!
//! A tool's result may be megabytes. Written into a new text with the
//! client's id around it, it was copied once more and held twice while the
//! reply was sent (issue 23). A [`Reply::Spliced`] is the client's id in a
//! short head, the upstream's message (the result is a range of it) and
//! `}`: the HTTP JSON and stdio writers send the three as they are (for a
//! 2026-07-28 client with its `resultType` written into the head,
//! [`Reply::complete_plain`]); a writer that needs one text (an SSE event)
//! asks for it with [`Reply::into_string`], which copies once, as before.

use std::ops::Range;

use super::RawValue;
use super::message::Message;
use super::modern::{self, Completion};

/// Results at least this long are sent from the upstream's message rather
/// than copied into the reply. Below it a copy costs less than the parts
/// (a `Bytes` each, a frame each, a vectored write).
pub const SPLICE_FROM: usize = 64 * 1024;

/// A reply to send to a client: valid JSON text, one JSON-RPC response.
#[derive(Debug)]
pub enum Reply {
    /// Written by the gateway (or small enough to copy).
    Text(String),
    /// `head`, then `message[range]` (the upstream's `result`, as it came),
    /// then `}`.
    Spliced(Spliced),
}

/// The parts of a [`Reply::Spliced`].
#[derive(Debug)]
pub struct Spliced {
    /// `{"jsonrpc":"2.0","id":<the client's id>,"result":`.
    head: String,
    /// The upstream's message, whole.
    message: String,
    /// Where its `result` is.
    range: Range<usize>,
    /// Whether the result names its own `resultType` (2026-07-28).
    typed: bool,
}

/// What follows the result in a [`Reply::Spliced`].
const TAIL: &str = "}";

impl Reply {
    /// The reply to request `id` with the `result` of the upstream's
    /// `reply`, as it came: spliced when the result is at least
    /// [`SPLICE_FROM`] bytes and still in the message it came in, else
    /// written into one text. `None`: `reply` has no result.
    pub fn forward(id: &RawValue, mut reply: Message) -> Option<Reply> {
        // Read before the result is taken (the scan found it, if it is there).
        let typed = reply.result_raw()?.text().len() >= SPLICE_FROM && reply.result_member("resultType").is_some();
        match reply.take_forwarded(SPLICE_FROM) {
            Some((message, range)) => {
                let mut head = String::with_capacity(64 + id.get().len());
                super::encode::head(&mut head, id, "result");
                Some(Reply::Spliced(Spliced { head, message, range, typed }))
            }
            None => Some(Reply::Text(super::encode::forward(id, reply.result_raw()?))),
        }
    }

    /// Its length in bytes.
    pub fn len(&self) -> usize {
        match self {
            Reply::Text(t) => t.len(),
            Reply::Spliced(s) => s.head.len() + s.range.len() + TAIL.len(),
        }
    }

    /// Whether it is empty (never, for a reply the gateway made).
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The text of a reply the gateway wrote; `None` for a spliced one (a
    /// forwarded result: read it with [`Reply::parts`]).
    pub fn text(&self) -> Option<&str> {
        match self {
            Reply::Text(t) => Some(t),
            Reply::Spliced(_) => None,
        }
    }

    /// Its text in order, in one part or three.
    pub fn parts(&self) -> [&str; 3] {
        match self {
            Reply::Text(t) => [t, "", ""],
            Reply::Spliced(s) => [&s.head, &s.message[s.range.clone()], TAIL],
        }
    }

    /// Its text as one string (a copy, for a spliced reply).
    pub fn into_string(self) -> String {
        match self {
            Reply::Text(t) => t,
            Reply::Spliced(s) => {
                let mut out = String::with_capacity(s.head.len() + s.range.len() + TAIL.len());
                out.push_str(&s.head);
                out.push_str(&s.message[s.range]);
                out.push_str(TAIL);
                out
            }
        }
    }

    /// The reply as a 2026-07-28 result of no list must be
    /// ([`modern::complete`] with [`Completion::Plain`]), byte for byte: a
    /// spliced result that names no `resultType` gets
    /// `"resultType":"complete"` as its first member, written into the head
    /// (the result's `{` moves there too), so nothing is copied.
    pub fn complete_plain(self, id: &RawValue) -> Reply {
        match self {
            Reply::Text(text) => Reply::Text(modern::complete(text, id, Completion::Plain)),
            Reply::Spliced(mut s) => {
                let result = &s.message[s.range.clone()];
                if s.typed || !result.starts_with('{') {
                    return Reply::Spliced(s);
                }
                let empty = result[1..].trim_start().starts_with('}');
                s.head.push_str(r#"{"resultType":"complete""#);
                if !empty {
                    s.head.push(',');
                }
                s.range.start += 1;
                Reply::Spliced(s)
            }
        }
    }

    /// Its text as byte chunks to send in order, none copied: the head, the
    /// upstream's message cut to the result (`Bytes` shares the buffer),
    /// the tail.
    pub fn into_chunks(self) -> Vec<bytes::Bytes> {
        match self {
            Reply::Text(t) => vec![bytes::Bytes::from(t)],
            Reply::Spliced(s) => vec![
                bytes::Bytes::from(s.head),
                bytes::Bytes::from(s.message).slice(s.range),
                bytes::Bytes::from_static(TAIL.as_bytes()),
            ],
        }
    }
}

impl From<String> for Reply {
    fn from(text: String) -> Self {
        Reply::Text(text)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::{Limits, ResultCheck, encode};

    /// An upstream's reply to a tool call whose `text` is `n` bytes long,
    /// parsed as the inbox parses one (its result forwarded unread).
    fn upstream_reply(n: usize) -> Message {
        let text = format!(
            r#"{{"jsonrpc":"2.0","id":7,"result":{{"content":[{{"type":"text","text":"{}"}}]}}}}"#,
            "x".repeat(n)
        );
        Message::parse_owned(text, &Limits::default(), |_| crate::protocol::result_check("tools/call"))
            .expect("a valid reply")
    }

    fn id(text: &str) -> Box<RawValue> {
        RawValue::from_string(text.to_owned()).unwrap()
    }

    #[test]
    fn a_large_result_is_spliced_and_reads_as_the_copy_would() {
        let id = id(r#""client-1""#);
        let expected = encode::forward(&id, upstream_reply(SPLICE_FROM).result_raw().unwrap());
        let reply = Reply::forward(&id, upstream_reply(SPLICE_FROM)).unwrap();
        assert!(matches!(reply, Reply::Spliced(_)), "{reply:?}");
        assert_eq!(reply.text(), None);
        assert_eq!(reply.len(), expected.len());
        assert_eq!(reply.parts().concat(), expected);
        let chunks: Vec<u8> = reply.into_chunks().iter().flat_map(|c| c.iter().copied()).collect();
        assert_eq!(chunks, expected.as_bytes());
        let reply = Reply::forward(&id, upstream_reply(SPLICE_FROM)).unwrap();
        assert_eq!(reply.into_string(), expected);
    }

    #[test]
    fn a_small_result_is_copied_into_one_text() {
        let id = id("3");
        let reply = Reply::forward(&id, upstream_reply(10)).unwrap();
        let expected = encode::forward(&id, upstream_reply(10).result_raw().unwrap());
        assert_eq!(reply.text(), Some(expected.as_str()));
        assert_eq!(reply.parts().concat(), expected);
        assert_eq!(reply.into_chunks().concat(), expected.as_bytes());
    }

    #[test]
    fn a_spliced_result_is_completed_for_the_modern_era_as_the_copy_would_be() {
        let id = id(r#""m-1""#);
        let pad = "z".repeat(SPLICE_FROM);
        for result in [
            format!(r#"{{"content":[{{"type":"text","text":"{pad}"}}]}}"#),
            format!(r#"{{"resultType":"input_required","requestState":"{pad}"}}"#),
            format!(r#"{{ "content":[{{"type":"text","text":"{pad}"}}], "resultType": "complete" }}"#),
            format!("{{{}}}", " ".repeat(SPLICE_FROM)),
        ] {
            let text = format!(r#"{{"jsonrpc":"2.0","id":9,"result":{result}}}"#);
            let parse = || {
                Message::parse_owned(text.clone(), &Limits::default(), |_| crate::protocol::result_check("tools/call"))
                    .unwrap()
            };
            let spliced = Reply::forward(&id, parse()).unwrap();
            assert!(spliced.text().is_none(), "spliced");
            let expected =
                modern::complete(Reply::forward(&id, parse()).unwrap().into_string(), &id, Completion::Plain);
            let completed = spliced.complete_plain(&id);
            assert!(completed.text().is_none(), "still spliced");
            assert_eq!(completed.len(), expected.len());
            assert!(completed.parts().concat() == expected, "{}", &expected[..120]);
        }
    }

    #[test]
    fn a_result_read_whole_is_copied_and_an_error_is_not_forwarded() {
        let id = id("4");
        let text = format!(r#"{{"jsonrpc":"2.0","id":7,"result":{{"v":"{}"}}}}"#, "y".repeat(SPLICE_FROM));
        let whole = Message::parse_owned(text, &Limits::default(), |_| ResultCheck::Whole).unwrap();
        let reply = Reply::forward(&id, whole).unwrap();
        assert!(reply.text().is_some_and(|t| t.starts_with(r#"{"jsonrpc":"2.0","id":4,"result":{"v":"yy"#)));
        let error = r#"{"jsonrpc":"2.0","id":7,"error":{"code":1,"message":"no"}}"#;
        let error = Message::parse_owned(error.into(), &Limits::default(), |_| ResultCheck::Whole).unwrap();
        assert!(Reply::forward(&id, error).is_none());
    }
}
