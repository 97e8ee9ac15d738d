//! The HTTP client under the Streamable HTTP and legacy SSE links.
//!
//! Every message to an HTTP upstream is a POST, so its cost is paid on every
//! call. reqwest adds a redirect layer, a retry layer and two URL parses per
//! request on top of hyper (about 28,000 instructions of the gateway's
//! ~183,000 per `tools/call`, measured with callgrind: docs/benchmarks.md).
//! [`Plain`] is hyper's pooled client alone, used for the POSTs to a plain
//! `http://` endpoint when no proxy is configured in the environment. reqwest
//! keeps everything else: TLS (its roots and verifier), proxies, the GET and
//! DELETE requests, and any POST answered with a redirect (sent again through
//! reqwest, which follows it as it always did).
//!
//! Both kinds of response become one [`Reply`], so reading a body or an SSE
//! stream is the same code whichever client sent the request.

use std::time::Duration;

use bytes::Bytes;
use http::header::{CONTENT_LENGTH, HOST, HeaderMap, HeaderValue};
use http_body_util::{BodyExt as _, Full};
use hyper::body::Incoming;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioTimer};

/// A response from either client.
pub(crate) type Reply = http::Response<ReplyBody>;

/// A response body from either client.
#[derive(Debug)]
pub(crate) enum ReplyBody {
    /// From [`Plain`].
    Hyper(Incoming),
    /// From reqwest.
    Reqwest(reqwest::Body),
}

/// Why an HTTP exchange failed, by the client that ran it. None of them
/// carries the URL (it may hold secrets).
#[derive(Debug, thiserror::Error)]
pub(crate) enum HttpError {
    /// reqwest's error, its URL stripped.
    #[error(transparent)]
    Reqwest(reqwest::Error),
    /// hyper's client: connecting or sending the request.
    #[error(transparent)]
    Client(hyper_util::client::legacy::Error),
    /// hyper: reading the response body.
    #[error(transparent)]
    Body(hyper::Error),
}

impl HttpError {
    /// The request never left: nothing reached the upstream.
    pub(crate) fn is_connect(&self) -> bool {
        match self {
            HttpError::Reqwest(e) => e.is_connect(),
            HttpError::Client(e) => e.is_connect(),
            HttpError::Body(_) => false,
        }
    }
}

impl From<reqwest::Error> for HttpError {
    fn from(e: reqwest::Error) -> Self {
        HttpError::Reqwest(e.without_url())
    }
}

/// A reqwest response as a [`Reply`].
pub(crate) fn from_reqwest(resp: reqwest::Response) -> Reply {
    http::Response::<reqwest::Body>::from(resp).map(ReplyBody::Reqwest)
}

// === impl ReplyBody ===

impl ReplyBody {
    /// The next piece of data; `None` at the end (trailers are skipped).
    pub(crate) async fn chunk(&mut self) -> Result<Option<Bytes>, HttpError> {
        loop {
            let frame = match self {
                ReplyBody::Hyper(b) => b.frame().await.transpose().map_err(HttpError::Body)?,
                ReplyBody::Reqwest(b) => b.frame().await.transpose().map_err(HttpError::from)?,
            };
            match frame.map(http_body::Frame::into_data) {
                None => return Ok(None),
                Some(Ok(data)) => return Ok(Some(data)),
                Some(Err(_trailers)) => {}
            }
        }
    }
}

/// The length the response declares, if any.
pub(crate) fn content_length(headers: &HeaderMap) -> Option<u64> {
    headers.get(CONTENT_LENGTH)?.to_str().ok()?.trim().parse().ok()
}

/// hyper's pooled HTTP/1.1 client for one plain-`http://` upstream.
#[derive(Debug, Clone)]
pub(crate) struct Plain {
    client: Client<HttpConnector, Full<Bytes>>,
    uri: http::Uri,
    /// `Host`, made once: hyper-util's client otherwise formats
    /// `host:port` into a new header value on every request.
    host: HeaderValue,
}

