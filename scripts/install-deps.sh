#!/usr/bin/env bash
# Installs the system packages faissx's build needs (FAISS is compiled from source by the
# `faiss` crate's `static` feature): cmake, a C++ compiler, BLAS/LAPACK (OpenBLAS) and
# OpenMP; libsodium (linked statically into the vendored libzmq for CurveZMQ). Debian/Ubuntu
# only; does nothing when everything is already there.
set -euo pipefail
need=()
command -v cmake >/dev/null 2>&1 || need+=(cmake)
command -v g++ >/dev/null 2>&1 || need+=(g++)
for pkg in pkg-config libopenblas-dev liblapack-dev libgomp1 libzmq3-dev libsodium-dev; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || need+=("$pkg")
done
if [ ${#need[@]} -eq 0 ]; then
  exit 0
fi
if ! command -v apt-get >/dev/null 2>&1; then
  echo "install-deps: missing ${need[*]}; install them with your package manager" >&2
  exit 1
fi
SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO="sudo"
echo "install-deps: installing ${need[*]}" >&2
$SUDO apt-get update -qq
DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
