// protattn grouped engine: the original three-stage design (Q K^T grouped GEMM, segmented
// softmax, P V grouped GEMM + ordered reduction) and what it reports beyond the Engine interface.
#pragma once
#include <cstddef>
#include <cstdint>

#include "protattn/engine.hpp"

namespace protattn::grouped {

// Milliseconds of each stage of the last run made with stage timing on (CUDA events between
// the launches on the run's stream).
struct StageTimes {
  float prep = 0;       // operand pointer arrays (+ tile-padded copies of Q, K, V when some n % 128 != 0)
  float qk = 0;         // stage 1: Q K^T grouped GEMM, S [heads * nnz, 128, 128] fp32
  float softmax = 0;    // stage 2: segmented softmax, P [heads * nnz, 128, 128] fp16/bf16 and LSE
  float pv = 0;         // stage 3: pv_gemm + pv_reduce
  float pv_gemm = 0;    //   P V grouped GEMM, fp32 partials [heads * nnz, 128, dim]
  float pv_reduce = 0;  //   sum of the partials of each query row in key-tile order, O in the dtype
  float total = 0;      // first event to last
};

// Stage timing is off by default; while on, each run() records 6 events on its stream (not
// while the stream is being captured into a graph). Both throw Error when `engine` is not the
// grouped engine. stage_times waits for the last timed run and throws Error if there was none.
void enable_stage_timing(Engine& engine, bool on);
StageTimes stage_times(Engine& engine);

// What plan() built, for reports (throws Error when `plan` is not a grouped plan).
struct PlanSummary {
  std::int64_t problems = 0;     // GEMM problems per stage: heads * kept tile pairs
  bool padded = false;           // Q, K, V copied into tile-padded buffers at each run
  std::size_t device_bytes = 0;  // workspace (S, P, partial O, pointer arrays, CUTLASS) on the device
};
PlanSummary summarize(const Plan& plan);

}  // namespace protattn::grouped
