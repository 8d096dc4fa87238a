# faissx serve in a container: a multi-stage build (FAISS compiled from source in the builder,
# statically linked), a slim non-root runtime, configured with FAISSX_* variables.
#   docker build -t faissx .
#   docker run -p 45678:45678 -p 127.0.0.1:9100:9100 -v faissx-data:/data \
#     -v "$PWD/secrets/faissx_keys.json:/run/secrets/faissx_keys:ro" \
#     -e FAISSX_ENABLE_AUTH=true -e FAISSX_AUTH_FILE=/run/secrets/faissx_keys faissx
# Port 9100 serves /metrics, /livez and /readyz (README: Operating faissx).
FROM rust:1-bookworm AS build
RUN apt-get update \
 && apt-get install -y --no-install-recommends cmake g++ libopenblas-dev liblapack-dev libzmq3-dev libsodium-dev pkg-config \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY . .
# Portable by default; pass --build-arg CXXFLAGS=-march=x86-64-v3 for AVX2 hosts (see README).
ARG CXXFLAGS=-O3
ENV CXXFLAGS=${CXXFLAGS}
RUN cargo build --release --locked && strip target/release/faissx

FROM debian:bookworm-slim
RUN apt-get update \
 && apt-get install -y --no-install-recommends libopenblas0 libgomp1 libzmq5 ca-certificates curl \
 && rm -rf /var/lib/apt/lists/* \
 && useradd --system --uid 10001 --home-dir /data --shell /usr/sbin/nologin faissx \
 && mkdir -p /data && chown faissx:faissx /data
COPY --from=build /src/target/release/faissx /usr/local/bin/faissx
USER faissx
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