// === impl Plain ===

impl Plain {
    /// A client for `url`, or `None` when reqwest must carry its requests:
    /// TLS, credentials in the URL (reqwest turns them into a header), or a
    /// proxy named in the environment (reqwest honours it).
    pub(crate) fn for_url(url: &url::Url) -> Option<Plain> {
        if url.scheme() != "http" || !url.username().is_empty() || url.password().is_some() || proxied() {
            return None;
        }
        let uri = http::Uri::try_from(url.as_str()).ok()?;
        let host = host_value(&uri)?;
        let mut connector = HttpConnector::new();
        // As reqwest was set up (routing/mod.rs): 10 s to connect, no
        // Nagle delay on small JSON messages.
        connector.set_connect_timeout(Some(Duration::from_secs(10)));
        connector.set_nodelay(true);
        let client = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(Duration::from_secs(90))
            .pool_timer(TokioTimer::new())
            .build(connector);
        Some(Plain { client, uri, host })
    }

    /// POSTs `body` with `headers` (which must include the content type).
    pub(crate) async fn post(&self, headers: HeaderMap, body: Bytes) -> Result<Reply, HttpError> {
        let mut req = http::Request::new(Full::new(body));
        *req.method_mut() = http::Method::POST;
        *req.uri_mut() = self.uri.clone();
        *req.headers_mut() = headers;
        // An operator's own `Host` (upstream headers) stands, as with hyper-util.
        req.headers_mut().entry(HOST).or_insert_with(|| self.host.clone());
        let resp = self.client.request(req).await.map_err(HttpError::Client)?;
        Ok(resp.map(ReplyBody::Hyper))
    }
}

/// `Host` for `uri` as hyper-util writes it: the port only when it is not
/// http's 80 (`url` drops a default port when it parses, so only a `Uri`
/// made otherwise has one).
fn host_value(uri: &http::Uri) -> Option<HeaderValue> {
    match (uri.host()?, uri.port_u16()) {
        (host, Some(port)) if port != 80 => HeaderValue::from_str(&format!("{host}:{port}")).ok(),
        (host, _) => HeaderValue::from_str(host).ok(),
    }
}

