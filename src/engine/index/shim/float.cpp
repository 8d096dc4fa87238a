// The float index's own calls (faiss::Index): search with per-call parameters, and the
// merge / split / bench support (issue 4). Rust side: src/engine/index/ffi/float.rs.
#include "shim.h"

using namespace faissx_shim;

extern "C" {

// k-NN search with per-call nprobe / efSearch (<= 0: the index's own setting). `x` is
// n × d row-major; D and I are n × k. Const on the index.
int faissx_search(const void* p, int64_t n, const float* x, int64_t k, int64_t nprobe,
                  int64_t ef_search, float* D, int64_t* I, char* err, size_t errlen) {
    return guarded(err, errlen, [&] {
        auto idx = static_cast<const faiss::Index*>(p);
        auto inner = unwrap(idx, nullptr);
        // Every parameter object lives in `owned`; `top` is what the outermost index gets.
        std::vector<std::unique_ptr<faiss::SearchParameters>> owned;
        faiss::SearchParameters* top = nullptr;
        if (auto ivf = dynamic_cast<const faiss::IndexIVF*>(inner)) {
            if (nprobe > 0 || ef_search > 0) {
                auto sp = new faiss::SearchParametersIVF();
                owned.emplace_back(sp);
                sp->nprobe = nprobe > 0 ? nprobe : ivf->nprobe;
                if (ef_search > 0 && dynamic_cast<const faiss::IndexHNSW*>(ivf->quantizer)) {
                    auto qp = new faiss::SearchParametersHNSW();
                    owned.emplace_back(qp);
                    qp->efSearch = (int)ef_search;
                    sp->quantizer_params = qp;
                }
                top = sp;
            }
        } else if (dynamic_cast<const faiss::IndexHNSW*>(inner)) {
            if (ef_search > 0) {
                auto sp = new faiss::SearchParametersHNSW();
                owned.emplace_back(sp);
                sp->efSearch = (int)ef_search;
                top = sp;
            }
        }
        if (top && idx != inner) {
            // IDMap and PreTransform pass params through; IndexRefine wants its own type.
            for (auto cur = idx; cur && cur != inner;) {
                if (auto rf = dynamic_cast<const faiss::IndexRefine*>(cur)) {
                    auto rp = new faiss::IndexRefineSearchParameters();
                    owned.emplace_back(rp);
                    rp->base_index_params = top;
                    rp->k_factor = rf->k_factor;
                    top = rp;
                    cur = rf->base_index;
                } else if (auto m2 = dynamic_cast<const faiss::IndexIDMap2*>(cur)) {
                    cur = m2->index;
                } else if (auto m = dynamic_cast<const faiss::IndexIDMap*>(cur)) {
                    cur = m->index;
                } else if (auto pt = dynamic_cast<const faiss::IndexPreTransform*>(cur)) {
                    cur = pt->index;
                } else {
                    break;
                }
            }
        }
        idx->search(n, x, k, D, I, top);
        return 0;
    });
}

}  // extern "C"

