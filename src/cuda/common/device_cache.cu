// protattn CUDA: one cache of freed device blocks per device (see device_buffer.hpp).
#include <cuda_runtime.h>

#include <cstdlib>
#include <cstring>
#include <mutex>
#include <vector>

#include "cuda/common/cuda_check.hpp"
#include "cuda/common/device_buffer.hpp"

namespace protattn::cuda {
namespace {

// At most this share of a device's memory, and this many bytes, stay cached; a single block
// above a quarter of that is never kept.
constexpr std::size_t kCacheShareOfMemory = 16;
constexpr std::size_t kCacheMaxBytes = std::size_t{4} << 30;

bool cache_enabled() {
  const char* v = std::getenv("PROTATTN_DEVICE_CACHE");
  return !(v && std::strcmp(v, "0") == 0);
}

struct Caches {
  std::mutex mu;
  std::vector<detail::BlockCache*> per_device;  // never deleted: the runtime may be gone at exit
};

Caches& caches() {
  static Caches* c = new Caches;
  return *c;
}

}  // namespace

detail::BlockCache& device_cache(int device) {
  Caches& c = caches();
  std::lock_guard<std::mutex> lock(c.mu);
  if (device < 0) throw Error("device_cache: no device");
  if (c.per_device.size() <= static_cast<std::size_t>(device)) c.per_device.resize(static_cast<std::size_t>(device) + 1);
  detail::BlockCache*& cache = c.per_device[static_cast<std::size_t>(device)];
  if (!cache) {
    std::size_t free_b = 0, total_b = 0;
    PROTATTN_CUDA_CHECK(cudaMemGetInfo(&free_b, &total_b));
    const std::size_t cap = cache_enabled() ? std::min(kCacheMaxBytes, total_b / kCacheShareOfMemory) : 0;
    cache = new detail::BlockCache(
        [device](std::size_t bytes) -> void* {
          void* p = nullptr;
          int current = -1;
          cudaGetDevice(&current);
          if (current != device) cudaSetDevice(device);
          const cudaError_t e = cudaMalloc(&p, bytes);
          if (current != device) cudaSetDevice(current);
          if (e != cudaSuccess) {
            (void)cudaGetLastError();  // out of memory is not sticky: clear it for the retry
            return nullptr;
          }
          return p;
        },
        [](void* p) { cudaFree(p); }, cap, cap / 4);
  }
  return *cache;
}

void trim_device_caches() {
  Caches& c = caches();
  std::vector<detail::BlockCache*> all;
  {
    std::lock_guard<std::mutex> lock(c.mu);
    all = c.per_device;
  }
  for (detail::BlockCache* cache : all)
    if (cache) cache->trim();
}

}  // namespace protattn::cuda
