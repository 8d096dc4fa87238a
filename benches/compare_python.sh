#!/usr/bin/env bash
# faissx build/search vs Python faiss-cpu doing the same work, interleaved (A B A B ...).
#
#   bash benches/compare_python.sh                      # defaults below
#   THREADS=1 REPS=5 FACTORIES="HNSW32 Flat" bash benches/compare_python.sh
#   IMPLS="faissx=$HOME/.cache/faissx/target/release/faissx v4=/path/to/other/faissx" bash benches/compare_python.sh
#
# Data: 100k x 128 base + 1k queries, clustered Gaussian from numpy default_rng(0), written once
# to $BENCH_DIR (default ~/.cache/faissx/bench) as .fvecs. Every repetition runs each faissx
# binary in IMPLS and then Python (benches/compare_python.py) on the same factory, so machine
# noise hits all of them alike. faissx is timed as the wall clock of the whole process (-q);
# Python's time is measured inside the script, from before reading the input to after writing
# the output (interpreter start and `import faiss` excluded), which favours Python.
#
# Search: every implementation searches the same index file (the one the first faissx binary
# built) with the same 1k queries, -k 10, nprobe 16 (IVF) / efSearch 64 (HNSW), ids and
# distances written as .npy; the time includes loading the index.
#
# Output: raw times in $BENCH_DIR/results-<stamp>.tsv, then a table of medians and ratios
# (impl / python; < 1 means faissx is faster).
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
BENCH_DIR=${BENCH_DIR:-$HOME/.cache/faissx/bench}
PYTHON=${PYTHON:-$HOME/.cache/faissx/venv/bin/python}
THREADS=${THREADS:-2}
REPS=${REPS:-3}
FACTORIES=${FACTORIES:-"HNSW32 IVF1024,PQ32 Flat"}
K=${K:-10}
NPROBE=${NPROBE:-16}
EF_SEARCH=${EF_SEARCH:-64}
IMPLS=${IMPLS:-"faissx=${CARGO_TARGET_DIR:-$HOME/.cache/faissx/target}/release/faissx"}

export FAISSX_THREADS=$THREADS

mkdir -p "$BENCH_DIR/out"
if [ ! -s "$BENCH_DIR/base.fvecs" ] || [ ! -s "$BENCH_DIR/query.fvecs" ]; then
    echo "generating $BENCH_DIR/{base,query}.fvecs" >&2
    "$PYTHON" "$here/compare_python.py" gen "$BENCH_DIR"
fi
base=$BENCH_DIR/base.fvecs
query=$BENCH_DIR/query.fvecs
cat "$base" "$query" > /dev/null # into the page cache

stamp=$(date -u +%Y%m%dT%H%M%SZ)
results=$BENCH_DIR/results-$stamp.tsv
printf 'rep\timpl\top\tfactory\tseconds\n' > "$results"
echo "machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ *//'); load: $(cut -d' ' -f1-3 /proc/loadavg)" >&2
echo "threads=$THREADS reps=$REPS factories=[$FACTORIES] results=$results" >&2

now() { echo "$EPOCHREALTIME"; }
elapsed() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.4f", b - a }'; }
record() { printf '%s\t%s\t%s\t%s\t%s\n' "$1" "$2" "$3" "$4" "$5" >> "$results"; echo "  rep $1 $2 $3 $4: $5 s" >&2; }
tag() { echo "$1" | tr ',' '_'; }

for factory in $FACTORIES; do
    t=$(tag "$factory")
    case "$factory" in
        *IVF*) sflags=(--nprobe "$NPROBE"); pyflags=(nprobe="$NPROBE") ;;
        *HNSW*) sflags=(--ef-search "$EF_SEARCH"); pyflags=(ef_search="$EF_SEARCH") ;;
        *) sflags=(); pyflags=() ;;
    esac
    first=""
    for rep in $(seq 1 "$REPS"); do
        for impl in $IMPLS; do
            name=${impl%%=*} bin=${impl#*=}
            out=$BENCH_DIR/out/$name-$t.index
            a=$(now)
            "$bin" -q --threads "$THREADS" build "$base" -o "$out" --factory "$factory" --force
            record "$rep" "$name" build "$factory" "$(elapsed "$a" "$(now)")"
            [ -z "$first" ] && first=$out
        done
        py=$("$PYTHON" "$here/compare_python.py" build "$base" "$BENCH_DIR/out/python-$t.index" "$factory")
        record "$rep" python build "$factory" "$(echo "$py" | "$PYTHON" -c 'import json,sys; print(json.load(sys.stdin)["total"])')"
    done
    for rep in $(seq 1 "$REPS"); do
        for impl in $IMPLS; do
            name=${impl%%=*} bin=${impl#*=}
            a=$(now)
            "$bin" -q --threads "$THREADS" search "$first" "$query" -k "$K" "${sflags[@]}" \
                --format npy -o "$BENCH_DIR/out/$name-$t.hits.npy"
            record "$rep" "$name" search "$factory" "$(elapsed "$a" "$(now)")"
        done
        py=$("$PYTHON" "$here/compare_python.py" search "$first" "$query" "$K" "${pyflags[@]}" \
            out="$BENCH_DIR/out/python-$t.hits.npy")
        record "$rep" python search "$factory" "$(echo "$py" | "$PYTHON" -c 'import json,sys; print(json.load(sys.stdin)["total"])')"
    done
    # Same index file, same queries: the hits must agree.
    "$PYTHON" - "$BENCH_DIR/out" "$t" $IMPLS <<'EOF'
import sys, numpy as np
d, t, impls = sys.argv[1], sys.argv[2], [i.split("=", 1)[0] for i in sys.argv[3:]]
ref = np.load(f"{d}/python-{t}.hits.npy")
for name in impls:
    got = np.load(f"{d}/{name}-{t}.hits.npy")
    same = (got == ref).mean()
    print(f"  {name} vs python search hits on {t}: {same:.4%} identical", file=sys.stderr)
EOF
done

"$PYTHON" "$here/compare_python.py" summary "$results"
