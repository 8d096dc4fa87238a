// Clustering (Rust side: src/engine/index/ffi/clustering.rs):
//   * faissx_kmeans: FAISS's k-means (faiss::Clustering) over caller-given vectors, as the
//     Python `faiss.Kmeans(d, k, niter=...)` runs it, returning what FAISS's C API cannot
//     (the final iteration's objective: faiss-rs reads iteration statistics through a
//     zero-sized type, so every index lands on the first one);
//   * faissx_ivf_recluster: a copy of an IVF index whose coarse quantizer is trained afresh
//     with another number of lists, its vectors re-added under their ids.
// Every function catches all exceptions and returns non-zero with the message in `err`
// (1: FAISS or I/O failure, 3: the index is of a kind this cannot handle).
#include "shim.h"

#include <faiss/Clustering.h>
#include <faiss/IndexFlat.h>
#include <faiss/IndexIVFFlat.h>
#include <faiss/IndexIVFPQ.h>
#include <faiss/IndexScalarQuantizer.h>
#include <faiss/invlists/DirectMap.h>
#include <faiss/utils/random.h>

using faissx_shim::copy_str;

namespace {

// The index is of a kind recluster cannot rebuild (reported as UNSUPPORTED).
struct Refused : std::runtime_error {
    using std::runtime_error::runtime_error;
};

// The IVF index itself, or the one an IndexIDMap / IndexIDMap2 wraps; null otherwise.
template <class I, class IVF, class Map>
IVF* ivf_of(I* idx) {
    if (auto m = dynamic_cast<Map*>(idx)) return dynamic_cast<IVF*>(m->index);
    return dynamic_cast<IVF*>(idx);
}

// Only the IVF classes whose training trains every part they have (coarse quantizer, then
// the PQ or scalar quantizer on residuals), with a flat or HNSW-flat coarse quantizer (which
// FAISS's IVF training fills with the k-means centroids), in memory.
void check_reclusterable(const faiss::IndexIVF* ivf) {
    const std::type_info& t = typeid(*ivf);
    if (t != typeid(faiss::IndexIVFFlat) && t != typeid(faiss::IndexIVFPQ) &&
        t != typeid(faiss::IndexIVFScalarQuantizer))
        throw Refused("reclustering supports IndexIVFFlat, IndexIVFPQ and IndexIVFScalarQuantizer only");
    if (!dynamic_cast<const faiss::IndexFlat*>(ivf->quantizer) &&
        !dynamic_cast<const faiss::IndexHNSWFlat*>(ivf->quantizer))
        throw Refused("reclustering needs a flat or HNSW-flat coarse quantizer");
    if (!dynamic_cast<const faiss::ArrayInvertedLists*>(ivf->invlists))
        throw Refused("reclustering needs in-memory inverted lists");
}

}  // namespace

