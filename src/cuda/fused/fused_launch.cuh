// protattn fused engine: definitions behind fused_launch.hpp, included by the generated
// per-(dtype, head dim) instantiation files only.
#pragma once
#include <cstdlib>
#include <mutex>
#include <set>
#include <string>
#include <utility>

#include "cuda/common/cuda_check.hpp"
#include "cuda/fused/fused_kernel.cuh"
#include "cuda/fused/fused_launch.hpp"
#include "cuda/fused/fused_ws_kernel.cuh"
#include "protattn/error.hpp"

namespace protattn::fused {

struct KernelChoice {
  void (*fn)(Params);
  int threads;
  int smem;
};

// The kernel of a KernelCode (the plan checked that the GPU runs it).
template <typename T, int D>
KernelChoice attention_kernel(int kernel) {
  static_assert(D == 32 || D == 64 || D == 128, "head dim 32, 64 or 128");
  static const KernelChoice choices[3] = {
      {&fused_ws_kernel<T, D>, WsKernel<T, D>::kThreads, WsKernel<T, D>::kSmemLimit},  // launched with less
      {&fused_attention_kernel<T, D, true>, kThreads, FusedKernel<T, D>::kSmemBytesWgmma},
      {&fused_attention_kernel<T, D, false>, kThreads, FusedKernel<T, D>::kSmemBytes},
  };
  if (kernel < 0 || kernel > 2) throw Error("fused engine: unknown kernel code " + std::to_string(kernel));
  return choices[kernel];
}

// Raises the kernel's dynamic shared-memory limit to what it needs on the current device, once
// per device (a function's attributes are per device: a server may run the engine on several).
// Called when a plan is made (fused_blocks_per_sm), on the plan's device, so that launches do
// not take a lock.
template <typename T, int D>
void raise_smem_limit(int kernel) {
  static std::mutex mu;
  static std::set<std::pair<int, int>> raised;  // (device, kernel)
  const KernelChoice c = attention_kernel<T, D>(kernel);
  int device = 0;
  PROTATTN_CUDA_CHECK(cudaGetDevice(&device));
  std::lock_guard<std::mutex> lock(mu);
  if (raised.insert({device, kernel}).second)
    PROTATTN_CUDA_CHECK(cudaFuncSetAttribute(c.fn, cudaFuncAttributeMaxDynamicSharedMemorySize, c.smem));
}

template <typename T, int D>
void launch_fused(const Params& p, cudaStream_t stream) {
  if (p.n_items > 0) {
    const KernelChoice k = attention_kernel<T, D>(p.kernel);
    k.fn<<<attention_grid(p), k.threads, p.kernel == kKernelWs ? p.ws_smem : k.smem, stream>>>(p);
    PROTATTN_CUDA_CHECK_LAUNCH();
  }
  if (p.n_combines > 0) {
    // A programmatic dependent launch after the attention kernel (the combine kernel waits for
    // it in griddepcontrol.wait); PROTATTN_FUSED_PDL=0 launches it plainly, for comparison.
    static const bool pdl = !switched_off("PROTATTN_FUSED_PDL");
    cudaLaunchConfig_t cfg{};
    cfg.gridDim = dim3(p.n_combines, kTile / kCombineRows);
    cfg.blockDim = dim3(kCombineRows * D / 4);
    cfg.dynamicSmemBytes = 0;
    cfg.stream = stream;
    cudaLaunchAttribute attr{};
    attr.id = cudaLaunchAttributeProgrammaticStreamSerialization;
    attr.val.programmaticStreamSerializationAllowed = 1;
    cfg.attrs = &attr;
    cfg.numAttrs = pdl && p.n_items > 0 ? 1 : 0;
    PROTATTN_CUDA_CHECK(cudaLaunchKernelEx(&cfg, &fused_combine_kernel<T, D>, p));
  }
}

template <typename T, int D>
int fused_blocks_per_sm(int kernel) {
  raise_smem_limit<T, D>(kernel);
  const KernelChoice k = attention_kernel<T, D>(kernel);
  int blocks = 0;
  PROTATTN_CUDA_CHECK(cudaOccupancyMaxActiveBlocksPerMultiprocessor(&blocks, k.fn, k.threads, k.smem));
  return blocks > 0 ? blocks : 1;
}

#define PROTATTN_INSTANTIATE_FUSED(T, D)                      \
  template void launch_fused<T, D>(const Params&, cudaStream_t); \
  template int fused_blocks_per_sm<T, D>(int);                  \
  template WsGeometry ws_geometry<T, D>(bool, int);

}  // namespace protattn::fused
