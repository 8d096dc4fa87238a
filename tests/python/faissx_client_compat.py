"""The official FAISSx Python client (PyPI faissx) against `faissx serve`.

Usage: python faissx_client_compat.py tcp://127.0.0.1:PORT

Prints one JSON line with two parts, and exits 0 unless the script itself breaks:

* "classes": each client index class built remotely (faissx client) and locally (faiss) on
  the same data: ntotal, the fraction of queries whose top-k ids agree with local faiss,
  and recall@k of both against exact search.
* "suite": FAISSx's own test suite (github.com/muxi-ai/faissx, tests/), scenario by
  scenario, with the index classes, type strings and raw actions it uses and what it
  asserts: "ok", or what failed. Scenarios are named <test file>.<test>. Not here:
  test_server_auth.py (excluded from the suite's remote run as well), test_client_timeout.py
  and test_build_config.py (no server involved), test_server_data_dir_persistence.py (drives
  the Python server's class in-process), and client_indices/test_binary_flat.py (its
  IndexBinaryFlat never creates its index on the server in remote mode, on any server;
  binary indices are covered through create_index's BINARY_FLAT type instead), and
  client_indices/test_pre_transform.py (in remote mode its IndexPreTransform calls
  `client.is_remote_mode()`, which FaissXClient lacks, so it fails before reaching any
  server).
"""
import json
import sys
import tempfile
import os
import uuid

import faiss as lf
import numpy as np
from faissx import client as faiss
from faissx.client.client import FaissXClient, get_client

SERVER = sys.argv[1]
faiss.configure(server=SERVER)
raw = FaissXClient()
raw.configure(server=SERVER)
out = {"classes": {}, "suite": {}}


# ---- classes: remote vs local faiss on the same data ------------------------------------------

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


def compare(name, rem, loc, train=False, ids=None):
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
    out["classes"][name] = {
        "ntotal": int(rem.ntotal),
        "same": float((np.asarray(ir) == il).all(axis=1).mean()),
        "recall_remote": recall(np.asarray(ir), off, sc),
        "recall_local": recall(il, off, sc),
    }


compare("IndexFlatL2", faiss.IndexFlatL2(d), lf.IndexFlatL2(d))
compare("IndexIVFFlat", faiss.IndexIVFFlat(faiss.IndexFlatL2(d), d, 16), lf.IndexIVFFlat(lf.IndexFlatL2(d), d, 16), train=True)
compare("IndexHNSWFlat", faiss.IndexHNSWFlat(d, 16), lf.IndexHNSWFlat(d, 16))
ids = np.arange(2000, dtype=np.int64) * 7 + 3
compare("IndexIDMap", faiss.IndexIDMap(faiss.IndexFlatL2(d)), lf.IndexIDMap(lf.IndexFlatL2(d)), ids=ids)
compare("IndexIDMap2", faiss.IndexIDMap2(faiss.IndexFlatL2(d)), lf.IndexIDMap2(lf.IndexFlatL2(d)), ids=ids)
compare("IndexPQ", faiss.IndexPQ(d, 8, 4), lf.IndexPQ(d, 8, 4), train=True)
qt = lf.ScalarQuantizer.QT_8bit
compare("IndexScalarQuantizer", faiss.IndexScalarQuantizer(d, qt), lf.IndexScalarQuantizer(d, qt), train=True)
compare("IndexIVFPQ", faiss.IndexIVFPQ(faiss.IndexFlatL2(d), d, 16, 8, 4), lf.IndexIVFPQ(lf.IndexFlatL2(d), d, 16, 8, 4), train=True)


# ---- suite: FAISSx's tests/ --------------------------------------------------------------------


class Failed(Exception):
    pass


def expect(cond, what):
    if not cond:
        raise Failed(what)


def scenario(name):
    def run(f):
        try:
            f()
            out["suite"][name] = "ok"
        except Exception as e:  # noqa: BLE001 - every failure is reported, not raised
            out["suite"][name] = f"{type(e).__name__}: {e}"[:400]
            # The client drops its socket after an error reply or a timeout.
            for c in (raw, get_client()):
                try:
                    c.connect()
                except Exception:  # noqa: BLE001
                    pass
        return f

    return run


