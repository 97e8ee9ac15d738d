//! The status page at `/ui` (issue 24): static HTML, script and style
//! compiled into the binary, no external assets.
//!
//! Guarantees: the page carries no data. Its script fetches `/status`
//! (relative to the page, so a path prefix in front of the gateway is
//! kept) with the bearer token the user pasted, or none, and polls it, so
//! what a principal sees is exactly what `/status` gives that principal:
//! only the admin groups see data. The page is served with a
//! Content-Security-Policy without `unsafe-inline` that allows only its
//! own script, style and `/status` ([`CSP`]), and cannot be framed; the
//! script renders what upstreams wrote (tool names, descriptions) with
//! `textContent` only.
//!
//! Why no authentication on the page itself: a browser cannot attach a
//! bearer token to a navigation, and the page holds nothing to protect.
//! It is still behind the `Host`/`Origin` check on both listeners, like
//! `/status`, so a DNS-rebinding page cannot even load it.

use super::*;

/// The page.
const INDEX: &str = include_str!("../../../assets/ui/index.html");
/// Its script.
const SCRIPT: &str = include_str!("../../../assets/ui/app.js");
/// Its style.
const STYLE: &str = include_str!("../../../assets/ui/app.css");

/// What the page may load and do: its own script and style, fetches to
/// its own origin (`/status`), no inline script or style, no plugins, no
/// forms, no `<base>`, and no framing by any page (clickjacking).
pub(super) const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; \
                              img-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'none'";

/// `GET /ui`.
pub(super) async fn index() -> Response {
    asset("text/html; charset=utf-8", INDEX)
}

/// `GET /ui/`: to the page, relatively (`../ui`), so that a path prefix
/// added by a reverse proxy is kept.
pub(super) async fn slash() -> Response {
    axum::response::Redirect::permanent("../ui").into_response()
}

/// `GET /ui/app.js`.
pub(super) async fn script() -> Response {
    asset("text/javascript; charset=utf-8", SCRIPT)
}

/// `GET /ui/app.css`.
pub(super) async fn style() -> Response {
    asset("text/css; charset=utf-8", STYLE)
}

/// One of the page's files with the headers every one of them gets.
fn asset(content_type: &'static str, body: &'static str) -> Response {
    let headers = [
        (header::CONTENT_TYPE, content_type),
        (header::CONTENT_SECURITY_POLICY, CSP),
        // A browser takes the type given, never a guess (a script must be
        // served as one to run under the CSP).
        (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        // For browsers without `frame-ancestors`.
        (header::X_FRAME_OPTIONS, "DENY"),
        (header::REFERRER_POLICY, "no-referrer"),
        // A new build's page, never a cached one beside a new `/status`.
        (header::CACHE_CONTROL, "no-store"),
    ];
    (StatusCode::OK, headers, body).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn every_file_has_the_csp_and_its_type() {
        for (resp, kind) in
            [(index().await, "text/html"), (script().await, "text/javascript"), (style().await, "text/css")]
        {
            let h = resp.headers();
            assert!(h[header::CONTENT_TYPE].to_str().unwrap().starts_with(kind));
            let csp = h[header::CONTENT_SECURITY_POLICY].to_str().unwrap();
            assert!(!csp.contains("unsafe-inline") && !csp.contains("unsafe-eval"), "{csp}");
            assert!(csp.contains("frame-ancestors 'none'") && csp.contains("script-src 'self'"), "{csp}");
            assert_eq!(h[header::X_CONTENT_TYPE_OPTIONS], "nosniff");
            assert_eq!(h[header::CACHE_CONTROL], "no-store");
            assert_eq!(h[header::REFERRER_POLICY], "no-referrer");
        }
    }

    /// The CSP forbids inline script and style: the page may have neither,
    /// and its script never writes markup.
    #[test]
    fn the_page_has_no_inline_script_or_style_and_the_script_writes_no_markup() {
        let lower = INDEX.to_ascii_lowercase();
        for inline in ["<script>", "style=", "<style", "javascript:"] {
            assert!(!lower.contains(inline), "the page has {inline:?}");
        }
        // No event-handler attribute (` onclick=` and the like).
        for (at, _) in lower.match_indices(" on") {
            let rest = &lower[at + 3..];
            let word = rest.chars().take_while(char::is_ascii_alphabetic).count();
            assert!(!rest[word..].starts_with('='), "the page has an event handler: {}", &rest[..word + 1]);
        }
        for sink in ["innerHTML", "outerHTML", "insertAdjacentHTML", "document.write", "eval(", "Function("] {
            assert!(!SCRIPT.contains(sink), "the script uses {sink}");
        }
    }
}
