#include <cstdio>
#include <cuda_runtime.h>
template <int MODE>
__global__ void k(unsigned* out, long long* cyc, int iters) {
  float a[8];
  unsigned h[4] = {0, 0, 0, 0};
  for (int i = 0; i < 8; ++i) a[i] = -(threadIdx.x * 1e-3f + i * 1e-4f);
  __syncthreads();
  long long t0 = clock64();
  for (int it = 0; it < iters; ++it) {
#pragma unroll
    for (int i = 0; i < 8; ++i) {
      if (MODE & 4) asm volatile("fma.rn.f32 %0, %0, 0f3F000000, 0fBF000000;" : "+f"(a[i]));
      if (MODE & 1) asm volatile("ex2.approx.ftz.f32 %0, %0;" : "+f"(a[i]));
    }
    if (MODE & 2) {
#pragma unroll
      for (int i = 0; i < 4; ++i) {
        unsigned r;
        asm volatile("cvt.rn.f16x2.f32 %0, %1, %2;" : "=r"(r) : "f"(a[2 * i]), "f"(a[2 * i + 1]));
        h[i] ^= r;
      }
    }
    if (MODE & 8) {
#pragma unroll
      for (int i = 0; i < 4; ++i) {
        unsigned r;
        asm volatile("cvt.rn.bf16x2.f32 %0, %1, %2;" : "=r"(r) : "f"(a[2 * i]), "f"(a[2 * i + 1]));
        h[i] ^= r;
      }
    }
  }
  __syncthreads();
  long long t1 = clock64();
  unsigned s = h[0] ^ h[1] ^ h[2] ^ h[3];
  for (int i = 0; i < 8; ++i) s ^= __float_as_uint(a[i]);
  out[blockIdx.x * blockDim.x + threadIdx.x] = s;
  if (threadIdx.x == 0) cyc[blockIdx.x] = t1 - t0;
}
template <int MODE>
void run(const char* name, int sms, int bps, int threads, int iters, double mufu, double cvt, double ffma) {
  unsigned* out; long long* cyc;
  int blocks = sms * bps;
  cudaMalloc(&out, blocks * threads * 4); cudaMalloc(&cyc, blocks * 8);
  k<MODE><<<blocks, threads>>>(out, cyc, iters);
  k<MODE><<<blocks, threads>>>(out, cyc, iters);
  cudaDeviceSynchronize();
  long long* h = new long long[blocks];
  cudaMemcpy(h, cyc, blocks * 8, cudaMemcpyDeviceToHost);
  long long mx = 0; double mean = 0;
  for (int i = 0; i < blocks; ++i) { mx = h[i] > mx ? h[i] : mx; mean += h[i]; }
  mean /= blocks;
  double per_sm_threads = (double)bps * threads * iters;
  printf("%-34s warps/SM %3d  cycles %9.0f  per SM per clk: mufu %6.2f cvt %6.2f ffma %6.2f  (warp-instr/clk/SMSP total %.3f)\n", name,
         bps * threads / 32, mean, per_sm_threads * mufu / mean, per_sm_threads * cvt / mean, per_sm_threads * ffma / mean,
         per_sm_threads * (mufu + cvt + ffma) / mean / 32 / 4);
  cudaFree(out); cudaFree(cyc); delete[] h;
}
int main() {
  int sms; cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, 0);
  cudaDeviceProp p; cudaGetDeviceProperties(&p, 0); printf("%s, %d SMs\n", p.name, sms);
  const int it = 4096;
  for (int bps : {8, 1}) {
    int th = bps == 8 ? 256 : 64;  // 64 warps or 2 warps per SM
    run<1>("ex2 x8", sms, bps, th, it, 8, 0, 0);
    run<2>("cvt f16x2 x4", sms, bps, th, it, 0, 4, 0);
    run<8>("cvt bf16x2 x4", sms, bps, th, it, 0, 4, 0);
    run<3>("ex2 x8 + cvt f16x2 x4", sms, bps, th, it, 8, 4, 0);
    run<5>("ffma x8 + ex2 x8", sms, bps, th, it, 8, 0, 8);
    run<7>("ffma x8 + ex2 x8 + cvt x4", sms, bps, th, it, 8, 4, 8);
  }
  return 0;
}
