// faissx's C++ shim over FAISS: the few things FAISS's C API (c_api/) does not expose.
//   * describe an index (concrete class, nlist/nprobe, HNSW M/efSearch/efConstruction) through
//     its wrappers (IDMap, IDMap2, PreTransform, Refine);
//   * search with per-call parameters (SearchParametersIVF / SearchParametersHNSW), which is
//     const in FAISS and so safe for concurrent readers, unlike setting nprobe on the index.
// Compiled by build.rs with the `cc` crate against the headers of the FAISS that faiss-sys
// builds; the symbols come from that static libfaiss. Every function catches all exceptions
// and returns non-zero with the message in `err`.
#include <faiss/Index.h>
#include <faiss/IndexHNSW.h>
#include <faiss/IndexIDMap.h>
#include <faiss/IndexIVF.h>
#include <faiss/IndexPreTransform.h>
#include <faiss/IndexRefine.h>
#include <faiss/impl/HNSW.h>

#include <cxxabi.h>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <exception>
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

std::string class_name(const faiss::Index* idx) {
    const char* mangled = typeid(*idx).name();
    int status = 0;
    char* dem = abi::__cxa_demangle(mangled, nullptr, nullptr, &status);
    std::string s = (status == 0 && dem) ? dem : mangled;
    free(dem);
    if (s.rfind("faiss::", 0) == 0) s = s.substr(7);
    auto lt = s.find('<');
    if (lt != std::string::npos) s = s.substr(0, lt);
    // IndexIDMapTemplate<Index> is what Python calls IndexIDMap.
    const std::string tmpl = "Template";
    if (s.size() > tmpl.size() && s.compare(s.size() - tmpl.size(), tmpl.size(), tmpl) == 0)
        s = s.substr(0, s.size() - tmpl.size());
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
        if (auto ivf = dynamic_cast<const faiss::IndexIVF*>(inner)) {
            out->nlist = ivf->nlist;
            out->nprobe = ivf->nprobe;
            if (dynamic_cast<const faiss::IndexHNSW*>(ivf->quantizer)) out->ivf_quantizer_hnsw = 1;
        }
        if (auto h = dynamic_cast<const faiss::IndexHNSW*>(inner)) {
            out->hnsw_m = h->hnsw.nb_neighbors(1);
            out->ef_search = h->hnsw.efSearch;
            out->ef_construction = h->hnsw.efConstruction;
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
        if (which == 0) {
            auto ivf = dynamic_cast<faiss::IndexIVF*>(inner);
            if (!ivf) return 2;
            ivf->nprobe = value;
            return 0;
        }
        auto h = dynamic_cast<faiss::IndexHNSW*>(inner);
        if (!h) return 2;
        if (which == 1) h->hnsw.efSearch = (int)value;
        else h->hnsw.efConstruction = (int)value;
        return 0;
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
