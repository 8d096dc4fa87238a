"""The official FAISSx Python client (PyPI faissx) against `faissx serve`: single-query
search requests/s and p50/p99 on a 10k x 128 IndexFlatL2, k=10, 2,000 requests.

Usage: python benches/serve_python.py tcp://127.0.0.1:PORT
"""
import sys
import time

import numpy as np
from faissx import client as faiss

faiss.configure(server=sys.argv[1])
rng = np.random.default_rng(0)
xb = rng.random((10_000, 128), dtype=np.float32)
xq = rng.random((2_000, 128), dtype=np.float32)
index = faiss.IndexFlatL2(128)
index.add(xb)
for q in xq[:200]:
    index.search(q.reshape(1, -1), 10)
lat = []
t0 = time.perf_counter()
for q in xq:
    t = time.perf_counter()
    index.search(q.reshape(1, -1), 10)
    lat.append((time.perf_counter() - t) * 1e3)
wall = time.perf_counter() - t0
lat.sort()
print("## official FAISSx Python client, IndexFlatL2 10k x 128, k=10, 2,000 single-query requests")
print(f"{2000 / wall:.0f} req/s, p50 {lat[1000]:.3f} ms, p99 {lat[1980]:.3f} ms")
