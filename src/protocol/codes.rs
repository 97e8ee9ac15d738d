//! JSON-RPC and MCP error codes (schema.ts of 2025-11-25).

/// Invalid JSON was received.
pub const PARSE_ERROR: i64 = -32700;
/// The JSON sent is not a valid request object.
pub const INVALID_REQUEST: i64 = -32600;
/// The method does not exist or is not available.
pub const METHOD_NOT_FOUND: i64 = -32601;
/// Invalid method parameters (also: unknown tool, invalid cursor).
pub const INVALID_PARAMS: i64 = -32602;
/// Internal JSON-RPC error.
pub const INTERNAL_ERROR: i64 = -32603;
/// Resource not found (2025-11-25).
pub const RESOURCE_NOT_FOUND: i64 = -32002;

/// The HTTP request metadata headers do not match the body, or a required
/// one is missing or malformed (2026-07-28, `HeaderMismatch`).
pub const HEADER_MISMATCH: i64 = -32020;
/// The request needs a client capability it did not declare (2026-07-28).
pub const MISSING_REQUIRED_CLIENT_CAPABILITY: i64 = -32021;
/// The request names a protocol revision the server does not serve; `data`
/// lists the `supported` ones (2026-07-28).
pub const UNSUPPORTED_PROTOCOL_VERSION: i64 = -32022;
