// protattn fused engine: the Engine behind "fused" and its plan (work list, split-KV workspace).
#pragma once
#include <memory>

#include "protattn/engine.hpp"

namespace protattn::fused {

struct PlanSummary {
  // Work items of the attention kernel (query tile x head, or a piece of one): a block each, but
  // on the ws kernel min(items, sms x blocks_per_sm) blocks that take them in turn.
  int items = 0;
  int combines = 0;   // split query tiles combined afterwards
  int slots = 0;      // partial results in the workspace
  int blocks_per_sm = 0, sms = 0;
  int blocks = 0;  // blocks the attention kernel launches (on ws the persistent ones: at most items)
  const char* kernel = "";  // "ws", "wgmma" or "mma_sync" (docs/fused.md)
  std::size_t device_bytes = 0;  // plan buffers and workspace
  // Mask atoms: (kept tile, 16-row warp) pairs whose rows reach no key of the tile (their mask
  // and softmax are skipped), of all such pairs (8 per kept tile of every structure).
  std::int64_t warps_out = 0, warp_tiles = 0;
};

// What plan() decided, for reports (throws Error when `plan` is not a fused plan).
PlanSummary summarize(const Plan& plan);

}  // namespace protattn::fused
