// GPU tests of the NCCL executor: a world of one rank through the same code path, and, where the
// machine has several GPUs, one thread per GPU as the ranks of one group (NCCL allows several
// ranks per process, one device each), compared on rank 0 with the one-GPU fused result.
#include <gtest/gtest.h>

#include <cuda_runtime.h>
#include <unistd.h>

#include <cmath>
#include <cstdlib>
#include <exception>
#include <filesystem>
#include <string>
#include <thread>
#include <vector>

#include "common/reference.hpp"
#include "dist/nccl_exec.hpp"
#include "protattn/dist.hpp"
#include "protattn/error.hpp"

namespace protattn {
namespace {

namespace fs = std::filesystem;

// The fused engine's bound against float64 (fp16 O rounding plus fp32 accumulation); two fused
// runs over the same rows differ at most by twice that. Tighter: bit-identical when neither run
// splits a query tile's key range (the order of every row is then the same).
constexpr double kFusedRelBound = 4e-3;
constexpr double kLseBound = 1e-3;

int gpu_count() {
  int n = 0;
  return cudaGetDeviceCount(&n) == cudaSuccess ? n : 0;
}

dist::GpuOptions options(dist::Mode mode, const std::string& tag) {
  dist::GpuOptions o;
  o.mode = mode;
  o.shape.heads = 4;
  o.shape.dim = 64;
  o.shape.dtype = DType::f16;
  o.warmup = 1;
  o.iters = 3;
  o.check = true;
  o.rendezvous = (fs::temp_directory_path() / "protattn-gpu-test-dist").string();
  o.run_tag = tag + "-" + std::to_string(::getpid());
  o.timeout_s = 60;
  return o;
}

// Runs `world` ranks as threads (rank r on device r); returns rank 0's report.
dist::GpuReport run_group(const BlockLayout& l, const dist::GpuOptions& o, int world) {
  std::vector<dist::GpuReport> reps(static_cast<std::size_t>(world));
  std::vector<std::exception_ptr> errs(static_cast<std::size_t>(world));
  ::setenv("NCCL_NVLS_ENABLE", "0", 0);  // here, not in the threads: setenv is not thread-safe
  std::vector<std::thread> threads;
  for (int r = 0; r < world; ++r)
    threads.emplace_back([&, r] {
      try {
        reps[r] = dist::run_nccl(l, o, dist::RankInfo{r, world, r, true});
      } catch (...) {
        errs[r] = std::current_exception();
      }
    });
  for (auto& t : threads) t.join();
  for (auto& e : errs)
    if (e) std::rethrow_exception(e);
  return reps[0];
}

void expect_matches(const dist::GpuReport& rep, const std::string& what) {
  ASSERT_TRUE(rep.checked) << what;
  EXPECT_EQ(rep.lse_inf_mismatch, 0) << what;
  EXPECT_LE(rep.max_rel_o, kFusedRelBound) << what;
  EXPECT_LE(rep.max_abs_lse, kLseBound) << what;
  bool split = rep.single_splits > 0;
  for (const auto& r : rep.ranks) split = split || r.fused_splits > 0;
  if (!split) EXPECT_TRUE(rep.bit_identical) << what << ": " << rep.differing << " O elements differ";
}

TEST(DistGpu, WorldOfOneIsTheOneGpuResult) {
  if (gpu_count() < 1) GTEST_SKIP() << "no GPU";
  for (MaskMode mask : {MaskMode::tiles, MaskMode::atoms}) {
    const BlockLayout l = test::globule_layout(4113, mask);
    for (dist::Mode mode : {dist::Mode::heads, dist::Mode::spatial}) {
      const dist::GpuReport rep = run_group(l, options(mode, "one"), 1);
      // One rank: the same layout and heads as the one-GPU run, so the same plan and bits.
      ASSERT_TRUE(rep.checked);
      EXPECT_TRUE(rep.bit_identical) << dist::to_string(mode) << " " << to_string(mask) << ": " << rep.differing;
      EXPECT_GT(rep.step_ms, 0);
    }
  }
}

TEST(DistGpu, SeveralGpusMatchOneGpu) {
  const int gpus = gpu_count();
  if (gpus < 2) GTEST_SKIP() << "needs 2 GPUs, found " << gpus;
  for (MaskMode mask : {MaskMode::tiles, MaskMode::atoms}) {
    const BlockLayout l = test::globule_layout(40000 + 17, mask);
    for (int world = 2; world <= std::min(gpus, 4); ++world)
      for (dist::Mode mode : {dist::Mode::heads, dist::Mode::spatial}) {
        const std::string what = std::string(dist::to_string(mode)) + " " + to_string(mask) + " x" + std::to_string(world);
        const dist::GpuReport rep = run_group(l, options(mode, "many"), world);
        expect_matches(rep, what);
        if (mode == dist::Mode::spatial) {
          std::int64_t recv = 0;
          for (const auto& r : rep.ranks) recv += r.bytes_received;
          EXPECT_GT(recv, 0) << what;
        }
      }
  }
}

}  // namespace
}  // namespace protattn
