// protattn fused engine: the launch entry of one (element type, head dim) instantiation.
#pragma once
#include <cuda_runtime.h>

#include <cstdlib>

#include "cuda/fused/fused_params.hpp"

namespace protattn::fused {

// Whether the engine switch `name` (an environment variable PROTATTN_FUSED_..., for comparisons)
// is set to 0, which turns its feature off.
inline bool switched_off(const char* name) {
  const char* v = std::getenv(name);
  return v && v[0] == '0';
}

// Launches the attention kernel p.kernel over p.n_items work items, then the combine kernel
// over p.n_combines split tiles, on `stream`. Instantiated once per (T, D) in generated files.
template <typename T, int D>
void launch_fused(const Params& p, cudaStream_t stream);

// Stages of the ws kernel and its shared memory for a batch with (or without) mask `atoms`;
// max_stages > 0 caps the count (for comparisons). The plan sets Params::ws_* from it.
struct WsGeometry {
  int stages, stage_bytes, smem_bytes;
};
template <typename T, int D>
WsGeometry ws_geometry(bool atoms, int max_stages);

// Blocks of attention kernel `kernel` (a KernelCode) that fit on one multiprocessor. Also raises
// the kernel's shared-memory limit on the current device: a plan calls it (on its device) before
// any launch there.
template <typename T, int D>
int fused_blocks_per_sm(int kernel);

}  // namespace protattn::fused
