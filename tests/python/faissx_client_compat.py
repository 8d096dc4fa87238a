"""The official FAISSx Python client (PyPI faissx) against `faissx serve`.

Usage: python faissx_client_compat.py tcp://127.0.0.1:PORT
Builds each index class remotely (faissx client) and locally (faiss), adds the same data
and prints one JSON line: per class, the fraction of queries whose top-k ids agree with
local faiss, and recall@k of both against exact search. Exit status 0 unless the client
raised.
"""
import json
import sys

import faiss as lf
import numpy as np
from faissx import client as faiss

faiss.configure(server=sys.argv[1])
rng = np.random.default_rng(0)
d, k = 32, 5
xb = rng.random((2000, d), dtype=np.float32)
xq = rng.random((50, d), dtype=np.float32)
exact = lf.IndexFlatL2(d)
exact.add(xb)
_, truth = exact.search(xq, k)


def recall(ids, offset=0, scale=1):
    t = truth * scale + offset
    return float(np.mean([len(set(a) & set(b)) / k for a, b in zip(ids, t)]))


out = {}


def check(name, rem, loc, train=False, ids=None):
    if train:
        if hasattr(rem, "train"):  # the client's IndexScalarQuantizer trains implicitly
            rem.train(xb)
        loc.train(xb)
    if ids is not None:
        rem.add_with_ids(xb, ids)
        loc.add_with_ids(xb, ids)
    else:
        rem.add(xb)
        loc.add(xb)
    _, ir = rem.search(xq, k)
    _, il = loc.search(xq, k)
    off, sc = (3, 7) if ids is not None else (0, 1)
    out[name] = {
        "ntotal": int(rem.ntotal),
        "same": float((np.asarray(ir) == il).all(axis=1).mean()),
        "recall_remote": recall(np.asarray(ir), off, sc),
        "recall_local": recall(il, off, sc),
    }


check("IndexFlatL2", faiss.IndexFlatL2(d), lf.IndexFlatL2(d))
check("IndexIVFFlat", faiss.IndexIVFFlat(faiss.IndexFlatL2(d), d, 16), lf.IndexIVFFlat(lf.IndexFlatL2(d), d, 16), train=True)
check("IndexHNSWFlat", faiss.IndexHNSWFlat(d, 16), lf.IndexHNSWFlat(d, 16))
ids = np.arange(2000, dtype=np.int64) * 7 + 3
check("IndexIDMap", faiss.IndexIDMap(faiss.IndexFlatL2(d)), lf.IndexIDMap(lf.IndexFlatL2(d)), ids=ids)
check("IndexIDMap2", faiss.IndexIDMap2(faiss.IndexFlatL2(d)), lf.IndexIDMap2(lf.IndexFlatL2(d)), ids=ids)
check("IndexPQ", faiss.IndexPQ(d, 8, 4), lf.IndexPQ(d, 8, 4), train=True)
qt = lf.ScalarQuantizer.QT_8bit
check("IndexScalarQuantizer", faiss.IndexScalarQuantizer(d, qt), lf.IndexScalarQuantizer(d, qt), train=True)
check("IndexIVFPQ", faiss.IndexIVFPQ(faiss.IndexFlatL2(d), d, 16, 8, 4), lf.IndexIVFPQ(lf.IndexFlatL2(d), d, 16, 8, 4), train=True)
print(json.dumps(out))
