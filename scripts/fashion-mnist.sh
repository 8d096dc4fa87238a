#!/usr/bin/env bash
# Makes the full Fashion-MNIST set the benchmarks and the data-heavy tests use, from Debian's
# `dataset-fashion-mnist` package (MIT; the same images as ann-benchmarks'
# fashion-mnist-784-euclidean), in $FAISSX_CACHE/data/fashion-mnist/ (default
# ~/.cache/faissx/data/fashion-mnist):
#   base.bvecs         the 60,000 training images, 784 uint8 each, in the package's order
#   query.bvecs        the 10,000 test images
#   groundtruth.ivecs  for each query, the ids of its 100 nearest base vectors by exact L2,
#                      nearest first, ties broken by smaller id (numpy, exact integer distances)
# Against a ground truth computed in float32 (FAISS's IndexFlatL2, which is how the copy these
# files replace was made; base and queries are byte for byte the same), 65 of the 10,000 rows
# differ, in 129 positions: float32 rounding swapped neighbours whose squared distances differ
# by under 6e-6 relative, or exact ties came out in another order. The top-1 and top-10 id
# sets are identical (recall@1 and recall@10 do not change); one row's 100th neighbour differs.
# Installs the package with apt-get when it is missing (needs root or sudo). Idempotent: does
# nothing when the three files exist. Each file is written to a temporary name and renamed, so
# an interrupted run leaves no partial file under a final name. Prints the directory.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/env.sh
out="$FAISSX_CACHE/data/fashion-mnist"
pkg=dataset-fashion-mnist
src=/usr/share/datasets/fashion-mnist
if [ -f "$out/base.bvecs" ] && [ -f "$out/query.bvecs" ] && [ -f "$out/groundtruth.ivecs" ]; then
  echo "$out"
  exit 0
fi
if [ ! -f "$src/train-images-idx3-ubyte.gz" ] || [ ! -f "$src/t10k-images-idx3-ubyte.gz" ]; then
  if ! command -v apt-get >/dev/null 2>&1; then
    echo "fashion-mnist: $src is missing; install Debian's $pkg (or set FAISSX_SHARED_DATA)" >&2
    exit 1
  fi
  SUDO=""
  [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  echo "fashion-mnist: installing $pkg" >&2
  $SUDO apt-get update -qq >&2
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "$pkg" >&2
fi
python="$(bash scripts/python-env.sh)"
mkdir -p "$out"
echo "fashion-mnist: converting $src into $out (exact ground truth: about a minute)" >&2
"$python" - "$src" "$out" <<'PY'
import gzip, os, sys
import numpy as np

src, out = sys.argv[1], sys.argv[2]
K = 100


def idx_images(path, n):
    """An IDX3 file (big-endian header: magic 0x803, count, rows, cols; then uint8 pixels)."""
    with gzip.open(path, "rb") as f:
        raw = f.read()
    magic, count, rows, cols = np.frombuffer(raw[:16], dtype=">u4")
    assert magic == 0x803 and count == n and rows * cols == 784, (path, magic, count, rows, cols)
    return np.frombuffer(raw[16:], dtype=np.uint8).reshape(n, 784)


def write_atomic(path, array):
    tmp = path + ".tmp"
    with open(tmp, "wb") as f:
        array.tofile(f)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def vecs(rows, dtype):
    header = np.full((rows.shape[0], 1), rows.shape[1], dtype="<i4")
    if dtype == np.uint8:
        header = header.view(np.uint8)
    return np.hstack([header, rows.astype(dtype)])


base = idx_images(os.path.join(src, "train-images-idx3-ubyte.gz"), 60000)
query = idx_images(os.path.join(src, "t10k-images-idx3-ubyte.gz"), 10000)

# Squared L2 in float64 is exact here: every product is at most 255² and a sum of 784 of
# them stays below 2^53, so equal distances compare equal and ties break by id alone.
xb = base.astype(np.float64)
xq = query.astype(np.float64)
nb = (xb * xb).sum(1)
gt = np.empty((len(xq), K), dtype=np.int32)
ids = np.arange(len(xb))
for start in range(0, len(xq), 500):
    q = xq[start:start + 500]
    dist = (q * q).sum(1)[:, None] + nb[None, :] - 2.0 * (q @ xb.T)
    kth = np.partition(dist, K - 1, axis=1)[:, K - 1]
    for r in range(len(q)):
        cand = np.flatnonzero(dist[r] <= kth[r])
        order = np.lexsort((ids[cand], dist[r, cand]))[:K]
        gt[start + r] = cand[order]

write_atomic(os.path.join(out, "groundtruth.ivecs"), vecs(gt, "<i4"))
write_atomic(os.path.join(out, "query.bvecs"), vecs(query, np.uint8))
write_atomic(os.path.join(out, "base.bvecs"), vecs(base, np.uint8))
PY
echo "$out"
