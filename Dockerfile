# faissx serve in a container: a multi-stage build (FAISS compiled from source in the builder,
# statically linked), a slim non-root runtime, configured with FAISSX_* variables.
#   docker build -t faissx .
#   docker run -p 45678:45678 -p 127.0.0.1:9100:9100 -v faissx-data:/data \
#     -v "$PWD/secrets/faissx_keys.json:/run/secrets/faissx_keys:ro" \
#     -e FAISSX_ENABLE_AUTH=true -e FAISSX_AUTH_FILE=/run/secrets/faissx_keys faissx
# Port 9100 serves /metrics, /livez and /readyz (README: Operating faissx).
FROM rust:1-bookworm AS build
# libzmq is built from source with the crate (libsodium for CurveZMQ, linked statically).
RUN apt-get update \
 && apt-get install -y --no-install-recommends cmake g++ libopenblas-dev liblapack-dev libsodium-dev pkg-config \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
# SIMD: FAISS is built for x86-64-v3 (AVX2, FMA) by default, as the binary is (.cargo/config.toml);
# --build-arg PORTABLE=1 builds for any x86-64 (measured 1.24x-3.3x slower, README "SIMD").
ARG PORTABLE=0
# Dependencies (FAISS, libzmq) in a layer of their own: rebuilt only when Cargo.toml,
# Cargo.lock or the vendored crates change, not on every source edit.
COPY Cargo.toml Cargo.lock build.rs ./
COPY .cargo .cargo
COPY third_party third_party
COPY src/engine/index/shim src/engine/index/shim
RUN mkdir -p src/bin benches \
 && echo "fn main() {}" > src/bin/faissx.rs && touch src/lib.rs \
 && for b in io_throughput serve import_export; do echo "fn main() {}" > "benches/$b.rs"; done \
 && if [ "$PORTABLE" = 1 ]; then export CXXFLAGS=-O3; fi \
 && cargo build --release --locked \
 && rm -rf src benches
COPY . .
RUN if [ "$PORTABLE" = 1 ]; then export CXXFLAGS=-O3; fi \
 && touch src/lib.rs src/bin/faissx.rs \
 && cargo build --release --locked \
 && strip target/release/faissx

FROM debian:bookworm-slim
RUN apt-get update \
 && apt-get install -y --no-install-recommends libopenblas0 libgomp1 ca-certificates curl \
 && rm -rf /var/lib/apt/lists/* \
 && useradd --system --uid 10001 --home-dir /data --shell /usr/sbin/nologin faissx \
 && mkdir -p /data && chown faissx:faissx /data
COPY --from=build /src/target/release/faissx /usr/local/bin/faissx
USER 10001:10001
ENV FAISSX_PORT=45678 \
    FAISSX_BIND_ADDRESS=0.0.0.0 \
    FAISSX_DATA_DIR=/data \
    FAISSX_HTTP_PORT=9100 \
    FAISSX_LOG_LEVEL=INFO
EXPOSE 45678 9100
VOLUME /data
STOPSIGNAL SIGTERM
# Alive, not ready: a large data directory may take minutes to restore (/readyz says when).
HEALTHCHECK --interval=30s --timeout=5s --start-period=30s --retries=3 \
  CMD ["curl", "-fsS", "-o", "/dev/null", "http://127.0.0.1:9100/livez"]
ENTRYPOINT ["faissx", "serve"]
