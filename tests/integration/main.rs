//! End-to-end tests: real processes over loopback.
