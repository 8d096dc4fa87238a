// faissx's C++ shim over FAISS: the few things FAISS's C API (c_api/) does not expose.
//   * describe an index (concrete class, nlist/nprobe, HNSW M/efSearch/efConstruction) through
//     its wrappers (IDMap, IDMap2, PreTransform, Refine);
//   * search with per-call parameters (SearchParametersIVF / SearchParametersHNSW), which is
//     const in FAISS and so safe for concurrent readers, unlike setting nprobe on the index.
// Compiled by build.rs with the `cc` crate against the headers of the FAISS that faiss-sys
// builds; the symbols come from that static libfaiss. Every function catches all exceptions
// and returns non-zero with the message in `err`.
#include <faiss/Index.h>
#include <faiss/IndexFlatCodes.h>
#include <faiss/IndexHNSW.h>
#include <faiss/IndexIDMap.h>
#include <faiss/IndexIVF.h>
#include <faiss/IndexPreTransform.h>
#include <faiss/IndexRefine.h>
#include <faiss/impl/HNSW.h>
#include <faiss/invlists/InvertedLists.h>
#include <faiss/invlists/OnDiskInvertedLists.h>

#include <algorithm>
#include <faiss/clone_index.h>
#include <faiss/index_io.h>

#include <cxxabi.h>
#include <fcntl.h>
#include <unistd.h>
#include <cstdio>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <exception>
#include <stdexcept>
#include <memory>
#include <string>
#include <typeinfo>
#include <vector>

extern "C" {

struct faissx_info {
    char type_name[128];   // outermost class, e.g. "IndexIDMap2"
    char inner_name[128];  // innermost class after unwrapping, e.g. "IndexIVFFlat"
    int64_t nlist;         // -1 if not IVF
    int64_t nprobe;        // -1 if not IVF
    int32_t hnsw_m;        // -1 if not HNSW
    int32_t ef_search;     // -1 if not HNSW
    int32_t ef_construction;
    int32_t idmap;         // 0 none, 1 IndexIDMap, 2 IndexIDMap2
    int32_t pretransform;  // 1 if an IndexPreTransform is in the chain
    int32_t ivf_quantizer_hnsw;
};
}

namespace {

void copy_str(char* dst, size_t cap, const std::string& s) {
    if (!dst || cap == 0) return;
    size_t n = s.size() < cap - 1 ? s.size() : cap - 1;
    memcpy(dst, s.data(), n);
    dst[n] = 0;
}

// The class of a float (faiss::Index) or binary (faiss::IndexBinary) index as Python names
// it: IndexIDMapTemplate<faiss::Index> is IndexIDMap, IndexIDMap2Template<faiss::IndexBinary>
// is IndexBinaryIDMap2.
template <class I>
std::string class_name(const I* idx) {
    const char* mangled = typeid(*idx).name();
    int status = 0;
    char* dem = abi::__cxa_demangle(mangled, nullptr, nullptr, &status);
    std::string s = (status == 0 && dem) ? dem : mangled;
    free(dem);
    if (s.rfind("faiss::", 0) == 0) s = s.substr(7);
    auto lt = s.find('<');
    if (lt != std::string::npos) {
        bool binary = s.find("IndexBinary", lt) != std::string::npos;
        s = s.substr(0, lt);
        const std::string tmpl = "Template";
        if (s.size() > tmpl.size() && s.compare(s.size() - tmpl.size(), tmpl.size(), tmpl) == 0)
            s = s.substr(0, s.size() - tmpl.size());
        if (binary && s.rfind("Index", 0) == 0) s = "IndexBinary" + s.substr(5);
    }
    return s;
}

// Walk wrappers down to the index that does the work.
const faiss::Index* unwrap(const faiss::Index* idx, faissx_info* info) {
    for (int depth = 0; depth < 16 && idx; depth++) {
        if (auto m2 = dynamic_cast<const faiss::IndexIDMap2*>(idx)) {
            if (info && !info->idmap) info->idmap = 2;
            idx = m2->index;
        } else if (auto m = dynamic_cast<const faiss::IndexIDMap*>(idx)) {
            if (info && !info->idmap) info->idmap = 1;
            idx = m->index;
        } else if (auto pt = dynamic_cast<const faiss::IndexPreTransform*>(idx)) {
            if (info) info->pretransform = 1;
            idx = pt->index;
        } else if (auto rf = dynamic_cast<const faiss::IndexRefine*>(idx)) {
            idx = rf->base_index;
        } else {
            break;
        }
    }
    return idx;
}

// IVF and HNSW facts and knobs of the innermost index, for float (IndexIVF, IndexHNSW) and
// binary (IndexBinaryIVF, IndexBinaryHNSW) indices alike.
template <class IVF, class HNSW, class I>
void fill_params(const I* inner, faissx_info* out) {
    if (auto ivf = dynamic_cast<const IVF*>(inner)) {
        out->nlist = ivf->nlist;
        out->nprobe = ivf->nprobe;
    }
    if (auto h = dynamic_cast<const HNSW*>(inner)) {
        out->hnsw_m = h->hnsw.nb_neighbors(1);
        out->ef_search = h->hnsw.efSearch;
        out->ef_construction = h->hnsw.efConstruction;
    }
}

// which = 0 nprobe, 1 efSearch, 2 efConstruction. Returns 2 if the index has no such knob.
template <class IVF, class HNSW, class I>
int set_param_on(I* inner, int which, int64_t value) {
    if (which == 0) {
        auto ivf = dynamic_cast<IVF*>(inner);
        if (!ivf) return 2;
        ivf->nprobe = value;
        return 0;
    }
    auto h = dynamic_cast<HNSW*>(inner);
    if (!h) return 2;
    if (which == 1) h->hnsw.efSearch = (int)value;
    else h->hnsw.efConstruction = (int)value;
    return 0;
}

}  // namespace

