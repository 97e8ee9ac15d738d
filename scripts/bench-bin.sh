#!/usr/bin/env bash
# Builds a bench in the bench profile and prints its executable's path
# (for the scripts that run the proxy_hop bench binary themselves).
#
#   scripts/bench-bin.sh <bench name>
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
name="${1:?usage: scripts/bench-bin.sh <bench name>}"
cargo bench --bench "$name" --no-run --message-format=json 2>/dev/null \
  | python3 -c 'import json, sys
for l in sys.stdin:
    m = json.loads(l)
    if m.get("reason") == "compiler-artifact" and m["target"]["name"] == sys.argv[1] and m.get("executable"):
        print(m["executable"])' "$name"
