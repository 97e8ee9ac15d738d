//! The one-view property (design.md D12) over arbitrary bytes: either the
//! gateway refuses a message, or every parser reads the same one and every
//! member the gateway routes on is what `serde_json::Value` (last copy
//! wins) reads. The property itself is `tests/integration/one_view_check.rs`,
//! which CI runs over a seeded generator; this target runs it for as long
//! as you like. Seed it with `seeds/message`.

#![no_main]

use libfuzzer_sys::fuzz_target;
use mcp_gateway::protocol::Limits;

#[path = "../../tests/integration/one_view_check.rs"]
mod one_view_check;

fuzz_target!(|data: &[u8]| {
    // A small depth limit too, so the fuzzer reaches it quickly.
    for limits in [Limits::default(), Limits { max_depth: 8 }] {
        if let Err(why) = one_view_check::one_view(data, &limits) {
            panic!("{why}");
        }
    }
});
