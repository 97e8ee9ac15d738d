//! What counts as a credential in a host's server entry: names that look
//! like one (env variables, headers, query parameters, flags), and the
//! password of a URL's user info (`postgres://user:pass@host/db`).
//!
//! The rule errs towards moving a value into the secrets file: a path
//! named `*_KEY_FILE` moved there still works, a token left in
//! gateway.toml is a leak.

use std::ops::Range;

/// Words that make a name a credential's (`GITHUB_TOKEN`, `X-Api-Key`,
/// `apiKey`, `CLIENT_SECRET`, `Authorization`). Whole words only, so
/// `KEYBOARD` and `TOKENIZER` are not. `PWD` is not one: it is the
/// working directory.
const WORDS: [&str; 9] =
    ["TOKEN", "SECRET", "KEY", "APIKEY", "PASS", "AUTHORIZATION", "COOKIE", "CREDENTIAL", "CREDENTIALS"];

/// A credential found inside a text.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Found {
    /// Where the value is in the text.
    pub(crate) range: Range<usize>,
    /// What it is, for its secret's name: `<SCHEME>_PASSWORD` or the
    /// query parameter's name.
    pub(crate) what: What,
}

/// The kind of credential found in a text.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum What {
    /// The password of a URL's user info; the URL's scheme.
    Password(String),
    /// A query parameter whose name is a credential's; that name.
    Query(String),
}

/// The words of a name, upper-cased: split at anything not a letter or
/// digit and where a lower-case letter meets an upper-case one
/// (`apiKey` → `API`, `KEY`).
pub(crate) fn words(name: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut word = String::new();
    let mut prev_lower = false;
    for c in name.chars() {
        if !c.is_ascii_alphanumeric() {
            if !word.is_empty() {
                out.push(std::mem::take(&mut word));
            }
            prev_lower = false;
            continue;
        }
        if c.is_ascii_uppercase() && prev_lower && !word.is_empty() {
            out.push(std::mem::take(&mut word));
        }
        prev_lower = c.is_ascii_lowercase() || c.is_ascii_digit();
        word.push(c.to_ascii_uppercase());
    }
    if !word.is_empty() {
        out.push(word);
    }
    out
}

/// `name`'s words joined by `_`: the part of a secret's name it gives
/// (`X-Api-Key` → `X_API_KEY`).
pub(crate) fn upper_words(name: &str) -> String {
    let w = words(name);
    if w.is_empty() { "VALUE".to_owned() } else { w.join("_") }
}

/// Whether a value under this name (env variable, header, query
/// parameter, `--flag`) is a credential.
pub(crate) fn is_credential_name(name: &str) -> bool {
    let upper = name.to_ascii_uppercase();
    upper.contains("PASSWORD") || upper.contains("PASSWD") || words(name).iter().any(|w| WORDS.contains(&w.as_str()))
}