extern "C" {

int faissx_describe(const void* p, faissx_info* out, char* err, size_t errlen) {
    try {
        auto idx = static_cast<const faiss::Index*>(p);
        memset(out, 0, sizeof(*out));
        out->nlist = out->nprobe = -1;
        out->hnsw_m = out->ef_search = out->ef_construction = -1;
        copy_str(out->type_name, sizeof(out->type_name), class_name(idx));
        auto inner = unwrap(idx, out);
        copy_str(out->inner_name, sizeof(out->inner_name), class_name(inner));
        fill_params<faiss::IndexIVF, faiss::IndexHNSW>(inner, out);
        if (auto ivf = dynamic_cast<const faiss::IndexIVF*>(inner)) {
            if (dynamic_cast<const faiss::IndexHNSW*>(ivf->quantizer)) out->ivf_quantizer_hnsw = 1;
        }
        return 0;
    } catch (const std::exception& e) {
        copy_str(err, errlen, e.what());
        return 1;
    }
}

// Set a persistent parameter on the innermost index: which = 0 nprobe, 1 efSearch,
// 2 efConstruction. Returns 2 if the index has no such parameter.
int faissx_set_param(void* p, int which, int64_t value, char* err, size_t errlen) {
    try {
        auto inner = const_cast<faiss::Index*>(unwrap(static_cast<faiss::Index*>(p), nullptr));
        return set_param_on<faiss::IndexIVF, faiss::IndexHNSW>(inner, which, value);
    } catch (const std::exception& e) {
        copy_str(err, errlen, e.what());
        return 1;
    }
}

// k-NN search with per-call nprobe / efSearch (<= 0: the index's own setting). `x` is
// n × d row-major; D and I are n × k. Const on the index.
int faissx_search(const void* p, int64_t n, const float* x, int64_t k, int64_t nprobe,
                  int64_t ef_search, float* D, int64_t* I, char* err, size_t errlen) {
    try {
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
    } catch (const std::exception& e) {
        copy_str(err, errlen, e.what());
        return 1;
    }
}

}  // extern "C"

// ---- On-disk inverted lists (issue 5). FAISS's C API has no OnDiskInvertedLists. ----
namespace {
// OnDiskInvertedLists printf()s progress ("resizing …", "IO_FLAG_ONDISK_SAME_DIR: updating
// ondisk filename …") to stdout, which carries faissx's results. Send fd 1 to /dev/null for
// the duration of such calls.
struct QuietStdout {
    int saved = -1;
    QuietStdout() {
        fflush(stdout);
        int null_fd = open("/dev/null", O_WRONLY);
        if (null_fd < 0) return;
        saved = dup(1);
        if (saved >= 0) dup2(null_fd, 1);
        close(null_fd);
    }
    ~QuietStdout() {
        if (saved < 0) return;
        fflush(stdout);
        dup2(saved, 1);
        close(saved);
    }
};

faiss::IndexIVF* ivf_of(void* p) {
    auto inner = const_cast<faiss::Index*>(unwrap(static_cast<faiss::Index*>(p), nullptr));
    return dynamic_cast<faiss::IndexIVF*>(inner);
}
}  // namespace

