#include <faiss/IndexFlat.h>
#include <faiss/utils/distances.h>
#include <omp.h>
#include <chrono>
#include <cstdio>
#include <vector>
#include <random>
using namespace std::chrono;
int main(){
  omp_set_num_threads(1);
  int d=128,n=10000,nq=4000,k=10; std::mt19937 rng(1); std::uniform_real_distribution<float> u;
  std::vector<float> xb(n*d),xq(nq*d); for(auto&v:xb)v=u(rng); for(auto&v:xq)v=u(rng);
  faiss::IndexFlatL2 idx(d); idx.add(n,xb.data());
  std::vector<float> D(k*64); std::vector<faiss::idx_t> I(k*64);
  for(int thr : {20,0}) for(int b : {1,2,4,8,16,32}){
    faiss::distance_compute_blas_threshold=thr;
    auto t0=steady_clock::now();
    for(int q=0;q+b<=nq;q+=b) idx.search(b,xq.data()+q*d,k,D.data(),I.data());
    auto t1=steady_clock::now();
    printf("thr %2d batch %2d: %.1f us/query\n",thr,b,duration<double,std::micro>(t1-t0).count()/nq);
  }
}
