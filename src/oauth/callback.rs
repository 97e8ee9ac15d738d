//! The loopback redirect target of `auth login` (RFC 8252 §7.3): a tiny
//! HTTP/1.1 listener that waits for `GET /callback?code=…&state=…`,
//! answers the browser with a short page and hands the parameters back.
//! Other paths (a browser's `/favicon.ico`) get 404 and are ignored.

use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpListener;

use super::OAuthError;

/// Largest request head read from the browser.
const MAX_HEAD: usize = 16 * 1024;

/// The redirect's query parameters.
#[derive(Debug, Default)]
pub(crate) struct Callback {
    /// `code`.
    pub(crate) code: Option<String>,
    /// `state`.
    pub(crate) state: Option<String>,
    /// `iss` (RFC 9207).
    pub(crate) iss: Option<String>,
    /// `error`.
    pub(crate) error: Option<String>,
    /// `error_description`.
    pub(crate) error_description: Option<String>,
}

/// Serves until one request for `/callback` arrives.
pub(crate) async fn wait(listener: TcpListener) -> Result<Callback, OAuthError> {
    loop {
        let (mut sock, _) =
            listener.accept().await.map_err(|e| OAuthError::Login(format!("callback listener: {e}")))?;
        let mut head = Vec::with_capacity(1024);
        let mut buf = [0u8; 2048];
        // A browser may open a connection and send nothing: give it a
        // few seconds, then move on to the next one.
        let read = tokio::time::timeout(std::time::Duration::from_secs(10), async {
            while !head.windows(4).any(|w| w == b"\r\n\r\n") && head.len() < MAX_HEAD {
                let n = sock.read(&mut buf).await?;
                if n == 0 {
                    break;
                }
                head.extend_from_slice(&buf[..n]);
            }
            Ok::<_, std::io::Error>(())
        })
        .await;
        if !matches!(read, Ok(Ok(()))) {
            continue;
        }
        let line = head.split(|b| *b == b'\n').next().unwrap_or_default();
        let line = String::from_utf8_lossy(line);
        let mut parts = line.split_whitespace();
        let (method, target) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
        let (path, query) = target.split_once('?').unwrap_or((target, ""));
        if method != "GET" || path != "/callback" {
            let _ = sock.write_all(b"HTTP/1.1 404 Not Found\r\ncontent-length: 0\r\nconnection: close\r\n\r\n").await;
            continue;
        }
        let mut cb = Callback::default();
        let url = reqwest::Url::parse(&format!("http://x/?{query}")).map_err(|e| OAuthError::Login(e.to_string()))?;
        for (k, v) in url.query_pairs() {
            let v = Some(v.into_owned());
            match &*k {
                "code" => cb.code = v,
                "state" => cb.state = v,
                "iss" => cb.iss = v,
                "error" => cb.error = v,
                "error_description" => cb.error_description = v,
                _ => {}
            }
        }
        let page = if cb.error.is_some() {
            "mcp-gateway: the login was refused. You may close this tab; the terminal says why.\n"
        } else {
            "mcp-gateway: login received. You may close this tab; the terminal says whether it worked.\n"
        };
        let resp = format!(
            "HTTP/1.1 200 OK\r\ncontent-type: text/plain; charset=utf-8\r\ncache-control: no-store\r\n\
             content-length: {}\r\nconnection: close\r\n\r\n{page}",
            page.len()
        );
        let _ = sock.write_all(resp.as_bytes()).await;
        let _ = sock.shutdown().await;
        return Ok(cb);
    }
}
