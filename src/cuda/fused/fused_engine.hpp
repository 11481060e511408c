// protattn fused engine: the Engine behind "fused" and its plan (work list, split-KV workspace).
#pragma once
#include <memory>

#include "protattn/engine.hpp"

namespace protattn::fused {

struct PlanSummary {
  int items = 0;      // attention blocks launched
  int combines = 0;   // split query tiles combined afterwards
  int slots = 0;      // partial results in the workspace
  int blocks_per_sm = 0, sms = 0;
  const char* kernel = "";  // "ws", "wgmma" or "mma_sync" (docs/fused.md)
  std::size_t device_bytes = 0;  // plan buffers and workspace
};

// What plan() decided, for reports (throws Error when `plan` is not a fused plan).
PlanSummary summarize(const Plan& plan);

}  // namespace protattn::fused
