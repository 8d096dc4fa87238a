// Training without FAISS's stderr warnings, and interrupting FAISS. Rust side:
// src/engine/index/ffi/train.rs.
//
// k-means in FAISS (Clustering::train) prints
//   WARNING clustering N points to K centroids: please provide at least M training points
// with an unconditional fprintf(stderr) whenever N < K × min_points_per_centroid (39). That
// field is read for nothing else, so before training we set it to 0 in every clustering we
// can reach through the index (IVF coarse quantizers, product and residual quantizers,
// through IDMap / PreTransform / Refine / HNSW wrappers; an OPQ rotation trains a PQ of its
// own, which we lend it for the call). faissx reports the same advice itself, through its
// own logging (`-v`), from `faissx_min_train_points`. Redirecting fd 2 around training was
// the alternative; it would also swallow faissx's own progress output and any other
// thread's errors, so it was not chosen. Other FAISS stderr messages (PCA eigen-solver
// failures, polysemous training) are rare and still reach stderr.
#include "shim.h"

using namespace faissx_shim;

namespace {

// FAISS's default: K × 39 training points per clustering.
const int64_t MIN_POINTS_PER_CENTROID = faiss::ClusteringParameters().min_points_per_centroid;

// What to do with each clustering found: `cp(params, k)` for a k-means of k centroids whose
// parameters are reachable, `opq(matrix)` for an OPQ rotation (which clusters into 256
// centroids per sub-quantizer with parameters of its own).
struct Visitor {
    virtual void cp(faiss::ClusteringParameters& cp, int64_t k) = 0;
    virtual void opq(faiss::OPQMatrix* opq) = 0;
    virtual ~Visitor() {}
};

void visit_rq(faiss::ResidualQuantizer& rq, Visitor& v) {
    int64_t k = 0;
    for (size_t b : rq.nbits) k = std::max<int64_t>(k, int64_t(1) << b);
    if (k > 0) v.cp(rq.cp, k);
}

void visit_pq(faiss::ProductQuantizer& pq, Visitor& v) {
    v.cp(pq.cp, pq.ksub);
}

void walk(faiss::Index* idx, Visitor& v, int depth) {
    if (!idx || depth > 16) return;
    if (auto m = dynamic_cast<faiss::IndexIDMap*>(idx)) return walk(m->index, v, depth + 1);
    if (auto pt = dynamic_cast<faiss::IndexPreTransform*>(idx)) {
        for (auto* vt : pt->chain)
            if (auto opq = dynamic_cast<faiss::OPQMatrix*>(vt)) v.opq(opq);
        return walk(pt->index, v, depth + 1);
    }
    if (auto rf = dynamic_cast<faiss::IndexRefine*>(idx)) {
        walk(rf->base_index, v, depth + 1);
        return walk(rf->refine_index, v, depth + 1);
    }
    if (auto h = dynamic_cast<faiss::IndexHNSW*>(idx)) return walk(h->storage, v, depth + 1);
    if (auto ivf = dynamic_cast<faiss::IndexIVF*>(idx)) {
        v.cp(ivf->cp, ivf->nlist);
        walk(ivf->quantizer, v, depth + 1);
    }
    if (auto p = dynamic_cast<faiss::IndexIVFPQR*>(idx)) visit_pq(p->refine_pq, v);
    if (auto p = dynamic_cast<faiss::IndexIVFPQ*>(idx)) visit_pq(p->pq, v);
    if (auto p = dynamic_cast<faiss::IndexIVFPQFastScan*>(idx)) visit_pq(p->pq, v);
    if (auto p = dynamic_cast<faiss::IndexPQ*>(idx)) visit_pq(p->pq, v);
    if (auto p = dynamic_cast<faiss::IndexPQFastScan*>(idx)) visit_pq(p->pq, v);
    if (auto p = dynamic_cast<faiss::IndexResidualQuantizer*>(idx)) visit_rq(p->rq, v);
    if (auto p = dynamic_cast<faiss::IndexIVFResidualQuantizer*>(idx)) visit_rq(p->rq, v);
    if (auto p = dynamic_cast<faiss::ResidualCoarseQuantizer*>(idx)) visit_rq(p->rq, v);
}

void walk_binary(faiss::IndexBinary* idx, Visitor& v) {
    auto inner = const_cast<faiss::IndexBinary*>(binary_unwrap(idx, nullptr));
    if (auto ivf = dynamic_cast<faiss::IndexBinaryIVF*>(inner)) v.cp(ivf->cp, ivf->nlist);
}

// The largest K × 39 over the clusterings that still have to be trained.
struct MinPoints : Visitor {
    int64_t need = 0;
    void cp(faiss::ClusteringParameters&, int64_t k) override { need = std::max(need, k * MIN_POINTS_PER_CENTROID); }
    void opq(faiss::OPQMatrix* opq) override {
        if (!opq->is_trained) need = std::max(need, int64_t(256) * MIN_POINTS_PER_CENTROID);
    }
};

// Silence the warning for the duration of one train call. The OPQ product quantizers lent
// here are taken back (the field reset to null) before the call returns, even on an
// exception.
struct Quiet : Visitor {
    std::vector<std::pair<faiss::OPQMatrix*, std::unique_ptr<faiss::ProductQuantizer>>> lent;
    void cp(faiss::ClusteringParameters& cp, int64_t) override { cp.min_points_per_centroid = 0; }
    void opq(faiss::OPQMatrix* opq) override {
        if (opq->is_trained || opq->pq) return;
        // OPQMatrix::train builds ProductQuantizer(d_out, M, 8) itself when `pq` is null.
        std::unique_ptr<faiss::ProductQuantizer> pq(new faiss::ProductQuantizer(opq->d_out, opq->M, 8));
        pq->cp.min_points_per_centroid = 0;
        opq->pq = pq.get();
        lent.emplace_back(opq, std::move(pq));
    }
    ~Quiet() override {
        for (auto& l : lent) l.first->pq = nullptr;
    }
};

// FAISS's interrupt callback: asks faissx's stop flag (a Rust function).
struct FlagInterrupt : faiss::InterruptCallback {
    int (*poll)(void);
    explicit FlagInterrupt(int (*p)(void)) : poll(p) {}
    bool want_interrupt() override { return poll() != 0; }
};

}  // namespace

