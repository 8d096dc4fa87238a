#!/usr/bin/env bash
# Cluster benchmark (BENCHMARKS.md, "Cluster (serve --cluster)"; issue 15, "Speed"), in one
# run: a nats-server with JetStream (store in a temp dir, free loopback ports), two replicas
# `faissx serve --cluster` (a, b) with snapshots in a temp dir, a single-node `faissx serve`
# in memory and one with --data-dir, and (CLUSTER_BENCH_SYNCED=1, the default) a second
# nats-server that fsyncs every message (`jetstream { sync_interval: always }`) with one
# replica. Then:
#   parts 1, 2, 4 (add throughput, replica lag, search): `cargo bench --bench cluster`
#     (benches/cluster.rs; CLUSTER_BENCH_PARTS=search,add,lag picks some);
#   part 3 (CLUSTER_BENCH_SNAPSHOT=1, the default): a Flat index of CLUSTER_BENCH_BIG_N
#     (default 2,000,000: 1 GB) x 128 f32, `faissx query-remote import` into the single node
#     (upload, and --server-path) vs a new replica started from a snapshot holding it
#     (imported through replica a, snapshot forced with `query-remote snapshot`), timed
#     until the replica prints its endpoint (restored and caught up).
# Every process it starts is killed on exit; the temp dir (CLUSTER_BENCH_DIR, default
# $TMPDIR or /tmp) is removed. Needs ~5 GB of RAM and ~4 GB of disk with the default size.
#   bash scripts/bench-cluster.sh
#   CLUSTER_BENCH_BIG_N=1000000 CLUSTER_BENCH_PARTS=add bash scripts/bench-cluster.sh
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/faissx/target}"
py="$(bash scripts/python-env.sh)"
nats="${FAISSX_NATS_SERVER:-$(dirname "$py")/nats-server}"
if [ -z "${FAISSX_BIN:-}" ]; then
  cargo build --release --quiet
fi
bin="${FAISSX_BIN:-$CARGO_TARGET_DIR/release/faissx}"
export FAISSX_BIN="$bin"
parts="${CLUSTER_BENCH_PARTS-search,add,lag}"
if [ -n "$parts" ]; then
  cargo bench --quiet --no-run --bench cluster 2>/dev/null
fi