def data(dim, num, seed):
    """The suite's generate_test_data."""
    np.random.seed(seed)
    return np.random.random((num, dim)).astype(np.float32)


def req(**fields):
    """A raw request as the suite sends it (client._send_request), returning the reply even
    when it is an error (the client raises on those)."""
    try:
        return raw._send_request(fields)
    except Exception as e:  # noqa: BLE001
        raw.connect()  # the client drops its socket after an error
        return {"success": False, "error": str(e)}


# test_all_index_types.py / conftest.py INDEX_TYPES (DIM 8, train 1000, add 100, 5 queries,
# k 5), plus the type strings of test_specialized_ops.py ("IVF") and test_fixed_indices.py.
INDEX_TYPES = ["L2", "IP", "BINARY_FLAT", "PQ4x2", "PQ4", "IVF16", "IVF16_IP", "IVF4_SQ8", "OPQ4_8,L2",
               "PCA4,L2", "NORM,L2", "HNSW32", "HNSW16_IP", "IDMap:L2", "IDMap2:L2", "IVF", "PQ4x8", "IVF4_SQ0"]
for t in INDEX_TYPES:

    @scenario(f"test_all_index_types.test_index_type[{t}]")
    def _(t=t):
        name = f"{t.replace(':', '-').replace(',', '_')}-{uuid.uuid4().hex[:8]}"
        created = raw.create_index(name, 8, t)
        # The suite trains types whose name has IVF, PQ or OPQ; PCA needs it as well.
        if "IVF" in t or "PQ" in t or not created.get("is_trained", True):
            r = raw.train_index(name, data(8, 1000, 42))
            expect(r.get("success"), f"training failed: {r.get('error')}")
        test = data(8, 100, 123)
        if t.startswith("IDMap"):
            # The suite adds without ids, which FAISS refuses for an IDMap (on the Python
            # server too); the client's IndexIDMap sends add_with_ids.
            r = req(action="add_with_ids", index_id=name, vectors=test.tolist(), ids=list(range(100)))
        else:
            r = raw.add_vectors(name, test)
        expect(r.get("success"), f"add failed: {r.get('error')}")
        expect(r.get("total") == 100, f"total {r.get('total')} after adding 100")
        if t == "PQ4x2":
            # FAISS 1.12 cannot search PQ with 2-dimensional sub-vectors of 2 bits (its AVX2
            # table code needs ksub % 8 == 0), on the Python server as here: a clean error.
            r = req(action="search", index_id=name, query_vectors=data(8, 5, 456).tolist(), k=5)
            expect(not r.get("success") and "ksub" in r.get("error", ""), f"PQ4x2 search: {r}")
            expect(raw._send_request({"action": "ping"}).get("success"), "server alive after PQ4x2 search")
            return
        r = raw.search(name, data(8, 5, 456), 5)
        expect(r.get("success"), f"search failed: {r.get('error')}")
        res = r.get("results", [])
        expect(len(res) == 5, f"{len(res)} results for 5 queries")
        expect("distances" in res[0] and "indices" in res[0], "results lack distances/indices")
        expect(0 < len(res[0]["distances"]) <= 5, f"{len(res[0]['distances'])} neighbours for k=5")
        expect(raw.get_index_stats(name).get("success"), "get_index_stats failed")
        raw.delete_index(name)


@scenario("test_fixed_indices.test_pq_index")
def _():
    name = f"pq-test-{uuid.uuid4().hex[:8]}"
    raw.create_index(name, 8, "PQ4x8")
    raw.train_index(name, data(8, 1000, 42))
    r = raw.add_vectors(name, data(8, 100, 123))
    expect(r.get("count") == 100, f"count {r.get('count')}")
    r = raw.search(name, data(8, 5, 456), 5)
    expect(r.get("success") and len(r.get("results", [])) == 5, f"search: {r.get('error')}")


