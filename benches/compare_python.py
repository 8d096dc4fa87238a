#!/usr/bin/env python3
"""Python side of benches/compare_python.sh: data generation and the faiss-cpu reference runs.

    compare_python.py gen DIR              write DIR/base.fvecs (100k x 128) and DIR/query.fvecs (1k)
    compare_python.py build IN OUT FACTORY  do what `faissx build IN -o OUT --factory FACTORY` does
    compare_python.py search INDEX Q K      do what `faissx search INDEX Q -k K` does

`build` and `search` print one JSON line with the in-process wall time in seconds ("total",
measured from before reading the input to after writing the output, so Python's interpreter
start and `import faiss` are NOT included -- the comparison is conservative for faissx, whose
time is the wall clock of the whole process).

Work done exactly as faissx does it (src/engine/jobs.rs):
  * read the .fvecs (faissx memory-maps it, checks every record header and that every value is
    finite; we do the same checks with numpy),
  * if the index needs training: train on all rows up to max(100000, 256*nlist) -- for 100k rows
    that is every row, which is what faissx's default --train-size picks (no sampling happens
    when the sample would be the whole file),
  * add in batches of 65536 rows (faissx's default --batch),
  * faiss.write_index to OUT.tmp, fsync, rename (faissx's atomic save; faissx also writes a
    small OUT.meta.json sidecar the same way).
Search: faiss.read_index, then search all queries in one batch (faissx's --batch 65536 >= 1k) with
the same nprobe / efSearch, then write ids and distances (.npy, like `--format npy`).
Threads: FAISSX_THREADS (or --threads in faissx) <-> faiss.omp_set_num_threads(N).
"""

import json
import os
import sys
import time

import numpy as np


def gen(out_dir, n=100_000, nq=1_000, d=128, clusters=1_000, seed=0):
    """Clustered Gaussian data: `clusters` centres ~ N(0, 1), points = centre + N(0, 0.3^2) noise,
    from numpy default_rng(seed), so every machine gets the same bytes."""
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((clusters, d), dtype=np.float32)
    def sample(m):
        lab = rng.integers(0, clusters, size=m)
        return (centres[lab] + 0.3 * rng.standard_normal((m, d), dtype=np.float32)).astype(np.float32)
    os.makedirs(out_dir, exist_ok=True)
    for name, m in (("base", n), ("query", nq)):
        x = sample(m)
        rec = np.empty((m, d + 1), dtype=np.float32)
        rec.view(np.int32)[:, 0] = d
        rec[:, 1:] = x
        tmp = os.path.join(out_dir, name + ".fvecs.tmp")
        rec.tofile(tmp)
        os.replace(tmp, os.path.join(out_dir, name + ".fvecs"))


def read_fvecs(path):
    raw = np.fromfile(path, dtype=np.float32)
    d = raw[:1].view(np.int32)[0]
    rec = raw.reshape(-1, d + 1)
    if not (rec[:, :1].view(np.int32) == d).all():
        raise SystemExit(f"{path}: records of mixed dimension")
    x = np.ascontiguousarray(rec[:, 1:])
    if not np.isfinite(x).all():
        raise SystemExit(f"{path}: non-finite values")
    return x


def write_atomic(index, out):
    """faiss.write_index the way faissx saves (src/engine/io/atomic.rs): to OUT.tmp, fsync,
    rename, fsync the directory. Set BENCH_NO_FSYNC=1 for a plain write_index."""
    import faiss
    if os.environ.get("BENCH_NO_FSYNC") == "1":
        faiss.write_index(index, out)
        return
    tmp = out + ".tmp"
    faiss.write_index(index, tmp)
    fd = os.open(tmp, os.O_RDONLY)
    os.fsync(fd)
    os.close(fd)
    os.replace(tmp, out)
    fd = os.open(os.path.dirname(os.path.abspath(out)), os.O_RDONLY)
    os.fsync(fd)
    os.close(fd)


def threads():
    import faiss
    n = int(os.environ.get("FAISSX_THREADS", "0"))
    if n > 0:
        faiss.omp_set_num_threads(n)
    return faiss.omp_get_max_threads()


