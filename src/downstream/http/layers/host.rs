//! `Host` and `Origin` (design.md D12; transports.mdx, security warning):
//! the first check of every `/mcp`, `/sse`, `/messages` and admin request.
//!
//! Guarantees: a request that repeats a header the gateway decides on
//! ([`SINGLE_HEADERS`]) is refused with 400, one whose `Host` and
//! authority differ with 400, and one for a host or from an origin that is
//! not allowed with 403, each counted and logged, before anything else
//! (authentication included) looks at it. A refusal on HTTP/1.1 with a
//! body still coming closes the connection after a short linger
//! ([`refused_unread`]), as every refusal before the body is read does.
//!
//! The check is tower-http's [`ValidateRequestHeaderLayer`] with
//! [`CheckHost`] as its validator: the layer is maintained upstream, the
//! decision is ours.

use tower_http::validate_request::{ValidateRequest, ValidateRequestHeaderLayer};

use super::super::*;

/// Headers that may occur once: the gateway decides on them (who the client
/// is, which session, which revision, where it comes from), and a proxy in
/// front might read another copy than the first.
const SINGLE_HEADERS: [&str; 8] =
    ["authorization", "x-api-key", SESSION_HEADER, VERSION_HEADER, "host", "origin", "content-type", "last-event-id"];

/// Validates `Host`, the authority and `Origin` against the allow-lists of
/// [`App`] (`gateway.allowed_hosts`, `gateway.allowed_origins`).
#[derive(Debug, Clone)]
pub(in super::super) struct CheckHost {
    app: Arc<App>,
}

// === impl CheckHost ===

impl CheckHost {
    /// The layer that runs this check in front of a route.
    pub(in super::super) fn layer(app: Arc<App>) -> ValidateRequestHeaderLayer<Self> {
        ValidateRequestHeaderLayer::custom(CheckHost { app })
    }
}

impl ValidateRequest<Body> for CheckHost {
    type ResponseBody = Body;

    fn validate(&mut self, request: &mut Request) -> Result<(), Response> {
        let checked = match check_single_headers(&self.app, request.headers()) {
            Ok(()) => check_origin(&self.app, request.headers(), request.uri()),
            Err(resp) => Err(resp),
        };
        // The refusal takes the body along, to drain it for a moment on
        // HTTP/1.1 so the client reads the answer instead of a reset.
        checked.map_err(|resp| {
            let body = std::mem::take(request.body_mut());
            refused_unread(request.version(), body.into_data_stream(), resp)
        })
    }
}

/// Refuses a request that repeats a header the gateway decides on
/// (docs/design.md D12): a proxy in front may read the last copy where the
/// gateway reads the first.
#[allow(clippy::result_large_err)]
fn check_single_headers(app: &App, headers: &HeaderMap) -> Result<(), Response> {
    // As many names as values: no header repeats at all (the usual case,
    // answered without looking each name up).
    if headers.keys_len() == headers.len() {
        return Ok(());
    }
    let Some(name) = SINGLE_HEADERS.iter().find(|h| headers.get_all(**h).iter().nth(1).is_some()) else {
        return Ok(());
    };
    app.gateway.refused(Transport::Http, "duplicate_header");
    tracing::warn!(header = %name, "Refused a request that repeats a header.");
    let msg = format!("Bad Request: the {name} header occurs more than once");
    Err(rpc_error(StatusCode::BAD_REQUEST, None, protocol::INVALID_REQUEST, &msg))
}

/// The request's host ([`request_host`]) and `Origin` against the
/// allow-lists.
#[allow(clippy::result_large_err)]
fn check_origin(app: &App, headers: &HeaderMap, uri: &Uri) -> Result<(), Response> {
    let host = match request_host(headers, uri) {
        Ok(host) => host,
        Err(why) => {
            app.rejected("authority_mismatch");
            tracing::warn!(authority = ?uri.authority().map(|a| a.as_str()), "Refused a request: {why}.");
            let msg = format!("Bad Request: {why}");
            return Err(rpc_error(StatusCode::BAD_REQUEST, None, protocol::INVALID_REQUEST, &msg));
        }
    };
    let config = app.gateway.config_now();
    if !host_allowed(&config.gateway.allowed_hosts, host) {
        app.rejected("host");
        tracing::warn!(host = %host, "Refused a request with a Host that is not allowed.");
        return Err(rpc_error(StatusCode::FORBIDDEN, None, protocol::INVALID_REQUEST, "Forbidden: Host not allowed"));
    }
    if let Some(origin) = headers.get(header::ORIGIN) {
        let origin = origin.to_str().unwrap_or("");
        if !origin_allowed(&config.gateway.allowed_origins, origin) {
            app.rejected("origin");
            tracing::warn!(origin = %origin, "Refused a request with an Origin that is not allowed.");
            return Err(rpc_error(
                StatusCode::FORBIDDEN,
                None,
                protocol::INVALID_REQUEST,
                "Forbidden: Origin not allowed",
            ));
        }
    }
    Ok(())
}

