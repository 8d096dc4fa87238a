#!/usr/bin/env bash
# Server benchmark (BENCHMARKS.md, "Server"): faissx's own client (one request at a time and
# pipelined), in-process search and adds, 1,000 indices, then the official FAISSx Python
# client and a bare ZeroMQ round trip, all in one run.
#   bash scripts/bench-serve.sh            # SERVE_BENCH_MANY=100 for a smaller last part
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/faissx/target}"
cargo build --release --quiet
cargo bench --quiet --bench serve
py="$(bash scripts/python-env.sh)"
bin="$CARGO_TARGET_DIR/release/faissx"
exec 3< <("$bin" serve --bind-address 127.0.0.1 --port 0 -q)
pid=$!
read -r endpoint <&3
trap 'kill $pid 2>/dev/null || true' EXIT
"$py" benches/serve_python.py "$endpoint"
echo "## bare ZeroMQ REQ/REP round trip (pyzmq), the floor on this machine"
"$py" benches/zmq_rtt.py