@scenario("test_fixed_indices.test_ivf_sq_index")
def _():
    name = f"ivf-sq-test-{uuid.uuid4().hex[:8]}"
    raw.create_index(name, 8, "IVF4_SQ0")
    raw.train_index(name, data(8, 1000, 42))
    r = raw.add_vectors(name, data(8, 100, 123))
    expect(r.get("count") == 100, f"count {r.get('count')}")
    r = raw.search(name, data(8, 5, 456), 5, {"nprobe": 2})
    expect(r.get("success") and len(r.get("results", [])) == 5, f"search: {r.get('error')}")


@scenario("test_ntotal.test_ntotal")
def _():
    name = f"ntotal-test-{uuid.uuid4().hex[:8]}"
    raw.create_index(name, 8, "L2")
    x = data(8, 10, 42)
    r1 = raw.add_vectors(name, x)
    r2 = raw.add_vectors(name, x)
    expect((r1.get("ntotal"), r1.get("total"), r1.get("count")) == (10, 10, 10), f"first add {r1}")
    expect((r2.get("ntotal"), r2.get("total"), r2.get("count")) == (20, 20, 10), f"second add {r2}")
    raw.delete_index(name)


@scenario("test_reconstruction.test_reconstruction")
def _():
    name = f"reconstruction-test-{uuid.uuid4().hex[:8]}"
    raw.create_index(name, 8, "L2")
    x = data(8, 10, 42)
    expect(raw.add_vectors(name, x).get("success"), "add")
    r = raw.reconstruct(name, 5)
    expect(r.get("success") and np.allclose(r.get("vector", []), x[5], rtol=1e-5, atol=1e-6), f"reconstruct(5): {r}")
    r = raw.reconstruct_n(name, 2, 3)
    v = r.get("vectors", [])
    expect(len(v) == 3 and all(np.allclose(v[i], x[2 + i], rtol=1e-5) for i in range(3)), f"reconstruct_n: {r}")
    raw.delete_index(name)


@scenario("test_advanced_features.test_reconstruction")
def _():
    name = f"flat-test-{uuid.uuid4().hex[:8]}"
    raw.create_index(name, 8, "L2")
    x = data(8, 100, 123)
    raw.add_vectors(name, x)
    v = raw.reconstruct(name, 50).get("vector", [])
    expect(len(v) > 0 and np.allclose(x[50], v, rtol=1e-5), "reconstruct(50)")
    expect(len(raw.reconstruct_n(name, 20, 5).get("vectors", [])) == 5, "reconstruct_n(20, 5)")


@scenario("test_advanced_features.test_search_and_reconstruct")
def _():
    name = f"flat-search-{uuid.uuid4().hex[:8]}"
    raw.create_index(name, 8, "L2")
    x = data(8, 100, 123)
    raw.add_vectors(name, x)
    res = raw.search_and_reconstruct(name, data(8, 5, 456), 5).get("results", [])
    expect(len(res) == 5, f"{len(res)} results")
    expect(all(key in res[0] for key in ("vectors", "indices", "distances")), f"keys {sorted(res[0])}")
    # What the suite means by it: the vectors are the neighbours' stored vectors.
    expect(np.allclose(res[0]["vectors"][0], x[res[0]["indices"][0]]), "vectors are the neighbours'")


@scenario("test_advanced_features.test_merge_indices")
def _():
    a, b, t = (f"merge-{w}-{uuid.uuid4().hex[:8]}" for w in ("source1", "source2", "target"))
    for n in (a, b, t):
        raw.create_index(n, 8, "L2")
    raw.add_vectors(a, data(8, 50, 123))
    raw.add_vectors(b, data(8, 50, 456))
    r = raw.merge_indices(t, [a, b])
    expect(r.get("success") and r.get("ntotal") == 100, f"merge: {r}")


