# The image of any service; SERVICE and PORT say which. The build context is the
# repository root (the workspace has path dependencies between crates):
#   docker build -t user-service:latest  --build-arg SERVICE=user-service  --build-arg PORT=8081 .
#   docker build -t order-service:latest --build-arg SERVICE=order-service --build-arg PORT=8082 .
#   docker build -t audit-log-service:latest --build-arg SERVICE=audit-log-service --build-arg PORT=8083 .
#
# Stages:
#   builder  - compiles the dependencies in their own cached layer (manifests plus stub
#              sources), then the real sources: `cargo build --profile dist --locked -p $SERVICE`
#   runtime  - debian:bookworm-slim with only the binary, running as a non-root user.

ARG RUST_VERSION=1.95
ARG DEBIAN_RELEASE=bookworm
ARG SERVICE=user-service
ARG PORT=8081

########################################################################################
FROM rust:${RUST_VERSION}-slim-${DEBIAN_RELEASE} AS builder
ARG SERVICE
WORKDIR /build
# SQLite is compiled in (libsqlite3-sys, bundled) with the image's gcc; reqwest is built
# without TLS, so no OpenSSL is needed at build or run time.
ENV CARGO_TERM_COLOR=never \
    CARGO_INCREMENTAL=0 \
    CARGO_PROFILE_DIST_STRIP=debuginfo

# 1) Dependency layer. Only the manifests and the lock file are copied, and every
#    workspace member gets a stub target, so this layer (the slow part: every crate from
#    crates.io) is rebuilt only when Cargo.toml / Cargo.lock change, not on code edits.
#    All members must be present: cargo loads the whole workspace. Afterwards the stubs
#    of the crates compiled for real below are removed; the others stay as placeholders.
COPY Cargo.toml Cargo.lock ./
COPY crates/platform/Cargo.toml crates/platform/Cargo.toml
COPY services/user-service/Cargo.toml services/user-service/Cargo.toml
COPY services/order-service/Cargo.toml services/order-service/Cargo.toml
COPY services/audit-log-service/Cargo.toml services/audit-log-service/Cargo.toml
COPY bench/floor/Cargo.toml bench/floor/Cargo.toml
RUN set -eux; \
    mkdir -p src crates/platform/src bench/floor/src; \
    echo 'fn main() {}' > src/main.rs; \
    echo 'fn main() {}' > bench/floor/src/main.rs; \
    touch crates/platform/src/lib.rs; \
    for svc in user-service order-service audit-log-service; do \
        mkdir -p "services/$svc/src"; \
        touch "services/$svc/src/lib.rs"; \
        echo 'fn main() {}' > "services/$svc/src/main.rs"; \
    done; \
    cargo build --profile dist --locked -p "${SERVICE}"; \
    rm -rf crates/platform/src "services/${SERVICE}/src"

# 2) The real sources (migrations are embedded at compile time, platform::embed_migrations!).
#    `touch` makes sure cargo sees them as newer than the stub build, whatever mtimes
#    the build context carried.
COPY crates/platform crates/platform
COPY services/${SERVICE} services/${SERVICE}
RUN set -eux; \
    find crates/platform "services/${SERVICE}" -type f -exec touch {} +; \
    cargo build --profile dist --locked -p "${SERVICE}"; \
    install -D -m 0755 "target/dist/${SERVICE}" "/out/${SERVICE}"

########################################################################################
FROM debian:${DEBIAN_RELEASE}-slim AS runtime
ARG SERVICE
ARG PORT

# A fixed numeric uid/gid so Kubernetes' runAsNonRoot can verify it.
ARG APP_UID=10001
RUN set -eux; \
    groupadd --system --gid "${APP_UID}" app; \
    useradd --system --uid "${APP_UID}" --gid app --home-dir /app --no-create-home \
        --shell /usr/sbin/nologin app; \
    mkdir -p /app/data; \
    chown -R app:app /app

# Installed under its own name (what `ps` shows) and as /usr/local/bin/service,
# the entry point, since exec-form ENTRYPOINT does not expand variables.
COPY --from=builder /out/${SERVICE} /usr/local/bin/${SERVICE}
RUN ln -s "/usr/local/bin/${SERVICE}" /usr/local/bin/service

# WORKDIR /app: with no database variable the service falls back to SQLite at
# ./data/<service>.db, i.e. /app/data, a writable volume owned by the app user.
# docker-compose.yml and the Kubernetes manifests use PostgreSQL (<PREFIX>_DB_*).
# The services listen on 0.0.0.0 by default; APP_SERVICE and APP_PORT are read
# only by the healthcheck below.
WORKDIR /app
VOLUME ["/app/data"]
ENV APP_SERVICE=${SERVICE} \
    APP_PORT=${PORT}
EXPOSE ${PORT}
USER ${APP_UID}:${APP_UID}

# Healthcheck without adding packages: the slim image has no curl, but it has bash
# (an essential Debian package), whose /dev/tcp redirection opens a TCP connection.
# It sends a plain HTTP/1.0 request to /health/ready (200 when the database answers
# and the service is not draining, 503 otherwise) and passes only on a 200 status line.
# Docker does not expand variables in exec form; bash does, from the container's env:
# the port is <PREFIX>_PORT when set (user-service -> USER_SERVICE_PORT), else APP_PORT.
HEALTHCHECK --interval=10s --timeout=3s --start-period=30s --retries=3 \
    CMD ["bash", "-c", "v=${APP_SERVICE//-/_}; v=${v^^}_PORT; exec 3<>/dev/tcp/127.0.0.1/${!v:-$APP_PORT} && printf 'GET /health/ready HTTP/1.0\\r\\nHost: localhost\\r\\n\\r\\n' >&3 && head -n 1 <&3 | grep -q ' 200 '"]

# SIGTERM (docker stop) triggers the service's graceful shutdown.
STOPSIGNAL SIGTERM
ENTRYPOINT ["/usr/local/bin/service"]
# `docker run user-service:latest migrate` applies the migrations and exits.
CMD []
