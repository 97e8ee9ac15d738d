# syntax=docker/dockerfile:1
# The mcp-gateway image (docs/deployment.md). Two targets:
#   runtime        (default: the last stage) the gateway alone: HTTP upstreams, and stdio servers
#                  that are programs of their own in a derived image
#   runtime-tools  the same, plus Node.js 22 (npx) and uv (uvx), for stdio servers
#                  that `gateway.toml` launches with npx or uvx
# The config and the secrets are mounted, never baked in:
#   /etc/mcp-gateway/gateway.toml   (a folder, so a reload sees a ConfigMap's change;
#                                    deploy/kubernetes/base/gateway.toml is one for containers)
#   /run/secrets/mcp-gateway/.env   (the dotenv: session and audit keys, upstream credentials;
#                                    named by gateway.secrets_file or MCP_GATEWAY_ENV_FILE)
#   /var/lib/mcp-gateway            (writable state: pins, warm-start cache, OAuth tokens, audit)
# scripts/check-deploy.sh checks this file offline (hadolint, the builder's command
# run on the host, the binary's shared libraries against the runtime base).

ARG RUST_VERSION=1.95
ARG DEBIAN_RELEASE=bookworm
ARG NODE_VERSION=22

FROM rust:${RUST_VERSION}-slim-${DEBIAN_RELEASE} AS builder
WORKDIR /src
COPY . .
# The lock file is the truth: a dependency it does not pin fails the build.
RUN cargo build --release --locked --bin mcp-gateway

FROM debian:${DEBIAN_RELEASE}-slim AS runtime
# ca-certificates: TLS to upstreams, OAuth servers and OTLP collectors (rustls
# reads the system roots). tini: PID 1 that reaps the grandchildren stdio
# servers leave behind (npx starts node, which starts the server).
# Versions are not pinned: the security updates of the release are wanted.
# hadolint ignore=DL3008
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates tini \
 && rm -rf /var/lib/apt/lists/*
# A fixed, unprivileged user (the Kubernetes manifests run as it, with a
# read-only root filesystem).
RUN groupadd --system --gid 10001 mcp-gateway \
 && useradd --system --uid 10001 --gid 10001 --home-dir /var/lib/mcp-gateway --shell /usr/sbin/nologin mcp-gateway \
 && mkdir -p /etc/mcp-gateway /run/secrets/mcp-gateway /var/lib/mcp-gateway \
 && chown 10001:10001 /var/lib/mcp-gateway
COPY --from=builder /src/target/release/mcp-gateway /usr/local/bin/mcp-gateway
USER 10001:10001
WORKDIR /var/lib/mcp-gateway
# 8080: /mcp, /healthz, /readyz (gateway.listen); 9090: /metrics (admin.listen).
EXPOSE 8080 9090
# No HEALTHCHECK: the image has no HTTP client, and orchestrators probe
# /healthz (alive) and /readyz (serving) themselves (docs/deployment.md).
ENTRYPOINT ["/usr/bin/tini", "--", "/usr/local/bin/mcp-gateway"]
CMD ["serve", "--config", "/etc/mcp-gateway/gateway.toml"]

# Node.js 22 (bookworm's own nodejs is 18, past its end of life), taken from
# the official image of the same Debian release.
FROM node:${NODE_VERSION}-${DEBIAN_RELEASE}-slim AS node

FROM runtime AS runtime-tools
ARG UV_VERSION=0.13.8
USER 0
COPY --from=node /usr/local/bin/node /usr/local/bin/node
COPY --from=node /usr/local/lib/node_modules /usr/local/lib/node_modules
# npx and npm from Node's own npm, and uv from PyPI in a venv of its own
# (uvx); their caches go to the writable home, /var/lib/mcp-gateway.
# hadolint ignore=DL3008
RUN ln -s ../lib/node_modules/npm/bin/npm-cli.js /usr/local/bin/npm \
 && ln -s ../lib/node_modules/npm/bin/npx-cli.js /usr/local/bin/npx \
 && apt-get update \
 && apt-get install -y --no-install-recommends python3 python3-venv \
 && rm -rf /var/lib/apt/lists/* \
 && python3 -m venv /opt/uv \
 && /opt/uv/bin/pip install --no-cache-dir "uv==${UV_VERSION}" \
 && ln -s /opt/uv/bin/uv /usr/local/bin/uv \
 && ln -s /opt/uv/bin/uvx /usr/local/bin/uvx
USER 10001:10001
ENV HOME=/var/lib/mcp-gateway \
    npm_config_cache=/var/lib/mcp-gateway/.npm \
    UV_CACHE_DIR=/var/lib/mcp-gateway/.cache/uv

# The default target (`docker build .` builds the last stage): the runtime.
FROM runtime AS default