@scenario("test_specialized_ops.test_merge_indices")
def _():
    sources = []
    for i in range(2):
        sources.append(f"merge_source_{i}")
        raw.create_index(sources[-1], 128, "L2")
        r = raw.add_vectors(sources[-1], np.random.random((1000, 128)).astype(np.float32))
        expect(r["success"], f"add: {r.get('error')}")
    raw.create_index("merge_target", 128, "L2")
    r = req(action="merge_indices", target_index_id="merge_target", source_index_ids=sources)
    expect(r["success"], f"merge: {r.get('error')}")
    expect(r.get("ntotal") == 2000, f"ntotal {r.get('ntotal')}")
    for n in sources + ["merge_target"]:
        raw.delete_index(n)


@scenario("test_specialized_ops.test_optimize_index")
def _():
    raw.create_index("opt_ivf", 128, "IVF")
    r = req(action="train_index", index_id="opt_ivf", training_vectors=np.random.random((150, 128)).astype(np.float32).tolist())
    expect(r["success"], f"train: {r.get('error')}")
    expect(raw.add_vectors("opt_ivf", np.random.random((1000, 128)).astype(np.float32))["success"], "add")
    r = req(action="optimize_index", index_id="opt_ivf", optimization_level=2)
    expect(r["success"], f"optimize: {r.get('error')}")
    expect("optimizations" in r, "no optimizations field")
    # What the Python server replies for an IVF index of 100 lists at level 2.
    expect(r["optimizations"] == ["set_nprobe_20"] and r.get("index_type") == "IndexIVFFlat", f"{r}")
    expect(r.get("optimization_level") == 2 and "message" in r, f"{r}")
    raw.delete_index("opt_ivf")


@scenario("test_specialized_ops.test_clustering")
def _():
    x = np.random.random((500, 128)).astype(np.float32)
    r = req(action="compute_clustering", vectors=x.tolist(), n_clusters=10, metric_type="L2", niter=20)
    expect(r["success"], f"compute_clustering: {r.get('error')}")
    expect(all(f in r for f in ("centroids", "assignments", "cluster_sizes")), f"fields {sorted(r)}")
    expect(len(r["cluster_sizes"]) == 10, f"{len(r['cluster_sizes'])} clusters")
    expect(sum(r["cluster_sizes"]) == 500, "sizes do not sum to the input count")
    # The Python server runs faiss.Kmeans(d, k, niter=...): the same FAISS k-means, seed and
    # data give the same clusters.
    km = lf.Kmeans(128, 10, niter=20, verbose=False)
    km.train(x)
    _, a = km.index.search(x, 1)
    expect(r.get("n_clusters") == 10 and r.get("dimension") == 128, f"n_clusters/dimension {r.get('n_clusters')}/{r.get('dimension')}")
    expect(np.allclose(np.array(r["centroids"]), km.centroids, atol=1e-4), "centroids differ from faiss.Kmeans")
    expect(np.mean(np.array(r["assignments"]) == a.ravel()) >= 0.99, "assignments differ from faiss.Kmeans")
    expect(abs(r["obj"] - float(km.obj[-1])) <= 1e-4 * abs(float(km.obj[-1])), f"obj {r['obj']} vs {km.obj[-1]}")


@scenario("test_specialized_ops.test_batch_add_with_ids")
def _():
    raw.create_index("idmap_test", 128, "IDMap:L2")
    x = np.random.random((100, 128)).astype(np.float32)
    r = req(action="batch_add_with_ids", index_id="idmap_test", vectors=x.tolist(), ids=list(range(1000, 1100)), batch_size=25)
    expect(r["success"], f"batch add: {r.get('error')}")
    expect(r.get("count") == 100, f"count {r.get('count')}")
    expect(r.get("ntotal") == 100 and r.get("total") == 100 and "message" in r, f"{r}")
    expect(raw.search("idmap_test", x[7:8], 1)["results"][0]["indices"][0] == 1007, "ids kept")
    raw.delete_index("idmap_test")


