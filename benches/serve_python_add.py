"""The official FAISSx Python client's adds (nested float lists on the wire) against
`faissx serve`: 50k x 128 in batches of 5,000 into an IndexFlatL2, vectors/s.

Usage: python benches/serve_python_add.py tcp://127.0.0.1:PORT
"""
import sys
import time

import numpy as np
from faissx import client as faiss

faiss.configure(server=sys.argv[1])
xb = np.random.default_rng(0).random((50_000, 128), dtype=np.float32)
index = faiss.IndexFlatL2(128)
t = time.perf_counter()
for i in range(0, 50_000, 5_000):
    index.add(xb[i : i + 5_000])
wall = time.perf_counter() - t
print(f"nested add (official client): {50_000 / wall:.0f} vectors/s")