tmp="$(mktemp -d "${CLUSTER_BENCH_DIR:-${TMPDIR:-/tmp}}/faissx-cluster-bench.XXXXXX")"
pids=()
cleanup() {
  local p
  for p in "${pids[@]}"; do
    kill "$p" 2>/dev/null || true
  done
  for p in "${pids[@]}"; do
    wait "$p" 2>/dev/null || true
  done
  rm -rf "$tmp"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# A free loopback TCP port.
free_port() {
  "$py" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

# Nanoseconds since the epoch.
now_ns() { date +%s%N; }

# ms between two now_ns values.
ms() { echo $(( ($2 - $1) / 1000000 )); }

# start_nats NAME [CONFIG]: a nats-server with JetStream storing under $tmp/NAME; sets $nats_url.
start_nats() {
  local name=$1 conf=${2:-} port mon
  port=$(free_port)
  mon=$(free_port)
  local args=(-js -a 127.0.0.1 -p "$port" -m "$mon" -sd "$tmp/$name" -n "$name")
  if [ -n "$conf" ]; then
    args+=(-c "$conf")
  fi
  "$nats" "${args[@]}" >"$tmp/$name.log" 2>&1 &
  pids+=($!)
  local i
  for i in $(seq 300); do
    if curl -sf "http://127.0.0.1:$mon/healthz?js-enabled-only=true" >/dev/null; then
      nats_url="nats://127.0.0.1:$port"
      return
    fi
    sleep 0.1
  done
  echo "nats-server $name did not start:" >&2
  cat "$tmp/$name.log" >&2
  exit 1
}

# serve NAME ARGS...: `faissx serve ARGS` on a free loopback port, stdout to $tmp/NAME.out;
# returns once it printed its endpoint (sets $ep and $serve_pid).
serve() {
  local name=$1
  shift
  : >"$tmp/$name.out"
  "$bin" serve --bind-address 127.0.0.1 --port 0 "$@" >"$tmp/$name.out" 2>"$tmp/$name.err" &
  serve_pid=$!
  pids+=($serve_pid)
  until [ "$(wc -l <"$tmp/$name.out")" -ge 1 ]; do
    if ! kill -0 "$serve_pid" 2>/dev/null; then
      echo "faissx serve ($name) exited before serving:" >&2
      cat "$tmp/$name.err" >&2
      exit 1
    fi
    sleep 0.005
  done
  ep=$(head -n1 "$tmp/$name.out")
}

qr() { "$bin" query-remote --timeout 600 -q "$@"; }

# cache cold|warm FILE...: evict FILEs from the page cache (after writing back) or read them.
cache() {
  local mode=$1
  shift
  if [ "$mode" = cold ]; then
    "$py" -c 'import os, sys
for p in sys.argv[1:]:
    fd = os.open(p, os.O_RDONLY)
    os.fsync(fd)
    os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
    os.close(fd)' "$@"
  else
    cat "$@" >/dev/null
  fi
}

# Before each timed step of part 3: dirty pages of the files just written are flushed, so
# that one step's write-back does not slow the next.
settle() { sync; sleep 1; }

# Extra flags for the replicas a and b (e.g. CLUSTER_BENCH_REPLICA_ARGS="--snapshot-every 1000000").
read -r -a replica_args <<<"${CLUSTER_BENCH_REPLICA_ARGS:-}"
mkdir -p "$tmp/big" "$tmp/durable"
start_nats nats
url=$nats_url
serve a -q --cluster "$url" --snapshots "file://$tmp/snap" --replica-name a "${replica_args[@]}"
a=$ep
serve b -q --cluster "$url" --snapshots "file://$tmp/snap" --replica-name b "${replica_args[@]}"
b=$ep
serve single -q --import-dir "$tmp/big"
single=$ep
serve durable -q --data-dir "$tmp/durable"
durable=$ep
synced=""
if [ "${CLUSTER_BENCH_SYNCED:-1}" = 1 ]; then
  printf 'jetstream {\n  sync_interval: always\n}\n' >"$tmp/nats-sync.conf"
  start_nats nats-sync "$tmp/nats-sync.conf"
  serve synced -q --cluster "$nats_url" --snapshots "file://$tmp/snap-sync" --replica-name s
  synced=$ep
fi
echo "# $(date -u '+%Y-%m-%d %H:%M UTC'), $(nproc) vCPU, load average $(cut -d' ' -f1-3 /proc/loadavg); nats-server $("$nats" --version 2>&1 | head -n1)"

if [ -n "$parts" ]; then
  CLUSTER_BENCH_A=$a CLUSTER_BENCH_B=$b CLUSTER_BENCH_SINGLE=$single CLUSTER_BENCH_DURABLE=$durable \
    CLUSTER_BENCH_SYNCED=$synced CLUSTER_BENCH_PARTS=$parts cargo bench --quiet --bench cluster
fi

if [ "${CLUSTER_BENCH_SNAPSHOT:-1}" = 1 ]; then
  n="${CLUSTER_BENCH_BIG_N:-2000000}"
  "$py" - "$tmp/big/big.npy" "$n" <<'EOF'
import sys
import numpy as np
path, n = sys.argv[1], int(sys.argv[2])
x = np.lib.format.open_memmap(path, mode="w+", dtype=np.float32, shape=(n, 128))
rng = np.random.default_rng(7)
for i in range(0, n, 100_000):
    x[i:i + 100_000] = rng.random((min(100_000, n - i), 128), dtype=np.float32)
x.flush()
EOF
  "$bin" build "$tmp/big/big.npy" -o "$tmp/big/big.index" --factory Flat -q
  rm -f "$tmp/big/big.npy"
  size=$(stat -c %s "$tmp/big/big.index")
  echo "## 3. new replica from a snapshot vs import: Flat $n x 128 f32, index file $((size / 1000000)) MB"
  settle
  t0=$(now_ns)
  qr --server "$a" import big "$tmp/big/big.index" >/dev/null
  t1=$(now_ns)
  until qr --server "$b" info big >/dev/null 2>&1; do sleep 0.05; done
  t2=$(now_ns)
  settle
  t2s=$(now_ns)
  qr --server "$a" snapshot >/dev/null
  t3=$(now_ns)
  echo "cluster: import (upload) through replica a $(ms "$t0" "$t1") ms (replica b has it $(ms "$t0" "$t2") ms after the start); forced snapshot $(ms "$t2s" "$t3") ms"
  # cold: the file (or the snapshot's files) evicted from the page cache first; warm: read
  # just before. Each timed step starts after `settle`.
  for cache in cold warm; do
    for i in 1 2; do
      cache "$cache" "$tmp/big/big.index"
      settle
      t0=$(now_ns)
      qr --server "$single" import big "$tmp/big/big.index" >/dev/null
      t1=$(now_ns)
      qr --server "$single" delete big >/dev/null
      cache "$cache" "$tmp/big/big.index"
      settle
      t2=$(now_ns)
      qr --server "$single" import big --server-path "$tmp/big/big.index" >/dev/null
      t3=$(now_ns)
      qr --server "$single" delete big >/dev/null
      cache "$cache" $(find "$tmp/snap" -type f)
      settle
      t4=$(now_ns)
      serve "c-$cache-$i" --cluster "$url" --snapshots "file://$tmp/snap" --replica-name "c-$cache-$i"
      t5=$(now_ns)
      n_c=$(qr --server "$ep" info big | grep -o '"ntotal": *[0-9]*' | head -n1 | grep -o '[0-9]*$' || true)
      restored=$(grep -o 'restored snapshot.*took_ms=[0-9]*\|took_ms=[0-9]*.*restored snapshot' "$tmp/c-$cache-$i.err" | grep -o 'took_ms=[0-9]*' | head -n1 || true)
      kill "$serve_pid"
      wait "$serve_pid" 2>/dev/null || true
      echo "$cache, run $i: single node: query-remote import (upload) $(ms "$t0" "$t1") ms, import --server-path $(ms "$t2" "$t3") ms; new replica ready (endpoint printed) after $(ms "$t4" "$t5") ms (ntotal ${n_c:-?}; restore ${restored:-?})"
    done
  done
fi