@scenario("test_specialized_ops.test_hybrid_search")
def _():
    raw.create_index("hybrid_test", 128, "L2")
    expect(raw.add_vectors("hybrid_test", np.random.random((100, 128)).astype(np.float32))["success"], "add")
    q = np.random.random((5, 128)).astype(np.float32)
    r = req(action="hybrid_search", index_id="hybrid_test", query_vectors=q.tolist(), vector_weight=0.7, metadata_filter=None, k=10)
    expect(r["success"], f"hybrid search: {r.get('error')}")
    expect("results" in r and len(r["results"]) == 5, "results")
    # The same answer as search (the Python server runs its search for it).
    s = raw.search("hybrid_test", q, 10)["results"]
    expect([x["indices"] for x in r["results"]] == [x["indices"] for x in s], "hybrid_search differs from search")
    # A metadata filter over an index without per-vector metadata is refused.
    r = req(action="hybrid_search", index_id="hybrid_test", query_vectors=q.tolist(), metadata_filter={"a": 1})
    expect(not r["success"], "metadata_filter without metadata was accepted")
    # With metadata, the filter restricts the search (the Python server refuses filters;
    # faissx runs them inside FAISS): only "A" vectors, the nearest of them first.
    x = np.random.random((100, 128)).astype(np.float32)
    md = [{"category": "A" if i % 2 == 0 else "B"} for i in range(100)]
    r = req(action="add_vectors", index_id="hybrid_test", vectors=x.tolist(), metadata=md)
    expect(r["success"], f"add with metadata: {r.get('error')}")
    r = req(action="hybrid_search", index_id="hybrid_test", query_vectors=q.tolist(), vector_weight=0.7,
            metadata_filter={"category": "A"}, k=10)
    expect(r["success"], f"filtered hybrid search: {r.get('error')}")
    for qi, res in enumerate(r["results"]):
        d = ((x[0::2] - q[qi]) ** 2).sum(axis=1)
        want = [100 + 2 * int(i) for i in np.argsort(d)[:10]]
        expect(list(res["indices"]) == want, f"query {qi}: {res['indices']} != {want}")
    r = req(action="hybrid_search", index_id="hybrid_test", query_vectors=q.tolist(), metadata_filter={"category": {"$bogus": 1}})
    expect(not r["success"], f"bad filter accepted: {r}")
    raw.delete_index("hybrid_test")


@scenario("faissx.recluster_index")
def _():
    # Not in FAISSx's suite (its server's recluster_index always fails); the reply fields of
    # its server's code.
    raw.create_index("reclust", 16, "IVF16")
    x = np.random.random((2000, 16)).astype(np.float32)
    raw.train_index("reclust", x)
    raw.add_vectors("reclust", x)
    r = req(action="recluster_index", index_id="reclust", n_clusters=8, sample_ratio=0.5)
    expect(r["success"], f"recluster: {r.get('error')}")
    expect((r.get("previous_nlist"), r.get("new_nlist"), r.get("ntotal")) == (16, 8, 2000) and "message" in r, f"{r}")
    expect(raw.get_index_stats("reclust")["status"].get("nlist") == 8, "nlist not changed")
    expect(raw.search("reclust", x[:1], 1, {"nprobe": 8})["results"][0]["indices"][0] == 0, "vector 0 not found")
    raw.delete_index("reclust")


@scenario("client_indices.test_flat_index.test_remote_mode")
def _():
    index = faiss.IndexFlatL2(8)
    x = data(8, 10, 42)
    index.add(x)
    dist, idx = index.search(x[0:1], 3)
    expect(idx[0][0] == 0 and dist[0][0] < 0.001, f"{idx[0]} {dist[0]}")


@scenario("client_indices.test_hnsw_modes.test_remote_mode")
def _():
    index = faiss.IndexHNSWFlat(128, 16)
    index.add(np.random.random((100, 128)).astype(np.float32))
    expect(index.ntotal == 100, f"ntotal {index.ntotal}")
    dist, idx = index.search(np.random.random((5, 128)).astype(np.float32), 10)
    expect(dist.shape == (5, 10) and idx.shape == (5, 10), f"shapes {dist.shape} {idx.shape}")
    expect(idx.max() < 100, "index out of range")
    pos = idx[idx >= 0]
    expect(pos.size == 0 or pos.min() >= 0, "negative index other than -1")
    lims, rd, ri = index.range_search(np.random.random((1, 128)).astype(np.float32), 0.5)
    index.reset()
    expect(index.ntotal == 0, f"ntotal {index.ntotal} after reset")


