# faiss-cpu (the PyPI wheel) single-query IndexFlatL2 search on the same shape: 10k x 128, k=10, one thread.
import faiss, numpy as np, time
faiss.omp_set_num_threads(1)
rng=np.random.default_rng(1); xb=rng.random((10000,128),dtype='float32'); xq=rng.random((2000,128),dtype='float32')
idx=faiss.IndexFlatL2(128); idx.add(xb)
for rep in range(3):
    t=time.perf_counter()
    for i in range(2000): idx.search(xq[i:i+1],10)
    print("%.1f us/query"%((time.perf_counter()-t)/2000*1e6))
print("faiss", faiss.__version__, faiss.get_compile_options())
