#!/usr/bin/env python3
"""Regenerates testdata/fashion-mnist/ from the full set scripts/fashion-mnist.sh makes in
$FAISSX_CACHE/data/fashion-mnist (Debian's dataset-fashion-mnist, MIT; or FAISSX_SHARED_DATA):
the first 5,000 base vectors, the first 200 queries, and their exact top-100 L2 neighbours in
that sample, computed here with numpy in exact integer arithmetic (independent of FAISS).
Ties are broken by smaller id. Also base5k.jsonl, the metadata of those 5,000 images for the
filter tests: the class label from the package's train-labels-idx1-ubyte.gz (real), and fields
measured on each image or derived from its class (ink, the image's mean pixel value; stats, a
nested object; tags, a list; season, present for some classes only). Run with the interpreter from scripts/python-env.sh."""
import os
import sys

import numpy as np

here = os.path.dirname(os.path.abspath(__file__))
cache = os.environ.get("FAISSX_CACHE") or os.path.join(os.path.expanduser("~"), ".cache", "faissx")
src = os.path.join(os.environ.get("FAISSX_SHARED_DATA") or os.path.join(cache, "data"), "fashion-mnist")
dst = os.path.join(here, "..", "testdata", "fashion-mnist")
NB, NQ, K, D = 5000, 200, 100, 784


def read_bvecs(path, n):
    raw = np.fromfile(path, dtype=np.uint8, count=n * (4 + D)).reshape(n, 4 + D)
    assert (raw[:, :4].view(np.int32) == D).all()
    return raw


base = read_bvecs(os.path.join(src, "base.bvecs"), NB)
query = read_bvecs(os.path.join(src, "query.bvecs"), NQ)
os.makedirs(dst, exist_ok=True)
base.tofile(os.path.join(dst, "base5k.bvecs"))
query.tofile(os.path.join(dst, "query200.bvecs"))
xb = base[:, 4:].astype(np.int64)
xq = query[:, 4:].astype(np.int64)
dist = (xq * xq).sum(1)[:, None] + (xb * xb).sum(1)[None, :] - 2 * xq @ xb.T
order = np.lexsort((np.broadcast_to(np.arange(NB), dist.shape), dist), axis=1)[:, :K]
gt = np.hstack([np.full((NQ, 1), K, dtype=np.int32), order.astype(np.int32)])
gt.tofile(os.path.join(dst, "gt200.ivecs"))

CLASSES = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"]
TAGS = {
    0: ["tops"], 1: ["bottoms"], 2: ["tops", "knit"], 3: ["dresses"], 4: ["tops", "outerwear"],
    5: ["footwear", "open"], 6: ["tops"], 7: ["footwear"], 8: ["accessories"], 9: ["footwear", "boots"],
}
SEASON = {0: "summer", 4: "winter", 5: "summer", 9: "winter", 2: "winter"}
labels_gz = os.environ.get("FASHION_MNIST_LABELS", "/usr/share/datasets/fashion-mnist/train-labels-idx1-ubyte.gz")
import gzip
import json

with gzip.open(labels_gz, "rb") as f:
    raw = f.read()
assert int.from_bytes(raw[:4], "big") == 0x801, labels_gz
labels = np.frombuffer(raw[8:8 + NB], dtype=np.uint8)
pix = base[:, 4:]
with open(os.path.join(dst, "base5k.jsonl"), "w") as f:
    for i in range(NB):
        c = int(labels[i])
        ink = round(float(pix[i].mean()), 1)
        rows = int((pix[i].reshape(28, 28).max(1) > 0).sum())
        row = {"label": CLASSES[c], "label_id": c, "ink": ink, "stats": {"rows": rows, "dark": ink < 50}, "tags": TAGS[c]}
        if c in SEASON:
            row["season"] = SEASON[c]
        f.write(json.dumps(row, separators=(",", ":")) + "\n")
print("wrote", dst, file=sys.stderr)