/// The host a request is for, as `host[:port]` text: the authority of its
/// URI when it has one (HTTP/2's `:authority`, which replaces `Host`, or an
/// HTTP/1.1 absolute-form target, which overrides it: RFC 9112 §3.2.2),
/// else its `Host` (`""` when there is none, or it is not text). Refused
/// when both are there and differ (RFC 9113 §8.3.1 calls that malformed;
/// checking one and serving the other would defeat the check), and when
/// there are several `Host` lines.
pub(in super::super) fn request_host<'a>(headers: &'a HeaderMap, uri: &'a Uri) -> Result<&'a str, &'static str> {
    let mut hosts = headers.get_all(header::HOST).iter();
    let (host, more) = (hosts.next(), hosts.next());
    if more.is_some() {
        return Err("more than one Host header");
    }
    let host = host.map(|h| h.to_str().unwrap_or(""));
    match (uri.authority(), host) {
        (Some(a), Some(h)) if !a.as_str().eq_ignore_ascii_case(h) => {
            Err("the Host header and the request's authority differ")
        }
        (Some(a), _) => Ok(a.as_str()),
        (None, h) => Ok(h.unwrap_or("")),
    }
}

const LOOPBACK: &[&str] = &["localhost", "127.0.0.1", "[::1]"];

/// `host[:port]` against entries `host` (any port) or `host:port`.
pub(in super::super) fn host_allowed(allowed: &[String], host: &str) -> bool {
    let name = split_host(host);
    if allowed.is_empty() {
        return LOOPBACK.contains(&name);
    }
    allowed.iter().any(|a| a == "*" || a.eq_ignore_ascii_case(host) || a.eq_ignore_ascii_case(name))
}

fn split_host(host: &str) -> &str {
    if host.starts_with('[') {
        return host.find(']').map_or(host, |i| &host[..=i]);
    }
    host.rsplit_once(':').map_or(host, |(h, _)| h)
}

/// An origin against exact entries or `scheme://host:*` patterns.
pub(in super::super) fn origin_allowed(allowed: &[String], origin: &str) -> bool {
    if allowed.is_empty() {
        let Some((scheme, rest)) = origin.split_once("://") else { return false };
        return matches!(scheme, "http" | "https") && LOOPBACK.contains(&split_host(rest));
    }
    allowed.iter().any(|a| {
        a == "*"
            || a.eq_ignore_ascii_case(origin)
            || a.strip_suffix(":*").is_some_and(|base| {
                origin.len() > base.len()
                    && origin[..base.len()].eq_ignore_ascii_case(base)
                    && (origin[base.len()..].starts_with(':') || origin.len() == base.len())
            })
            || a.strip_suffix(":*").is_some_and(|base| base.eq_ignore_ascii_case(origin))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hosts() {
        let none: Vec<String> = vec![];
        for ok in ["localhost", "localhost:8080", "127.0.0.1:1", "[::1]:80", "[::1]"] {
            assert!(host_allowed(&none, ok), "{ok}");
        }
        for bad in ["evil.com", "evil.com:8080", "127.0.0.2:80", "", "localhost.evil.com"] {
            assert!(!host_allowed(&none, bad), "{bad}");
        }
        let cfg = vec!["gw.internal".to_owned(), "10.0.0.5:8080".to_owned()];
        assert!(host_allowed(&cfg, "gw.internal:443"));
        assert!(host_allowed(&cfg, "10.0.0.5:8080"));
        assert!(!host_allowed(&cfg, "10.0.0.5:9090"));
        assert!(!host_allowed(&cfg, "localhost"));
    }

    #[test]
    fn the_host_comes_from_the_authority_or_host() {
        let uri = |u: &str| u.parse::<Uri>().unwrap();
        let hosts = |v: &[&str]| {
            let mut h = HeaderMap::new();
            for v in v {
                h.append(header::HOST, HeaderValue::from_str(v).unwrap());
            }
            h
        };
        // HTTP/1.1 origin form: Host.
        assert_eq!(request_host(&hosts(&["localhost:8080"]), &uri("/mcp")), Ok("localhost:8080"));
        assert_eq!(request_host(&hosts(&[]), &uri("/mcp")), Ok(""));
        // HTTP/2 (or absolute form): the authority, with or without Host.
        assert_eq!(request_host(&hosts(&[]), &uri("http://127.0.0.1:9/mcp")), Ok("127.0.0.1:9"));
        assert_eq!(request_host(&hosts(&["LOCALHOST:9"]), &uri("http://localhost:9/mcp")), Ok("localhost:9"));
        assert!(request_host(&hosts(&["evil.example"]), &uri("http://localhost:9/mcp")).is_err());
        assert!(request_host(&hosts(&["localhost:9"]), &uri("http://evil.example/mcp")).is_err());
        assert!(request_host(&hosts(&["localhost", "evil.example"]), &uri("/mcp")).is_err());
        assert!(request_host(&hosts(&["localhost", "localhost"]), &uri("/mcp")).is_err());
    }

    #[test]
    fn origins() {
        let none: Vec<String> = vec![];
        for ok in ["http://localhost:3000", "http://127.0.0.1", "https://[::1]:8443"] {
            assert!(origin_allowed(&none, ok), "{ok}");
        }
        for bad in ["null", "http://evil.com", "file://localhost", "http://localhost.evil.com"] {
            assert!(!origin_allowed(&none, bad), "{bad}");
        }
        let cfg = vec!["https://app.example.com".to_owned(), "http://localhost:*".to_owned()];
        assert!(origin_allowed(&cfg, "https://app.example.com"));
        assert!(origin_allowed(&cfg, "http://localhost:5173"));
        assert!(origin_allowed(&cfg, "http://localhost"));
        assert!(!origin_allowed(&cfg, "http://localhostevil.com"));
        assert!(!origin_allowed(&cfg, "https://app.example.com.evil"));
    }
}
