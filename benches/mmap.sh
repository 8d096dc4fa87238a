#!/usr/bin/env bash
# Memory-mapped and on-disk indices (issue 5): load time, anonymous memory, warm query time
# mapped vs loaded, identical results; writes the section "## Memory-mapped and on-disk
# indices" of BENCHMARKS.md (replacing it if present).
#
#   nice -n 5 bash benches/mmap.sh            # N=1000000 x d=256 (~1 GB Flat): the full run
#   N=250000 nice -n 5 bash benches/mmap.sh   # a quicker run (~256 MB Flat)
#
# Data are deterministic (numpy, seed 1) and cached with the indices under
# ~/.cache/faissx/bench/mmap-<N>. Every figure comes from `faissx search -v` lines on stderr
# ("opened … in X s", "searched N queries in Y s", "memory: RssAnon … RssFile …").
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$HOME/.cache/faissx/target}
N=${N:-1000000}
D=${D:-256}
NQ=1000
HNSW_N=${HNSW_N:-$((N / 10))}
PY=${PY:-$HOME/.cache/faissx/venv/bin/python}
FX=$CARGO_TARGET_DIR/release/faissx
DIR=$HOME/.cache/faissx/bench/mmap-$N
mkdir -p "$DIR"
cargo build --release -q
[ -s "$DIR/base.fvecs" ] || "$PY" - "$DIR" "$N" "$D" "$NQ" "$HNSW_N" <<'PYEOF'
import sys, numpy as np
out, n, d, nq, hn = sys.argv[1], *map(int, sys.argv[2:])
rng = np.random.default_rng(1)
def fvecs(path, x):
    with open(path, "wb") as f:
        rec = np.empty((x.shape[0], d + 1), dtype=np.float32)
        rec[:, 0] = np.array([d], dtype=np.int32).view(np.float32)[0]
        rec[:, 1:] = x
        rec.tofile(f)
# Clustered data (64 centres), so IVF and HNSW have structure to find.
c = rng.standard_normal((64, d), dtype=np.float32) * 4
base = np.empty((n, d), dtype=np.float32)
for i in range(0, n, 100000):
    m = min(100000, n - i)
    base[i:i+m] = c[rng.integers(0, 64, m)] + rng.standard_normal((m, d), dtype=np.float32)
fvecs(out + "/base.fvecs", base)
fvecs(out + "/hnsw_base.fvecs", base[:hn])
q = c[rng.integers(0, 64, nq)] + rng.standard_normal((nq, d), dtype=np.float32)
fvecs(out + "/q.fvecs", q)
fvecs(out + "/q1.fvecs", q[:1])
np.save(out + "/ids.npy", np.arange(n, dtype=np.int64) * 3 + 7)
PYEOF

build() { # name factory input [extra…]
  local name=$1 factory=$2 input=$3; shift 3
  [ -s "$DIR/$name.index" ] || { echo "building $name ($factory)" >&2;
    "$FX" build "$DIR/$input" -o "$DIR/$name.index" --factory "$factory" -q "$@"; }
}
build flat Flat base.fvecs
build sq8 SQ8 base.fvecs
build ivfflat IVF1024,Flat base.fvecs
build ivfpq IVF1024,PQ32 base.fvecs
build idmap2 Flat base.fvecs --ids "$DIR/ids.npy"
build hnsw HNSW32 hnsw_base.fvecs
build ondisk IVF1024,Flat base.fvecs --on-disk

field() { grep -o "$1 [0-9.]*" | head -1 | awk '{print $2}'; }
run() { # index mode queries knobs… -> stderr file; stdout hashed
  local idx=$1 mode=$2 q=$3; shift 3
  local flags=(); [ "$mode" = mapped ] && flags=(--mmap)
  "$FX" search "$DIR/$idx.index" "$DIR/$q" -k 10 -v --format jsonl "${flags[@]}" "$@" 2>"$DIR/err" | md5sum | cut -c1-32
}
measure() { # label index loaded-index knobs…
  local label=$1 idx=$2 ref=$3; shift 3
  local file=$(( $(stat -c %s "$DIR/$idx.index") + $( [ -f "$DIR/$idx.index.ivfdata" ] && stat -c %s "$DIR/$idx.index.ivfdata" || echo 0) ))
  local mode=mapped; [ "$idx" = ondisk ] && mode=loaded   # on-disk lists are always mapped
  # loaded reference: warm run (second), results hash
  run "$ref" loaded q.fvecs "$@" >/dev/null
  local h_loaded; h_loaded=$(run "$ref" loaded q.fvecs "$@")
  local t_loaded; t_loaded=$(field "in" < <(grep searched "$DIR/err"))
  local open_loaded; open_loaded=$(grep opened "$DIR/err" | field "in")
  # mapped: RssAnon after load (1 query), then 1000 queries twice (the second is warm)
  run "$idx" $mode q1.fvecs "$@" >/dev/null
  local anon_load; anon_load=$(grep memory: "$DIR/err" | field RssAnon)
  run "$idx" $mode q.fvecs "$@" >/dev/null
  local h_mapped; h_mapped=$(run "$idx" $mode q.fvecs "$@")
  local open_mapped; open_mapped=$(grep opened "$DIR/err" | field "in")
  local t_mapped; t_mapped=$(field "in" < <(grep searched "$DIR/err"))
  local anon_q; anon_q=$(grep memory: "$DIR/err" | field RssAnon)
  local same=no; [ "$h_loaded" = "$h_mapped" ] && same=yes
  awk -v l="$label" -v f="$file" -v ol="$open_loaded" -v om="$open_mapped" -v a1="$anon_load" -v a2="$anon_q" \
      -v tl="$t_loaded" -v tm="$t_mapped" -v s="$same" 'BEGIN {
    printf "| %s | %.0f | %.2f | %.3f | %.1f%% | %.1f%% | %.2f | %.2f | %.2fx | %s |\n",
      l, f/1e6, ol, om, 100*a1/f, 100*a2/f, tl, tm, tm/tl, s }'
}

