// protattn grouped engine: the two CUTLASS grouped GEMMs of the three-stage pipeline, behind a
// host interface free of CUTLASS types (the kernels live in gemm_*.cu, compiled for sm_90a only).
#pragma once
#include <cuda_runtime.h>

#include <cstdint>
#include <memory>

#include "protattn/engine.hpp"

namespace protattn::grouped {

// Every problem of both GEMMs is one kept tile pair: tiles of kTile atoms.
inline constexpr int kTile = 128;

// One grouped GEMM over `count` problems of the same shape, operands found through device
// pointer arrays of length `count` (filled before each launch by the engine). All operands are
// packed (leading dimension = row length):
//   qk: D[count] (kTile x kTile fp32)  = A (kTile x dim, row-major) * B (kTile x dim, row-major)^T
//   pv: D[count] (kTile x dim fp32)    = A (kTile x kTile, row-major) * B (kTile x dim, row-major)
struct GemmSetup {
  int count = 0;
  int dim = 0;
  const void* const* a = nullptr;  // [count] device pointers, element type of the plan
  const void* const* b = nullptr;  // [count]
  float* const* d = nullptr;       // [count]
  int device = 0;
};

// A grouped GEMM built once (problem list, strides, CUTLASS workspace and params on the device)
// and launched many times; launch() is asynchronous and capturable in a CUDA graph.
class GroupedGemm {
 public:
  virtual ~GroupedGemm() = default;
  virtual void launch(cudaStream_t stream) = 0;
  virtual std::size_t device_bytes() const = 0;
};

enum class GemmStage { qk, pv };

// Throws Error for a dtype other than fp16/bf16 or a head dim other than 64/128.
std::unique_ptr<GroupedGemm> make_grouped_gemm(GemmStage stage, DType dtype, const GemmSetup& setup);

// One per (stage, element type), in gemm_{qk,pv}_{f16,bf16}.cu.
std::unique_ptr<GroupedGemm> make_qk_gemm_f16(const GemmSetup&);
std::unique_ptr<GroupedGemm> make_qk_gemm_bf16(const GemmSetup&);
std::unique_ptr<GroupedGemm> make_pv_gemm_f16(const GemmSetup&);
std::unique_ptr<GroupedGemm> make_pv_gemm_bf16(const GemmSetup&);

}  // namespace protattn::grouped
