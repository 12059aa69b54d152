# Hive's container images, one Dockerfile with three targets:
#
#   docker build --target coordinator   -t hive-coordinator .
#   docker build --target worker        -t hive-worker .
#   docker build --target worker-claude -t hive-worker-claude .
#
# Every image holds `hivectl` beside its binary (tokens, certificates,
# operating the fleet). By default the binaries are compiled from source in
# a Rust image. To package binaries built on this host instead (CI, and
# scripts/smoke-containers, which cannot pull a Rust image):
#
#   cargo build --release --bins
#   docker build --build-arg BINARIES=prebuilt --target worker -t hive-worker .
#
# with `--build-arg PREBUILT_DIR=target/debug` for a debug build. Host
# binaries must link a glibc no newer than bookworm's (2.36).
#
# Labels: --build-arg VERSION=0.1.0 --build-arg REVISION=$(git rev-parse HEAD)
# --build-arg SOURCE=<repository URL>.

ARG BINARIES=source
ARG RUST_IMAGE=rust:1.94-bookworm
ARG DEBIAN_IMAGE=debian:bookworm-slim

# --- binaries: compiled from source (the default) ---------------------------
FROM ${RUST_IMAGE} AS binaries-source
WORKDIR /src
COPY . .
# sqlx checks queries against the committed coordinator/.sqlx: no database.
ENV SQLX_OFFLINE=true
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked -p hive-coordinator -p hive-worker -p hive-cli --bins \
    && mkdir -p /out \
    && cp target/release/hive-coordinator target/release/hive-worker target/release/hivectl /out/

# --- binaries: built on the host (BINARIES=prebuilt) -------------------------
FROM scratch AS binaries-prebuilt
ARG PREBUILT_DIR=target/release
COPY ${PREBUILT_DIR}/hive-coordinator ${PREBUILT_DIR}/hive-worker ${PREBUILT_DIR}/hivectl /out/

# hadolint ignore=DL3006
FROM binaries-${BINARIES} AS binaries

