// protattn fused engine: definitions behind fused_launch.hpp, included by the generated
// per-(dtype, head dim) instantiation files only.
#pragma once
#include <cstdlib>

#include "cuda/common/cuda_check.hpp"
#include "cuda/fused/fused_kernel.cuh"
#include "cuda/fused/fused_launch.hpp"

namespace protattn::fused {

// The wgmma back end on sm_90 (Hopper), the mma.sync one elsewhere; decided once per process
// from device 0's compute capability (PROTATTN_FUSED_MMA_SYNC=1 forces mma.sync, for comparison).
inline bool use_wgmma() {
  static const bool yes = [] {
    int dev = 0, major = 0, minor = 0;
    PROTATTN_CUDA_CHECK(cudaGetDevice(&dev));
    PROTATTN_CUDA_CHECK(cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, dev));
    PROTATTN_CUDA_CHECK(cudaDeviceGetAttribute(&minor, cudaDevAttrComputeCapabilityMinor, dev));
    const char* force = std::getenv("PROTATTN_FUSED_MMA_SYNC");
    return major == 9 && minor == 0 && !(force && force[0] == '1');
  }();
  return yes;
}

template <typename T, int D>
auto attention_kernel() {
  if constexpr (D == 64 || D == 128) {
    if (use_wgmma()) return &fused_attention_kernel<T, D, true>;
  }
  return &fused_attention_kernel<T, D, false>;
}

// Dynamic shared memory of the back end attention_kernel<T, D>() picks.
template <typename T, int D>
int attention_smem_bytes() {
  if constexpr (D == 64 || D == 128) {
    if (use_wgmma()) return FusedKernel<T, D>::kSmemBytesWgmma;
  }
  return FusedKernel<T, D>::kSmemBytes;
}

template <typename T, int D>
static void set_smem_limit_once() {
  static const bool done = [] {
    PROTATTN_CUDA_CHECK(cudaFuncSetAttribute(attention_kernel<T, D>(), cudaFuncAttributeMaxDynamicSharedMemorySize,
                                             attention_smem_bytes<T, D>()));
    return true;
  }();
  (void)done;
}

template <typename T, int D>
void launch_fused(const Params& p, cudaStream_t stream) {
  set_smem_limit_once<T, D>();
  if (p.n_items > 0) {
    attention_kernel<T, D>()<<<p.n_items, kThreads, attention_smem_bytes<T, D>(), stream>>>(p);
    PROTATTN_CUDA_CHECK_LAUNCH();
  }
  if (p.n_combines > 0) {
    fused_combine_kernel<T, D><<<dim3(p.n_combines, kTile / kCombineRows), kCombineRows * D / 4, 0, stream>>>(p);
    PROTATTN_CUDA_CHECK_LAUNCH();
  }
}

template <typename T, int D>
int fused_blocks_per_sm() {
  set_smem_limit_once<T, D>();
  int blocks = 0;
  PROTATTN_CUDA_CHECK(cudaOccupancyMaxActiveBlocksPerMultiprocessor(&blocks, attention_kernel<T, D>(), kThreads,
                                                                    attention_smem_bytes<T, D>()));
  return blocks > 0 ? blocks : 1;
}

#define PROTATTN_INSTANTIATE_FUSED(T, D)                      \
  template void launch_fused<T, D>(const Params&, cudaStream_t); \
  template int fused_blocks_per_sm<T, D>();

}  // namespace protattn::fused