/// Whether the environment names a proxy that reqwest would use for a
/// plain-HTTP request (it reads these variables; so must we, to agree).
fn proxied() -> bool {
    ["HTTP_PROXY", "http_proxy", "ALL_PROXY", "all_proxy"]
        .iter()
        .any(|k| std::env::var_os(k).is_some_and(|v| !v.is_empty()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_plain_http_without_credentials_goes_through_hyper() {
        let plain = |u: &str| Plain::for_url(&url::Url::parse(u).expect("a URL")).is_some();
        // A proxy in the test's environment would make every case `false`.
        let expected = !proxied();
        assert_eq!(plain("http://127.0.0.1:8080/mcp"), expected);
        assert_eq!(plain("http://localhost/mcp?x=1"), expected);
        assert!(!plain("https://example.com/mcp"), "TLS stays with reqwest");
        assert!(!plain("http://user:pw@127.0.0.1/mcp"), "credentials in the URL stay with reqwest");
        assert!(!plain("http://user@127.0.0.1/mcp"));
    }

    /// A plain-http endpoint that redirects its POSTs: hyper does not
    /// follow, so the request goes again through reqwest, which does (as
    /// every POST did before hyper carried them), body and headers intact.
    #[tokio::test]
    async fn a_redirected_post_is_followed_through_reqwest() {
        use axum::http::{HeaderMap as Headers, StatusCode};
        async fn mcp(h: Headers, body: Bytes) -> (StatusCode, String) {
            let session = h.get("mcp-session-id").and_then(|v| v.to_str().ok()).unwrap_or("-");
            (StatusCode::OK, format!("{session} {}", String::from_utf8_lossy(&body)))
        }
        let app = axum::Router::new()
            .route("/old", axum::routing::post(|| async { (StatusCode::TEMPORARY_REDIRECT, [("location", "/mcp")]) }))
            .route("/mcp", axum::routing::post(mcp));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("a port");
        let port = listener.local_addr().expect("bound").port();
        tokio::spawn(async move { axum::serve(listener, app).await });
        let client = reqwest::Client::builder().no_proxy().build().expect("a client");
        let post = |path: &str| {
            let url = url::Url::parse(&format!("http://127.0.0.1:{port}{path}")).expect("a URL");
            super::super::http::HttpLink::new(client.clone(), url, HeaderMap::new(), 1 << 20, None)
        };
        let mut headers = HeaderMap::new();
        headers.insert("mcp-session-id", http::HeaderValue::from_static("s1"));
        for path in ["/mcp", "/old"] {
            let link = post(path);
            let resp = link.post(|| Ok(headers.clone()), &Bytes::from_static(b"{}")).await.expect("answered");
            assert_eq!(resp.status(), StatusCode::OK, "{path}");
            let body = super::super::http::read_body(resp, 1 << 20).await.expect("a body");
            assert_eq!(body, b"s1 {}", "{path}");
        }
    }

    /// The `Host` made once per upstream is what hyper-util would write
    /// (`host:port`, the port left out when it is 80), and an operator's
    /// own `Host` stands.
    #[tokio::test]
    async fn the_host_header_is_made_once_and_an_operators_stands() {
        let host_of = |u: &str| Plain::for_url(&url::Url::parse(u).expect("a URL")).map(|p| p.host);
        if proxied() {
            return; // every URL goes through reqwest then
        }
        assert_eq!(host_of("http://localhost/mcp").expect("plain"), "localhost");
        assert_eq!(host_of("http://localhost:80/mcp").expect("plain"), "localhost");
        let host = |u: &'static str| host_value(&http::Uri::from_static(u)).expect("a host");
        assert_eq!(host("http://localhost:80/mcp"), "localhost");
        assert_eq!(host("http://localhost:8080/mcp"), "localhost:8080");
        assert_eq!(host_of("http://127.0.0.1:8080/mcp").expect("plain"), "127.0.0.1:8080");
        assert_eq!(host_of("http://[::1]:9/mcp").expect("plain"), "[::1]:9");

        async fn echo_host(h: axum::http::HeaderMap) -> String {
            let all: Vec<_> = h.get_all("host").iter().map(|v| v.to_str().unwrap_or("?").to_owned()).collect();
            all.join(",")
        }
        let app = axum::Router::new().route("/mcp", axum::routing::post(echo_host));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("a port");
        let port = listener.local_addr().expect("bound").port();
        tokio::spawn(async move { axum::serve(listener, app).await });
        let plain = Plain::for_url(&url::Url::parse(&format!("http://127.0.0.1:{port}/mcp")).expect("a URL"))
            .expect("plain http");
        let mut own = HeaderMap::new();
        own.insert(HOST, HeaderValue::from_static("upstream.internal"));
        for (headers, want) in [(HeaderMap::new(), format!("127.0.0.1:{port}")), (own, "upstream.internal".to_owned())]
        {
            let resp = plain.post(headers, Bytes::from_static(b"{}")).await.expect("answered");
            let body = super::super::http::read_body(resp, 1 << 10).await.expect("a body");
            assert_eq!(String::from_utf8_lossy(&body), want);
        }
    }

    #[test]
    fn content_length_is_read_leniently() {
        let mut h = HeaderMap::new();
        assert_eq!(content_length(&h), None);
        h.insert(CONTENT_LENGTH, http::HeaderValue::from_static("42"));
        assert_eq!(content_length(&h), Some(42));
        h.insert(CONTENT_LENGTH, http::HeaderValue::from_static("x"));
        assert_eq!(content_length(&h), None);
    }
}
