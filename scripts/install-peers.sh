#!/usr/bin/env bash
# Installs the pinned third-party MCP peers used by the integration tests into
# target/peers/ (ignored by git). Idempotent: a stamp file records the pinned
# versions, and a second run with the same pins only checks that the files are
# there and prints the paths.
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
)
PY_PKGS=("mcp==2.3.0")

NM="$NPM_DIR/node_modules/@modelcontextprotocol"
EVERYTHING="$NM/server-everything/dist/index.js"
FILESYSTEM="$NM/server-filesystem/dist/index.js"
POSTGRES="$NM/server-postgres/dist/index.js"
PYTHON="$VENV/bin/python"

WANT="npm: ${NPM_PKGS[*]}
pip: ${PY_PKGS[*]}"

installed() {
  [[ -f "$STAMP" && "$(cat "$STAMP")" == "$WANT" && -f "$EVERYTHING" && -f "$FILESYSTEM" \
     && -f "$POSTGRES" && -x "$PYTHON" ]]
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

  for f in "$EVERYTHING" "$FILESYSTEM" "$POSTGRES" "$PYTHON"; do
    [[ -e "$f" ]] || { echo "install-peers: expected $f after install" >&2; exit 1; }
  done
  printf '%s' "$WANT" > "$STAMP"
fi

echo "server-everything $EVERYTHING"
echo "server-filesystem $FILESYSTEM"
echo "server-postgres $POSTGRES"
echo "python-mcp $PYTHON"