extern "C" {

// Replace the (empty) inverted lists of a trained IVF index with on-disk lists stored in
// `path`. Returns 2 if the index is not IVF.
int faissx_ondisk_create(void* p, const char* path, char* err, size_t errlen) {
    try {
        auto ivf = ivf_of(p);
        if (!ivf) return 2;
        QuietStdout quiet;
        auto il = new faiss::OnDiskInvertedLists(ivf->nlist, ivf->code_size, path);
        ivf->replace_invlists(il, true);
        return 0;
    } catch (const std::exception& e) {
        copy_str(err, errlen, e.what());
        return 1;
    }
}

// Move every list of `shard` (an IVF index with the same quantizer) into the empty on-disk
// lists of `dst`, and count its vectors in dst->ntotal.
int faissx_ondisk_merge_shard(void* dst, void* shard, char* err, size_t errlen) {
    try {
        auto a = ivf_of(dst);
        auto b = ivf_of(shard);
        if (!a || !b) return 2;
        auto od = dynamic_cast<faiss::OnDiskInvertedLists*>(a->invlists);
        if (!od) return 2;
        // Same class, nlist, code size and coarse centroids (FAISS's own merge check), so
        // that lists from another index land in the right place.
        a->check_compatible_for_merge(*b);
        QuietStdout quiet;
        // FAISS merges only into empty on-disk lists (one exact-size layout); several shards
        // go through faissx_ondisk_merge_many in one pass.
        od->merge_from_1(b->invlists, false);
        a->ntotal += b->ntotal;
        static_cast<faiss::Index*>(dst)->ntotal = a->ntotal;
        return 0;
    } catch (const std::exception& e) {
        copy_str(err, errlen, e.what());
        return 1;
    }
}

// Merge the lists of `n` IVF indices (same quantizer; lists in memory, mapped or on disk,
// only read) into the empty on-disk lists of `dst` in one pass, so the data file is laid out
// exactly (FAISS's merge_ondisk).
int faissx_ondisk_merge_many(void* dst, void** srcs, int64_t n, char* err, size_t errlen) {
    try {
        auto a = ivf_of(dst);
        if (!a) return 2;
        auto od = dynamic_cast<faiss::OnDiskInvertedLists*>(a->invlists);
        if (!od) return 2;
        std::vector<const faiss::InvertedLists*> ils;
        faiss::idx_t added = 0;
        for (int64_t i = 0; i < n; i++) {
            auto b = ivf_of(srcs[i]);
            if (!b) return 2;
            a->check_compatible_for_merge(*b);
            ils.push_back(b->invlists);
            added += b->ntotal;
        }
        QuietStdout quiet;
        od->merge_from_multiple(ils.data(), (int)ils.size(), false, false);
        a->ntotal += added;
        static_cast<faiss::Index*>(dst)->ntotal = a->ntotal;
        return 0;
    } catch (const std::exception& e) {
        copy_str(err, errlen, e.what());
        return 1;
    }
}

// Point the on-disk lists at `path` (after renaming the data file) and/or set the number of
// prefetch threads (< 0: leave). Returns 2 if the lists are not on disk.
int faissx_ondisk_configure(void* p, const char* path, int prefetch_threads, char* err, size_t errlen) {
    try {
        auto ivf = ivf_of(p);
        if (!ivf) return 2;
        auto od = dynamic_cast<faiss::OnDiskInvertedLists*>(ivf->invlists);
        if (!od) return 2;
        if (path) od->filename = path;
        if (prefetch_threads >= 0) od->prefetch_nthread = prefetch_threads;
        return 0;
    } catch (const std::exception& e) {
        copy_str(err, errlen, e.what());
        return 1;
    }
}

// A copy of the bare IVF index `p` (its quantizer, training and parameters) with empty
// in-memory lists, without copying or touching p's lists (which may be mapped read-only or
// on disk): p's list pointer is swapped for an empty one while FAISS clones it. Returns 2 if
// `p` is not a bare IVF index.
int faissx_ivf_empty_clone(void* p, void** out, char* err, size_t errlen) {
    auto ivf = dynamic_cast<faiss::IndexIVF*>(static_cast<faiss::Index*>(p));
    if (!ivf) return 2;
    faiss::InvertedLists* saved = ivf->invlists;
    bool own = ivf->own_invlists;
    faiss::idx_t nt = ivf->ntotal;
    auto empty = new faiss::ArrayInvertedLists(ivf->nlist, ivf->code_size);
    ivf->invlists = empty;
    ivf->own_invlists = false;
    ivf->ntotal = 0;
    int rc = 0;
    try {
        *out = faiss::clone_index(ivf);
    } catch (const std::exception& e) {
        copy_str(err, errlen, e.what());
        rc = 1;
    }
    ivf->invlists = saved;
    ivf->own_invlists = own;
    ivf->ntotal = nt;
    delete empty;
    return rc;
}

// 1 if the index's inverted lists are on disk (OnDiskInvertedLists), else 0.
int faissx_is_ondisk(const void* p) {
    auto inner = unwrap(static_cast<const faiss::Index*>(p), nullptr);
    auto ivf = dynamic_cast<const faiss::IndexIVF*>(inner);
    return ivf && dynamic_cast<const faiss::OnDiskInvertedLists*>(ivf->invlists) ? 1 : 0;
}

}  // extern "C"

