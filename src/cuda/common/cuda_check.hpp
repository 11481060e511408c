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

}  // namespace protattn::cuda

#define PROTATTN_CUDA_CHECK(stmt)                                                      \
  do {                                                                                  \
    const cudaError_t protattn_err_ = (stmt);                                          \
    if (protattn_err_ != cudaSuccess)                                                   \
      ::protattn::cuda::throw_cuda_error(protattn_err_, #stmt, __FILE__, __LINE__);     \
  } while (0)

// After a kernel launch: the launch error, without synchronising.
#define PROTATTN_CUDA_CHECK_LAUNCH() PROTATTN_CUDA_CHECK(cudaGetLastError())
