// Search restricted to a set of ids (issue 14: metadata filters evaluated inside the search).
// The ids are FAISS ids (under IDMap/IDMap2 the user's ids), sorted ascending, distinct and
// >= 0 (the Rust side's IdSet). Two ways to search only them:
//   * the selector path: an IDSelector (bitmap when the ids are dense, IDSelectorBatch
//     otherwise) in the SearchParameters of the index that does the work, with per-call
//     nprobe / efSearch widened by the caller. FAISS's own wrappers are walked here: IDMap and
//     IDMap2 get an IDSelectorTranslated and their labels mapped back (FAISS's IDMap would do
//     the same for k-NN, but its range search hands a plain SearchParameters to the wrapped
//     index, which IVF refuses), PreTransform transforms the queries, IndexRefine gets
//     IndexRefineSearchParameters around its base index's parameters;
//   * the exact path: reconstruct just the matching vectors, a chunk at a time, and compute
//     their distances to the queries with FAISS's knn_L2sqr / knn_inner_product (range:
//     range_search_L2sqr / range_search_inner_product).
// Which one runs is decided in Rust (src/engine/index/select.rs) from faissx_filter_support.
// No exception is thrown inside an OpenMP region here: every loop of ours is serial, and the
// FAISS calls made are ones that catch their own workers' exceptions.
#include "shim.h"

#include <faiss/IndexIVFFlat.h>
#include <faiss/IndexIVFRaBitQ.h>
#include <faiss/IndexIVFSpectralHash.h>
#include <faiss/IndexLSH.h>
#include <faiss/IndexRaBitQ.h>
#include <faiss/IndexScalarQuantizer.h>
#include <faiss/impl/IDSelector.h>
#include <faiss/utils/distances.h>

#include <cmath>
#include <typeinfo>
#include <utility>

using namespace faissx_shim;
using faiss::idx_t;

