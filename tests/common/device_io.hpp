// Test support for the GPU tests: device copies of one input set (tests/common/reference.hpp's
// Inputs) and poisoned outputs for an engine's run.
#pragma once
#include <cuda_runtime.h>

#include <cstdint>
#include <vector>

#include "common/reference.hpp"
#include "protattn/engine.hpp"

namespace protattn::test {

// Q, K and V copied to the device, O and LSE allocated and poisoned. CUDA calls cannot fail a
// test from a constructor: the first error is kept, and a test asserts status() == cudaSuccess
// before it runs anything on the buffers.
class DeviceIo {
 public:
  DeviceIo(const Inputs& in, int heads)
      : bytes_(in.q.size()), lse_bytes_(sizeof(float) * static_cast<std::size_t>(heads) * in.total_n) {
    for (void** p : {&q_, &k_, &v_, &o_}) note(cudaMalloc(p, bytes_ ? bytes_ : 1));
    note(cudaMalloc(reinterpret_cast<void**>(&lse_), lse_bytes_ ? lse_bytes_ : 1));
    if (status_ != cudaSuccess) return;
    note(cudaMemcpy(q_, in.q.data(), bytes_, cudaMemcpyHostToDevice));
    note(cudaMemcpy(k_, in.k.data(), bytes_, cudaMemcpyHostToDevice));
    note(cudaMemcpy(v_, in.v.data(), bytes_, cudaMemcpyHostToDevice));
    poison();
    note(cudaDeviceSynchronize());
  }
  ~DeviceIo() {
    for (void* p : {q_, k_, v_, o_, static_cast<void*>(lse_)}) cudaFree(p);
  }
  DeviceIo(const DeviceIo&) = delete;
  DeviceIo& operator=(const DeviceIo&) = delete;

  // The first CUDA error met since construction (cudaSuccess if none).
  cudaError_t status() const { return status_; }
  std::size_t bytes() const { return bytes_; }
  std::size_t lse_bytes() const { return lse_bytes_; }
  RunArgs args(cudaStream_t stream = nullptr) const { return RunArgs{q_, k_, v_, o_, lse_, stream}; }
  // O and LSE set to NaN, in stream order.
  void poison(cudaStream_t stream = nullptr) {
    note(cudaMemsetAsync(o_, kPoisonByte, bytes_, stream));
    note(cudaMemsetAsync(lse_, kPoisonByte, lse_bytes_, stream));
  }
  // O and LSE back to the host (after the work that writes them); returns status().
  cudaError_t fetch(std::vector<std::uint8_t>& o, std::vector<float>& lse) {
    o.resize(bytes_);
    lse.resize(lse_bytes_ / sizeof(float));
    note(cudaMemcpy(o.data(), o_, bytes_, cudaMemcpyDeviceToHost));
    note(cudaMemcpy(lse.data(), lse_, lse_bytes_, cudaMemcpyDeviceToHost));
    return status_;
  }

 private:
  void note(cudaError_t e) {
    if (status_ == cudaSuccess) status_ = e;
  }
  std::size_t bytes_ = 0, lse_bytes_ = 0;
  void *q_ = nullptr, *k_ = nullptr, *v_ = nullptr, *o_ = nullptr;
  float* lse_ = nullptr;
  cudaError_t status_ = cudaSuccess;
};

}  // namespace protattn::test
