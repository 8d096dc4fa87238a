#!/usr/bin/env bash
# Router benchmark (BENCHMARKS.md, "Router (serve --router)", issue 16): single-query latency,
# CPU per request and batch search through `faissx serve --router` over two shards against
# one `faissx serve` holding every vector, in one run (benches/router.rs).
#   bash scripts/bench-router.sh            # ROUTER_BENCH_QUERIES=2000 for a shorter run,
#                                           # ROUTER_BENCH_BIN=path/to/faissx for another build
# The four processes are started here (plain servers as static shards: the router's code path
# is the same as with `serve --cluster` replicas) and stopped by the trap, whatever happens.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/env.sh
cargo build --release --quiet --locked
cargo bench --quiet --locked --bench router --no-run
bin="${ROUTER_BENCH_BIN:-$CARGO_TARGET_DIR/release/faissx}"   # another build, to compare
pids=()
cleanup() {
    for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
    for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done
}
trap cleanup EXIT
trap 'exit 130' INT TERM
# start FD ARGS...: a process reading its endpoint (first stdout line) on fd FD; sets $pid.
start() {
    local fd=$1
    shift
    eval "exec $fd< <(exec \"\$bin\" serve --bind-address 127.0.0.1 --port 0 -q \"\$@\")"
    pid=$!
    pids+=("$pid")
}
start 3
direct_pid=$pid
read -r direct <&3
start 4
s0_pid=$pid
read -r s0 <&4
start 5
s1_pid=$pid
read -r s1 <&5
start 6 --router --shard "s0=$s0" --shard "s1=$s1"
router_pid=$pid
read -r router <&6
for p in "$direct_pid" "$s0_pid" "$s1_pid" "$router_pid"; do
    [ "$(readlink -f /proc/"$p"/exe)" = "$(readlink -f "$bin")" ] || { echo "bench-router: pid $p is not $bin" >&2; exit 1; }
done
echo "# $(date -u '+%Y-%m-%d %H:%M UTC'), load average $(cut -d' ' -f1-3 /proc/loadavg), $(nproc) CPUs"
ROUTER_BENCH_PROCS="$direct_pid@$direct $s0_pid@$s0 $s1_pid@$s1 $router_pid@$router" \
    cargo bench --quiet --locked --bench router
