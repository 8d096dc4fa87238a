#!/usr/bin/env bash
# Object-storage read benchmark (BENCHMARKS.md, "Split builds: reading from S3"), run by hand,
# not in CI: how fast a split-build task reads its vectors from a local S3 API (moto's server,
# tests/python/s3_server.py) compared with the same file on local disk (page cache warm).
#
#   bash scripts/bench-object-read.sh            # SIZE=500000 rows × 128 float32 (256 MB)
#   SIZE=1000000 REPEAT=5 bash scripts/bench-object-read.sh
#
# Each measurement is `faissx add TRAINED INPUT --task 0/1 -o DIR` (one task taking every row),
# timed end to end, best of REPEAT runs, with INPUT a local path or s3://bench/base.npy:
# - factory IVF1,Flat: adding is a copy, so the time is reading + decoding + writing the part
#   (a read-bound task: the hardest case for S3);
# - factory IVF1024,Flat: a realistic task, where assignment to 1,024 centroids costs more.
# Reported: seconds and MB/s of input per run, and S3 throughput as a fraction of local.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/env.sh
size="${SIZE:-500000}"
repeat="${REPEAT:-3}"
d=128
dir="$FAISSX_CACHE/bench-object-read"
mkdir -p "$dir"
bin="${FAISSX_BENCH_BIN:-$FAISSX_BIN}"
py="$(bash scripts/python-env.sh)"
base="$dir/base-$size.npy"
if [ ! -f "$base" ]; then
  "$py" - "$base" "$size" "$d" <<'EOF'
import sys, numpy as np
path, n, d = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
rng = np.random.default_rng(17)
centres = rng.standard_normal((1000, d), dtype=np.float32)
x = centres[rng.integers(0, 1000, n)] + 0.6 * rng.standard_normal((n, d), dtype=np.float32)
np.save(path, x.astype(np.float32))
EOF
fi
bytes=$(stat -c %s "$base")

# The S3 server, with the input uploaded; stopped when this script exits.
coproc S3 { "$py" tests/python/s3_server.py serve bench --put "bench/base.npy=$base"; }
read -r ready port <&"${S3[0]}"
[ "$ready" = READY ] || { echo "S3 server did not start" >&2; exit 1; }
trap 'kill $S3_PID 2>/dev/null || true' EXIT
export AWS_ENDPOINT_URL="http://127.0.0.1:$port" AWS_ALLOW_HTTP=true AWS_ACCESS_KEY_ID=bench \
  AWS_SECRET_ACCESS_KEY=bench AWS_DEFAULT_REGION=us-east-1

best() { # best of $repeat runs of "$@", in seconds
  local b=""
  for _ in $(seq "$repeat"); do
    rm -rf "$dir/parts"
    local t0 t1
    t0=$(date +%s.%N); "$@" >/dev/null; t1=$(date +%s.%N)
    b=$(python3 -c "t=$t1-$t0; b='$b'; print(min(t, float(b)) if b else t)")
  done
  echo "$b"
}

echo "input: $size × $d float32 ($((bytes / 1000000)) MB), best of $repeat, $(nproc) cores"
printf '%-14s %10s %10s %10s %10s %8s\n' factory local_s local_MB/s s3_s s3_MB/s s3/local
for factory in IVF1,Flat IVF1024,Flat; do
  trained="$dir/trained-${factory//,/_}.index"
  [ -f "$trained" ] || "$bin" train "$base" -o "$trained" --factory "$factory" --train-size 50000 -q
  cat "$base" >/dev/null   # page cache warm for the local runs
  tl=$(best "$bin" add "$trained" "$base" --task 0/1 -o "$dir/parts" -q)
  ts=$(best "$bin" add "$trained" s3://bench/base.npy --task 0/1 -o "$dir/parts" -q)
  python3 -c "
b=$bytes/1e6; tl=$tl; ts=$ts
print(f'%-14s %10.2f %10.0f %10.2f %10.0f %8.2f' % ('$factory', tl, b/tl, ts, b/ts, tl/ts))"
done
