// protattn grouped engine: the three-stage baseline's extra report (time of each stage).
#pragma once
#include "protattn/engine.hpp"

namespace protattn::grouped {

// Device time of the stages of the last run (ms): Q K^T batched GEMM, segmented softmax, and
// P V batched GEMM with the ordered row reduction. Zero unless stage timing is on.
struct StageTimes {
  float qk = 0, softmax = 0, pv = 0;
};
// Turns event timing of the stages on or off (throws Error for another engine).
void enable_stage_timing(Engine& engine, bool on);
StageTimes stage_times(Engine& engine);

}  // namespace protattn::grouped
