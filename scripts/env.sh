# Sourced by the other scripts: one target directory outside the clone, so FAISS's ~4 minute
# C++ build is done once per machine and reused by every clone and CI run.
export FAISSX_CACHE="${FAISSX_CACHE:-$HOME/.cache/faissx}"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$FAISSX_CACHE/target}"
FAISSX_BIN="$CARGO_TARGET_DIR/release/faissx"
