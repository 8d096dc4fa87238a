#!/usr/bin/env bash
# Two `faissx serve` binaries on the server benchmark, alternating runs in the same minutes
# (BENCHMARKS.md, "Cost of the hardening checks"): benches/serve.rs's search and add parts,
# then the official FAISSx Python client's single-query search and nested-array adds.
#   bash benches/compare_servers.sh OLD_BIN NEW_BIN [ROUNDS]
# OLD_BIN is e.g. a build of an earlier commit: git worktree add /tmp/old <rev> &&
# (cd /tmp/old && CARGO_TARGET_DIR=/tmp/old-target cargo build --release) → /tmp/old-target/release/faissx
set -euo pipefail
cd "$(dirname "$0")/.."
old="$1"; new="$2"; rounds="${3:-6}"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/faissx/target}"
cargo bench --quiet --no-run --bench serve 2>/dev/null
py="$(bash scripts/python-env.sh)"
out="$(mktemp -d)"
trap 'rm -rf "$out"' EXIT
for i in $(seq "$rounds"); do
  for which in old new; do
    bin="$old"; [ "$which" = new ] && bin="$new"
    SERVE_BENCH_PARTS=search,add FAISSX_BIN="$bin" cargo bench --quiet --bench serve > "$out/$which-$i.txt" 2>&1
    exec 3< <("$bin" serve --bind-address 127.0.0.1 --port 0 -q)
    pid=$!
    read -r endpoint <&3
    "$py" benches/serve_python.py "$endpoint" | tail -n 1 | sed 's/^/python search: /' >> "$out/$which-$i.txt"
    "$py" benches/serve_python_add.py "$endpoint" >> "$out/$which-$i.txt"
    kill "$pid"; wait "$pid" 2>/dev/null || true
  done
done
python3 - "$out" "$rounds" <<'PY'
import re, statistics as st, sys
out, rounds = sys.argv[1], int(sys.argv[2])
pats = {
    "1 in flight, req/s": r"1 request\(s\) in flight: (\d+) req/s",
    "2 in flight, req/s": r"2 request\(s\) in flight: (\d+) req/s",
    "4 in flight, req/s": r"4 request\(s\) in flight: (\d+) req/s",
    "2 in flight, p99 ms": r"2 request\(s\) in flight: \d+ req/s, p50 [\d.]+ ms, p99 ([\d.]+) ms",
    "2 in flight, server CPU µs/request": r"2 request\(s\) in flight: .*?server (\d+) µs",
    "ping p50 ms": r"ping round trip: p50 ([\d.]+)",
    "add over the wire, vectors/s": r"over the wire: (\d+) vectors/s",
    "Python client search, req/s": r"python search: (\d+) req/s",
    "Python client nested add, vectors/s": r"nested add \(official client\): (\d+) vectors/s",
}
print(f"| median of {rounds} alternating runs | old | new | new/old |")
print("|---|---|---|---|")
for name, p in pats.items():
    med = {}
    for which in ("old", "new"):
        vals = []
        for i in range(1, rounds + 1):
            m = re.search(p, open(f"{out}/{which}-{i}.txt").read())
            if m:
                vals.append(float(m.group(1)))
        med[which] = st.median(vals) if vals else float("nan")
    print(f"| {name} | {med['old']:g} | {med['new']:g} | {med['new'] / med['old']:.2f} |")
PY
