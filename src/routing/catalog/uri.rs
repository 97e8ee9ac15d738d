//! Resource URIs under namespaces: `<scheme>+<upstream>:<rest>` and back
//! (RFC 3986 §3.1 schemes), and whether a URI fits an RFC 6570 template.

/// `<scheme>+<id>:<rest>` for `<scheme>:<rest>`; `None` when `uri` does not
/// start with a valid scheme (RFC 3986 §3.1).
pub fn namespace_uri(id: &str, uri: &str) -> Option<String> {
    let (scheme, rest) = uri.split_once(':')?;
    valid_scheme(scheme).then(|| format!("{scheme}+{id}:{rest}"))
}

/// Splits a namespaced URI into the upstream id and the original URI.
/// `None` when the scheme carries no `+<id>` suffix.
pub fn split_uri(uri: &str) -> Option<(&str, String)> {
    let (scheme, rest) = uri.split_once(':')?;
    if !valid_scheme(scheme) {
        return None;
    }
    let (original, id) = scheme.rsplit_once('+')?;
    (!original.is_empty() && crate::config::valid_id(id)).then(|| (id, format!("{original}:{rest}")))
}

fn valid_scheme(s: &str) -> bool {
    let mut chars = s.chars();
    chars.next().is_some_and(|c| c.is_ascii_alphabetic())
        && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.'))
}

/// Whether `uri` could come from the RFC 6570 `template`: its literal parts
/// appear in order, the first at the start and the last at the end.
pub fn template_matches(template: &str, uri: &str) -> bool {
    let mut literals = Vec::new();
    let mut rest = template;
    while let Some(open) = rest.find('{') {
        literals.push(&rest[..open]);
        let Some(close) = rest[open..].find('}') else { return false };
        rest = &rest[open + close + 1..];
    }
    let tail = rest;
    let Some((first, middle)) = literals.split_first() else { return template == uri };
    let Some(mut at) = uri.strip_prefix(first).map(|r| uri.len() - r.len()) else { return false };
    for lit in middle {
        match uri[at..].find(lit) {
            Some(i) => at += i + lit.len(),
            None => return false,
        }
    }
    uri.len() >= at + tail.len() && uri.ends_with(tail)
}