{
  echo "## Memory-mapped and on-disk indices"
  echo
  echo "\`bash benches/mmap.sh\` (N=$N, d=$D, $NQ queries, k=10; $(nproc) cores shared with other jobs;"
  echo "$(date -u +%Y-%m-%d)). Synthetic clustered float32 data (numpy seed 1). HNSW32 is built on the"
  echo "first $HNSW_N vectors only (building it on all would take hours here). Load = \`opened … in\`;"
  echo "RssAnon as a share of the index file(s) right after opening (1 query) and after $NQ queries;"
  echo "query time = the second (warm page cache) run of $NQ queries, mapped vs loaded;"
  echo "identical = same ids and distances (hash of the JSON Lines). On-disk IVF is compared with the"
  echo "loaded in-memory IVF1024,Flat. IVF: nprobe 16; HNSW: efSearch 64."
  echo
  echo "| index | file MB | load loaded s | load mapped s | RssAnon after load | after ${NQ} q | query loaded s | query mapped s | ratio | identical |"
  echo "|---|---|---|---|---|---|---|---|---|---|"
  measure Flat flat flat
  measure SQ8 sq8 sq8
  measure HNSW32 hnsw hnsw --ef-search 64
  measure IVF1024,Flat ivfflat ivfflat --nprobe 16
  measure IVF1024,PQ32 ivfpq ivfpq --nprobe 16
  measure "IDMap2,Flat" idmap2 idmap2
  measure "on-disk IVF1024,Flat" ondisk ivfflat --nprobe 16
  echo
  # Larger than the memory the process may use: a cgroup v1 memory limit of 2/3 of the on-disk
  # index (so the index is 1.5x the allowed memory), if this machine lets us create one.
  CG=/sys/fs/cgroup/memory$(grep ':memory:' /proc/self/cgroup | cut -d: -f3)/faissx-mmap-bench
  size=$(( $(stat -c %s "$DIR/ondisk.index") + $(stat -c %s "$DIR/ondisk.index.ivfdata") ))
  limit=$(( size * 2 / 3 ))
  if mkdir -p "$CG" 2>/dev/null && echo $limit > "$CG/memory.limit_in_bytes" 2>/dev/null; then
    echo 3 > /proc/sys/vm/drop_caches 2>/dev/null || true
    od=$(sh -c "echo \$\$ > $CG/cgroup.procs && exec $FX search $DIR/ondisk.index $DIR/q.fvecs -k 10 --nprobe 16 -v --format jsonl" 2>"$DIR/err.cg" | md5sum | cut -c1-32) || true
    ref=$("$FX" search "$DIR/ivfflat.index" "$DIR/q.fvecs" -k 10 --nprobe 16 --format jsonl | md5sum | cut -c1-32)
    ld=$(sh -c "echo \$\$ > $CG/cgroup.procs && exec $FX search $DIR/ivfflat.index $DIR/q.fvecs -k 10 --nprobe 16 --format jsonl" 2>/dev/null | md5sum | cut -c1-32; echo "exit ${PIPESTATUS[0]}") || true
    peak=$(cat "$CG/memory.max_usage_in_bytes")
    echo "Index 1.5x the allowed memory: a cgroup v1 memory limit of $((limit / 1000000)) MB"
    echo "(\`memory.limit_in_bytes\`; cgroup v2 and \`systemd-run --scope -p MemoryMax\` are not available"
    echo "here) on the on-disk IVF1024,Flat of $((size / 1000000)) MB: $NQ queries answered,"
    echo "results identical to the in-memory index: $([ "$od" = "$ref" ] && echo yes || echo no);"
    echo "$(grep -E 'searched|memory:' "$DIR/err.cg" | sed 's/^faissx: //' | paste -sd ';' -);"
    echo "cgroup peak usage (page cache included) $((peak / 1000000)) MB. The same search with the"
    echo "index loaded under the same limit: $(echo "$ld" | tail -1 | sed 's/exit 0/succeeded (unexpected)/; s/exit 137/killed by the OOM killer (exit 137)/')."
    rmdir "$CG" 2>/dev/null || true
  else
    echo "No memory cgroup could be created here: see the RssAnon figures above instead."
  fi
} > "$DIR/section.md"
cat "$DIR/section.md"
# Replace (or append) the section in BENCHMARKS.md, leaving every other section alone.
"$PY" - "$DIR/section.md" BENCHMARKS.md <<'PYEOF'
import sys, re
sec = open(sys.argv[1]).read().rstrip() + "\n"
path = sys.argv[2]
try:
    text = open(path).read()
except FileNotFoundError:
    text = "# Benchmarks\n"
title = "## Memory-mapped and on-disk indices"
m = re.search(r"^" + re.escape(title) + r"\n.*?(?=^## |\Z)", text, flags=re.S | re.M)
if m:
    text = text[:m.start()] + sec + "\n" + text[m.end():]
else:
    text = text.rstrip() + "\n\n" + sec
open(path, "w").write(text.rstrip() + "\n")
PYEOF
