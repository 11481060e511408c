// protattn CUDA: an owning device allocation, movable, given back on destruction.
//
// Blocks come from a per-device cache of freed blocks (common/block_cache.hpp): a plan made per
// batch, as the server makes them, then costs no cudaMalloc and no cudaFree (which waits for the
// whole device, other threads' kernels included) once the sizes have been seen. The rule that
// comes with it: a buffer is destroyed only after the work that uses it has completed (plans are
// destroyed after their stream is synchronised), since its memory may be handed out again at once.
// PROTATTN_DEVICE_CACHE=0 turns the cache off (every block is cudaMalloc'd and cudaFree'd).
#pragma once
#include <cuda_runtime.h>

#include <cstddef>
#include <string>
#include <utility>
#include <vector>

#include "common/block_cache.hpp"
#include "cuda/common/cuda_check.hpp"
#include "protattn/error.hpp"

namespace protattn::cuda {

// The cache of `device` (made on first use); trim_device_caches() frees every cached block, before
// asking how much device memory is free.
detail::BlockCache& device_cache(int device);
void trim_device_caches();

class DeviceBuffer {
 public:
  DeviceBuffer() = default;
  explicit DeviceBuffer(std::size_t bytes) { resize(bytes); }
  DeviceBuffer(const DeviceBuffer&) = delete;
  DeviceBuffer& operator=(const DeviceBuffer&) = delete;
  DeviceBuffer(DeviceBuffer&& o) noexcept
      : ptr_(std::exchange(o.ptr_, nullptr)), bytes_(std::exchange(o.bytes_, 0)),
        class_bytes_(std::exchange(o.class_bytes_, 0)), device_(std::exchange(o.device_, -1)) {}
  DeviceBuffer& operator=(DeviceBuffer&& o) noexcept {
    if (this != &o) {
      release();
      ptr_ = std::exchange(o.ptr_, nullptr);
      bytes_ = std::exchange(o.bytes_, 0);
      class_bytes_ = std::exchange(o.class_bytes_, 0);
      device_ = std::exchange(o.device_, -1);
    }
    return *this;
  }
  ~DeviceBuffer() { release(); }

  // A buffer of `bytes` on the current device (contents undefined); the old one is given back.
  void resize(std::size_t bytes) {
    release();
    if (!bytes) return;
    PROTATTN_CUDA_CHECK(cudaGetDevice(&device_));
    const detail::BlockCache::Block b = device_cache(device_).take(bytes);
    if (!b.ptr)
      throw Error("CUDA: out of device memory allocating " + std::to_string(bytes) + " bytes on device " +
                  std::to_string(device_));
    ptr_ = b.ptr;
    bytes_ = bytes;
    class_bytes_ = b.bytes;
  }
  template <typename T>
  void upload(const std::vector<T>& host) {
    resize(host.size() * sizeof(T));
    if (!bytes_) return;
    PROTATTN_CUDA_CHECK(cudaMemcpy(ptr_, host.data(), bytes_, cudaMemcpyHostToDevice));
    // From pageable memory cudaMemcpy may return before its copy lands, and work on a non-blocking
    // stream (the server's) does not wait for the legacy stream that carries it.
    PROTATTN_CUDA_CHECK(cudaStreamSynchronize(cudaStreamLegacy));
  }
  template <typename T>
  T* as() const { return static_cast<T*>(ptr_); }
  void* get() const { return ptr_; }
  std::size_t bytes() const { return bytes_; }

 private:
  void release() noexcept {
    if (ptr_) {
      try {
        device_cache(device_).give({ptr_, class_bytes_});
      } catch (...) {
        cudaFree(ptr_);  // the cache could not be made: free as before
      }
    }
    ptr_ = nullptr;
    bytes_ = 0;
    class_bytes_ = 0;
  }
  void* ptr_ = nullptr;
  std::size_t bytes_ = 0, class_bytes_ = 0;
  int device_ = -1;
};

}  // namespace protattn::cuda
