#!/usr/bin/env bash
# One command on a fresh Debian/Ubuntu machine: install the build's system packages, build
# faissx (FAISS is compiled from source the first time, ~4 minutes), and run the main job on
# the real Fashion-MNIST sample bundled in testdata/: build an IVF index, search it, add to
# it, describe it, and report recall@10 against the exact ground truth.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/env.sh
bash scripts/install-deps.sh
cargo build --release --locked
bin="$FAISSX_BIN"
data=testdata/fashion-mnist
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
echo "== faissx build ($data/base5k.bvecs: 5,000 x 784 uint8)"
"$bin" build "$data/base5k.bvecs" -o "$work/fm.index" --factory IVF64,Flat --metric l2
echo "== faissx search (200 queries, k=10, nprobe 8)"
"$bin" search "$work/fm.index" "$data/query200.bvecs" -k 10 --nprobe 8 --format jsonl > "$work/hits.jsonl"
head -n 2 "$work/hits.jsonl"
"$bin" search "$work/fm.index" "$data/query200.bvecs" -k 10 --nprobe 8 --format ivecs -o "$work/hits.ivecs" -q
echo "== faissx add (the 200 queries as new vectors)"
"$bin" add "$work/fm.index" "$data/query200.bvecs"
echo "== faissx info"
"$bin" info "$work/fm.index" --format table
echo "== recall@10 against $data/gt200.ivecs"
python3 - "$work/hits.ivecs" "$data/gt200.ivecs" <<'PY'
import struct, sys
def ivecs(p):
    b = open(p, "rb").read(); rows = []; i = 0
    while i < len(b):
        d = struct.unpack_from("<i", b, i)[0]; rows.append(struct.unpack_from("<%di" % d, b, i + 4)); i += 4 + 4 * d
    return rows
found, truth = ivecs(sys.argv[1]), ivecs(sys.argv[2])
hits = sum(len(set(f[:10]) & set(t[:10])) for f, t in zip(found, truth))
print("recall@10 = %.4f over %d queries" % (hits / (10 * len(found)), len(found)))
PY
