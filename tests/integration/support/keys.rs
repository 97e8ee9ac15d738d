//! API keys for the authentication tests (`security`, `hostile`): two
//! principals and the `[auth]` section that admits them, so every test
//! presents the same keys against the same resource.

use mcp_gateway::security::auth::hash_key;

/// `auth.resource` of the gateways these keys are for.
pub const RESOURCE: &str = "http://gateway.test/mcp";
/// Alice's API key (principal `alice`, group `analysts`).
pub const ALICE: &str = "alice-key-0123456789";
/// Bob's API key (principal `bob`, no group).
pub const BOB: &str = "bob-key-0123456789";
/// The operator's API key (principal `ops`, group `admin`): the harness's
/// own `/status` and `/metrics` requests, which only admins may make.
pub const OPS: &str = "ops-key-0123456789";

/// `[auth]` with API keys for alice (group analysts), bob and ops (admin).
pub fn keys() -> String {
    keys_with("")
}

/// [`keys`] with more `[auth]` lines (e.g. `[auth.jwt]`) before the keys.
pub fn keys_with(auth: &str) -> String {
    format!(
        "[auth]\nresource = \"{RESOURCE}\"\n{auth}\
         [[auth.api_keys]]\nprincipal = \"alice\"\nsha256 = \"{}\"\ngroups = [\"analysts\"]\n\
         [[auth.api_keys]]\nprincipal = \"bob\"\nsha256 = \"{}\"\n\
         [[auth.api_keys]]\nprincipal = \"ops\"\nsha256 = \"{}\"\ngroups = [\"admin\"]\n",
        hash_key(ALICE),
        hash_key(BOB),
        hash_key(OPS)
    )
}
