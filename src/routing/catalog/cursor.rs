//! List cursors: opaque, checked, and the same on every replica.

use sha2::{Digest, Sha256};

use super::InvalidCursor;
use crate::upstream::ListKind;

/// The first byte of a cursor: which list it walks.
fn cursor_tag(kind: ListKind) -> u8 {
    match kind {
        ListKind::Tools => b't',
        ListKind::Prompts => b'p',
        ListKind::Resources => b'r',
        ListKind::Templates => b'T',
    }
}

/// The cursor after `last`: hex of the list's tag, the key and 4 bytes of
/// their SHA-256, so it is opaque, any byte is safe, and a cursor that was
/// cut or altered is refused. Unkeyed on purpose: any replica of the
/// gateway, or a restarted one, takes it (docs/design.md D10).
pub(super) fn encode_cursor(kind: ListKind, last: &str) -> String {
    encode_tagged_cursor(cursor_tag(kind), last)
}

/// [`encode_cursor`] for any list the gateway pages by key (`tag` names
/// the list; tasks use `k`).
pub(crate) fn encode_tagged_cursor(tag: u8, last: &str) -> String {
    let mut payload = Vec::with_capacity(last.len() + 1);
    payload.push(tag);
    payload.extend_from_slice(last.as_bytes());
    let check = Sha256::digest(&payload);
    payload.iter().chain(&check[..4]).map(|b| format!("{b:02x}")).collect()
}

pub(super) fn decode_cursor(kind: ListKind, cursor: &str) -> Result<String, InvalidCursor> {
    decode_tagged_cursor(cursor_tag(kind), cursor)
}

/// The key a cursor of list `tag` resumes after.
pub(crate) fn decode_tagged_cursor(tag: u8, cursor: &str) -> Result<String, InvalidCursor> {
    if !cursor.len().is_multiple_of(2) || cursor.len() < 10 {
        return Err(InvalidCursor);
    }
    let bytes: Result<Vec<u8>, _> =
        (0..cursor.len()).step_by(2).map(|i| u8::from_str_radix(cursor.get(i..i + 2).unwrap_or("zz"), 16)).collect();
    let bytes = bytes.map_err(|_| InvalidCursor)?;
    let (payload, check) = bytes.split_at(bytes.len() - 4);
    if Sha256::digest(payload)[..4] != *check || payload[0] != tag {
        return Err(InvalidCursor);
    }
    String::from_utf8(payload[1..].to_vec()).map_err(|_| InvalidCursor)
}