def build(inp, out, factory, batch=65_536):
    import faiss
    nt = threads()
    t0 = time.perf_counter()
    x = read_fvecs(inp)
    n, d = x.shape
    t_read = time.perf_counter()
    index = faiss.index_factory(int(d), factory, faiss.METRIC_L2)
    t_train = 0.0
    if not index.is_trained:
        ivf = faiss.try_extract_index_ivf(index)
        nlist = ivf.nlist if ivf is not None else 0
        m = min(n, max(100_000, 256 * nlist))
        # faissx samples m rows with its own seeded shuffle when m < n; for the benchmark
        # m == n, so the sample is the whole file in file order.
        assert m == n, "benchmark data must be small enough that the train sample is every row"
        t = time.perf_counter()
        index.train(x[:m])
        t_train = time.perf_counter() - t
    t = time.perf_counter()
    for s in range(0, n, batch):
        index.add(x[s:s + batch])
    t_add = time.perf_counter() - t
    t = time.perf_counter()
    write_atomic(index, out)
    t_write = time.perf_counter() - t
    total = time.perf_counter() - t0
    print(json.dumps({"impl": "python", "op": "build", "factory": factory, "threads": nt,
                      "read": round(t_read - t0, 4), "train": round(t_train, 4),
                      "add": round(t_add, 4), "write": round(t_write, 4), "total": round(total, 4)}))


def search(index_path, queries, k, nprobe=None, ef_search=None, out=None):
    import faiss
    nt = threads()
    t0 = time.perf_counter()
    index = faiss.read_index(index_path)
    t_load = time.perf_counter() - t0
    q = read_fvecs(queries)
    params = None
    if nprobe is not None:
        params = faiss.SearchParametersIVF(nprobe=nprobe)
    elif ef_search is not None:
        params = faiss.SearchParametersHNSW(efSearch=ef_search)
    t = time.perf_counter()
    dist, ids = index.search(q, k, params=params)
    t_search = time.perf_counter() - t
    if out:
        np.save(out, ids.astype(np.int64))
        np.save(out[:-4] + ".distances.npy", dist)
    total = time.perf_counter() - t0
    print(json.dumps({"impl": "python", "op": "search", "threads": nt, "load": round(t_load, 4),
                      "search": round(t_search, 4), "total": round(total, 4)}))


def summary(path):
    """Median per (impl, op, factory) and the ratio to Python's median, as a Markdown table."""
    import csv
    import statistics
    rows = list(csv.DictReader(open(path), delimiter="\t"))
    times = {}
    for r in rows:
        times.setdefault((r["op"], r["factory"], r["impl"]), []).append(float(r["seconds"]))
    impls = sorted({k[2] for k in times if k[2] != "python"})
    keys = sorted({(k[0], k[1]) for k in times}, key=lambda k: (k[0], [r["factory"] for r in rows].index(k[1])))
    head = ["op", "factory"] + [f"{i} median s" for i in impls] + ["python median s"] + [f"{i}/python" for i in impls]
    print("| " + " | ".join(head) + " |")
    print("|" + "---|" * len(head))
    for op, f in keys:
        py = statistics.median(times[(op, f, "python")])
        med = [statistics.median(times[(op, f, i)]) for i in impls]
        n = len(times[(op, f, "python")])
        cells = [op, f"{f} (n={n})"] + [f"{m:.3f}" for m in med] + [f"{py:.3f}"] + [f"{m / py:.2f}" for m in med]
        print("| " + " | ".join(cells) + " |")


def main(argv):
    cmd = argv[1]
    if cmd == "summary":
        summary(argv[2])
    elif cmd == "gen":
        gen(argv[2])
    elif cmd == "build":
        build(argv[2], argv[3], argv[4])
    elif cmd == "search":
        opts = dict(a.split("=", 1) for a in argv[5:])
        search(argv[2], argv[3], int(argv[4]),
               nprobe=int(opts["nprobe"]) if "nprobe" in opts else None,
               ef_search=int(opts["ef_search"]) if "ef_search" in opts else None,
               out=opts.get("out"))
    else:
        raise SystemExit(__doc__)


if __name__ == "__main__":
    main(sys.argv)
