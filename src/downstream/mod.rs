//! Client-facing transports: Streamable HTTP at `/mcp` and stdio.
//!
//! Both parse each message with [`crate::protocol`], answer bad input with
//! a JSON-RPC error without dropping the connection, and hand requests to
//! [`crate::routing::Gateway`].
//!
//! Architecture Invariant: nothing here talks to an upstream directly.

mod bounds;
pub mod http;
pub mod listen;
mod media;
mod session;
pub mod stdio;
mod subscription;
pub mod token;

pub use session::{Session, Sessions};
