#!/usr/bin/env bash
# Instructions the gateway executes per `tools/call` on proxy_hop's HTTP path,
# counted with valgrind's callgrind: the same totals on every run, where
# wall-clock ratios move by ±12 % here. Use it to show what a change costs
# per call (design: performance targets; issue 17 item 9).
#
#   scripts/callgrind-hop.sh [calls]        (default 1000)
#
# GATEWAY_BIN=path measures that gateway binary instead of building this
# checkout's (e.g. one built from an older commit, to compare).
# HOP_TRANSPORT=stdio puts the same echo server behind the gateway over stdio
# (the gateway's own process then counts its side of the pipe, the upstream
# process is not under callgrind).
# HOP_CONFIG='toml' is put before the upstream's section of the gateway's
# config (e.g. `[redis]`, `[rules]`, `[limits]` with absolute paths), to
# count what a feature costs per call (docs/benchmarks.md).
# HOP_TARGET=direct counts the echo server itself instead (the same calls
# sent to it directly, no gateway): the issue's "instructions per call
# ≤ 1.8 × the echo server's own" compares the two figures.
# HOP_TARGET=haproxy (or haproxy-http) counts HAProxy relaying the same calls
# to the echo server in TCP mode (copies bytes, parses nothing) or HTTP mode
# (parses and rewrites the HTTP, as any HTTP proxy must): what a mature relay
# written in C executes per call, the floor to read the gateway's figure
# against. HTTP upstream only.
# CALLGRIND_KEEP=dir copies both callgrind outputs there (cg.<calls>), for
# `callgrind_annotate` per function when a change moves the total.
#
# It builds the release gateway and the proxy_hop bench binary (whose
# `--echo-upstream` is the lean Rust upstream of proxy_hop: ~1 KiB results,
# JSON replies), starts the gateway under callgrind in front of it, and sends
# one client's `initialize` then N `tools/call`s of proxy_hop's shape over one
# kept-alive HTTP/1.1 connection. It does this twice, with 100 and with
# 100 + N calls, and prints the difference divided by N: start-up, the
# upstream's `initialize` and shutdown cancel out. Every process stops by
# itself or is stopped by PID here; only 127.0.0.1 is used.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
CALLS="${1:-1000}"
BASE=100
command -v valgrind >/dev/null || { echo "callgrind-hop: valgrind is missing (apt-get install valgrind)" >&2; exit 1; }
case "${HOP_TARGET:-gateway}" in
  gateway | direct) ;;
  haproxy | haproxy-http)
    [[ "${HOP_TRANSPORT:-http}" == http ]] || { echo "callgrind-hop: HOP_TARGET=$HOP_TARGET relays the HTTP upstream only" >&2; exit 1; }
    HAPROXY="$(PATH="$PATH:/usr/local/sbin:/usr/sbin:/sbin" command -v haproxy)" ||
      { echo "callgrind-hop: haproxy is missing (apt-get install haproxy)" >&2; exit 1; } ;;
  *) echo "callgrind-hop: HOP_TARGET=$HOP_TARGET: expected gateway, direct, haproxy or haproxy-http" >&2; exit 1 ;;
esac

if [[ -z "${GATEWAY_BIN:-}" ]]; then
  cargo build --release --quiet --bin mcp-gateway
  GATEWAY_BIN="${CARGO_TARGET_DIR:-$ROOT/target}/release/mcp-gateway"
fi
BENCH="$("$ROOT/scripts/bench-bin.sh" proxy_hop)"
[[ -x "$BENCH" ]] || { echo "callgrind-hop: no proxy_hop bench binary" >&2; exit 1; }
WORK="$(mktemp -d)"
trap 'kill $(jobs -p) 2>/dev/null || true; rm -rf "$WORK"' EXIT

if [[ "${HOP_TRANSPORT:-http}" == stdio ]]; then
  # The same echo server over stdio: the gateway starts (and stops) it.
  printf '%s\n[upstreams.echo]\ncommand = "%s"\nargs = ["--echo-stdio"]\n' "${HOP_CONFIG:-}" "$BENCH" >"$WORK/gateway.toml"
else
  # The upstream stops when its stdin closes (this script's end) or after 600 s.
  coproc UPSTREAM { exec "$BENCH" --echo-upstream 600; }
  read -r line <&"${UPSTREAM[0]}"
  PORT="${line#LISTENING }"
  printf '%s\n[upstreams.echo]\nurl = "http://127.0.0.1:%s/mcp"\n' "${HOP_CONFIG:-}" "$PORT" >"$WORK/gateway.toml"
fi