extern "C" {

// Train `p` (a faiss::Index, or faiss::IndexBinary when `binary`) on `n` vectors `x`
// without FAISS's clustering warnings (see the top of this file).
int faissx_train(void* p, int binary, int64_t n, const void* x, char* err, size_t errlen) {
    return guarded(err, errlen, [&] {
        Quiet quiet;
        if (binary) {
            auto idx = static_cast<faiss::IndexBinary*>(p);
            walk_binary(idx, quiet);
            idx->train(n, static_cast<const uint8_t*>(x));
        } else {
            auto idx = static_cast<faiss::Index*>(p);
            walk(idx, quiet, 0);
            idx->train(n, static_cast<const float*>(x));
        }
        return 0;
    });
}

// *need = the number of training vectors below which FAISS would warn (K × 39 for the
// largest clustering K of the index), 0 when it clusters nothing.
int faissx_min_train_points(void* p, int binary, int64_t* need, char* err, size_t errlen) {
    return guarded(err, errlen, [&] {
        MinPoints m;
        if (binary) walk_binary(static_cast<faiss::IndexBinary*>(p), m);
        else walk(static_cast<faiss::Index*>(p), m, 0);
        *need = m.need;
        return 0;
    });
}

// Make FAISS's long loops (k-means iterations, HNSW construction, brute-force search
// blocks) ask `poll` whether to stop; they then throw "computation interrupted". Process-
// wide: FAISS has one callback.
void faissx_set_interrupt(int (*poll)(void)) {
    std::lock_guard<std::mutex> guard(faiss::InterruptCallback::lock);
    faiss::InterruptCallback::instance.reset(new FlagInterrupt(poll));
}

}  // extern "C"
