#!/usr/bin/env bash
# The test command (README, CI): system packages, the Python environment for the
# compatibility tests (faiss-cpu 1.12.0 and the official FAISSx client from PyPI), the full
# Fashion-MNIST set in $FAISSX_CACHE/data (scripts/fashion-mnist.sh, made once), then
# formatting, lints, docs and the whole test suite in release mode (FAISS is always built
# optimized; one profile means one FAISS build).
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/env.sh
bash scripts/install-deps.sh
FAISSX_TEST_PYTHON="$(bash scripts/python-env.sh)"
export FAISSX_TEST_PYTHON
bash scripts/fashion-mnist.sh >/dev/null
cargo fmt --check
cargo clippy --release --locked --all-targets -- -D warnings
RUSTDOCFLAGS="-D warnings" cargo doc --release --locked --no-deps --document-private-items --quiet
cargo test --release --locked
