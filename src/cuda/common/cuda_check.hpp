// protattn CUDA: error checks that throw protattn::Error naming the statement, file:line and device.
#pragma once
#include <cuda_runtime.h>

#include <string>

#include "protattn/error.hpp"

namespace protattn::cuda {

[[noreturn]] inline void throw_cuda_error(cudaError_t err, const char* stmt, const char* file, int line) {
  int dev = -1;
  cudaGetDevice(&dev);
  throw Error(std::string("CUDA error '") + cudaGetErrorString(err) + "' from `" + stmt + "` at " + file + ":" +
              std::to_string(line) + " (device " + std::to_string(dev) + ")");
}

// The CUDA devices this process can use; `who` (an engine, dist) names what needs one when the
// runtime finds none usable (no driver, a driver older than the runtime, no device).
inline int device_count(const std::string& who) {
  int count = 0;
  const cudaError_t err = cudaGetDeviceCount(&count);
  if (err != cudaSuccess || count == 0)
    throw Error(who + " needs an NVIDIA GPU and this process has none usable (" +
                (err != cudaSuccess ? std::string(cudaGetErrorString(err)) : std::string("no CUDA device")) +
                "); the cpu engine runs anywhere (--engine cpu)");
  return count;
}

}  // namespace protattn::cuda

#define PROTATTN_CUDA_CHECK(stmt)                                                      \
  do {                                                                                  \
    const cudaError_t protattn_err_ = (stmt);                                          \
    if (protattn_err_ != cudaSuccess)                                                   \
      ::protattn::cuda::throw_cuda_error(protattn_err_, #stmt, __FILE__, __LINE__);     \
  } while (0)

// After a kernel launch: the launch error, without synchronising.
#define PROTATTN_CUDA_CHECK_LAUNCH() PROTATTN_CUDA_CHECK(cudaGetLastError())
