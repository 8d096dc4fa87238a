#!/usr/bin/env bash
# Filtered-search benchmark (BENCHMARKS.md, "Filtered search (issue 14)"), run by hand, not in CI.
#
#   bash scripts/bench-filter.sh              # data, indices, every measurement, SQLite (~50 min on 2 cores)
#   bash scripts/bench-filter.sh data         # only the synthetic set and the Fashion-MNIST labels
#   bash scripts/bench-filter.sh build        # only the indices (after data)
#   bash scripts/bench-filter.sh run          # only the measurements (after build)
#   bash scripts/bench-filter.sh sqlite       # the same filters through SQLite (after data)
#
# Synthetic set: 1,000,000 × 128 float32 vectors, clustered Gaussian (1,000 centres drawn from
# N(0, 1), points = centre + N(0, 0.6²), seed 14), 1,000 queries from the same mixture (seed 15),
# and one JSON object per vector with two fields drawn independently of the vector and of each
# other: `category` ("cat0000" … "cat0999", uniform: 0.1 % each) and `year` (2000 … 2019,
# uniform: 5 % each). The filters below are chosen for selectivities 50 %, 10 %, 1 %, 0.1 %,
# each as a one-field and a two-field filter.
# Real set: Fashion-MNIST (scripts/fashion-mnist.sh: 60,000 base images, 10,000 queries) with
# each image's class name from the Debian package's label files (10 classes, 10 % each).
#
# Everything goes to $FAISSX_CACHE/bench-filter (default ~/.cache/faissx/bench-filter): the
# data, the indices (INDEX.meta.parquet beside each), and results/*.jsonl (bench records).
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/env.sh
what="${1:-all}"
dir="$FAISSX_CACHE/bench-filter"
res="$dir/results"
mkdir -p "$dir" "$res"
bin="${FAISSX_BENCH_BIN:-$FAISSX_BIN}"
py="$(bash scripts/python-env.sh)"
fm="$(bash scripts/fashion-mnist.sh)"

data() {
  [ -f "$dir/base.npy" ] && [ -f "$dir/meta.jsonl" ] && [ -f "$dir/query.npy" ] && [ -f "$dir/fm-meta.jsonl" ] && return
  "$py" - "$dir" <<'EOF'
import gzip, json, os, sys
import numpy as np
out = sys.argv[1]
n, d, nc, nq = 1_000_000, 128, 1000, 1000
rng = np.random.default_rng(14)
centres = rng.standard_normal((nc, d), dtype=np.float32)
def points(rng, m):
    lab = rng.integers(0, nc, m)
    return (centres[lab] + 0.6 * rng.standard_normal((m, d), dtype=np.float32)).astype(np.float32)
base = np.lib.format.open_memmap(out + "/base.npy.tmp", mode="w+", dtype=np.float32, shape=(n, d))
for s in range(0, n, 100_000):
    base[s:s + 100_000] = points(rng, 100_000)
base.flush(); del base
os.replace(out + "/base.npy.tmp", out + "/base.npy")
np.save(out + "/query.npy.tmp.npy", points(np.random.default_rng(15), nq))
os.replace(out + "/query.npy.tmp.npy", out + "/query.npy")
mrng = np.random.default_rng(16)
cat = mrng.integers(0, 1000, n)
year = mrng.integers(2000, 2020, n)
with open(out + "/meta.jsonl.tmp", "w") as f:
    for c, y in zip(cat, year):
        f.write('{"category": "cat%04d", "year": %d}\n' % (c, y))
os.replace(out + "/meta.jsonl.tmp", out + "/meta.jsonl")
names = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"]
def labels(p):
    with gzip.open(p) as f:
        raw = f.read()
    return np.frombuffer(raw[8:], dtype=np.uint8)
src = "/usr/share/datasets/fashion-mnist"
for part, name in (("train", "fm-meta.jsonl"), ("t10k", "fm-query-meta.jsonl")):
    with open(out + "/" + name + ".tmp", "w") as f:
        for l in labels(src + "/%s-labels-idx1-ubyte.gz" % part):
            f.write(json.dumps({"label": names[l], "label_id": int(l)}) + "\n")
    os.replace(out + "/" + name + ".tmp", out + "/" + name)
EOF
}

build() {
  # IVF4096 trains on 4096 × 39 = 160k vectors: minutes on 2 cores; HNSW32 adds 1M vectors: the longest step.
  for spec in "ivf1024 IVF1024,Flat" "ivf4096 IVF4096,Flat" "hnsw32 HNSW32"; do
    set -- $spec
    [ -f "$dir/$1.index" ] || { /usr/bin/time -f "$1: %e s, %M KiB peak" nice -n 10 "$bin" build "$dir/base.npy" -o "$dir/$1.index" --factory "$2" --metadata "$dir/meta.jsonl"; }
  done
  for spec in "fm-hnsw32 HNSW32" "fm-ivf256 IVF256,Flat"; do
    set -- $spec
    [ -f "$dir/$1.index" ] || nice -n 10 "$bin" build "$fm/base.bvecs" -o "$dir/$1.index" --factory "$2" --metadata "$dir/fm-meta.jsonl"
  done
}