extern "C" {

// k-means of the n × d vectors `x` into k clusters with FAISS's Clustering: `niter`
// iterations, `seed`, FAISS's default subsampling to 256 points per centroid; with
// `spherical`, centroids are normalized and points assigned by inner product (IndexFlatIP),
// else by L2. Writes the k × d centroids, each vector's cluster (its nearest final
// centroid, as faiss.Kmeans's index.search gives it) and the last iteration's objective
// (sum of squared distances, or of inner products when spherical; 0 when n == k, where FAISS
// copies the points).
int faissx_kmeans(int64_t d, int64_t n, const float* x, int64_t k, int32_t niter, int32_t spherical, int64_t seed,
                  float* centroids, int64_t* assign, float* obj, char* err, size_t errlen) {
    try {
        faiss::ClusteringParameters cp;
        cp.niter = niter;
        cp.spherical = spherical != 0;
        cp.seed = (int)seed;
        // Only silences FAISS's "please provide at least 39 points per centroid" warning on
        // stderr; the clustering is the same.
        cp.min_points_per_centroid = 1;
        faiss::Clustering clus((int)d, (size_t)k, cp);
        std::unique_ptr<faiss::IndexFlat> index;
        if (spherical)
            index.reset(new faiss::IndexFlatIP(d));
        else
            index.reset(new faiss::IndexFlatL2(d));
        clus.train(n, x, *index);
        if ((int64_t)clus.centroids.size() != k * d) throw std::runtime_error("k-means returned no centroids");
        memcpy(centroids, clus.centroids.data(), sizeof(float) * k * d);
        std::vector<float> dis(n);
        std::vector<faiss::idx_t> labels(n);
        index->search(n, x, 1, dis.data(), labels.data());
        for (int64_t i = 0; i < n; i++) assign[i] = labels[i];
        *obj = clus.iteration_stats.empty() ? 0.0f : clus.iteration_stats.back().obj;
        return 0;
    } catch (const std::exception& e) {
        copy_str(err, errlen, e.what());
        return 1;
    }
}

// A copy of the IVF index `p` (or of an IndexIDMap/IndexIDMap2 over one) whose coarse
// quantizer holds `nlist` centroids trained by FAISS's own IVF training (the index's
// clustering parameters and metric) on `nsample` of its stored vectors, chosen by
// faiss::rand_perm(seed) (all of them when nsample >= ntotal); the PQ or scalar quantizer
// is retrained on all stored vectors (FAISS subsamples), and every vector is re-added under
// its id. Stored vectors are decoded first, so compressed codes are re-encoded. `nprobe`
// is kept (capped at nlist), as is a direct map. `*prev_nlist` gets the old number of
// lists. `p` is not changed.
int faissx_ivf_recluster(const void* p, int64_t nlist, int64_t nsample, int64_t seed, void** out,
                         int64_t* prev_nlist, char* err, size_t errlen) {
    try {
        auto src = static_cast<const faiss::Index*>(p);
        auto sivf = ivf_of<const faiss::Index, const faiss::IndexIVF, const faiss::IndexIDMap>(src);
        if (!sivf) throw Refused("reclustering needs an IVF index (or an IDMap over one)");
        check_reclusterable(sivf);
        if (nlist <= 0) throw std::runtime_error("nlist must be positive");
        const size_t d = sivf->d;
        const size_t n = sivf->ntotal;
        if (n == 0) throw std::runtime_error("the index is empty");
        if (nsample <= 0 || (size_t)nsample > n) nsample = n;

        // Every stored vector and its id, list by list.
        std::vector<float> x(n * d);
        std::vector<faiss::idx_t> ids(n);
        size_t got = 0;
        for (size_t l = 0; l < sivf->nlist; l++) {
            size_t sz = sivf->invlists->list_size(l);
            if (got + sz > n) throw std::runtime_error("inverted lists hold more vectors than ntotal");
            faiss::InvertedLists::ScopedIds sids(sivf->invlists, l);
            for (size_t o = 0; o < sz; o++, got++) {
                ids[got] = sids[o];
                sivf->reconstruct_from_offset(l, o, x.data() + got * d);
            }
        }
        if (got != n) throw std::runtime_error("inverted lists hold fewer vectors than ntotal");

        std::vector<float> sample;
        const float* train = x.data();
        if ((size_t)nsample < n) {
            std::vector<int> perm(n);
            faiss::rand_perm(perm.data(), n, seed);
            sample.resize((size_t)nsample * d);
            for (int64_t i = 0; i < nsample; i++)
                memcpy(sample.data() + i * d, x.data() + (size_t)perm[i] * d, sizeof(float) * d);
            train = sample.data();
        }

        std::unique_ptr<faiss::Index> copy(faiss::clone_index(src));
        auto ivf = ivf_of<faiss::Index, faiss::IndexIVF, faiss::IndexIDMap>(copy.get());
        if (!ivf) throw std::runtime_error("the copy lost its IVF index");
        auto dm = ivf->direct_map.type;
        if (dm != faiss::DirectMap::NoMap) ivf->set_direct_map_type(faiss::DirectMap::NoMap);
        *prev_nlist = (int64_t)ivf->nlist;
        ivf->reset();
        ivf->nlist = nlist;
        ivf->replace_invlists(new faiss::ArrayInvertedLists(nlist, ivf->code_size), true);
        ivf->quantizer->reset();
        ivf->is_trained = false;
        // FAISS's IVF training of the coarse quantizer (k-means) on the sample ...
        ivf->train_q1(nsample, train, false, ivf->metric_type);
        sample.clear();
        sample.shrink_to_fit();
        // ... then of the encoder on everything (the quantizer now holds nlist centroids,
        // so train() leaves it alone).
        ivf->train(n, x.data());
        if (ivf->nprobe > (size_t)nlist) ivf->nprobe = nlist;
        ivf->add_with_ids(n, x.data(), ids.data());
        if (dm != faiss::DirectMap::NoMap) ivf->set_direct_map_type(dm);
        copy->is_trained = true;
        *out = copy.release();
        return 0;
    } catch (const Refused& e) {
        copy_str(err, errlen, e.what());
        return 3;
    } catch (const std::exception& e) {
        copy_str(err, errlen, e.what());
        return 1;
    }
}

}  // extern "C"
