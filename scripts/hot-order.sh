#!/usr/bin/env bash
# The release binary's hot functions, laid out first in .text
# (build/hot-text.ld, a linker script build.rs passes to the linker).
#
#   scripts/hot-order.sh           regenerate the file (about 10 minutes)
#   scripts/hot-order.sh --check   print how many listed functions the
#                                  release binary has; exit 1 below 95 %
#
# Why: the gateway runs about 2,000 functions, scattered over a 14 MB .text.
# The kernel maps a file page's neighbours too (fault-around, large page
# cache folios) on every fault, so scattered code kept about 9 MiB of .text
# resident under proxy_hop's load, where the functions it runs weigh about
# 3 MB. Laid out together, they cost about what they weigh (docs/benchmarks.md,
# "Hot code together"). Only the layout changes: no instruction is added.
#
# How: the proxy_hop bench runs (HTTP upstream; HTTP with the audit log on;
# stdio upstream; HOT_ORDER_RUNS picks) with the gateway under valgrind's
# callgrind (BENCH_GATEWAY_BIN is a wrapper that execs valgrind), so every
# function the gateway runs from start to drain, at 1 and 64 clients, is in
# a profile; scripts/hot-order.py writes them most instructions first. A
# Rust symbol's name ends in a hash of its crate's metadata (not of its
# code): a function is matched by its name before the hash where that name
# is its own, and named whole where generic instantiations share it. A
# renamed function, a dependency upgrade or a new compiler drops entries
# out of the match (--check says how many); a stale entry is skipped by the
# linker, never an error. HOT_ORDER_KEEP=dir keeps the profiles.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
ORDER="$ROOT/build/hot-text.ld"
BIN="${CARGO_TARGET_DIR:-$ROOT/target}/release/mcp-gateway"

if [[ "${1:-}" == --check ]]; then
  cargo build --release --quiet --bin mcp-gateway
  python3 "$ROOT/scripts/hot-order.py" --check "$ORDER" "$BIN"
  exit
fi

command -v valgrind >/dev/null || { echo "hot-order: valgrind is missing (apt-get install valgrind)" >&2; exit 1; }
cargo build --release --quiet --bin mcp-gateway
WORK="$(mktemp -d)"
# HOT_ORDER_KEEP=dir keeps the profiles and logs there.
trap '[[ -n "${HOT_ORDER_KEEP:-}" ]] && mkdir -p "$HOT_ORDER_KEEP" && cp -r "$WORK"/. "$HOT_ORDER_KEEP"/; rm -rf "$WORK"' EXIT
# The binary `cargo build --release` makes (the one shipped) is profiled, not
# the one `cargo bench` builds for itself over it (its symbols' hashes differ).
cp "$BIN" "$WORK/mcp-gateway"
BIN="$WORK/mcp-gateway"
BENCH="$("$ROOT/scripts/bench-bin.sh" proxy_hop)"
[[ -x "$BENCH" ]] || { echo "hot-order: no proxy_hop bench binary" >&2; exit 1; }
cat >"$WORK/gateway-under-callgrind" <<EOF
#!/bin/sh
exec valgrind --tool=callgrind --demangle=no --log-file=$WORK/valgrind.%p.log \
  --callgrind-out-file=$WORK/cg.%p "$BIN" "\$@"
EOF
chmod +x "$WORK/gateway-under-callgrind"
for run in ${HOT_ORDER_RUNS:-http audit stdio}; do
  echo "hot-order: profiling the gateway ($run) ..." >&2
  env BENCH_GATEWAY_BIN="$WORK/gateway-under-callgrind" BENCH_WARMUP_SECS=1 BENCH_SECS=3 \
    BENCH_AUDIT="$([[ $run == audit ]] && echo 1 || echo 0)" \
    BENCH_UPSTREAM="$([[ $run == stdio ]] && echo stdio || echo http)" \
    "$BENCH" --bench >"$WORK/bench.$run.log" 2>&1 \
    || { cat "$WORK/bench.$run.log" >&2; exit 1; }
done
python3 "$ROOT/scripts/hot-order.py" "$ORDER" "$BIN" "$WORK"/cg.*