# --- the coordinator's root filesystem: its binaries and their libraries -----
# Collected from a Debian image so the coordinator image needs no shell,
# package manager or anything else it does not run.
FROM ${DEBIAN_IMAGE} AS coordinator-rootfs
SHELL ["/bin/bash", "-o", "pipefail", "-c"]
# Debian's security updates are wanted: packages are not pinned.
# hadolint ignore=DL3008
RUN apt-get update \
    && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends ca-certificates \
    && apt-get clean && rm -rf /var/lib/apt/lists/*
COPY --from=binaries /out/hive-coordinator /out/hivectl /rootfs/usr/local/bin/
RUN set -eu; \
    for lib in $(ldd /rootfs/usr/local/bin/hive-coordinator /rootfs/usr/local/bin/hivectl \
                 | awk '$2 == "=>" && $3 ~ /^\// { print $3 } $1 ~ /^\/.*[^:]$/ { print $1 }' | sort -u); do \
        cp --parents -L "$lib" /rootfs; \
    done; \
    mkdir -p /rootfs/etc/ssl/certs /rootfs/tmp /rootfs/var/lib/hive-secrets; \
    cp /etc/ssl/certs/ca-certificates.crt /rootfs/etc/ssl/certs/; \
    printf 'root:x:0:0:root:/root:/usr/sbin/nologin\nhive:x:10001:10001:hive:/nonexistent:/usr/sbin/nologin\n' \
        > /rootfs/etc/passwd; \
    printf 'root:x:0:\nhive:x:10001:\n' > /rootfs/etc/group; \
    printf 'hosts: files dns\n' > /rootfs/etc/nsswitch.conf; \
    chmod 1777 /rootfs/tmp; \
    chown 10001:10001 /rootfs/var/lib/hive-secrets; \
    chmod 0700 /rootfs/var/lib/hive-secrets

# --- coordinator --------------------------------------------------------------
FROM scratch AS coordinator
ARG VERSION=dev
ARG REVISION=unknown
ARG SOURCE=
LABEL org.opencontainers.image.title="hive-coordinator" \
      org.opencontainers.image.description="Hive coordinator: the task queue (PostgreSQL) behind a gRPC API" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${REVISION}" \
      org.opencontainers.image.source="${SOURCE}" \
      org.opencontainers.image.licenses="Apache-2.0"
COPY --from=coordinator-rootfs /rootfs/ /
USER 10001:10001
# gRPC; HTTP (/metrics and the dashboard) when http.listen is set.
EXPOSE 50051 9464
# Probes need no shell: `hive-coordinator healthcheck` (same config as the
# server) asks the gRPC health service over loopback; with TLS on it needs
# the CA (HIVE_TLS_CA). deploy/compose.yaml and the Helm chart run it.
ENTRYPOINT ["hive-coordinator"]

# --- worker -------------------------------------------------------------------
FROM ${DEBIAN_IMAGE} AS worker
ARG VERSION=dev
ARG REVISION=unknown
ARG SOURCE=
LABEL org.opencontainers.image.title="hive-worker" \
      org.opencontainers.image.description="Hive worker: claims tasks and runs their agents" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${REVISION}" \
      org.opencontainers.image.source="${SOURCE}" \
      org.opencontainers.image.licenses="Apache-2.0"
# tini is PID 1 so whatever agents leave behind is reaped; git for
# workspaces (worktrees, mirrors over https and ssh). Not pinned, like every
# apt-get here: Debian's security updates are wanted.
# hadolint ignore=DL3008
RUN apt-get update \
    && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
        ca-certificates git openssh-client tini \
    && apt-get clean && rm -rf /var/lib/apt/lists/* \
    && groupadd --gid 10001 hive \
    && useradd --uid 10001 --gid 10001 --create-home --home-dir /home/hive --shell /bin/sh hive \
    && install -d -o hive -g hive -m 0750 /var/lib/hive \
    && install -d -o hive -g hive -m 0700 /var/lib/hive-secrets /var/lib/hive-worker-secrets \
    && install -d -o hive -g hive -m 0755 /var/lib/hive-observability
COPY --from=binaries /out/hive-worker /out/hivectl /usr/local/bin/
COPY deploy/compose/worker.toml /etc/hive/worker.toml
USER 10001:10001
WORKDIR /var/lib/hive
# Scratch folders and worktrees; one volume per worker.
VOLUME /var/lib/hive
# Workers drain on SIGTERM (drain_grace, 30 s by default): give them longer
# than that before SIGKILL (docker stop -t, stop_grace_period in compose).
ENTRYPOINT ["tini", "--", "hive-worker"]
CMD ["--config", "/etc/hive/worker.toml"]

# --- worker with Claude Code --------------------------------------------------
# Claude Code 2.1.197 (pinned, with integrity hashes, in tools/package.json
# and tools/package-lock.json) installs from npm as a native executable; the
# image also carries Node (Debian's 18) for what Claude Code starts: MCP
# servers and hooks written in JavaScript.
# Behind a TLS-intercepting proxy, give npm the proxy's CA bundle:
#   docker build --secret id=ca,src=/etc/ssl/certs/ca-certificates.crt --target worker-claude .
FROM ${DEBIAN_IMAGE} AS claude-code
# hadolint ignore=DL3008
RUN apt-get update \
    && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends ca-certificates nodejs npm \
    && apt-get clean && rm -rf /var/lib/apt/lists/*
WORKDIR /opt/tools
COPY tools/package.json tools/package-lock.json ./
RUN --mount=type=secret,id=ca \
    if [ -s /run/secrets/ca ]; then export NODE_EXTRA_CA_CERTS=/run/secrets/ca; fi \
    && npm ci --no-audit --no-fund \
    && install -m 0755 node_modules/@anthropic-ai/claude-code/bin/claude.exe /usr/local/bin/claude \
    && /usr/local/bin/claude --version

FROM worker AS worker-claude
LABEL org.opencontainers.image.title="hive-worker-claude" \
      org.opencontainers.image.description="Hive worker with Claude Code 2.1.197 and Node"
USER 0
# hadolint ignore=DL3008
RUN apt-get update \
    && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends nodejs \
    && apt-get clean && rm -rf /var/lib/apt/lists/*
USER 10001:10001
COPY --from=claude-code /usr/local/bin/claude /usr/local/bin/claude
