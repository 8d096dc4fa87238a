#include <faiss/IndexFlat.h>
#include <faiss/impl/IDSelector.h>
#include <faiss/utils/Heap.h>
#include <omp.h>
#include <atomic>
#include <thread>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <vector>
#include <random>
#include <linux/futex.h>
#include <sys/syscall.h>
#include <sys/resource.h>
#include <unistd.h>
using namespace std::chrono;
static std::atomic<int> job{0}; // 0 idle, 1 posted, 2 done
static std::atomic<int> sleeping{0};
static void fwait(std::atomic<int>*a,int v){syscall(SYS_futex,(int*)a,FUTEX_WAIT_PRIVATE,v,nullptr,nullptr,0);}
static void fwake(std::atomic<int>*a){syscall(SYS_futex,(int*)a,FUTEX_WAKE_PRIVATE,1,nullptr,nullptr,0);}
double cpu(){rusage r;getrusage(RUSAGE_SELF,&r);return r.ru_utime.tv_sec+r.ru_stime.tv_sec+(r.ru_utime.tv_usec+r.ru_stime.tv_usec)*1e-6;}
int main(int argc,char**argv){
  omp_set_num_threads(1); long spin_us=atol(argv[1]); int gap_us=atoi(argv[2]);
  int d=128,n=10000,nq=4000,k=10; std::mt19937 rng(1); std::uniform_real_distribution<float> u;
  std::vector<float> xb(n*d),xq(nq*d); for(auto&v:xb)v=u(rng); for(auto&v:xq)v=u(rng);
  faiss::IndexFlatL2 idx(d); idx.add(n,xb.data());
  faiss::IDSelectorRange ra(0,n/2), rb(n/2,n); faiss::SearchParameters pa,pb; pa.sel=&ra; pb.sel=&rb;
  float Da[10],Db[10],D[10]; faiss::idx_t Ia[10],Ib[10],I[10];
  const float* cur=nullptr;
  std::thread h([&]{ for(;;){ auto t0=steady_clock::now(); int j;
      while((j=job.load(std::memory_order_acquire))!=1){ if(j==3)return; if(duration_cast<microseconds>(steady_clock::now()-t0).count()>=spin_us){ sleeping.store(1); if(job.load()==0) fwait(&job,0); sleeping.store(0); t0=steady_clock::now(); } }
      idx.search(1,cur,k,Db,Ib,&pb); job.store(2,std::memory_order_release);} });
  for(int mode=0;mode<2;mode++){
    double c0=cpu(); auto t0=steady_clock::now();
    for(int q=0;q<nq;q++){ const float*x=xq.data()+q*d;
      if(gap_us){auto g=steady_clock::now(); while(duration_cast<microseconds>(steady_clock::now()-g).count()<gap_us);} 
      if(mode==0){ idx.search(1,x,k,D,I); continue; }
      cur=x; job.store(1,std::memory_order_release); if(sleeping.load()) fwake(&job);
      idx.search(1,x,k,Da,Ia,&pa);
      while(job.load(std::memory_order_acquire)!=2){}
      job.store(0);
      // merge
      int a=0,b=0; for(int i=0;i<k;i++){ if(Da[a]<=Db[b]){D[i]=Da[a];I[i]=Ia[a++];} else {D[i]=Db[b];I[i]=Ib[b++];} }
    }
    double el=duration<double>(steady_clock::now()-t0).count(); double c=cpu()-c0;
    printf("%s spin=%ldus gap=%dus: %.1f us/query wall, cpu %.1f us/query\n",mode?"split":"single",spin_us,gap_us,el/nq*1e6,c/nq*1e6);
  }
  job.store(3); fwake(&job); h.join();
}