# One run: the gateway (or, with HOP_TARGET=direct, the echo server) under
# callgrind, `n` calls, SIGTERM; prints its total.
run() {
  local n="$1" out="$WORK/cg.$1" log="$WORK/log.$1"
  if [[ "${HOP_TARGET:-gateway}" == direct ]]; then
    # Its stdin stays open (a fifo nobody writes) until the kill below.
    valgrind --tool=callgrind --callgrind-out-file="$out" "$BENCH" --echo-upstream 600 \
      >"$log" 2>/dev/null < <(sleep 600) &
  elif [[ "${HOP_TARGET:-gateway}" == haproxy* ]]; then
    local mode=tcp hport
    [[ "$HOP_TARGET" == haproxy-http ]] && mode=http
    hport="$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')"
    printf 'global\n  nbthread 1\ndefaults\n  mode %s\n  timeout connect 5s\n  timeout client 600s\n  timeout server 600s\nlisten relay\n  bind 127.0.0.1:%s\n  server upstream 127.0.0.1:%s\n' \
      "$mode" "$hport" "$PORT" >"$WORK/haproxy.cfg"
    valgrind --tool=callgrind --callgrind-out-file="$out" "$HAPROXY" -f "$WORK/haproxy.cfg" -db 2>"$log.err" &
    # It logs no port: the client below is told once HAProxy accepts.
    local waited=0
    until (exec 3<>"/dev/tcp/127.0.0.1/$hport") 2>/dev/null; do
      if ! kill -0 "$!" 2>/dev/null || ((waited++ > 300)); then
        echo "callgrind-hop: haproxy did not listen on 127.0.0.1:$hport:" >&2
        cat "$log.err" >&2
        exit 1
      fi
      sleep 0.2
    done
    echo "LISTENING $hport" >"$log"
  else
    valgrind --tool=callgrind --callgrind-out-file="$out" "$GATEWAY_BIN" serve \
      --config "$WORK/gateway.toml" --listen 127.0.0.1:0 2>"$log" &
  fi
  local pid=$!
  if ! python3 - "$log" "$n" <<'EOF'
import http.client, json, re, sys, time
log, n = sys.argv[1], int(sys.argv[2])
deadline = time.time() + 120
port = None
while port is None and time.time() < deadline:
    m = re.search(r"Listening on http://127\.0\.0\.1:(\d+)/mcp|^LISTENING (\d+)", open(log).read(), re.M)
    port = m and int(m.group(1) or m.group(2))
    time.sleep(0.2)
if port is None:
    sys.exit("callgrind-hop: the server did not start:\n" + open(log).read())
direct = m.group(2) is not None
c = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
def post(body, session=None):
    h = {"content-type": "application/json", "accept": "application/json, text/event-stream"}
    if session:
        h.update({"mcp-session-id": session, "mcp-protocol-version": "2025-11-25"})
    c.request("POST", "/mcp", body, h)
    r = c.getresponse()
    return r, r.read()
# The upstream is ready once /status says so.
while not direct and time.time() < deadline:
    c.request("GET", "/status"); r = c.getresponse(); s = json.loads(r.read())
    if s["upstreams"][0]["state"] == "ready":
        break
    time.sleep(0.2)
r, _ = post('{"jsonrpc":"2.0","id":0,"method":"initialize","params":{"protocolVersion":"2025-11-25","capabilities":{},"clientInfo":{"name":"callgrind-hop","version":"0"}}}')
session = r.getheader("mcp-session-id")
post('{"jsonrpc":"2.0","method":"notifications/initialized"}', session)
for i in range(1, n + 1):
    r, body = post('{"jsonrpc":"2.0","id":%d,"method":"tools/call","params":{"name":"%s","arguments":{"text":"hello"}}}' % (i, "echo" if direct else "echo__echo"), session)
    if r.status != 200 or b'"result"' not in body:
        sys.exit("callgrind-hop: call %d failed: %s %r" % (i, r.status, body[:300]))
EOF
  then
    # `run` is called in $(...), where bash ignores `set -e`: fail it here.
    kill -TERM "$pid"
    wait "$pid" || true
    exit 1
  fi
  kill -TERM "$pid"
  wait "$pid" || true
  awk '/^(summary|totals):/ { print $2; exit }' "$out"
}

small="$(run "$BASE")"
large="$(run "$((BASE + CALLS))")"
if [[ -n "${CALLGRIND_KEEP:-}" ]]; then
  mkdir -p "$CALLGRIND_KEEP"
  cp "$WORK/cg.$BASE" "$WORK/cg.$((BASE + CALLS))" "$CALLGRIND_KEEP/"
fi
echo "callgrind-hop: $BASE calls: $small instructions; $((BASE + CALLS)) calls: $large"
if [[ "${HOP_TARGET:-gateway}" == direct ]]; then
  echo "callgrind-hop: $(( (large - small) / CALLS )) instructions per tools/call in the echo server itself (direct, JSON replies, 1 client)"
elif [[ "${HOP_TARGET:-gateway}" == haproxy* ]]; then
  echo "callgrind-hop: $(( (large - small) / CALLS )) instructions per tools/call in HAProxy relaying them ($HOP_TARGET, 1 client)"
else
  echo "callgrind-hop: $(( (large - small) / CALLS )) instructions per tools/call (${HOP_TRANSPORT:-http} upstream, JSON replies, 1 client)"
fi
