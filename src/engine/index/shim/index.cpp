// What float (faiss::Index) and binary (faiss::IndexBinary) indices share: describe, set a
// parameter, read a file, reconstruct from IVF lists. Each takes `binary` to say which kind
// `p` points to. Rust side: src/engine/index/ffi/mod.rs.
#include "shim.h"

using namespace faissx_shim;

namespace {

// IVF and HNSW facts and knobs of the innermost index, for float (IndexIVF, IndexHNSW) and
// binary (IndexBinaryIVF, IndexBinaryHNSW) indices alike.
template <class IVF, class HNSW, class I>
void fill_params(const I* inner, faissx_info* out) {
    if (auto ivf = dynamic_cast<const IVF*>(inner)) {
        out->nlist = ivf->nlist;
        out->nprobe = ivf->nprobe;
        if (dynamic_cast<const HNSW*>(ivf->quantizer)) out->ivf_quantizer_hnsw = 1;
    }
    if (auto h = dynamic_cast<const HNSW*>(inner)) {
        out->hnsw_m = h->hnsw.nb_neighbors(1);
        out->ef_search = h->hnsw.efSearch;
        out->ef_construction = h->hnsw.efConstruction;
    }
}

// Class names through the wrappers (`unwrap_inner` finds the inner index and notes IDMap /
// PreTransform in `out`) and the inner index's IVF / HNSW facts.
template <class IVF, class HNSW, class I, class Unwrap>
void describe_index(const I* idx, faissx_info* out, Unwrap unwrap_inner) {
    memset(out, 0, sizeof(*out));
    out->nlist = out->nprobe = -1;
    out->hnsw_m = out->ef_search = out->ef_construction = -1;
    copy_str(out->type_name, sizeof(out->type_name), class_name(idx));
    auto inner = unwrap_inner(idx, out);
    copy_str(out->inner_name, sizeof(out->inner_name), class_name(inner));
    fill_params<IVF, HNSW>(inner, out);
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

// FAISS's IndexIVF::reconstruct needs a direct map (make_direct_map), which servers do not
// keep (it costs memory per vector and an Array map refuses add_with_ids). This finds the id
// in the inverted lists instead: O(ntotal) over the stored ids, then one decode. Float and
// binary IVF, bare or under IndexIDMap2 (whose rev_map turns a user id into the IVF's id).
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

int faissx_describe(const void* p, int binary, faissx_info* out, char* err, size_t errlen) {
    return guarded(err, errlen, [&] {
        if (binary) {
            auto unwrap_binary = [](const faiss::IndexBinary* idx, faissx_info* info) {
                int idmap = 0;
                auto inner = binary_unwrap(idx, &idmap);
                info->idmap = idmap;
                return inner;
            };
            describe_index<faiss::IndexBinaryIVF, faiss::IndexBinaryHNSW>(
                    static_cast<const faiss::IndexBinary*>(p), out, unwrap_binary);
        } else {
            describe_index<faiss::IndexIVF, faiss::IndexHNSW>(static_cast<const faiss::Index*>(p), out, unwrap);
        }
        return 0;
    });
}

// Set a persistent parameter on the innermost index: which = 0 nprobe, 1 efSearch,
// 2 efConstruction. Returns 2 if the index has no such parameter.
int faissx_set_param(void* p, int binary, int which, int64_t value, char* err, size_t errlen) {
    return guarded(err, errlen, [&] {
        if (binary) {
            auto inner = const_cast<faiss::IndexBinary*>(binary_unwrap(static_cast<faiss::IndexBinary*>(p), nullptr));
            return set_param_on<faiss::IndexBinaryIVF, faiss::IndexBinaryHNSW>(inner, which, value);
        }
        auto inner = const_cast<faiss::Index*>(unwrap(static_cast<faiss::Index*>(p), nullptr));
        return set_param_on<faiss::IndexIVF, faiss::IndexHNSW>(inner, which, value);
    });
}

// faiss::read_index (read_index_binary when `binary`) with stdout silenced (see
// QuietStdout). *out owns the result.
int faissx_read_index(const char* fname, int io_flags, int binary, void** out, char* err, size_t errlen) {
    return guarded(err, errlen, [&] {
        QuietStdout quiet;
        if (binary) *out = faiss::read_index_binary(fname, io_flags);
        else *out = faiss::read_index(fname, io_flags);
        return 0;
    });
}

// Reconstruct `key` (d floats, or d/8 bytes when `binary`) by scanning IVF lists. Returns
// 0 done, 2 not an IVF index without a direct map (use FAISS's reconstruct), 3 no such id.
int faissx_ivf_reconstruct(const void* p, int binary, int64_t key, void* out, char* err, size_t errlen) {
    return guarded(err, errlen, [&] {
        if (binary) {
            return ivf_reconstruct_scan<faiss::IndexBinaryIVF, faiss::IndexBinaryIDMap2>(
                    static_cast<const faiss::IndexBinary*>(p), key, static_cast<uint8_t*>(out));
        }
        return ivf_reconstruct_scan<faiss::IndexIVF, faiss::IndexIDMap2>(
                static_cast<const faiss::Index*>(p), key, static_cast<float*>(out));
    });
}

}  // extern "C"