namespace {

// The caller's ids: sorted ascending, distinct, >= 0.
struct Ids {
    const int64_t* p;
    size_t n;
    bool contains(idx_t id) const { return std::binary_search(p, p + n, id); }
};

// An IDSelector over the ids: one bit per id up to the largest when that costs at most 8
// bytes per id (the largest id below 64 × count), else FAISS's hash set with a Bloom filter.
struct Selector {
    std::vector<uint8_t> bits;
    std::unique_ptr<faiss::IDSelector> sel;
    explicit Selector(Ids ids) {
        idx_t top = ids.n ? ids.p[ids.n - 1] : 0;
        if ((uint64_t)top / 64 < ids.n) {
            bits.assign((size_t)top / 8 + 1, 0);
            for (size_t i = 0; i < ids.n; i++) bits[ids.p[i] >> 3] |= (uint8_t)(1u << (ids.p[i] & 7));
            sel.reset(new faiss::IDSelectorBitmap(bits.size(), bits.data()));
        } else {
            sel.reset(new faiss::IDSelectorBatch(ids.n, ids.p));
        }
    }
};

template <class T>
bool is(const faiss::Index* idx) {
    return typeid(*idx) == typeid(T);
}

// Down through IDMap / PreTransform; at an IndexRefine, to its base index (the one that
// searches) or, with `refine_side`, to its refinement index (the one whose distances are
// reported).
const faiss::Index* leaf_of(const faiss::Index* idx, bool refine_side) {
    for (int depth = 0; depth < 16 && idx; depth++) {
        if (auto m = dynamic_cast<const faiss::IndexIDMap*>(idx)) {
            idx = m->index;
        } else if (auto pt = dynamic_cast<const faiss::IndexPreTransform*>(idx)) {
            idx = pt->index;
        } else if (auto rf = dynamic_cast<const faiss::IndexRefine*>(idx)) {
            idx = refine_side ? rf->refine_index : rf->base_index;
        } else {
            break;
        }
    }
    return idx;
}

// Classes whose search honours SearchParameters::sel, checked by exact class: a subclass may
// ignore it (IndexFlat1D) or throw from inside an OpenMP region (IVF scanners of additive
// quantizers and spectral hashing throw on a selector there, which ends the process).
bool honours_selector(const faiss::Index* leaf) {
    if (is<faiss::IndexFlat>(leaf) || is<faiss::IndexFlatL2>(leaf) || is<faiss::IndexFlatIP>(leaf) ||
        is<faiss::IndexScalarQuantizer>(leaf) || is<faiss::IndexRaBitQ>(leaf))
        return true;
    if (is<faiss::IndexIVFFlat>(leaf) || is<faiss::IndexIVFPQ>(leaf) || is<faiss::IndexIVFScalarQuantizer>(leaf) ||
        is<faiss::IndexIVFPQFastScan>(leaf) || is<faiss::IndexIVFRaBitQ>(leaf))
        return true;
    if (auto h = dynamic_cast<const faiss::IndexHNSW*>(leaf)) {
        if (!h->storage) return false;
        if (auto c = dynamic_cast<const faiss::IndexHNSWCagra*>(leaf)) return !c->base_level_only;
        return is<faiss::IndexHNSW>(leaf) || is<faiss::IndexHNSWFlat>(leaf) || is<faiss::IndexHNSWPQ>(leaf) ||
               is<faiss::IndexHNSWSQ>(leaf);
    }
    return false;
}

// Whether distances computed on reconstructed vectors are the distances the index's own
// search reports (exactly, or up to the rounding of its lookup tables): not for Hamming
// searches (LSH, spectral hashing), RaBitQ's estimates, PQ searches other than plain ADC,
// IVFFlatDedup (whose duplicates are not in its lists), nor classes not known here.
bool reconstructs_faithfully(const faiss::Index* leaf) {
    if (leaf->metric_type != faiss::METRIC_L2 && leaf->metric_type != faiss::METRIC_INNER_PRODUCT) return false;
    if (dynamic_cast<const faiss::IndexLSH*>(leaf) || dynamic_cast<const faiss::IndexRaBitQ*>(leaf) ||
        dynamic_cast<const faiss::IndexIVFSpectralHash*>(leaf) || dynamic_cast<const faiss::IndexIVFRaBitQ*>(leaf) ||
        dynamic_cast<const faiss::IndexIVFFlatDedup*>(leaf))
        return false;
    if (auto pq = dynamic_cast<const faiss::IndexPQ*>(leaf)) return pq->search_type == faiss::IndexPQ::ST_PQ;
    if (dynamic_cast<const faiss::IndexIVF*>(leaf)) return true;
    if (auto h = dynamic_cast<const faiss::IndexHNSW*>(leaf)) return h->storage != nullptr;
    return dynamic_cast<const faiss::IndexFlatCodes*>(leaf) || dynamic_cast<const faiss::IndexFastScan*>(leaf);
}

using Owned = std::vector<std::unique_ptr<faiss::SearchParameters>>;

// Per-call knobs (<= 0: the index's own): nprobe of an IVF, efSearch of an HNSW or of an
// IVF's HNSW quantizer.
struct Knobs {
    int64_t nprobe;
    int64_t ef_search;
    int64_t matched;  // ids in the set (all stored in the index): the adaptive IVF target
};

// SearchParameters carrying `sel` for the chain under `idx`, of the type its working index
// wants, all owned by `owned`. Used where FAISS itself walks the chain (under an IndexRefine).
faiss::SearchParameters* params_for(const faiss::Index* idx, const faiss::IDSelector* sel, Knobs kn, Owned& owned) {
    auto s = const_cast<faiss::IDSelector*>(sel);  // FAISS only reads it
    if (auto rf = dynamic_cast<const faiss::IndexRefine*>(idx)) {
        auto rp = new faiss::IndexRefineSearchParameters();
        owned.emplace_back(rp);
        rp->k_factor = rf->k_factor;
        rp->base_index_params = params_for(rf->base_index, sel, kn, owned);
        return rp;
    }
    if (auto m = dynamic_cast<const faiss::IndexIDMap*>(idx)) return params_for(m->index, sel, kn, owned);
    if (auto pt = dynamic_cast<const faiss::IndexPreTransform*>(idx)) return params_for(pt->index, sel, kn, owned);
    if (auto ivf = dynamic_cast<const faiss::IndexIVF*>(idx)) {
        auto sp = new faiss::SearchParametersIVF();
        owned.emplace_back(sp);
        sp->sel = s;
        sp->nprobe = kn.nprobe > 0 ? kn.nprobe : ivf->nprobe;
        sp->max_codes = ivf->max_codes;
        if (kn.ef_search > 0 && dynamic_cast<const faiss::IndexHNSW*>(ivf->quantizer)) {
            auto qp = new faiss::SearchParametersHNSW();
            owned.emplace_back(qp);
            qp->efSearch = (int)kn.ef_search;
            sp->quantizer_params = qp;
        }
        return sp;
    }
    if (auto h = dynamic_cast<const faiss::IndexHNSW*>(idx)) {
        auto sp = new faiss::SearchParametersHNSW();
        owned.emplace_back(sp);
        sp->sel = s;
        sp->efSearch = kn.ef_search > 0 ? (int)kn.ef_search : h->hnsw.efSearch;
        sp->check_relative_distance = h->hnsw.check_relative_distance;
        sp->bounded_queue = h->hnsw.search_bounded_queue;
        return sp;
    }
    auto sp = new faiss::SearchParameters();
    owned.emplace_back(sp);
    sp->sel = s;
    return sp;
}

// The queries as `idx` sees them after a PreTransform (owned when transformed).
struct Queries {
    const float* x;
    std::unique_ptr<const float[]> owned;
    void transform(const faiss::IndexPreTransform* pt, idx_t n) {
        const float* xt = pt->apply_chain(n, x);
        if (xt != x) owned.reset(xt);
        x = xt;
    }
};

// A restricted k-NN search of an IVF index whose nprobe is chosen per query by where the
// matching vectors are. The caller's nprobe' (widened by 1 / selectivity) scans, on average,
// nprobe' × matched / nlist matching vectors; when the filter is correlated with the vectors
// ("only shoes"), the lists nearest a query may hold few or none of them. So each query probes
// its nearest lists until they hold that many matching vectors (at least nprobe' lists, at
// most nlist), through FAISS's search_preassigned. Done for the IVF
// classes whose search_preassigned takes any assignment (Flat, PQ, SQ); false otherwise.
bool adaptive_ivf(const faiss::IndexIVF* ivf, idx_t n, const float* x, idx_t k, float* D, idx_t* I,
                  const faiss::IDSelector* sel, Knobs kn) {
    auto& t = typeid(*ivf);
    if (t != typeid(faiss::IndexIVFFlat) && t != typeid(faiss::IndexIVFPQ) && t != typeid(faiss::IndexIVFScalarQuantizer))
        return false;
    if (kn.nprobe <= 0 || kn.matched <= 0 || ivf->nlist == 0 || ivf->ntotal == 0) return false;
    size_t nlist = ivf->nlist;
    // Matches per list, counted only for the lists some query reaches (-1: not counted yet),
    // so that one query probing a few lists does not pay for a walk of the whole index.
    std::vector<idx_t> count(nlist, -1);
    auto matches_in = [&](idx_t l) -> idx_t {
        if (count[l] < 0) {
            idx_t c = 0;
            size_t sz = ivf->invlists->list_size(l);
            if (sz > 0) {
                faiss::InvertedLists::ScopedIds ids(ivf->invlists, l);
                for (size_t o = 0; o < sz; o++) c += sel->is_member(ids[o]) ? 1 : 0;
            }
            count[l] = c;
        }
        return count[l];
    };
    double target = (double)std::min<int64_t>(kn.nprobe, nlist) * (double)kn.matched / (double)nlist;
    size_t floor_lists = std::max<size_t>(1, std::min<size_t>((size_t)kn.nprobe, nlist));
    // Lists ranked per query: first the nearest `ranked` (enough for most queries), all nlist
    // only for a query whose nearest lists hold too few matches.
    const size_t ranked = std::min(nlist, std::max<size_t>(64, 8 * floor_lists));
    const idx_t chunk = 256;
    for (idx_t q0 = 0; q0 < n; q0 += chunk) {
        idx_t m = std::min(chunk, n - q0);
        size_t width = ranked;
        std::vector<float> cd((size_t)m * width);
        std::vector<idx_t> ck((size_t)m * width);
        ivf->quantizer->search(m, x + (size_t)q0 * ivf->d, (idx_t)width, cd.data(), ck.data());
        // Lists to probe for query q, nearest first, from `lists`/`dis` of length `len`.
        auto choose = [&](const idx_t* lists, size_t len) -> size_t {
            double cum = 0;
            size_t j = 0;
            while (j < len) {
                idx_t l = lists[j];
                if (l >= 0) cum += (double)matches_in(l);
                j++;
                if (j >= floor_lists && cum >= target) return j;
            }
            return len + 1;  // not enough within `len`
        };
        std::vector<size_t> probes(m, 0);
        std::vector<idx_t> short_q;
        for (idx_t q = 0; q < m; q++) {
            size_t j = choose(&ck[(size_t)q * width], width);
            if (j > width) {
                if (width < nlist) short_q.push_back(q);
                j = width;
            }
            probes[q] = j;
        }
        if (!short_q.empty()) {
            // Full ranking for the queries that need more lists.
            std::vector<float> fd(nlist);
            std::vector<idx_t> fk(nlist);
            std::vector<float> cd2((size_t)m * nlist);
            std::vector<idx_t> ck2((size_t)m * nlist, -1);
            for (idx_t q = 0; q < m; q++) {
                std::copy(&cd[(size_t)q * width], &cd[(size_t)q * width] + width, &cd2[(size_t)q * nlist]);
                std::copy(&ck[(size_t)q * width], &ck[(size_t)q * width] + width, &ck2[(size_t)q * nlist]);
            }
            for (idx_t q : short_q) {
                ivf->quantizer->search(1, x + (size_t)(q0 + q) * ivf->d, (idx_t)nlist, fd.data(), fk.data());
                std::copy(fd.begin(), fd.end(), &cd2[(size_t)q * nlist]);
                std::copy(fk.begin(), fk.end(), &ck2[(size_t)q * nlist]);
                size_t j = choose(fk.data(), nlist);
                probes[q] = std::min(j, nlist);
            }
            cd.swap(cd2);
            ck.swap(ck2);
            width = nlist;
        }
        size_t most = 0;
        for (idx_t q = 0; q < m; q++) most = std::max(most, probes[q]);
        std::vector<idx_t> assign((size_t)m * most, -1);
        std::vector<float> adis((size_t)m * most, 0);
        for (idx_t q = 0; q < m; q++)
            for (size_t j = 0; j < probes[q]; j++) {
                assign[(size_t)q * most + j] = ck[(size_t)q * width + j];
                adis[(size_t)q * most + j] = cd[(size_t)q * width + j];
            }
        faiss::SearchParametersIVF sp;
        sp.sel = const_cast<faiss::IDSelector*>(sel);
        sp.nprobe = most;
        sp.max_codes = ivf->max_codes;
        ivf->search_preassigned(m, x + (size_t)q0 * ivf->d, k, assign.data(), adis.data(), D + (size_t)q0 * k,
                                I + (size_t)q0 * k, false, &sp);
    }
    return true;
}

// One restricted search through the chain (selector path): k-NN into D/I when `res` is null,
// else a range search into `res`. IDMap levels are done here (see the file comment).
void selected_rec(const faiss::Index* idx, idx_t n, const float* x, idx_t k, float radius, float* D, idx_t* I,
                  faiss::RangeSearchResult* res, const faiss::IDSelector* sel, Knobs kn) {
    if (auto m = dynamic_cast<const faiss::IndexIDMap*>(idx)) {
        faiss::IDSelectorTranslated inner(m->id_map, sel);
        selected_rec(m->index, n, x, k, radius, D, I, res, &inner, kn);
        idx_t* labels = res ? res->labels : I;
        size_t count = res ? res->lims[n] : (size_t)n * k;
        for (size_t j = 0; j < count; j++)
            if (labels[j] >= 0) labels[j] = m->id_map.at(labels[j]);
        return;
    }
    if (auto pt = dynamic_cast<const faiss::IndexPreTransform*>(idx)) {
        Queries q{x, nullptr};
        q.transform(pt, n);
        selected_rec(pt->index, n, q.x, k, radius, D, I, res, sel, kn);
        return;
    }
    if (!res) {
        auto ivf = dynamic_cast<const faiss::IndexIVF*>(idx);
        if (ivf && kn.ef_search <= 0 && adaptive_ivf(ivf, n, x, k, D, I, sel, kn)) return;
    }
    Owned owned;
    auto params = params_for(idx, sel, kn, owned);
    if (res)
        idx->range_search(n, x, radius, res, params);
    else
        idx->search(n, x, k, D, I, params);
}

// The stored vectors behind the ids, found through the chain (exact path): where each one is
// in `leaf` (its id there, or its IVF list and offset) and the caller's id for it.
struct Found {
    const faiss::Index* leaf = nullptr;
    const faiss::IndexIVF* ivf = nullptr;
    std::vector<idx_t> key;         // id in `leaf` (not IVF), or list number (IVF)
    std::vector<idx_t> offset;      // IVF: offset in the list
    std::vector<idx_t> user;        // the caller's id
    Queries q;

