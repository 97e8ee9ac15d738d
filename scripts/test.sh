#!/usr/bin/env bash
# The whole test suite, as CI runs it (.ci/run calls this):
#   1. install the pinned peers (npm servers, Python SDK venv; PostgreSQL, redis-server, HAProxy if missing)
#   2. cargo fmt --check, clippy -D warnings
#   3. every test: unit tests beside the code and the integration binary
#   4. smoke runs of the benchmarks (the real ones are `cargo bench`, see README)
#   5. the instruction-count gate (callgrind, scripts/callgrind-gate.sh) and the
#      hot-code layout check (scripts/hot-order.sh --check)
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

# PostgreSQL binaries for the server-postgres test (Debian ships them on this
# machine kind; install them where they are missing and we may).
if ! command -v initdb >/dev/null 2>&1 && [[ ! -x /usr/lib/postgresql/15/bin/initdb ]]; then
  if [[ "$(id -u)" == 0 ]] && command -v apt-get >/dev/null 2>&1; then
    echo "test.sh: installing PostgreSQL (apt-get)" >&2
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >/dev/null
  fi
fi
# redis-server and HAProxy for the two-replica test (tests/integration/
# replicas.rs): the daemons are not started by the packages' own units here;
# the test starts its own on free ports.
if ! command -v redis-server >/dev/null 2>&1 || ! command -v haproxy >/dev/null 2>&1; then
  if [[ "$(id -u)" == 0 ]] && command -v apt-get >/dev/null 2>&1; then
    echo "test.sh: installing redis-server and haproxy (apt-get)" >&2
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
      redis-server haproxy >/dev/null
  fi
fi

scripts/install-peers.sh

echo "test.sh: cargo fmt --check" >&2
cargo fmt --all -- --check
echo "test.sh: cargo clippy" >&2
# --all-features: the otlp-grpc exporter is checked too.
cargo clippy --all-targets --all-features --locked -- -D warnings
echo "test.sh: cargo test" >&2
log="$(mktemp)"
trap 'rm -f "$log"' EXIT
# Unit tests beside the code, then the one integration binary. (There are
# no doc tests; the binary has no unit tests of its own.)
RUST_BACKTRACE=0 cargo test --locked --lib --test integration 2>&1 | tee "$log"
# The Dockerfile and deploy/kubernetes, as far as this machine allows (no
# container engine or cluster here): hadolint, the builder's command on the
# host, the runtime's libraries, kustomize renders, schema validation.
echo "test.sh: the container image and the Kubernetes manifests (scripts/check-deploy.sh)" >&2
scripts/check-deploy.sh
# The benchmarks without `--bench` are few-second smoke runs: they prove
# each bench still starts the gateway and its upstreams, measures and
# cleans up (isolation also checks that a full bulkhead refuses at once).
echo "test.sh: benchmark smoke runs" >&2
cargo test --locked --bench proxy_hop
cargo test --locked --bench isolation
cargo test --locked --bench scan
cargo test --locked --bench shared_state
cargo test --locked --bench large
cargo test --locked --bench scale
# Instructions per call (callgrind) against the figure recorded in
# benches/instructions.txt: fails more than 10 % over it.
echo "test.sh: the instruction-count gate (scripts/callgrind-gate.sh)" >&2
scripts/callgrind-gate.sh
# The release binary's hot-code layout (build/hot-text.ld, build.rs) still
# names its functions: fails when fewer than half do (regenerate it).
echo "test.sh: the hot-code layout (scripts/hot-order.sh --check)" >&2
scripts/hot-order.sh --check

# One closing line with the totals of every test run above.
read -r passed failed < <(awk '/^test result:/ {
  for (i = 1; i <= NF; i++) { if ($(i+1) ~ /^passed/) p += $i; if ($(i+1) ~ /^failed/) f += $i }
} END { print p + 0, f + 0 }' "$log")
echo "${passed} passed, ${failed} failed"
