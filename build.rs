//! Lays the release binary's hot functions out first and together.
//!
//! `build/hot-text.ld` (written by `scripts/hot-order.sh` from callgrind
//! profiles of the proxy_hop bench) is a linker script that puts the sections
//! of the functions the gateway runs first in `.text` (`INSERT BEFORE .fini`:
//! the default layout stays for everything else). The kernel maps 64–128 KiB
//! of a binary around every page it faults in, so hot code scattered over a
//! 14 MB `.text` keeps most of the binary resident; packed, it costs about
//! what it weighs (docs/benchmarks.md, "Hot code together"). Only the layout
//! changes: not one instruction.
//!
//! The script is handed to the linker only where it is known to work: release
//! builds for x86_64-unknown-linux-gnu with Rust ≥ 1.90, whose default linker
//! there is the toolchain's own lld, and no linker chosen by the user.
//! Anywhere else, or with `MCP_GATEWAY_HOT_ORDER=0`, the binary links as
//! before. A pattern that matches nothing is no error.

use std::env;
use std::path::Path;
use std::process::Command;

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rerun-if-changed=build/hot-text.ld");
    println!("cargo:rerun-if-env-changed=MCP_GATEWAY_HOT_ORDER");
    // Skipped silently (every debug build would warn): `cargo build -vv`
    // shows the reason.
    if let Err(why) = hot_order() {
        eprintln!("hot-order: not used: {why}");
    }
}

/// Passes the linker script to the linker, or says why not.
fn hot_order() -> Result<(), String> {
    if env::var("MCP_GATEWAY_HOT_ORDER").as_deref() == Ok("0") {
        return Err("MCP_GATEWAY_HOT_ORDER=0".into());
    }
    if env::var("PROFILE").as_deref() != Ok("release") {
        return Err("not a release build".into());
    }
    if env::var("TARGET").as_deref() != Ok("x86_64-unknown-linux-gnu") {
        return Err("target is not x86_64-unknown-linux-gnu".into());
    }
    // A linker of the user's choosing may not read the script as lld does.
    let rustflags = env::var("CARGO_ENCODED_RUSTFLAGS").unwrap_or_default();
    if rustflags.contains("linker") || rustflags.contains("fuse-ld") || env::var_os("RUSTC_LINKER").is_some() {
        return Err("a linker is configured".into());
    }
    let rustc = env::var("RUSTC").unwrap_or_else(|_| "rustc".into());
    let version = Command::new(&rustc).arg("--version").output().map_err(|e| format!("{rustc} --version: {e}"))?;
    let version = String::from_utf8_lossy(&version.stdout);
    let minor: u32 = version
        .split_whitespace()
        .nth(1)
        .and_then(|v| v.split('.').nth(1))
        .and_then(|m| m.parse().ok())
        .ok_or_else(|| format!("cannot read {version:?}"))?;
    if minor < 90 {
        return Err(format!("{} links with the system linker", version.trim()));
    }
    let manifest = env::var("CARGO_MANIFEST_DIR").map_err(|e| e.to_string())?;
    let order = Path::new(&manifest).join("build/hot-text.ld");
    if !order.is_file() {
        return Err(format!("{} is missing", order.display()));
    }
    println!("cargo:rustc-link-arg-bin=mcp-gateway=-Wl,-T,{}", order.display());
    Ok(())
}
