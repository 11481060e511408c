// protattn CUDA: benchmark support (random fills, L2 flush, event timing, device facts).
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include "cuda/common/bench_support.hpp"
#include "cuda/common/device_buffer.hpp"
#include "cuda/common/cuda_check.hpp"

namespace protattn::cuda {
namespace {

// A buffer larger than any Hopper L2 (50-60 MB), written before each timed call.
constexpr std::size_t kFlushBytes = 256ull << 20;

__device__ __forceinline__ float hash_uniform(std::uint64_t x) {
  // splitmix64 finaliser, top 24 bits -> [-1, 1)
  x += 0x9e3779b97f4a7c15ull;
  x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
  x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
  x ^= x >> 31;
  return static_cast<float>(x >> 40) * (2.0f / 16777216.0f) - 1.0f;
}

template <typename T>
__global__ void fill_kernel(T* p, std::size_t count, std::uint64_t seed, float spread) {
  for (std::size_t i = blockIdx.x * static_cast<std::size_t>(blockDim.x) + threadIdx.x; i < count;
       i += static_cast<std::size_t>(gridDim.x) * blockDim.x) {
    const float v = hash_uniform(seed * 0x100000001b3ull + i) * spread;
    if constexpr (std::is_same_v<T, float>) p[i] = v;
    else if constexpr (std::is_same_v<T, __half>) p[i] = __float2half_rn(v);
    else p[i] = __float2bfloat16_rn(v);
  }
}

}  // namespace

DeviceInfo device_info(int device) {
  DeviceInfo info;
  cudaDeviceProp prop{};
  PROTATTN_CUDA_CHECK(cudaGetDeviceProperties(&prop, device));
  info.name = prop.name;
  info.sms = prop.multiProcessorCount;
  info.l2_bytes = static_cast<std::size_t>(prop.l2CacheSize);
  info.memory_bytes = prop.totalGlobalMem;
  int v = 0;
  if (cudaDeviceGetAttribute(&v, cudaDevAttrClockRate, device) == cudaSuccess) info.sm_clock_mhz = v / 1000;
  if (cudaDeviceGetAttribute(&v, cudaDevAttrMemoryClockRate, device) == cudaSuccess) info.mem_clock_mhz = v / 1000;
  int drv = 0;
  PROTATTN_CUDA_CHECK(cudaDriverGetVersion(&drv));
  info.driver = std::to_string(drv / 1000) + "." + std::to_string((drv % 1000) / 10);
  return info;
}

DeviceArray::DeviceArray(std::size_t bytes) {
  if (bytes) PROTATTN_CUDA_CHECK(cudaMalloc(&ptr_, bytes));
}
DeviceArray::~DeviceArray() {
  if (ptr_) cudaFree(ptr_);
}

void DeviceArray::fill_random(DType dtype, std::size_t count, std::uint64_t seed, float spread) {
  constexpr int kBlock = 256, kGrid = 1024;
  switch (dtype) {
    case DType::f32: fill_kernel<<<kGrid, kBlock>>>(static_cast<float*>(ptr_), count, seed, spread); break;
    case DType::f16: fill_kernel<<<kGrid, kBlock>>>(static_cast<__half*>(ptr_), count, seed, spread); break;
    case DType::bf16: fill_kernel<<<kGrid, kBlock>>>(static_cast<__nv_bfloat16*>(ptr_), count, seed, spread); break;
  }
  PROTATTN_CUDA_CHECK_LAUNCH();
  PROTATTN_CUDA_CHECK(cudaDeviceSynchronize());
}

std::vector<float> time_device(const std::function<void(void* stream)>& fn, int warmup, int iters, bool flush_l2) {
  cudaStream_t stream;
  PROTATTN_CUDA_CHECK(cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking));
  void* flush = nullptr;
  if (flush_l2) PROTATTN_CUDA_CHECK(cudaMalloc(&flush, kFlushBytes));
  std::vector<cudaEvent_t> ev(2 * static_cast<std::size_t>(iters));
  for (auto& e : ev) PROTATTN_CUDA_CHECK(cudaEventCreate(&e));
  for (int i = 0; i < warmup; ++i) fn(stream);
  for (int i = 0; i < iters; ++i) {
    if (flush) PROTATTN_CUDA_CHECK(cudaMemsetAsync(flush, i & 0xff, kFlushBytes, stream));
    PROTATTN_CUDA_CHECK(cudaEventRecord(ev[2 * i], stream));
    fn(stream);
    PROTATTN_CUDA_CHECK(cudaEventRecord(ev[2 * i + 1], stream));
  }
  PROTATTN_CUDA_CHECK(cudaStreamSynchronize(stream));
  std::vector<float> ms(static_cast<std::size_t>(iters));
  for (int i = 0; i < iters; ++i) PROTATTN_CUDA_CHECK(cudaEventElapsedTime(&ms[i], ev[2 * i], ev[2 * i + 1]));
  for (auto& e : ev) cudaEventDestroy(e);
  if (flush) cudaFree(flush);
  cudaStreamDestroy(stream);
  return ms;
}

std::size_t device_memory_used() {
  trim_device_caches();  // freed blocks kept for reuse are not in use
  std::size_t free_b = 0, total_b = 0;
  PROTATTN_CUDA_CHECK(cudaMemGetInfo(&free_b, &total_b));
  return total_b - free_b;
}

}  // namespace protattn::cuda
