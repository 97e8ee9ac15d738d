#!/usr/bin/env bash
# Opt-in: uv (for `uvx`) in target/peers/uv-venv, and PyAirbyte's
# `airbyte-mcp` warmed into uv's cache, for the PyAirbyte example's test
# (tests/integration/examples.rs, run with MCP_GATEWAY_PYAIRBYTE=1). Not
# part of scripts/install-peers.sh: PyAirbyte is about 800 MB and takes
# minutes to install, so CI does not run it (examples/README.md).
#
#   scripts/install-pyairbyte.sh   # prints the directory to put on PATH
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
UV_VENV="$ROOT/target/peers/uv-venv"
UV_VERSION="0.13.8"
AIRBYTE="airbyte==0.71.3"

PY="$(command -v python3.11 || command -v python3)"
if [[ ! -x "$UV_VENV/bin/uvx" ]]; then
  echo "install-pyairbyte: uv $UV_VERSION into $UV_VENV" >&2
  "$PY" -m venv "$UV_VENV"
  "$UV_VENV/bin/pip" install -q "uv==$UV_VERSION"
fi
# The example's own command, once, so that its first start under the
# gateway is a warm one (a cold one downloads PyAirbyte first).
echo "install-pyairbyte: warming $AIRBYTE in uv's cache" >&2
PATH="$UV_VENV/bin:$PATH" uvx --python=3.11 --from="$AIRBYTE" python -c 'import airbyte.mcp.server' >&2
echo "$UV_VENV/bin"
