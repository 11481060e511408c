// protattn dist: NCCL loaded at run time. The protattn binary then starts on machines without
// libnccl (every other subcommand and the GPU benchmarks keep working there); only `dist` on GPUs
// needs it, and fails with the list of places it looked.
#pragma once
#include <nccl.h>

#include <string>

#include "protattn/error.hpp"

namespace protattn::dist::nccl {

// The entry points the executor uses, typed from nccl.h.
struct Api {
  decltype(&::ncclGetVersion) GetVersion = nullptr;
  decltype(&::ncclGetUniqueId) GetUniqueId = nullptr;
  decltype(&::ncclCommInitRank) CommInitRank = nullptr;
  decltype(&::ncclCommDestroy) CommDestroy = nullptr;
  decltype(&::ncclCommAbort) CommAbort = nullptr;
  decltype(&::ncclGetErrorString) GetErrorString = nullptr;
  decltype(&::ncclGetLastError) GetLastError = nullptr;
  decltype(&::ncclGroupStart) GroupStart = nullptr;
  decltype(&::ncclGroupEnd) GroupEnd = nullptr;
  decltype(&::ncclSend) Send = nullptr;
  decltype(&::ncclRecv) Recv = nullptr;
  decltype(&::ncclAllReduce) AllReduce = nullptr;
  decltype(&::ncclAllGather) AllGather = nullptr;
  std::string path;  // the library loaded
  int version = 0;   // NCCL_VERSION_CODE of that library
};

// Loads the library once (thread-safe): $PROTATTN_NCCL_LIB, then libnccl.so.2 on the loader's
// path, the one found at build time, the CUDA toolkit's, and pip's nvidia-nccl packages of the
// Python installs under /opt, /usr and /usr/local. Throws Error listing what was tried.
const Api& api();

[[noreturn]] void throw_nccl_error(ncclResult_t rc, const char* stmt, const char* file, int line);

}  // namespace protattn::dist::nccl

#define PROTATTN_NCCL_CHECK(stmt)                                                     \
  do {                                                                                 \
    const ncclResult_t protattn_nccl_rc_ = (stmt);                                     \
    if (protattn_nccl_rc_ != ncclSuccess)                                              \
      ::protattn::dist::nccl::throw_nccl_error(protattn_nccl_rc_, #stmt, __FILE__, __LINE__); \
  } while (0)
