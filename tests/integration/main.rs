//! End-to-end tests: the real gateway binary, real MCP servers from npm,
//! the official Python SDK and rmcp as clients, and small fixtures of our
//! own, all as processes on loopback with port 0.
//!
//! Peers come from `scripts/install-peers.sh` (run by `scripts/test.sh`).

mod support;

mod bounds;
mod bridge;
mod cli;
mod conformance;
mod dashboards;
mod eras;
mod examples;
mod faults;
mod fidelity;
mod hostile;
mod http_front;
mod import;
mod oauth;
mod observability;
mod one_view;
mod one_view_check;
mod partial;
mod peers;
mod reload;
mod replicas;
mod resilience;
mod rmcp_client;
mod sdk_callbacks;
mod security;
mod session_tokens;
mod shared_state;
mod status_cli;
mod stdio_front;
mod surface;
mod tasks;
mod ui;
mod upstreams;
mod warm_start;
