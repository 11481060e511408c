// d=64 tile-loop skeleton, two consumer warpgroups, 128 keys a step: which operand sources and
// which instruction mix make the products and the exponentials interfere.
#include <cstdio>
#include <cstdint>
#include <cuda_runtime.h>
#include <cuda_fp16.h>
#include "cuda/fused/wgmma.cuh"
using namespace protattn::fused;
__device__ volatile int g_sink;
__device__ __forceinline__ float ex2(float x) { float y; asm volatile("ex2.approx.ftz.f32 %0, %1;" : "=f"(y) : "f"(x)); return y; }
__device__ __forceinline__ float arg(float x) { float y; asm volatile("fma.rn.f32 %0, %1, 0f3C000000, 0fBF800000;" : "=f"(y) : "f"(x)); return y; }
__device__ __forceinline__ float fm(float x) { float y; asm volatile("fma.rn.f32 %0, %1, 0f3F000000, 0f3E800000;" : "=f"(y) : "f"(x)); return y; }
// SQ: S with Q from registers; PVS: P V with P from shared memory; EXP: 0 none, 1 ex2, 2 FFMA in its place; MM: products issued
template <bool SQ, bool PVS, int EXP, bool MM>
__global__ void __launch_bounds__(256, 1) k(long long* out, int tiles) {
  extern __shared__ __align__(1024) unsigned char smem[];
  const int tid = threadIdx.x, wg = tid / 128;
  for (int i = tid; i < 64 * 1024 / 4; i += blockDim.x) reinterpret_cast<unsigned*>(smem)[i] = 0;
  asm volatile("fence.proxy.async.shared::cta;\n" ::: "memory");
  __syncthreads();
  const std::uint32_t base = static_cast<std::uint32_t>(__cvta_generic_to_shared(smem));
  const std::uint64_t da = sm90::smem_desc(base + wg * 8192, 16, 1024), db = sm90::smem_desc(base + 16384, 16, 1024);
  float s[64], o[32];
  std::uint32_t pk[32] = {};
  std::uint32_t q[4][4];
  for (int i = 0; i < 16; ++i) q[i / 4][i % 4] = 0u;
  for (int i = 0; i < 64; ++i) s[i] = 0.f;
  for (int i = 0; i < 32; ++i) o[i] = 0.f;
  const auto S = [&](int ks) {
    if constexpr (SQ) sm90::rs_kmajor_m64n128k16_f16(s, q[ks], sm90::desc_advance(db, ks * 32), ks > 0);
    else sm90::ss_m64n128k16_f16(s, sm90::desc_advance(da, ks * 32), sm90::desc_advance(db, ks * 32), ks > 0);
  };
  const auto PV = [&](int kk) {
    if constexpr (PVS) {
      sm90::ss_m64n64k16_f16(o, sm90::desc_advance(da, kk * 32), sm90::desc_advance(db, kk * 1024), 1);
    } else {
      const std::uint32_t a[4] = {pk[4 * kk], pk[4 * kk + 1], pk[4 * kk + 2], pk[4 * kk + 3]};
      sm90::rs_m64n64k16_f16(o, a, sm90::desc_advance(db, kk * 1024));
    }
  };
  __syncthreads();
  const long long t0 = clock64();
  for (int j = 0; j < tiles; ++j) {
    if constexpr (MM) {
      sm90::fence();
#pragma unroll
      for (int ks = 0; ks < 4; ++ks) S(ks);
      sm90::commit();
#pragma unroll
      for (int kk = 0; kk < 8; ++kk) PV(kk);
      sm90::commit();
      sm90::wait<1>();
    }
#pragma unroll
    for (int i = 0; i < 64; ++i) {
      if constexpr (EXP == 1) s[i] = ex2(arg(s[i]));
      if constexpr (EXP == 2) s[i] = fm(arg(s[i]));
    }
    if constexpr (MM) sm90::wait<0>();
#pragma unroll
    for (int i = 0; i < 32; ++i) { __half2 h = __floats2half2_rn(s[2 * i], s[2 * i + 1]); pk[i] ^= *reinterpret_cast<std::uint32_t*>(&h); }
    if constexpr (!MM) {
#pragma unroll
      for (int i = 0; i < 64; ++i) s[i] += __uint_as_float(pk[i / 2] & 0x3);
    }
  }
  const long long t1 = clock64();
  std::uint32_t x = 0;
  for (int i = 0; i < 32; ++i) x ^= pk[i] ^ __float_as_uint(o[i]);
  if (x == 12345u) g_sink = 1;
  if (tid % 128 == 0) out[blockIdx.x * 2 + wg] = t1 - t0;
}
template <bool SQ, bool PVS, int EXP, bool MM>
void run(const char* name, int sms, int tiles) {
  long long* d; cudaMalloc(&d, sms * 2 * 8);
  const int smem = 100 * 1024;
  cudaFuncSetAttribute(k<SQ, PVS, EXP, MM>, cudaFuncAttributeMaxDynamicSharedMemorySize, smem);
  k<SQ, PVS, EXP, MM><<<sms, 256, smem>>>(d, tiles);
  k<SQ, PVS, EXP, MM><<<sms, 256, smem>>>(d, tiles);
  cudaError_t e = cudaDeviceSynchronize();
  static long long h[2 * 200]; cudaMemcpy(h, d, sms * 2 * 8, cudaMemcpyDeviceToHost);
  double c = 0; for (int b = 0; b < 2 * sms; ++b) c += h[b]; c /= 2 * sms;
  printf("%-62s %s  %7.1f cycles a tile (ideal 1,024)\n", name, e == cudaSuccess ? "ok" : cudaGetErrorString(e), c / tiles);
  cudaFree(d);
}
int main() {
  int sms; cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, 0);
  for (int r = 0; r < 2; ++r) {
    run<false, false, 1, true>("S ss, PV rs, ex2 (skeleton A)", sms, 300);
    run<true, false, 1, true>("S rs (Q regs), PV rs, ex2 (the kernel's mix)", sms, 300);
    run<false, true, 1, true>("S ss, PV ss, ex2", sms, 300);
    run<true, true, 1, true>("S rs, PV ss, ex2", sms, 300);
    run<false, false, 2, true>("S ss, PV rs, FFMA in place of ex2", sms, 300);
    run<false, false, 0, true>("S ss, PV rs, no exps", sms, 300);
    run<false, true, 0, true>("S ss, PV ss, no exps", sms, 300);
    run<false, false, 1, false>("no products, ex2", sms, 300);
  }
  return 0;
}