    size_t size() const { return user.size(); }
    void decode(size_t i, float* out) const {
        if (ivf)
            ivf->reconstruct_from_offset(key[i], offset[i], out);
        else
            leaf->reconstruct(key[i], out);
    }
};

// (id at one level of the chain, the caller's id), sorted by the first, which are distinct.
using Keys = std::vector<std::pair<idx_t, idx_t>>;

// Membership in `keys` in O(1) (a Selector over their first members), and the caller's id of
// a member.
struct KeySet {
    const Keys& keys;
    std::vector<idx_t> firsts;
    std::unique_ptr<Selector> sel;
    explicit KeySet(const Keys& k) : keys(k) {
        for (auto& kv : keys) firsts.push_back(kv.first);
        sel.reset(new Selector(Ids{firsts.data(), firsts.size()}));
    }
    bool has(idx_t id) const { return id >= 0 && sel->sel->is_member(id); }
    idx_t user(idx_t id) const {
        return std::lower_bound(keys.begin(), keys.end(), std::make_pair(id, std::numeric_limits<idx_t>::min()))->second;
    }
};

// Walk IDMap (ids translated), PreTransform (queries transformed) and Refine (to the
// refinement index, whose distances Refine reports) down to the index that holds the vectors.
void find_rec(const faiss::Index* idx, idx_t n, Keys keys, Found& out) {
    if (keys.empty()) {
        out.leaf = leaf_of(idx, true);
        return;
    }
    if (auto m2 = dynamic_cast<const faiss::IndexIDMap2*>(idx)) {
        Keys inner;
        for (auto& kv : keys) {
            auto it = m2->rev_map.find(kv.first);
            if (it != m2->rev_map.end()) inner.push_back({it->second, kv.second});
        }
        std::sort(inner.begin(), inner.end());
        return find_rec(m2->index, n, std::move(inner), out);
    }
    if (auto m = dynamic_cast<const faiss::IndexIDMap*>(idx)) {
        // No reverse map: one pass over the id map.
        KeySet ks(keys);
        Keys inner;
        for (size_t j = 0; j < m->id_map.size(); j++)
            if (ks.has(m->id_map[j])) inner.push_back({(idx_t)j, ks.user(m->id_map[j])});
        return find_rec(m->index, n, std::move(inner), out);
    }
    if (auto pt = dynamic_cast<const faiss::IndexPreTransform*>(idx)) {
        out.q.transform(pt, n);
        return find_rec(pt->index, n, std::move(keys), out);
    }
    if (auto rf = dynamic_cast<const faiss::IndexRefine*>(idx)) return find_rec(rf->refine_index, n, std::move(keys), out);
    out.leaf = idx;
    auto ivf = dynamic_cast<const faiss::IndexIVF*>(idx);
    if (!ivf) {
        for (auto& kv : keys) {
            if (kv.first < idx->ntotal) {
                out.key.push_back(kv.first);
                out.user.push_back(kv.second);
            }
        }
        return;
    }
    out.ivf = ivf;
    auto add = [&](idx_t lo, idx_t user) {
        out.key.push_back((idx_t)faiss::lo_listno(lo));
        out.offset.push_back((idx_t)faiss::lo_offset(lo));
        out.user.push_back(user);
    };
    const auto& dm = ivf->direct_map;
    if (dm.type == faiss::DirectMap::Array) {
        for (auto& kv : keys)
            if (kv.first < (idx_t)dm.array.size() && dm.array[kv.first] >= 0) add(dm.array[kv.first], kv.second);
    } else if (dm.type == faiss::DirectMap::Hashtable) {
        for (auto& kv : keys) {
            auto it = dm.hashtable.find(kv.first);
            if (it != dm.hashtable.end()) add(it->second, kv.second);
        }
    } else {
        // No direct map: one pass over the ids in the lists.
        KeySet ks(keys);
        for (size_t l = 0; l < ivf->nlist; l++) {
            size_t sz = ivf->invlists->list_size(l);
            if (sz == 0) continue;
            faiss::InvertedLists::ScopedIds ids(ivf->invlists, l);
            for (size_t o = 0; o < sz; o++)
                if (ks.has(ids[o])) add((idx_t)faiss::lo_build(l, o), ks.user(ids[o]));
        }
    }
}

void find(const faiss::Index* idx, idx_t n, const float* x, Ids ids, Found& out) {
    Keys keys(ids.n);
    for (size_t i = 0; i < ids.n; i++) keys[i] = {ids.p[i], ids.p[i]};
    out.q.x = x;
    find_rec(idx, n, std::move(keys), out);
    auto m = out.leaf->metric_type;
    if (m != faiss::METRIC_L2 && m != faiss::METRIC_INNER_PRODUCT)
        throw std::runtime_error("exact filtered search supports L2 and inner product only");
}

// Floats reconstructed at a time by the exact path (4 MiB).
constexpr size_t EXACT_CHUNK_FLOATS = size_t(1) << 20;

// Calls `scan(y, users, count)` with the found vectors decoded a chunk at a time.
template <class F>
void for_chunks(const Found& f, F&& scan) {
    size_t d = f.leaf->d;
    size_t chunk = std::max<size_t>(1, EXACT_CHUNK_FLOATS / std::max<size_t>(1, d));
    std::vector<float> y(std::min(chunk, f.size()) * d);
    for (size_t i0 = 0; i0 < f.size(); i0 += chunk) {
        size_t c = std::min(chunk, f.size() - i0);
        for (size_t j = 0; j < c; j++) f.decode(i0 + j, y.data() + j * d);
        scan(y.data(), f.user.data() + i0, c);
    }
}

}  // namespace

