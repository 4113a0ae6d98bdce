# Sluice as a container image: built from source on the official Rust image, run on
# Debian slim. Both stages are bookworm, so the binary runs on the glibc it was linked
# against. Plain Dockerfile instructions only: Quix Cloud builds this file with its own
# builder, and BuildKit-only features (cache mounts, heredocs) are not assumed.
#
#   docker build --build-arg SLUICE_COMMIT="$(git rev-parse --short=12 HEAD)" -t sluice .
#   docker run -p 8080:8080 -e Quix__Broker__Address=broker:9092 -e input=telemetry \
#     -e WS_USERNAME=dash -e WS_PASSWORD=s3cret sluice

FROM rust:1-bookworm AS build

# librdkafka, its OpenSSL, zstd and zlib are compiled from source and linked in
# statically: they need a C compiler (in the image), make, perl and pkg-config.
# Debian's stable archive only takes security fixes, so the packages are not pinned.
# hadolint ignore=DL3008
RUN apt-get update \
 && apt-get install -y --no-install-recommends make perl pkg-config \
 && rm -rf /var/lib/apt/lists/*

WORKDIR /src

# The dependencies first, against placeholder sources, so that a change to Sluice's own
# code does not rebuild librdkafka. The bench and support (test harness) crates are
# workspace members: their manifests must be there for cargo to read the workspace, though
# neither is built here.
COPY Cargo.toml Cargo.lock ./
COPY bench/Cargo.toml bench/
COPY support/Cargo.toml support/
RUN mkdir -p src bench/src support/src \
 && echo 'fn main() {}' > src/main.rs \
 && touch src/lib.rs support/src/lib.rs \
 && echo 'fn main() {}' > bench/src/main.rs \
 && cargo build --release --locked -p sluice \
 && rm -rf src bench/src support/src

COPY . .
# The commit for the sluice_build_info metric: .git is not sent to the builder.
ARG SLUICE_COMMIT=""
# COPY keeps the sources' own times, which may be older than the placeholders' build.
# Debug line tables are most of the binary (about 90 of its 110 MB): the image keeps
# the symbols, so a panic's backtrace still names its functions.
RUN touch src/main.rs src/lib.rs \
 && cargo build --release --locked -p sluice --bin sluice \
 && install -D -m 0755 target/release/sluice /out/sluice \
 && strip --strip-debug /out/sluice


FROM debian:bookworm-slim

# ca-certificates: with no CA configured, librdkafka (its OpenSSL is linked in) and the
# Quix portal client verify the brokers and the portal against the system's bundle.
# hadolint ignore=DL3008
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates \
 && rm -rf /var/lib/apt/lists/*

# A fixed numeric id, so that runtimes enforcing a non-root user (Kubernetes'
# runAsNonRoot) can check it without reading /etc/passwd.
RUN groupadd --system --gid 10001 sluice \
 && useradd --system --uid 10001 --gid 10001 --no-create-home --home-dir /nonexistent \
      --shell /usr/sbin/nologin sluice

COPY --from=build /out/sluice /usr/local/bin/sluice

USER 10001:10001

# 8080, not 80: a non-root process may not bind ports below 1024 on every runtime.
# Quix Cloud maps the service's port 80 to it (library.json, DeploySettings.Network);
# elsewhere publish it as you like (-p 80:8080), or set PORT.
ENV PORT=8080
EXPOSE 8080

# The image has no curl: the binary asks its own /healthz (exit 0 healthy, 1 not).
HEALTHCHECK --interval=15s --timeout=5s --start-period=30s --retries=3 CMD ["sluice", "healthcheck"]

# SIGTERM (docker stop, Kubernetes) drains clients with close 1001 within
# SLUICE_SHUTDOWN_TIMEOUT seconds: keep the runtime's grace period above it.
ENTRYPOINT ["sluice"]
