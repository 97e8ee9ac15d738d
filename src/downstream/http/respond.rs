//! Answers: JSON-RPC errors with their HTTP status, replies as JSON or one
//! SSE event, and refusals that leave a body unread.

use super::*;

/// How long, and how much of, the body of a request refused before it was
/// read is still read and thrown away on HTTP/1.1 before the connection is
/// closed. A client is usually still sending when the refusal comes; if the
/// gateway closed the connection with its body unread, the kernel would
/// reset it and many clients (hyper's among them) would report the broken
/// pipe instead of the answer. Nothing is kept, and both bounds hold the
/// connection for much less than a reasonable `connection_idle_timeout`.
pub(super) const LINGER: Duration = Duration::from_secs(5);

pub(super) const LINGER_BYTES: usize = 16 << 20;

/// `resp` to a request refused before its body was (all) read. On
/// HTTP/1.1 the connection closes after it, but the rest of the body is
/// first read and thrown away for a moment ([`LINGER`], [`LINGER_BYTES`]) so
/// that the client, likely still sending, gets to read the answer. HTTP/2
/// needs none of this: the stream alone is reset, after the answer.
pub(super) fn refused_unread(version: Version, mut rest: axum::body::BodyDataStream, mut resp: Response) -> Response {
    if version >= Version::HTTP_2 || axum::body::HttpBody::is_end_stream(&rest) {
        return resp;
    }
    resp.headers_mut().insert(header::CONNECTION, HeaderValue::from_static("close"));
    tokio::spawn(async move {
        let mut left = LINGER_BYTES;
        let discard = async {
            while let Some(Ok(chunk)) = futures_util::StreamExt::next(&mut rest).await {
                left = left.checked_sub(chunk.len())?;
            }
            Some(())
        };
        // Either way the body is dropped here, which closes the connection.
        let _ = tokio::time::timeout(LINGER, discard).await;
    });
    resp
}

pub(super) fn reply_response(reply: String, sse: bool) -> Response {
    if sse {
        let mut resp = Response::new(Body::from(super::super::session::sse_event(None, reply)));
        resp.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("text/event-stream"));
        return resp;
    }
    json_reply(protocol::Reply::Text(reply))
}

/// A reply as a JSON response, sent in the parts it is in: a large result
/// from the upstream's message, not copied ([`protocol::Reply`]).
pub(super) fn json_reply(reply: protocol::Reply) -> Response {
    let body = match reply {
        protocol::Reply::Text(text) => Body::from(text),
        spliced => Body::new(Chunks::new(spliced.into_chunks())),
    };
    (StatusCode::OK, json_headers(), body).into_response()
}

/// A body of chunks known in advance, sent in order (a frame each: hyper
/// writes them with one vectored write, not copied into its buffer), its
/// length declared.
#[derive(Debug)]
pub(super) struct Chunks {
    chunks: std::collections::VecDeque<Bytes>,
    left: u64,
}

impl Chunks {
    pub(super) fn new(chunks: Vec<Bytes>) -> Self {
        let left = chunks.iter().map(|c| c.len() as u64).sum();
        Chunks { chunks: chunks.into(), left }
    }
}

impl http_body::Body for Chunks {
    type Data = Bytes;
    type Error = std::convert::Infallible;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<http_body::Frame<Bytes>, Self::Error>>> {
        let next = self.chunks.pop_front();
        if let Some(c) = &next {
            self.left -= c.len() as u64;
        }
        std::task::Poll::Ready(next.map(|c| Ok(http_body::Frame::data(c))))
    }

    fn is_end_stream(&self) -> bool {
        self.chunks.is_empty()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        http_body::SizeHint::with_exact(self.left)
    }
}

pub(super) fn json_headers() -> [(header::HeaderName, HeaderValue); 1] {
    [(header::CONTENT_TYPE, HeaderValue::from_static("application/json"))]
}

pub(super) fn rpc_error(status: StatusCode, id: Option<&protocol::RawValue>, code: i64, message: &str) -> Response {
    (status, json_headers(), encode::error(id, code, message, None)).into_response()
}