@scenario("client_indices.test_ivf_pq_optimized.test_ivf_pq_remote_mode")
def _():
    dd, nb, nq = 64, 1000, 10
    np.random.seed(42)
    xb = np.random.random((nb, dd)).astype("float32")
    xq = np.random.random((nq, dd)).astype("float32")
    index = faiss.IndexIVFPQ(faiss.IndexFlatL2(dd), dd, 50, 8, 8)
    expect((index.d, index.nlist, index.M, index.nbits) == (dd, 50, 8, 8), "attributes")
    expect(index.ntotal == 0, "fresh index")
    # (Its local variant also asserts `not index.is_trained` here, which the client's own
    # IndexIVFPQ cannot keep in remote mode on any server.)
    index.train(xb)
    expect(index.is_trained, "not trained")
    index.add(xb)
    expect(index.ntotal == nb, f"ntotal {index.ntotal}")
    index.set_nprobe(10)
    expect(index.nprobe == 10, f"nprobe {index.nprobe}")
    D, I = index.search(xq, 5)
    expect(D.shape == (nq, 5) and I.shape == (nq, 5), "search shapes")
    expect(index.reconstruct(42).shape == (dd,), "reconstruct shape")
    index.range_search(xq, 0.7)
    index.reset()
    expect(index.ntotal == 0 and index.is_trained, "after reset")


@scenario("client_indices.test_ivf_sq_optimized.test_ivf_sq_remote_mode")
def _():
    dd, nb, nq = 64, 1000, 10
    np.random.seed(42)
    xb = np.random.random((nb, dd)).astype("float32")
    xq = np.random.random((nq, dd)).astype("float32")
    index = faiss.IndexIVFScalarQuantizer(faiss.IndexFlatL2(dd), dd, 50)
    expect((index.d, index.nlist) == (dd, 50), "attributes")
    expect(index.ntotal == 0, "fresh index")
    # The client believes a fresh remote IndexIVFScalarQuantizer trained (it asks
    # get_index_status, a method it lacks), so `not index.is_trained` cannot hold, and the
    # suite's remote variant trains only "if not index.is_trained": train regardless.
    index.train(xb)
    expect(index.is_trained, "not trained")
    index.add(xb)
    expect(index.ntotal == nb, f"ntotal {index.ntotal}")
    index.set_nprobe(10)
    expect(index.nprobe == 10, f"nprobe {index.nprobe}")
    dist, idx = index.search(xq, 5)
    expect(dist.shape == (nq, 5) and idx.shape == (nq, 5), "search shapes")
    expect(index.reconstruct(42).shape == (dd,), "reconstruct shape")
    expect(index.reconstruct_n(10, 5).shape == (5, dd), "reconstruct_n shape")
    v = index.get_vectors()
    expect(v is None or v.shape[1] == dd, "get_vectors")
    index.reset()
    expect(index.ntotal == 0 and index.is_trained, "after reset")


@scenario("client_indices.test_pq_optimized.test_pq_remote_mode")
def _():
    dd, nb, nq = 64, 1000, 10
    np.random.seed(42)
    xb = np.random.random((nb, dd)).astype("float32")
    xq = np.random.random((nq, dd)).astype("float32")
    index = faiss.IndexPQ(dd, 8)
    expect(index.d == dd and index.M == 8, "attributes")
    # As for IndexIVFScalarQuantizer: the client believes a fresh remote IndexPQ trained.
    index.train(xb)
    expect(index.is_trained, "not trained")
    index.add(xb)
    expect(index.ntotal == nb, f"ntotal {index.ntotal}")
    dist, idx = index.search(xq, 5)
    expect(dist.shape == (nq, 5) and idx.shape == (nq, 5), "search shapes")
    lims, dr, ir = index.range_search(xq, 1.0)
    expect(len(lims) - 1 == nq, "range_search lims")
    expect(index.reconstruct(42).shape == (dd,), "reconstruct shape")
    expect(index.reconstruct_n(10, 5).shape == (5, dd), "reconstruct_n shape")
    v = index.get_vectors()
    expect(v is None or v.shape[1] == dd, "get_vectors")
    index.reset()
    expect(index.ntotal == 0 and index.is_trained, "after reset")


