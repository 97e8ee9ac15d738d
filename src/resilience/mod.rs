//! Resilience policies (docs/design.md D5–D7): circuit breakers, safe retries
//! with backoff and a budget, and bulkheads.
//!
//! Pure policy: nothing here does I/O or knows about connections. The
//! upstream module applies them around each call; the classes they act on
//! come from [`crate::error`].
//!
//! Architecture Invariant: depends only on `config` and `error`; every lock
//! here is a `std` mutex held for a few assignments, never across `.await`.

pub mod breaker;
pub mod bulkhead;
pub mod retry;

pub use self::breaker::{Breaker, BreakerState, Transition};
pub use self::bulkhead::Bulkhead;
pub use self::retry::{Budget, Delays, NoRetry, Safety};
