// faissx's C++ shim over FAISS: the few things FAISS's C API (c_api/) does not expose.
//   * describe an index (concrete class, nlist/nprobe, HNSW M/efSearch/efConstruction) through
//     its wrappers (IDMap, IDMap2, PreTransform, Refine), float and binary alike (index.cpp);
//   * search with per-call parameters (SearchParametersIVF / SearchParametersHNSW), which is
//     const in FAISS and so safe for concurrent readers, unlike setting nprobe on the index
//     (float.cpp, binary.cpp);
//   * search restricted to a set of ids: an IDSelector in per-call SearchParameters through
//     the wrappers, or an exact scan of the matching vectors (select.cpp);
//   * on-disk inverted lists (ondisk.cpp); merge, extract and renumber (float.cpp);
//   * training without FAISS's unconditional "WARNING clustering" lines on stderr, and
//     FAISS's interrupt callback tied to faissx's stop flag (train.cpp).
// Compiled by build.rs with the `cc` crate against the headers of the FAISS that faiss-sys
// builds; the symbols come from that static libfaiss. Every function catches all exceptions
// (`guarded`) and returns non-zero with the message in `err`. The Rust side is
// src/engine/index/ffi/, file for file.
#pragma once

#include <faiss/Index.h>
#include <faiss/IndexBinary.h>
#include <faiss/IndexBinaryFlat.h>
#include <faiss/IndexBinaryHNSW.h>
#include <faiss/IndexBinaryIVF.h>
#include <faiss/IndexFlatCodes.h>
#include <faiss/IndexHNSW.h>
#include <faiss/IndexIDMap.h>
#include <faiss/IndexIVF.h>
#include <faiss/IndexPreTransform.h>
#include <faiss/IndexAdditiveQuantizer.h>
#include <faiss/IndexIVFAdditiveQuantizer.h>
#include <faiss/IndexIVFPQ.h>
#include <faiss/IndexIVFPQFastScan.h>
#include <faiss/IndexIVFPQR.h>
#include <faiss/IndexPQ.h>
#include <faiss/IndexPQFastScan.h>
#include <faiss/IndexRefine.h>
#include <faiss/VectorTransform.h>
#include <faiss/impl/AuxIndexStructures.h>
#include <faiss/clone_index.h>
#include <faiss/impl/HNSW.h>
#include <faiss/impl/io.h>
#include <faiss/index_io.h>
#include <faiss/invlists/InvertedLists.h>
#include <faiss/invlists/OnDiskInvertedLists.h>

#include <cxxabi.h>
#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <exception>
#include <memory>
#include <stdexcept>
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

namespace faissx_shim {

inline void copy_str(char* dst, size_t cap, const std::string& s) {
    if (!dst || cap == 0) return;
    size_t n = s.size() < cap - 1 ? s.size() : cap - 1;
    memcpy(dst, s.data(), n);
    dst[n] = 0;
}

// Run `body` (which returns the function's status code), turning an exception into status 1
// with its message in `err`: no exception may cross into Rust.
template <class F>
int guarded(char* err, size_t errlen, F&& body) {
    try {
        return body();
    } catch (const std::exception& e) {
        copy_str(err, errlen, e.what());
        return 1;
    }
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
inline const faiss::Index* unwrap(const faiss::Index* idx, faissx_info* info) {
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

// The binary index under an IDMap/IDMap2 wrapper (idmap: 0 none, 1 IDMap, 2 IDMap2).
inline const faiss::IndexBinary* binary_unwrap(const faiss::IndexBinary* idx, int* idmap) {
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

// OnDiskInvertedLists and FAISS's readers printf() progress ("resizing …",
// "IO_FLAG_ONDISK_SAME_DIR: updating ondisk filename …") to stdout, which carries faissx's
// results. Send fd 1 to /dev/null for the duration of such calls.
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

}  // namespace faissx_shim
