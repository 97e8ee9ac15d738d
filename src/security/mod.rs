//! Security (design.md D9, issue 6): who the client is, what it may do,
//! and what the gateway refuses or masks on its behalf.
//!
//! Architecture Invariant: these modules decide; they never do I/O on the
//! request path. [`crate::downstream`] authenticates, [`crate::routing`]
//! asks them for decisions; they import only [`crate::config`] and
//! [`crate::protocol`].

pub mod access;
pub mod auth;
pub mod limits;
pub mod pins;
pub mod rules;