/// The credentials inside `text`: the password of each URL's user info,
/// and each query parameter named like a credential. Ranges are in order
/// and do not overlap; empty values are not credentials.
pub(crate) fn find(text: &str) -> Vec<Found> {
    let mut found = Vec::new();
    let mut from = 0;
    while let Some(at) = text[from..].find("://") {
        let scheme_end = from + at;
        let scheme_start = text[..scheme_end]
            .rfind(|c: char| !(c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.')))
            .map_or(0, |p| p + 1);
        let scheme = &text[scheme_start..scheme_end];
        let start = scheme_end + 3;
        // The URL ends at whitespace or a quote (an argument may hold
        // several, or a URL inside other text).
        let end = text[start..]
            .find(|c: char| c.is_whitespace() || matches!(c, '"' | '\''))
            .map_or(text.len(), |e| start + e);
        url(text, scheme, start, end, &mut found);
        from = end;
    }
    if found.is_empty() && !text.contains("://") {
        // A bare query string (`?token=…` after a `${BASE}` reference).
        if let Some(q) = text.find('?') {
            query(text, q + 1, text.len(), &mut found);
        }
    }
    found
}

/// One URL, `text[start..end]` after its `scheme://`.
fn url(text: &str, scheme: &str, start: usize, end: usize, found: &mut Vec<Found>) {
    let authority_end = text[start..end].find(['/', '?', '#']).map_or(end, |e| start + e);
    if let Some(at) = text[start..authority_end].rfind('@') {
        let info = &text[start..start + at];
        if let Some(colon) = info.find(':') {
            let range = start + colon + 1..start + at;
            if !range.is_empty() {
                found.push(Found { range, what: What::Password(scheme.to_owned()) });
            }
        }
    }
    if let Some(q) = text[authority_end..end].find('?') {
        let qs = authority_end + q + 1;
        let qe = text[qs..end].find('#').map_or(end, |h| qs + h);
        query(text, qs, qe, found);
    }
}

/// The query string `text[start..end]`.
fn query(text: &str, start: usize, end: usize, found: &mut Vec<Found>) {
    let mut at = start;
    for pair in text[start..end].split('&') {
        if let Some((name, value)) = pair.split_once('=')
            && !value.is_empty()
            && is_credential_name(name)
        {
            let vs = at + name.len() + 1;
            found.push(Found { range: vs..vs + value.len(), what: What::Query(name.to_owned()) });
        }
        at += pair.len() + 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credential_names() {
        for yes in [
            "API_KEY",
            "X-Api-Key",
            "x-api-key",
            "apiKey",
            "Authorization",
            "Proxy-Authorization",
            "DB_PASSWORD",
            "PGPASSWORD",
            "GITHUB_TOKEN",
            "GITHUB_PERSONAL_ACCESS_TOKEN",
            "CLIENT_SECRET",
            "AWS_SECRET_ACCESS_KEY",
            "token",
            "access_token",
            "key",
            "Cookie",
        ] {
            assert!(is_credential_name(yes), "{yes}");
        }
        for no in
            ["KEYBOARD", "KEYBOARD_LAYOUT", "TOKENIZER_PATH", "MONKEY", "PWD", "HOME", "LOG_LEVEL", "DEBUG", "Accept"]
        {
            assert!(!is_credential_name(no), "{no}");
        }
    }

    #[test]
    fn words_split_at_separators_and_case() {
        assert_eq!(words("X-Api-Key"), ["X", "API", "KEY"]);
        assert_eq!(words("apiKey"), ["API", "KEY"]);
        assert_eq!(words("githubIntegration2"), ["GITHUB", "INTEGRATION2"]);
        assert_eq!(upper_words("perplexity-key"), "PERPLEXITY_KEY");
        assert_eq!(upper_words("--"), "VALUE");
    }

    fn values<'a>(text: &'a str, found: &[Found]) -> Vec<&'a str> {
        found.iter().map(|f| &text[f.range.clone()]).collect()
    }

    #[test]
    fn dsn_password() {
        let t = "postgresql://app:s3cr%40t@db.internal:5432/orders?sslmode=require";
        let f = find(t);
        assert_eq!(values(t, &f), ["s3cr%40t"]);
        assert_eq!(f[0].what, What::Password("postgresql".into()));
        // No password, or a user alone: nothing.
        assert!(find("postgres://app@db/orders").is_empty());
        assert!(find("postgres://db/orders").is_empty());
        // Inside a flag.
        let t = "--dsn=mysql://root:hunter2@127.0.0.1/x";
        assert_eq!(values(t, &find(t)), ["hunter2"]);
    }

    #[test]
    fn url_query_token() {
        let t = "https://mcp.example.com/sse?api_key=abc123&region=eu&token=t0k#frag";
        let f = find(t);
        assert_eq!(values(t, &f), ["abc123", "t0k"]);
        assert_eq!(f[1].what, What::Query("token".into()));
        // Not credentials: other names, empty values.
        assert!(find("https://x.example/mcp?region=eu&keyboard=us&token=").is_empty());
        // A query after a reference (`${BASE}/mcp?key=…`).
        let t = "/mcp?key=k1";
        assert_eq!(values(t, &find(t)), ["k1"]);
        // Both in one URL.
        let t = "https://u:p@h.example/x?secret=s";
        assert_eq!(values(t, &find(t)), ["p", "s"]);
    }
}
