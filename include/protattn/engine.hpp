// protattn: the engine interface. Plan once for a batch of layouts and a shape; run many times.
#pragma once
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "protattn/half.hpp"
#include "protattn/layout.hpp"

namespace protattn {

enum class DType { f32, f16, bf16 };
std::size_t dtype_size(DType);
const char* to_string(DType);
DType parse_dtype(const std::string&);  // "fp32"/"f32", "fp16"/"f16", "bf16"; throws Error

// Element i of a tensor of element type T as float (fp16 and bf16 convert exactly).
template <DType T>
inline float element_as_float(const void* base, std::size_t i) {
  if constexpr (T == DType::f32) return static_cast<const float*>(base)[i];
  else if constexpr (T == DType::f16) return half_to_float(static_cast<const std::uint16_t*>(base)[i]);
  else return bf16_to_float(static_cast<const std::uint16_t*>(base)[i]);
}
inline float element_as_float(const void* base, DType t, std::size_t i) {
  switch (t) {
    case DType::f32: return element_as_float<DType::f32>(base, i);
    case DType::f16: return element_as_float<DType::f16>(base, i);
    case DType::bf16: break;
  }
  return element_as_float<DType::bf16>(base, i);
}

struct ProblemShape {
  int heads = 1;
  int dim = 64;
  DType dtype = DType::f16;  // of Q, K, V and O; LSE is always float32
  float scale = 0;           // softmax scale; 0 means 1/sqrt(dim)
  float effective_scale() const;
};

// Tensors of a batch: the structures' atoms packed one after the other along the atom axis,
// each structure in its layout's (spatial) order. Q, K, V, O: [heads, total_n, dim] row-major
// in shape.dtype; LSE: [heads, total_n] float32, natural log. Structure b occupies rows
// [offsets[b], offsets[b+1]). A row with no key gets O = 0 and LSE = -inf.
struct RunArgs {
  const void* q = nullptr;
  const void* k = nullptr;
  const void* v = nullptr;
  void* o = nullptr;
  float* lse = nullptr;    // may be null: not written
  void* stream = nullptr;  // cudaStream_t for device engines
};

// What an engine prepared for one batch. The layouts must outlive the plan. A device engine's
// runs of one plan must not overlap (they share its workspace and, on the fused engine, its item
// counter): one plan per stream that runs concurrently.
class Plan {
 public:
  virtual ~Plan() = default;
  ProblemShape shape;
  std::vector<const BlockLayout*> layouts;
  std::vector<std::int64_t> offsets;  // [batch + 1]
  std::int64_t total_n() const { return offsets.empty() ? 0 : offsets.back(); }
  std::int64_t nnz_blocks() const;    // kept tile pairs over the batch
  // 4 * nnz * tile * tile * dim * heads: the FLOPs of the computed blocks.
  double flops() const;
};

struct EngineOptions {
  int threads = 0;  // cpu: worker threads (0 = hardware concurrency)
  int device = 0;   // CUDA engines: device ordinal
  // fused: the attention kernel, "ws", "wgmma" or "mma_sync" (docs/fused.md); empty: the
  // environment's PROTATTN_FUSED_KERNEL, else chosen per plan.
  std::string fused_kernel;
  // The atom_encoder's GPU forward: how fetch() waits for the device. false: the CUDA stream
  // synchronisation (spin, yield or block as the device's schedule flag says); true: an event
  // polled with short sleeps between queries (serve --gpu-wait=poll; less CPU than a spin).
  bool gpu_wait_poll = false;
};

class Engine {
 public:
  virtual ~Engine() = default;
  virtual const char* name() const = 0;
  // true: RunArgs hold device pointers and run() is asynchronous on args.stream.
  virtual bool on_device() const = 0;
  // Checks the shape and layouts (throws Error on an unsupported dtype/dim/tile).
  virtual std::unique_ptr<Plan> plan(const std::vector<const BlockLayout*>& layouts,
                                     const ProblemShape& shape) = 0;
  virtual void run(const Plan& plan, const RunArgs& args) = 0;
};

// "cpu", "fused", "grouped". Throws Error naming the engines compiled in when unknown.
std::unique_ptr<Engine> make_engine(const std::string& name, const EngineOptions& opt = {});
std::vector<std::string> engine_names();
// Whether engine `name` reads BlockLayout::rows_out (the fused engine skips rows out of reach and
// computes the bits in its plan when a layout lacks them): who builds layouts for it then marks
// them as they are built (LayoutOptions::mark_rows_out), on the threads that build them.
bool engine_reads_rows_out(const std::string& name);

// Runs on host buffers whatever the engine: for a device engine, copies in, runs, waits,
// copies out. Pointers in `host` are host memory laid out as RunArgs says.
void run_host(Engine& engine, const Plan& plan, const RunArgs& host);

// Whether query position i attends key position j of one layout (new order, both < n, the
// tile pair kept or not: this is the mask rule of the layout's mode alone). The reference
// of every engine's masking.
bool mask_allows(const BlockLayout& l, std::int32_t i, std::int32_t j);
// Mask `atoms` for query i against keys j0 .. j0 + cols - 1 (all positions within the layout):
// s[j] = -inf where mask_allows(l, i, j0 + j) is false, one row at a time (an engine's inner
// loop; the same rule and arithmetic).
void mask_atoms_row(const BlockLayout& l, std::int32_t i, std::int32_t j0, int cols, double* s);

}  // namespace protattn
