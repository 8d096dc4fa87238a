#!/usr/bin/env python3
"""Python faiss-cpu search-only timing (index loaded, queries in memory, 2 threads) of the
indices benches/compare_python.sh built; run from ~/.cache/faissx/bench with the venv python."""
import faiss, numpy as np, time, sys
faiss.omp_set_num_threads(2)
q = np.fromfile("query.fvecs", dtype=np.float32).reshape(-1, 129)[:, 1:].copy()
for name, knob in [("IVF1024_PQ32", "nprobe=16"), ("HNSW32", "efSearch=64"), ("Flat", "")]:
    idx = faiss.read_index("out/faissx-%s.index" % name)
    if knob: faiss.ParameterSpace().set_index_parameters(idx, knob)
    ts = []
    for r in range(5):
        t = time.perf_counter(); idx.search(q, 10); ts.append(time.perf_counter() - t)
    print(name, "python search-only median %.4f s" % sorted(ts)[2])
