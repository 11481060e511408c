// protattn CUDA: what benchmarks need on the device: random fills, L2 flushes, event timing.
#pragma once
#include <cstddef>
#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "protattn/engine.hpp"

namespace protattn::cuda {

struct DeviceInfo {
  std::string name, driver;
  int sms = 0, sm_clock_mhz = 0, mem_clock_mhz = 0;
  std::size_t l2_bytes = 0, memory_bytes = 0;
};
DeviceInfo device_info(int device = 0);

// Device memory that frees itself; filled with seeded uniform values in [-1, 1) * spread.
class DeviceArray {
 public:
  DeviceArray(std::size_t bytes);
  ~DeviceArray();
  DeviceArray(const DeviceArray&) = delete;
  DeviceArray& operator=(const DeviceArray&) = delete;
  void* get() const { return ptr_; }
  void fill_random(DType dtype, std::size_t count, std::uint64_t seed, float spread = 1.0f);

 private:
  void* ptr_ = nullptr;
};

// Times fn(stream) with device events: warm-up calls first, then `iters` timed calls, each
// after a write of a buffer larger than the L2 (as triton.testing.do_bench does) when
// flush_l2. Returns the per-call times in milliseconds.
std::vector<float> time_device(const std::function<void(void* stream)>& fn, int warmup, int iters, bool flush_l2);

// Bytes of device memory in use (cudaMemGetInfo, after freeing the blocks cached for reuse).
std::size_t device_memory_used();

}  // namespace protattn::cuda