// ---- merge / split / bench support (issue 4) ------------------------------------------------
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
    try {
        static_cast<faiss::Index*>(dst)->merge_from(*static_cast<faiss::Index*>(src), add_id);
        return 0;
    } catch (const std::exception& e) {
        copy_str(err, errlen, e.what());
        return 1;
    }
}

// Ids (and, if x is non-null, reconstructed vectors, n × d) of positions i0 .. i0 + n.
int faissx_extract(const void* p, int64_t i0, int64_t n, int64_t* ids, float* x, char* err, size_t errlen) {
    try {
        auto idx = static_cast<const faiss::Index*>(p);
        if (i0 < 0 || n < 0 || i0 + n > idx->ntotal) throw std::runtime_error("position range out of bounds");
        extract_rec(idx, i0, n, ids, x);
        return 0;
    } catch (const std::exception& e) {
        copy_str(err, errlen, e.what());
        return 1;
    }
}

// Give every stored vector the id base + position (IDMap, IDMap2, IVF; others only base 0).
int faissx_renumber(void* p, int64_t base, char* err, size_t errlen) {
    try {
        renumber_rec(static_cast<faiss::Index*>(p), base);
        return 0;
    } catch (const std::exception& e) {
        copy_str(err, errlen, e.what());
        return 1;
    }
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
// ---- end merge / split / bench support ------------------------------------------------------


extern "C" {
// faiss::read_index (read_index_binary when `binary`) with stdout silenced (see
// QuietStdout). *out owns the result.
int faissx_read_index(const char* fname, int io_flags, int binary, void** out, char* err, size_t errlen) {
    try {
        QuietStdout quiet;
        if (binary) *out = faiss::read_index_binary(fname, io_flags);
        else *out = faiss::read_index(fname, io_flags);
        return 0;
    } catch (const std::exception& e) {
        copy_str(err, errlen, e.what());
        return 1;
    }
}
}  // extern "C"

// ---- Binary (Hamming) indices, for the server's BINARY_* index types. ----------------------
// The C API covers add/train/reconstruct/remove/range search of faiss::IndexBinary; these fill
// the same gaps as above: describe through IDMap wrappers, per-call nprobe, IDMap wrapping,
// and a clone that works for every binary type (faiss::clone_binary_index knows only
// Flat/IVF/HNSW) by a round trip through FAISS's own serialization.
#include <faiss/IndexBinary.h>
#include <faiss/IndexBinaryFlat.h>
#include <faiss/IndexBinaryHNSW.h>
#include <faiss/IndexBinaryIVF.h>
#include <faiss/impl/io.h>

namespace {
// The index under an IDMap/IDMap2 wrapper (idmap: 0 none, 1 IDMap, 2 IDMap2).
const faiss::IndexBinary* binary_unwrap(const faiss::IndexBinary* idx, int* idmap) {
    if (idmap) *idmap = 0;
    if (auto m2 = dynamic_cast<const faiss::IndexBinaryIDMap2*>(idx)) {
        if (idmap) *idmap = 2;
        return m2->index;
    }
    if (auto m = dynamic_cast<const faiss::IndexBinaryIDMap*>(idx)) {
        if (idmap) *idmap = 1;
        return m->index;
    }
    return idx;
}
}  // namespace

extern "C" {

int faissx_binary_describe(const void* p, faissx_info* out, char* err, size_t errlen) {
    try {
        auto idx = static_cast<const faiss::IndexBinary*>(p);
        memset(out, 0, sizeof(*out));
        out->nlist = out->nprobe = -1;
        out->hnsw_m = out->ef_search = out->ef_construction = -1;
        copy_str(out->type_name, sizeof(out->type_name), class_name(idx));
        int idmap = 0;
        auto inner = binary_unwrap(idx, &idmap);
        out->idmap = idmap;
        copy_str(out->inner_name, sizeof(out->inner_name), class_name(inner));
        fill_params<faiss::IndexBinaryIVF, faiss::IndexBinaryHNSW>(inner, out);
        return 0;
    } catch (const std::exception& e) {
        copy_str(err, errlen, e.what());
        return 1;
    }
}

// As faissx_set_param, for binary indices.
int faissx_binary_set_param(void* p, int which, int64_t value, char* err, size_t errlen) {
    try {
        auto inner = const_cast<faiss::IndexBinary*>(binary_unwrap(static_cast<faiss::IndexBinary*>(p), nullptr));
        return set_param_on<faiss::IndexBinaryIVF, faiss::IndexBinaryHNSW>(inner, which, value);
    } catch (const std::exception& e) {
        copy_str(err, errlen, e.what());
        return 1;
    }
}

// k-NN search of n packed codes (n × code_size bytes) with a per-call nprobe (<= 0: the
// index's own). Hamming distances (int32) and labels are n × k. Const on the index:
// IndexBinaryIVF::search takes no parameters, so this runs its two steps (coarse
// assignment, search_preassigned) with an IVFSearchParameters, and maps labels through an
// IDMap wrapper as IndexBinaryIDMap::search would.
int faissx_binary_search(const void* p, int64_t n, const uint8_t* x, int64_t k, int64_t nprobe,
                         int32_t* D, int64_t* I, char* err, size_t errlen) {
    try {
        auto idx = static_cast<const faiss::IndexBinary*>(p);
        auto inner = binary_unwrap(idx, nullptr);
        auto ivf = dynamic_cast<const faiss::IndexBinaryIVF*>(inner);
        if (!ivf || nprobe <= 0) {
            idx->search(n, x, k, D, I);
            return 0;
        }
        faiss::IVFSearchParameters sp;
        sp.nprobe = std::min<int64_t>(nprobe, ivf->nlist);
        std::vector<faiss::idx_t> assign(n * sp.nprobe);
        std::vector<int32_t> coarse(n * sp.nprobe);
        ivf->quantizer->search(n, x, sp.nprobe, coarse.data(), assign.data());
        ivf->search_preassigned(n, x, k, assign.data(), coarse.data(), D, I, false, &sp);
        if (auto m = dynamic_cast<const faiss::IndexBinaryIDMap*>(idx)) {
            for (int64_t i = 0; i < n * k; i++) {
                if (I[i] >= 0) I[i] = m->id_map[I[i]];
            }
        }
        return 0;
    } catch (const std::exception& e) {
        copy_str(err, errlen, e.what());
        return 1;
    }
}

// Wrap an empty binary index in IndexBinaryIDMap (v2: IndexBinaryIDMap2), which owns it.
int faissx_binary_wrap_idmap(void* p, int v2, void** out, char* err, size_t errlen) {
    try {
        auto idx = static_cast<faiss::IndexBinary*>(p);
        faiss::IndexBinaryIDMap* m = v2 ? new faiss::IndexBinaryIDMap2(idx) : new faiss::IndexBinaryIDMap(idx);
        m->own_fields = true;
        *out = m;
        return 0;
    } catch (const std::exception& e) {
        copy_str(err, errlen, e.what());
        return 1;
    }
}

// Deep copy of any binary index (write_index_binary + read_index_binary in memory).
int faissx_binary_clone(const void* p, void** out, char* err, size_t errlen) {
    try {
        faiss::VectorIOWriter w;
        faiss::write_index_binary(static_cast<const faiss::IndexBinary*>(p), &w);
        faiss::VectorIOReader r;
        r.data = std::move(w.data);
        *out = faiss::read_index_binary(&r);
        return 0;
    } catch (const std::exception& e) {
        copy_str(err, errlen, e.what());
        return 1;
    }
}

}  // extern "C"

// ---- Reconstruct from IVF indices without a direct map. ---------------------------------------
// FAISS's IndexIVF::reconstruct needs a direct map (make_direct_map), which servers do not
// keep (it costs memory per vector and an Array map refuses add_with_ids). These find the id
// in the inverted lists instead: O(ntotal) over the stored ids, then one decode. Float and
// binary IVF, bare or under IndexIDMap2 (whose rev_map turns a user id into the IVF's id).
namespace {
template <class IVF, class IDMap2, class Base, class Code>
int ivf_reconstruct_scan(const Base* idx, int64_t key, Code* out) {
    if (auto m2 = dynamic_cast<const IDMap2*>(idx)) {
        auto it = m2->rev_map.find(key);
        if (it == m2->rev_map.end()) return 3;
        key = it->second;
        idx = m2->index;
    }
    auto ivf = dynamic_cast<const IVF*>(idx);
    if (!ivf || ivf->direct_map.type != faiss::DirectMap::NoMap) return 2;
    for (size_t l = 0; l < ivf->nlist; l++) {
        size_t n = ivf->invlists->list_size(l);
        if (n == 0) continue;
        faiss::InvertedLists::ScopedIds ids(ivf->invlists, l);
        for (size_t o = 0; o < n; o++) {
            if (ids[o] == key) {
                ivf->reconstruct_from_offset(l, o, out);
                return 0;
            }
        }
    }
    return 3;
}
}  // namespace

extern "C" {

// Reconstruct `key` (d floats, or d/8 bytes when `binary`) by scanning IVF lists. Returns
// 0 done, 2 not an IVF index without a direct map (use FAISS's reconstruct), 3 no such id.
int faissx_ivf_reconstruct(const void* p, int binary, int64_t key, void* out, char* err, size_t errlen) {
    try {
        if (binary) {
            return ivf_reconstruct_scan<faiss::IndexBinaryIVF, faiss::IndexBinaryIDMap2>(
                    static_cast<const faiss::IndexBinary*>(p), key, static_cast<uint8_t*>(out));
        }
        return ivf_reconstruct_scan<faiss::IndexIVF, faiss::IndexIDMap2>(
                static_cast<const faiss::Index*>(p), key, static_cast<float*>(out));
    } catch (const std::exception& e) {
        copy_str(err, errlen, e.what());
        return 1;
    }
}

// Codes of ids i0..i0+n of a binary IVF index into out (n × code_size bytes, zeros for ids
// not stored), as IndexBinaryIVF::reconstruct_n means to (FAISS 1.12's steps by d, not by
// code_size, and writes past the end). Returns 2 if the index is not a bare binary IVF.
int faissx_binary_ivf_reconstruct_n(const void* p, int64_t i0, int64_t n, uint8_t* out, char* err, size_t errlen) {
    try {
        auto ivf = dynamic_cast<const faiss::IndexBinaryIVF*>(static_cast<const faiss::IndexBinary*>(p));
        if (!ivf) return 2;
        memset(out, 0, n * ivf->code_size);
        for (size_t l = 0; l < ivf->nlist; l++) {
            size_t len = ivf->invlists->list_size(l);
            if (len == 0) continue;
            faiss::InvertedLists::ScopedIds ids(ivf->invlists, l);
            for (size_t o = 0; o < len; o++) {
                if (ids[o] >= i0 && ids[o] < i0 + n) {
                    ivf->reconstruct_from_offset(l, o, out + (ids[o] - i0) * ivf->code_size);
                }
            }
        }
        return 0;
    } catch (const std::exception& e) {
        copy_str(err, errlen, e.what());
        return 1;
    }
}

}  // extern "C"
