//! Reading the params every method family shares: a list cursor, a named
//! string member, the empty result.

use serde_json::value::RawValue;

use crate::error::CallError;
use crate::protocol::{self, Checked, Members};

/// A list request's `cursor`, if any (-32602 when it is not a string).
pub(crate) fn cursor(params: Option<Checked<'_>>) -> Result<Option<String>, CallError> {
    let Some(params) = params else { return Ok(None) };
    let obj =
        params.object().ok_or_else(|| CallError::protocol(protocol::INVALID_PARAMS, "params must be an object"))?;
    match obj.get("cursor") {
        None => Ok(None),
        Some(c) if c.is_null() => Ok(None),
        Some(c) => c
            .str()
            .map(|c| Some(c.into_owned()))
            .ok_or_else(|| CallError::protocol(protocol::INVALID_PARAMS, "Invalid cursor")),
    }
}

/// The params as an object and its string member `field` (-32602 when
/// either is missing).
pub(crate) fn named<'a>(params: Option<Checked<'a>>, field: &str) -> Result<(Members<'a>, String), CallError> {
    let invalid = |m: String| CallError::protocol(protocol::INVALID_PARAMS, m);
    let obj = params
        .ok_or_else(|| invalid("params are required".into()))?
        .object()
        .ok_or_else(|| invalid("params must be an object".into()))?;
    let value = obj.str(field).ok_or_else(|| invalid(format!("params need a string `{field}`")))?;
    Ok((obj, value))
}

/// `{}`: the result of a method that only acknowledges.
pub(crate) fn empty() -> Box<RawValue> {
    RawValue::from_string("{}".into()).expect("valid")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::CheckedBox;

    fn params(json: &str) -> CheckedBox {
        CheckedBox::from_value(&serde_json::from_str::<serde_json::Value>(json).unwrap())
    }

    #[test]
    fn a_cursor_is_a_string_or_absent() {
        assert_eq!(cursor(None).unwrap(), None);
        assert_eq!(cursor(Some(params(r#"{}"#).checked())).unwrap(), None);
        assert_eq!(cursor(Some(params(r#"{"cursor":null}"#).checked())).unwrap(), None);
        assert_eq!(cursor(Some(params(r#"{"cursor":"k"}"#).checked())).unwrap().as_deref(), Some("k"));
        let e = cursor(Some(params(r#"{"cursor":7}"#).checked())).unwrap_err();
        assert_eq!((e.code, e.message.as_str()), (protocol::INVALID_PARAMS, "Invalid cursor"));
        let e = cursor(Some(params("[]").checked())).unwrap_err();
        assert_eq!(e.message, "params must be an object");
    }

    #[test]
    fn a_named_member_must_be_a_string() {
        let p = params(r#"{"uri":"file:///a","x":1}"#);
        let (obj, uri) = named(Some(p.checked()), "uri").unwrap();
        assert_eq!(uri, "file:///a");
        assert!(obj.contains("x"));
        assert_eq!(named(None, "uri").unwrap_err().message, "params are required");
        let p = params(r#"{"uri":1}"#);
        assert_eq!(named(Some(p.checked()), "uri").unwrap_err().message, "params need a string `uri`");
    }
}
