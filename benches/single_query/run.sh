#!/usr/bin/env bash
# Where the time of one single-query search goes on this machine (issue 3's 10k req/s goal):
#   scan.c    - the memory/compute floor: one pass over 10k×128 f32 (sum, and L2 with two
#               accumulators) per query, no FAISS;
#   batch.cpp - FAISS IndexFlatL2::search per query for batches of 1–32 queries, on FAISS's
#               sequential path (distance_compute_blas_threshold 20) and on its BLAS path (0);
#   split.cpp - one query split over two threads with IDSelectorRange halves (FAISS's fast
#               path for a contiguous range) against one thread: wall and CPU per query.
# All single-threaded OpenMP/OpenBLAS, 10k×128 uniform random data, k=10. Compiled against
# the static FAISS that `cargo build --release` built (same CXXFLAGS default, x86-64-v3).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
target=${CARGO_TARGET_DIR:-$HOME/.cache/faissx/target}
out=$(ls -d "$target"/release/build/faiss-sys-*/out 2>/dev/null | while read -r d; do
    [ -f "$d/lib/libfaiss.a" ] && echo "$d"; done | head -1)
[ -n "$out" ] || { echo "run.sh: no libfaiss.a under $target; run cargo build --release first" >&2; exit 1; }
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
gcc -O3 -march=x86-64-v3 "$here/scan.c" -o "$tmp/scan"
for p in batch split; do
    g++ -O2 -march=x86-64-v3 -fopenmp -I"$out/include" "$here/$p.cpp" "$out/lib/libfaiss.a" -lopenblas -o "$tmp/$p"
done
export OMP_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1
echo "== scan (no FAISS)"; "$tmp/scan"
echo "== FAISS IndexFlatL2 search, per query"; "$tmp/batch"
echo "== one query over two threads (helper spins 100 us, then sleeps)"; "$tmp/split" 100 0
py=${FAISSX_PYTHON:-$HOME/.cache/faissx/venv/bin/python}
if "$py" -c "import faiss" 2>/dev/null; then
    echo "== faiss-cpu wheel IndexFlatL2 search, one query at a time (Python call included)"; "$py" "$here/wheel.py"
else
    echo "== faiss-cpu wheel: skipped ($py has no faiss; scripts/test.sh installs it)"
fi