# Synthetic filters: name, then the JSON. Categories are "cat0000" … "cat0999", so a string
# range on category selects a fraction of them (cat0800 and up: 20 %).
filters_synth=(
  '50%-one'  '{"year": {"$gte": 2010}}'
  '50%-two'  '{"year": {"$lt": 2010}, "category": {"$ne": "cat0000"}}'
  '10%-one'  '{"year": {"$in": [2000, 2001]}}'
  '10%-two'  '{"year": {"$gte": 2010}, "category": {"$gte": "cat0800"}}'
  '1%-one'   '{"category": {"$in": ["cat0001", "cat0102", "cat0203", "cat0304", "cat0405", "cat0506", "cat0607", "cat0708", "cat0809", "cat0910"]}}'
  '1%-two'   '{"year": {"$gte": 2018}, "category": {"$gte": "cat0900"}}'
  '0.1%-one' '{"category": "cat0042"}'
  '0.1%-two' '{"year": {"$gte": 2018}, "category": {"$gte": "cat0990"}}'
)
filters_fm=(
  'Sneaker'          '{"label": "Sneaker"}'
  'footwear'         '{"label": {"$in": ["Sneaker", "Sandal", "Ankle boot"]}}'
  'not-tops'         '{"label": {"$nin": ["T-shirt/top", "Shirt", "Pullover", "Coat", "Dress"]}}'
  'Bag-or-Trouser'   '{"$or": [{"label": "Bag"}, {"label_id": 1}]}'
)

bench() { # out.jsonl index base queries sweep filters...
  local out="$1" index="$2" base="$3" queries="$4" sweep="$5"
  shift 5
  local args=()
  while [ $# -gt 0 ]; do args+=(--filter "$2"); shift 2; done
  nice -n 10 "$bin" bench "$index" --base "$base" --queries "$queries" -k 10 --single-queries 200 \
    $sweep "${args[@]}" --format jsonl > "$res/$out.tmp"
  mv "$res/$out.tmp" "$res/$out"
}

run() {
  # Each index at its default (nprobe 1, efSearch 16: the first value of each list) and above.
  local ivf="--nprobe 1,4,16,64" hnsw="--ef-search 16,64,256"
  for ix in hnsw32 ivf1024 ivf4096; do
    [ -f "$dir/$ix.index" ] || continue
    case $ix in hnsw*) sw="$hnsw" ;; *) sw="$ivf" ;; esac
    bench "synth-$ix.jsonl" "$dir/$ix.index" "$dir/base.npy" "$dir/query.npy" "$sw" "${filters_synth[@]}"
  done
  bench fm-hnsw32.jsonl "$dir/fm-hnsw32.index" "$fm/base.bvecs" "$fm/query.bvecs" "$hnsw" "${filters_fm[@]}"
  bench fm-ivf256.jsonl "$dir/fm-ivf256.index" "$fm/base.bvecs" "$fm/query.bvecs" "$ivf" "${filters_fm[@]}"
  ls -l "$dir/meta.jsonl" "$dir"/*.meta.parquet "$dir/fm-meta.jsonl" > "$res/sizes.txt"
  cat "$res/sizes.txt"
}

# The same filters through SQLite (Python's sqlite3, in memory, an index on each column), for
# the metadata-store comparison in BENCHMARKS.md: time to the list of matching row ids.
sqlite() {
  "$py" - "$dir/meta.jsonl" <<'PY'
import json, sqlite3, sys, time, os
db = sqlite3.connect(":memory:")
db.execute("create table t (id integer primary key, category text, year integer)")
with open(sys.argv[1]) as f:
    db.executemany("insert into t values (?, ?, ?)", ((i, r["category"], r["year"]) for i, r in enumerate(map(json.loads, f))))
db.execute("create index tc on t(category)"); db.execute("create index ty on t(year)"); db.commit()
cats = ", ".join("'cat%04d'" % c for c in (1, 102, 203, 304, 405, 506, 607, 708, 809, 910))
for name, where in [
    ("50%-one", "year >= 2010"), ("50%-two", "year < 2010 and category != 'cat0000'"),
    ("10%-one", "year in (2000, 2001)"), ("10%-two", "year >= 2010 and category >= 'cat0800'"),
    ("1%-one", "category in (%s)" % cats), ("1%-two", "year >= 2018 and category >= 'cat0900'"),
    ("0.1%-one", "category = 'cat0042'"), ("0.1%-two", "year >= 2018 and category >= 'cat0990'")]:
    q = "select id from t where " + where
    times = []
    for _ in range(5):
        t = time.perf_counter(); ids = [r[0] for r in db.execute(q)]; times.append(time.perf_counter() - t)
    times.sort()
    plan = " / ".join(r[3] for r in db.execute("explain query plan " + q))
    print("%-9s %8d ids  %8.1f ms  (%s)" % (name, len(ids), times[2] * 1e3, plan))
out = os.path.join(os.path.dirname(sys.argv[1]), "meta.sqlite")
if os.path.exists(out):
    os.remove(out)
disk = sqlite3.connect(out)
db.backup(disk); disk.close()
print("meta.sqlite bytes:", os.path.getsize(out))
PY
}

case "$what" in
  data) data ;;
  build) build ;;
  run) run ;;
  sqlite) sqlite ;;
  all) data; build; run; sqlite ;;
  *) echo "usage: bench-filter.sh [data|build|run|sqlite|all]" >&2; exit 2 ;;
esac
