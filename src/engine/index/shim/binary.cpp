// Binary (Hamming) indices (faiss::IndexBinary), for the server's BINARY_* index types. The C
// API covers add/train/reconstruct/remove/range search; these fill the same gaps as for
// float indices: per-call nprobe, IDMap wrapping, a clone that works for every binary type
// (faiss::clone_binary_index knows only Flat/IVF/HNSW) by a round trip through FAISS's own
// serialization, and a reconstruct_n that stays inside its output. Describe and set_param
// are in index.cpp. Rust side: src/engine/index/ffi/binary.rs.
#include "shim.h"

using namespace faissx_shim;

extern "C" {

// k-NN search of n packed codes (n × code_size bytes) with a per-call nprobe (<= 0: the
// index's own). Hamming distances (int32) and labels are n × k. Const on the index:
// IndexBinaryIVF::search takes no parameters, so this runs its two steps (coarse
// assignment, search_preassigned) with an IVFSearchParameters, and maps labels through an
// IDMap wrapper as IndexBinaryIDMap::search would.
int faissx_binary_search(const void* p, int64_t n, const uint8_t* x, int64_t k, int64_t nprobe,
                         int32_t* D, int64_t* I, char* err, size_t errlen) {
    return guarded(err, errlen, [&] {
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
    });
}

// Wrap an empty binary index in IndexBinaryIDMap (v2: IndexBinaryIDMap2), which owns it.
int faissx_binary_wrap_idmap(void* p, int v2, void** out, char* err, size_t errlen) {
    return guarded(err, errlen, [&] {
        auto idx = static_cast<faiss::IndexBinary*>(p);
        faiss::IndexBinaryIDMap* m = v2 ? new faiss::IndexBinaryIDMap2(idx) : new faiss::IndexBinaryIDMap(idx);
        m->own_fields = true;
        *out = m;
        return 0;
    });
}

// Deep copy of any binary index (write_index_binary + read_index_binary in memory).
int faissx_binary_clone(const void* p, void** out, char* err, size_t errlen) {
    return guarded(err, errlen, [&] {
        faiss::VectorIOWriter w;
        faiss::write_index_binary(static_cast<const faiss::IndexBinary*>(p), &w);
        faiss::VectorIOReader r;
        r.data = std::move(w.data);
        *out = faiss::read_index_binary(&r);
        return 0;
    });
}

// Codes of ids i0..i0+n of a binary IVF index into out (n × code_size bytes, zeros for ids
// not stored), as IndexBinaryIVF::reconstruct_n means to (FAISS 1.12's steps by d, not by
// code_size, and writes past the end). Returns 2 if the index is not a bare binary IVF.
int faissx_binary_ivf_reconstruct_n(const void* p, int64_t i0, int64_t n, uint8_t* out, char* err, size_t errlen) {
    return guarded(err, errlen, [&] {
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
    });
}

}  // extern "C"
