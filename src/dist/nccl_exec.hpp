// protattn dist: the NCCL executor. One process per GPU; head-parallel or spatial (halo
// exchange with grouped ncclSend/ncclRecv), the `fused` engine on every rank.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include "protattn/dist.hpp"
#include "protattn/engine.hpp"
#include "protattn/layout.hpp"

namespace protattn::dist {

struct GpuOptions {
  Mode mode = Mode::heads;
  ProblemShape shape;       // heads, dim, dtype (fp16 / bf16) of the whole problem
  int warmup = 3, iters = 20;
  bool check = false;       // rank 0 compares the gathered result with a one-GPU fused run
  bool baseline = true;     // rank 0 times the one-GPU fused run (for scaling efficiency)
  bool gather = true;       // O and LSE gathered to rank 0 each step (false: kept distributed)
  // spatial: the exchange on a second stream beside the attention of the rows that need no halo
  // tile, the other rows after it (split_for_overlap); compute_ms then leaves out the wait.
  bool overlap = false;
  std::string rendezvous;   // directory holding the NCCL id file (shared by all ranks)
  std::string run_tag;      // names the id file: ranks of one run agree on it
  double timeout_s = 120;   // how long ranks wait for the id file
  CostModel cost;
  std::uint64_t seed = 1;   // seeded Q, K, V (the same global tensors on every rank)
};

struct GpuRankStats {
  int rank = 0, device = 0;
  double exchange_ms = 0, compute_ms = 0, step_ms = 0, gather_ms = 0;  // medians over iterations
  std::int64_t bytes_sent = 0, bytes_received = 0;  // halo bytes per step
  std::int64_t heads = 0, tiles = 0, local_atoms = 0;
  int fused_items = 0, fused_splits = 0;
};

// Filled on rank 0; other ranks return their own rank only.
struct GpuReport {
  RankInfo me;
  std::string gpu, nccl_library;
  int nccl_version = 0;
  std::vector<GpuRankStats> ranks;
  double step_ms = 0;     // median over iterations of the slowest rank's exchange + compute
  double single_ms = -1;  // one-GPU fused on rank 0 (-1: not timed)
  int single_splits = 0;  // split query tiles of that run
  bool checked = false, bit_identical = false;
  double max_abs_o = 0, max_rel_o = 0, max_abs_lse = 0;  // rel: / max |O| of the one-GPU result
  std::int64_t differing = 0, lse_inf_mismatch = 0;       // O elements that differ in any bit
};

// Runs one rank of a group of me.world processes. Collective: every rank must call it with the
// same layout and options. Sets NCCL_NVLS_ENABLE=0 when unset and refuses any other value
// (NVLink multicast can take shared GPUs out of service); creates no multicast object.
GpuReport run_nccl(const BlockLayout& l, const GpuOptions& o, const RankInfo& me);

// "NCCL 2.28.9 (/path/libnccl.so.2)"; throws Error when the library cannot be loaded.
std::string nccl_library_info();

}  // namespace protattn::dist