extern "C" {

// What a restricted search can do on this index: `selector` 1 when the working index honours
// an IDSelector, `exact` 1 when distances to reconstructed vectors are what it reports.
int faissx_filter_support(const void* p, int32_t* selector, int32_t* exact, char* err, size_t errlen) {
    return guarded(err, errlen, [&] {
        auto idx = static_cast<const faiss::Index*>(p);
        *selector = honours_selector(leaf_of(idx, false)) ? 1 : 0;
        *exact = reconstructs_faithfully(leaf_of(idx, true)) ? 1 : 0;
        return 0;
    });
}

// k-NN search of x (n × d) among the ids only, through an IDSelector, with per-call nprobe /
// efSearch (<= 0: the index's own). D and I are n × k. Returns 2 (results left in D/I) when
// a label outside the ids came back: the index ignored the selector.
int faissx_search_selected(const void* p, int64_t n, const float* x, int64_t k, const int64_t* ids, int64_t nids,
                           int64_t nprobe, int64_t ef_search, float* D, int64_t* I, char* err, size_t errlen) {
    return guarded(err, errlen, [&] {
        auto idx = static_cast<const faiss::Index*>(p);
        Ids set{ids, (size_t)nids};
        Selector sel(set);
        selected_rec(idx, n, x, k, 0, D, I, nullptr, sel.sel.get(), Knobs{nprobe, ef_search, nids});
        for (int64_t j = 0; j < n * k; j++)
            if (I[j] >= 0 && !set.contains(I[j])) return 2;
        return 0;
    });
}

// Range search of x (n × d) among the ids only, through an IDSelector; `result` is a
// faiss::RangeSearchResult for n queries.
int faissx_range_search_selected(const void* p, int64_t n, const float* x, float radius, const int64_t* ids,
                                 int64_t nids, void* result, char* err, size_t errlen) {
    return guarded(err, errlen, [&] {
        auto idx = static_cast<const faiss::Index*>(p);
        Selector sel(Ids{ids, (size_t)nids});
        auto res = static_cast<faiss::RangeSearchResult*>(result);
        selected_rec(idx, n, x, 0, radius, nullptr, nullptr, res, sel.sel.get(), Knobs{0, 0, nids});
        return 0;
    });
}

// Exact k-NN of x (n × d) among the stored vectors with the given ids: they are reconstructed
// and compared with every query (squared L2 or inner product, the index's metric, in the
// space of the index that holds them: after PreTransform, the refinement index of a Refine).
// D and I are n × k, sorted, padded with -1 and FAISS's neutral distance. `scanned` gets the
// number of vectors found.
int faissx_search_exact(const void* p, int64_t n, const float* x, int64_t k, const int64_t* ids, int64_t nids,
                        float* D, int64_t* I, int64_t* scanned, char* err, size_t errlen) {
    return guarded(err, errlen, [&] {
        auto idx = static_cast<const faiss::Index*>(p);
        Found f;
        find(idx, n, x, Ids{ids, (size_t)nids}, f);
        *scanned = (int64_t)f.size();
        bool ip = f.leaf->metric_type == faiss::METRIC_INNER_PRODUCT;
        auto better = [ip](float a, float b) { return ip ? a > b : a < b; };
        float worst = ip ? -std::numeric_limits<float>::max() : std::numeric_limits<float>::max();
        size_t nk = (size_t)n * k;
        std::fill(D, D + nk, worst);
        std::fill(I, I + nk, (int64_t)-1);
        std::vector<float> cd(nk), md(k);
        std::vector<int64_t> ci(nk), mi(k);
        size_t d = f.leaf->d;
        for_chunks(f, [&](const float* y, const idx_t* users, size_t c) {
            if (ip)
                faiss::knn_inner_product(f.q.x, y, d, n, c, k, cd.data(), ci.data());
            else
                faiss::knn_L2sqr(f.q.x, y, d, n, c, k, cd.data(), ci.data());
            // Merge this chunk's sorted top-k into the running one, query by query.
            for (int64_t i = 0; i < n; i++) {
                float *rd = D + i * k, *bd = cd.data() + i * k;
                int64_t *ri = I + i * k, *bi = ci.data() + i * k;
                int64_t a = 0, b = 0;
                for (int64_t j = 0; j < k; j++) {
                    bool a_ok = a < k && ri[a] >= 0, b_ok = b < k && bi[b] >= 0;
                    if (b_ok && (!a_ok || better(bd[b], rd[a]))) {
                        md[j] = bd[b];
                        mi[j] = users[bi[b]];
                        b++;
                    } else if (a_ok) {
                        md[j] = rd[a];
                        mi[j] = ri[a];
                        a++;
                    } else {
                        md[j] = worst;
                        mi[j] = -1;
                    }
                }
                std::copy(md.begin(), md.end(), rd);
                std::copy(mi.begin(), mi.end(), ri);
            }
        });
        return 0;
    });
}

// Exact range search of x (n × d) among the stored vectors with the given ids (squared L2
// below `radius`, or inner product above it, as FAISS's range searches); `result` is a
// faiss::RangeSearchResult for n queries, filled here.
int faissx_range_search_exact(const void* p, int64_t n, const float* x, float radius, const int64_t* ids,
                              int64_t nids, void* result, char* err, size_t errlen) {
    return guarded(err, errlen, [&] {
        auto idx = static_cast<const faiss::Index*>(p);
        auto res = static_cast<faiss::RangeSearchResult*>(result);
        Found f;
        find(idx, n, x, Ids{ids, (size_t)nids}, f);
        bool ip = f.leaf->metric_type == faiss::METRIC_INNER_PRODUCT;
        size_t d = f.leaf->d;
        std::vector<std::vector<std::pair<float, idx_t>>> hits(n);
        for_chunks(f, [&](const float* y, const idx_t* users, size_t c) {
            faiss::RangeSearchResult part(n);
            if (ip)
                faiss::range_search_inner_product(f.q.x, y, d, n, c, radius, &part);
            else
                faiss::range_search_L2sqr(f.q.x, y, d, n, c, radius, &part);
            for (int64_t i = 0; i < n; i++)
                for (size_t j = part.lims[i]; j < part.lims[i + 1]; j++)
                    hits[i].push_back({part.distances[j], users[part.labels[j]]});
        });
        for (int64_t i = 0; i < n; i++) res->lims[i] = hits[i].size();
        res->do_allocation();
        for (int64_t i = 0; i < n; i++) {
            size_t o = res->lims[i];
            for (auto& h : hits[i]) {
                res->distances[o] = h.first;
                res->labels[o] = h.second;
                o++;
            }
        }
        return 0;
    });
}

}  // extern "C"
