// On-disk inverted lists (issue 5): FAISS's C API has no OnDiskInvertedLists. Rust side:
// the on-disk methods of RawIndex in src/engine/index/ffi/float.rs.
#include "shim.h"

using namespace faissx_shim;

namespace {
faiss::IndexIVF* ivf_of(void* p) {
    auto inner = const_cast<faiss::Index*>(unwrap(static_cast<faiss::Index*>(p), nullptr));
    return dynamic_cast<faiss::IndexIVF*>(inner);
}

// The on-disk lists of IVF index `p`, or null when it is not IVF or its lists are elsewhere.
faiss::OnDiskInvertedLists* ondisk_of(faiss::IndexIVF* ivf) {
    return ivf ? dynamic_cast<faiss::OnDiskInvertedLists*>(ivf->invlists) : nullptr;
}
}  // namespace

extern "C" {

// Replace the (empty) inverted lists of a trained IVF index with on-disk lists stored in
// `path`. Returns 2 if the index is not IVF.
int faissx_ondisk_create(void* p, const char* path, char* err, size_t errlen) {
    return guarded(err, errlen, [&] {
        auto ivf = ivf_of(p);
        if (!ivf) return 2;
        QuietStdout quiet;
        auto il = new faiss::OnDiskInvertedLists(ivf->nlist, ivf->code_size, path);
        ivf->replace_invlists(il, true);
        return 0;
    });
}

// Move every list of `shard` (an IVF index with the same quantizer) into the empty on-disk
// lists of `dst`, and count its vectors in dst->ntotal.
int faissx_ondisk_merge_shard(void* dst, void* shard, char* err, size_t errlen) {
    return guarded(err, errlen, [&] {
        auto a = ivf_of(dst);
        auto b = ivf_of(shard);
        auto od = ondisk_of(a);
        if (!od || !b) return 2;
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
    });
}

// Merge the lists of `n` IVF indices (same quantizer; lists in memory, mapped or on disk,
// only read) into the empty on-disk lists of `dst` in one pass, so the data file is laid out
// exactly (FAISS's merge_ondisk).
int faissx_ondisk_merge_many(void* dst, void** srcs, int64_t n, char* err, size_t errlen) {
    return guarded(err, errlen, [&] {
        auto a = ivf_of(dst);
        auto od = ondisk_of(a);
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
    });
}

// Point the on-disk lists at `path` (after renaming the data file) and/or set the number of
// prefetch threads (< 0: leave). Returns 2 if the lists are not on disk.
int faissx_ondisk_configure(void* p, const char* path, int prefetch_threads, char* err, size_t errlen) {
    return guarded(err, errlen, [&] {
        auto od = ondisk_of(ivf_of(p));
        if (!od) return 2;
        if (path) od->filename = path;
        if (prefetch_threads >= 0) od->prefetch_nthread = prefetch_threads;
        return 0;
    });
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
    int rc = guarded(err, errlen, [&] {
        *out = faiss::clone_index(ivf);
        return 0;
    });
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