@scenario("client_indices.test_scalar_quantizer.test_remote_mode")
def _():
    x = data(8, 10, 42)
    for qtype in (faiss.ScalarQuantizer.QT_8bit, "SQ8"):
        index = faiss.IndexScalarQuantizer(8, qtype)
        index.add(x)
        expect(index.ntotal == 10, f"{qtype}: ntotal {index.ntotal}")
        dist, idx = index.search(x[0:1], 3)
        expect(idx[0][0] == 0, f"{qtype}: nearest of vector 0 is {idx[0][0]}")


@scenario("client_indices.test_scalar_quantizer_optimized.test_remote_mode")
def _():
    x = data(8, 10, 42)
    with faiss.IndexScalarQuantizer(8, faiss.ScalarQuantizer.QT_8bit) as ctx_index:
        ctx_index.add(x)
        expect(ctx_index.ntotal == 10, "context manager index")
    index = faiss.IndexScalarQuantizer(8, "SQ8")
    index.add(x)
    index.search(x[0:1], 3)
    index.set_parameter("batch_size", 500)


@scenario("test_client_optimizations.run_all_tests")
def _():
    from faissx.client.indices.modification import merge_indices, split_index

    index = faiss.IndexPQ(8, 4, 8)
    index.train(np.random.random((1000, 8)).astype("float32"))
    index.add(np.random.random((100, 8)).astype("float32"))
    expect(index.ntotal == 100, "PQ ntotal")
    expect(index.reconstruct(50).shape == (8,) and index.reconstruct_n(0, 10).shape == (10, 8), "PQ reconstruct")
    index.search(np.random.random((1, 8)).astype("float32"), k=5)
    index.reset()
    expect(index.ntotal == 0, "PQ reset")
    sq = faiss.IndexIVFScalarQuantizer(faiss.IndexFlatL2(8), 8, 4)
    sq.train(np.random.random((1000, 8)).astype("float32"))
    sq.add(np.random.random((100, 8)).astype("float32"))
    expect(sq.reconstruct(50).shape == (8,), "IVFSQ reconstruct")
    sq.nprobe = 2
    sq.search(np.random.random((1, 8)).astype("float32"), k=5)
    sq.reset()
    expect(sq.ntotal == 0, "IVFSQ reset")
    i1, i2 = faiss.IndexFlatL2(8), faiss.IndexFlatL2(8)
    i1.add(np.random.random((50, 8)).astype("float32"))
    i2.add(np.random.random((50, 8)).astype("float32"))
    merged = merge_indices([i1, i2], batch_size=10)
    expect(merged.ntotal == 100, f"merged ntotal {merged.ntotal}")
    q = np.random.random((1, 8)).astype("float32")
    merged.search(q, k=5)
    parts = split_index(merged, num_parts=3, batch_size=10)
    expect(len(parts) == 3 and sum(p.ntotal for p in parts) == 100, "split")
    for p in parts:
        p.search(q, k=2)


@scenario("test_client_io.test_io_remote_mode")
def _():
    from faissx.client.indices.io import read_index, write_index

    dd = 64
    np.random.seed(42)
    x = np.random.random((100, dd)).astype("float32")
    flat = faiss.IndexFlatL2(dd)
    flat.add(x)
    idmap = faiss.IndexIDMap(faiss.IndexFlatL2(dd))
    idmap.add_with_ids(x, np.arange(100) + 1000)
    for name, index in (("flat", flat), ("idmap", idmap)):
        with tempfile.TemporaryDirectory() as tmp:
            path = os.path.join(tmp, f"{name}.index")
            write_index(index, path)
            loaded = read_index(path)
            q = np.random.random((5, dd)).astype("float32")
            index.search(q, 5)
            loaded.search(q, 5)


print(json.dumps(out))