// "Positions" order the stored vectors: for IVF the concatenation of the inverted lists, for
// IDMap/IDMap2 and PreTransform the positions of the wrapped index, for everything else
// 0..ntotal. faissx_extract uses this order; faissx_renumber numbers IDMap vectors in
// insertion order and IVF vectors in the order of their old ids.
namespace {

void extract_rec(const faiss::Index* idx, faiss::idx_t i0, faiss::idx_t n, faiss::idx_t* ids, float* x) {
    if (n <= 0) return;
    if (auto m = dynamic_cast<const faiss::IndexIDMap*>(idx)) {
        std::vector<faiss::idx_t> inner(n);
        extract_rec(m->index, i0, n, inner.data(), x);
        for (faiss::idx_t j = 0; j < n; j++) ids[j] = m->id_map.at(inner[j]);
    } else if (auto pt = dynamic_cast<const faiss::IndexPreTransform*>(idx)) {
        if (x) {
            std::vector<float> xt((size_t)n * pt->index->d);
            extract_rec(pt->index, i0, n, ids, xt.data());
            pt->reverse_chain(n, xt.data(), x);
        } else {
            extract_rec(pt->index, i0, n, ids, nullptr);
        }
    } else if (auto ivf = dynamic_cast<const faiss::IndexIVF*>(idx)) {
        faiss::idx_t pos = 0, end = i0 + n;
        for (size_t l = 0; l < ivf->nlist && pos < end; l++) {
            faiss::idx_t sz = ivf->invlists->list_size(l);
            if (pos + sz <= i0) {
                pos += sz;
                continue;
            }
            faiss::InvertedLists::ScopedIds sids(ivf->invlists, l);
            for (faiss::idx_t o = (i0 > pos ? i0 - pos : 0); o < sz && pos + o < end; o++) {
                faiss::idx_t j = pos + o - i0;
                ids[j] = sids[o];
                if (x) ivf->reconstruct_from_offset(l, o, x + (size_t)j * ivf->d);
            }
            pos += sz;
        }
        if (pos < end) throw std::runtime_error("inverted lists hold fewer vectors than ntotal");
    } else {
        for (faiss::idx_t j = 0; j < n; j++) ids[j] = i0 + j;
        if (!x) return;
        // Flat-code indices decode ranges themselves; for the rest, FAISS's generic
        // reconstruct_n calls reconstruct inside an OpenMP region, where an exception would
        // end the process: loop here instead.
        if (dynamic_cast<const faiss::IndexFlatCodes*>(idx)) {
            idx->reconstruct_n(i0, n, x);
        } else {
            for (faiss::idx_t j = 0; j < n; j++) idx->reconstruct(i0 + j, x + (size_t)j * idx->d);
        }
    }
}

void renumber_rec(faiss::Index* idx, faiss::idx_t base) {
    if (auto m = dynamic_cast<faiss::IndexIDMap*>(idx)) {
        // Insertion order: the id map's own order.
        for (size_t i = 0; i < m->id_map.size(); i++) m->id_map[i] = base + (faiss::idx_t)i;
        if (auto m2 = dynamic_cast<faiss::IndexIDMap2*>(idx)) m2->construct_rev_map();
    } else if (auto pt = dynamic_cast<faiss::IndexPreTransform*>(idx)) {
        renumber_rec(pt->index, base);
    } else if (auto ivf = dynamic_cast<faiss::IndexIVF*>(idx)) {
        auto al = dynamic_cast<faiss::ArrayInvertedLists*>(ivf->invlists);
        if (!al) throw std::runtime_error("renumbering ids needs in-memory inverted lists");
        auto dm = ivf->direct_map.type;
        if (dm != faiss::DirectMap::NoMap) ivf->set_direct_map_type(faiss::DirectMap::NoMap);
        // Id order (for ids 0..n given by add(), that is insertion order): new = base + rank.
        std::vector<std::pair<faiss::idx_t, std::pair<size_t, size_t>>> all;
        for (size_t l = 0; l < ivf->nlist; l++)
            for (size_t o = 0; o < al->ids[l].size(); o++) all.push_back({al->ids[l][o], {l, o}});
        std::stable_sort(all.begin(), all.end(),
                         [](const auto& a, const auto& b) { return a.first < b.first; });
        for (size_t r = 0; r < all.size(); r++)
            al->ids[all[r].second.first][all[r].second.second] = base + (faiss::idx_t)r;
        if (dm != faiss::DirectMap::NoMap) ivf->set_direct_map_type(dm);
    } else if (base != 0) {
        throw std::runtime_error("this index numbers its vectors by position and cannot store other ids");
    }
}

}  // namespace

extern "C" {

// Generic `dst->merge_from(*src, add_id)` (Flat codes, IVF, IDMap/IDMap2, PreTransform). FAISS
// checks compatibility before changing anything, so on error `dst` is unchanged.
int faissx_merge_from(void* dst, void* src, int64_t add_id, char* err, size_t errlen) {
    return guarded(err, errlen, [&] {
        static_cast<faiss::Index*>(dst)->merge_from(*static_cast<faiss::Index*>(src), add_id);
        return 0;
    });
}

// Ids (and, if x is non-null, reconstructed vectors, n × d) of positions i0 .. i0 + n.
int faissx_extract(const void* p, int64_t i0, int64_t n, int64_t* ids, float* x, char* err, size_t errlen) {
    return guarded(err, errlen, [&] {
        auto idx = static_cast<const faiss::Index*>(p);
        if (i0 < 0 || n < 0 || i0 + n > idx->ntotal) throw std::runtime_error("position range out of bounds");
        extract_rec(idx, i0, n, ids, x);
        return 0;
    });
}

// Give every stored vector the id base + position (IDMap, IDMap2, IVF; others only base 0).
int faissx_renumber(void* p, int64_t base, char* err, size_t errlen) {
    return guarded(err, errlen, [&] {
        renumber_rec(static_cast<faiss::Index*>(p), base);
        return 0;
    });
}

// Wrap `p` (ownership passes to the wrapper) in an IndexIDMap2 whose ids are the positions
// 0..ntotal, so that removing vectors keeps the others' ids. Returns null on error (and
// then `p` is still the caller's).
void* faissx_wrap_idmap2(void* p, char* err, size_t errlen) {
    auto idx = static_cast<faiss::Index*>(p);
    faiss::idx_t n = idx->ntotal;
    try {
        idx->ntotal = 0;  // IndexIDMap2's constructor insists on an empty index
        auto m = new faiss::IndexIDMap2(idx);
        idx->ntotal = n;
        m->own_fields = true;
        m->ntotal = n;
        m->id_map.resize(n);
        for (faiss::idx_t i = 0; i < n; i++) m->id_map[i] = i;
        m->construct_rev_map();
        return m;
    } catch (const std::exception& e) {
        idx->ntotal = n;
        copy_str(err, errlen, e.what());
        return nullptr;
    }
}

}  // extern "C"
