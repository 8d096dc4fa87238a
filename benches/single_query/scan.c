#include <immintrin.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>
static double now(){struct timespec t;clock_gettime(CLOCK_MONOTONIC,&t);return t.tv_sec+t.tv_nsec*1e-9;}
int main(){
  size_t n=10000,d=128; float*y=aligned_alloc(64,n*d*4); float x[128];
  for(size_t i=0;i<n*d;i++)y[i]=rand()/(float)RAND_MAX; for(int i=0;i<128;i++)x[i]=0.5f;
  float *out=malloc(n*4); volatile float sink=0;
  for(int rep=0;rep<3;rep++){
  double t0=now();
  for(int it=0;it<2000;it++){ __m256 a0=_mm256_setzero_ps(),a1=a0,a2=a0,a3=a0;
    for(size_t i=0;i<n*d;i+=32){a0=_mm256_add_ps(a0,_mm256_load_ps(y+i));a1=_mm256_add_ps(a1,_mm256_load_ps(y+i+8));a2=_mm256_add_ps(a2,_mm256_load_ps(y+i+16));a3=_mm256_add_ps(a3,_mm256_load_ps(y+i+24));}
    __m256 s=_mm256_add_ps(_mm256_add_ps(a0,a1),_mm256_add_ps(a2,a3)); float f[8]; _mm256_storeu_ps(f,s); sink+=f[0];}
  double t1=now();
  for(int it=0;it<2000;it++){ for(size_t j=0;j<n;j++){ const float*yj=y+j*d; __m256 a0=_mm256_setzero_ps(),a1=a0;
      for(int k=0;k<128;k+=16){__m256 d0=_mm256_sub_ps(_mm256_load_ps(x+k),_mm256_load_ps(yj+k));__m256 d1=_mm256_sub_ps(_mm256_loadu_ps(x+k+8),_mm256_load_ps(yj+k+8));a0=_mm256_fmadd_ps(d0,d0,a0);a1=_mm256_fmadd_ps(d1,d1,a1);}
      __m256 s=_mm256_add_ps(a0,a1); __m128 h=_mm_add_ps(_mm256_castps256_ps128(s),_mm256_extractf128_ps(s,1)); h=_mm_hadd_ps(h,h);h=_mm_hadd_ps(h,h); out[j]=_mm_cvtss_f32(h);} sink+=out[7];}
  double t2=now();
  printf("scan %.1f us  (%.1f GB/s)   l2 %.1f us\n",(t1-t0)/2000*1e6, n*d*4/((t1-t0)/2000)/1e9,(t2-t1)/2000*1e6);}
}
