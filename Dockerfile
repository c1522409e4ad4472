# syntax=docker/dockerfile:1
#
# iam-inventory container image.
#
#   docker build -t iam-inventory .
#   docker run -d --name iam-inventory -p 9464:9464 -v iam-inventory:/var/lib/iam-inventory \
#     -e AWS_REGION=us-east-1 -e AWS_ACCESS_KEY_ID -e AWS_SECRET_ACCESS_KEY -e AWS_SESSION_TOKEN \
#     -v "$PWD/my-config.toml:/etc/iam-inventory/iam-inventory.toml:ro" iam-inventory
#
# No container engine runs in the project's CI, so this file is not built there. What keeps it honest:
# its last build step is exactly `cargo build --release --locked --bin iam-inventory`, the command CI's
# toolchain builds with, and scripts/check-deploy.sh checks that (and the rest of this file) on every test run.
# See deploy/README.md.

ARG RUST_VERSION=1.95
ARG DEBIAN_RELEASE=bookworm

# --- toolchain + cargo-chef ---------------------------------------------------------------------------------
FROM rust:${RUST_VERSION}-${DEBIAN_RELEASE} AS chef
ARG CARGO_CHEF_VERSION=0.1.78
RUN cargo install cargo-chef --locked --version "${CARGO_CHEF_VERSION}"
WORKDIR /src

# --- the dependency recipe: changes only when Cargo.toml / Cargo.lock change --------------------------------
FROM chef AS planner
COPY . .
RUN cargo chef prepare --recipe-path recipe.json

# --- build: dependencies in their own cached layer, then the crate itself -----------------------------------
FROM chef AS builder
COPY --from=planner /src/recipe.json recipe.json
RUN cargo chef cook --release --locked --bin iam-inventory --recipe-path recipe.json
COPY . .
# The same command as a plain release build; TLS is rustls and SQLite is compiled in (rusqlite "bundled"),
# so the binary needs only glibc and the CA certificates at run time.
RUN cargo build --release --locked --bin iam-inventory

# --- runtime ------------------------------------------------------------------------------------------------
FROM debian:${DEBIAN_RELEASE}-slim AS runtime
# ca-certificates: trust roots for rustls (AWS endpoints, HTTPS sinks). curl: only for HEALTHCHECK.
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates curl \
 && rm -rf /var/lib/apt/lists/*
RUN groupadd --system --gid 10001 iam-inventory \
 && useradd --system --uid 10001 --gid 10001 --home-dir /var/lib/iam-inventory --no-create-home \
      --shell /usr/sbin/nologin iam-inventory \
 && mkdir -p /var/lib/iam-inventory /etc/iam-inventory \
 && chown 10001:10001 /var/lib/iam-inventory

COPY --from=builder /src/target/release/iam-inventory /usr/local/bin/iam-inventory
# The default config (every key at its default, examples commented out). Mount your own over it
# (a file or the whole /etc/iam-inventory, e.g. a Kubernetes ConfigMap).
COPY config/iam-inventory.toml /etc/iam-inventory/iam-inventory.toml

# Config location, store on the volume, and /healthz + /metrics reachable from outside the container.
# Any other key: IAM_INVENTORY__SECTION__KEY (see config/iam-inventory.toml).
ENV IAM_INVENTORY_CONFIG=/etc/iam-inventory/iam-inventory.toml \
    IAM_INVENTORY__STORE__PATH=/var/lib/iam-inventory/iam-inventory.db \
    IAM_INVENTORY__SERVER__LISTEN=0.0.0.0:9464

USER 10001:10001
WORKDIR /var/lib/iam-inventory
# The SQLite snapshot, change log and per-sink delivery state: keep it across restarts and upgrades.
VOLUME ["/var/lib/iam-inventory"]
EXPOSE 9464

# For `run` (the default command): 200 while syncs succeed on schedule, 503 (with the reason in JSON) after a
# failed or partial sync until the next good one, or when the schedule is overdue. A one-shot `sync`
# container exits before this matters; start those with --no-healthcheck if your tooling complains.
HEALTHCHECK --interval=30s --timeout=5s --start-period=30s --retries=3 \
  CMD ["curl", "-fsS", "-o", "/dev/null", "http://127.0.0.1:9464/healthz"]

# SIGTERM (docker stop) lets the sync in flight reach a safe point (up to 30 s): give it time (docker stop -t 60).
STOPSIGNAL SIGTERM
ENTRYPOINT ["iam-inventory"]
CMD ["run"]
