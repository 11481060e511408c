// GPU tests of the NCCL executor: a world of one rank through the same code path, and, where the
// machine has several GPUs, one process per GPU as the ranks of one group (this binary started
// again, running DistGpuRank.Run), compared on rank 0 with the one-GPU fused result.
#include <gtest/gtest.h>

#include <cuda_runtime.h>
#include <unistd.h>

#include <cmath>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>
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

// A world of one runs in this process. Several ranks run as processes, as `protattn dist` starts
// them: NCCL ranks as threads of one process can deadlock, since a cudaFree on one device waits for
// the collective kernel running on a peer device, which waits for the thread blocked in cudaFree.
dist::GpuReport run_one(const BlockLayout& l, const dist::GpuOptions& o) {
  ::setenv("NCCL_NVLS_ENABLE", "0", 0);
  return dist::run_nccl(l, o, dist::RankInfo{0, 1, 0, true});
}

// Rank 0's findings, as DistGpuRank.Run writes them for the test that started the ranks.
struct RankResult {
  bool checked = false, bit_identical = false, split = false;
  double max_rel_o = -1, max_abs_lse = -1;
  std::int64_t lse_inf_mismatch = -1, differing = -1, received = -1;
};
constexpr const char* kRankOut = "PROTATTN_DIST_TEST_OUT";  // where rank 0 writes its RankResult
constexpr const char* kRankCase = "PROTATTN_DIST_TEST_CASE";  // "<mode> <mask> <atoms> <overlap> <tag>"

void write_result(const std::string& path, const dist::GpuReport& rep) {
  bool split = rep.single_splits > 0;
  std::int64_t recv = 0;
  for (const auto& r : rep.ranks) {
    split = split || r.fused_splits > 0;
    recv += r.bytes_received;
  }
  std::ofstream f(path);
  f.precision(17);
  f << rep.checked << ' ' << rep.bit_identical << ' ' << split << ' ' << rep.max_rel_o << ' ' << rep.max_abs_lse << ' '
    << rep.lse_inf_mismatch << ' ' << rep.differing << ' ' << recv << '\n';
}

RankResult read_result(const std::string& path) {
  RankResult r;
  std::ifstream f(path);
  f >> r.checked >> r.bit_identical >> r.split >> r.max_rel_o >> r.max_abs_lse >> r.lse_inf_mismatch >> r.differing >>
      r.received;
  if (!f) throw Error("no result from rank 0 in " + path);
  return r;
}

// Starts `world` copies of this test binary running DistGpuRank.Run (rank r on device r) and
// returns rank 0's result.
RankResult run_group(dist::Mode mode, MaskMode mask, std::int64_t atoms, int world, bool overlap) {
  static int groups = 0;
  const fs::path self = fs::read_symlink("/proc/self/exe");
  const fs::path out = fs::temp_directory_path() / ("protattn-gpu-test-dist-" + std::to_string(::getpid()) + ".txt");
  fs::remove(out);
  dist::spawn_ranks({self.string(), "--gtest_filter=DistGpuRank.Run", "--gtest_brief=1"}, world,
                    {std::string(kRankOut) + "=" + out.string(),
                     // The tag names the rendezvous file: the same in every rank of one group only.
                     std::string(kRankCase) + "=" + dist::to_string(mode) + " " + to_string(mask) + " " +
                         std::to_string(atoms) + " " + std::to_string(overlap ? 1 : 0) + " many-" + std::to_string(::getpid()) + "-" + std::to_string(++groups),
                     "NCCL_NVLS_ENABLE=0"});
  RankResult r = read_result(out.string());
  fs::remove(out);
  return r;
}

void expect_matches(const RankResult& rep, const std::string& what) {
  ASSERT_TRUE(rep.checked) << what;
  EXPECT_EQ(rep.lse_inf_mismatch, 0) << what;
  EXPECT_GE(rep.max_rel_o, 0) << what;
  EXPECT_LE(rep.max_rel_o, kFusedRelBound) << what;
  EXPECT_LE(rep.max_abs_lse, kLseBound) << what;
  if (!rep.split) EXPECT_TRUE(rep.bit_identical) << what << ": " << rep.differing << " O elements differ";
}

TEST(DistGpu, WorldOfOneIsTheOneGpuResult) {
  if (gpu_count() < 1) GTEST_SKIP() << "no GPU";
  for (MaskMode mask : {MaskMode::tiles, MaskMode::atoms}) {
    const BlockLayout l = test::globule_layout(4113, mask);
    for (dist::Mode mode : {dist::Mode::heads, dist::Mode::spatial})
      for (bool overlap : {false, true}) {
        if (overlap && mode == dist::Mode::heads) continue;
        dist::GpuOptions o = options(mode, "one");
        o.overlap = overlap;  // one rank: no halo, every row interior (the two streams still run)
        const dist::GpuReport rep = run_one(l, o);
        // One rank: the same layout and heads as the one-GPU run, so the same plan and bits.
        ASSERT_TRUE(rep.checked);
        EXPECT_TRUE(rep.bit_identical) << dist::to_string(mode) << " " << to_string(mask) << " overlap " << overlap << ": "
                                       << rep.differing;
        EXPECT_GT(rep.step_ms, 0);
      }
  }
}

TEST(DistGpu, SeveralGpusMatchOneGpu) {
  const int gpus = gpu_count();
  if (gpus < 2) GTEST_SKIP() << "needs 2 GPUs, found " << gpus;
  for (MaskMode mask : {MaskMode::tiles, MaskMode::atoms})
    for (int world = 2; world <= std::min(gpus, 4); ++world)
      for (dist::Mode mode : {dist::Mode::heads, dist::Mode::spatial})
        for (bool overlap : {false, true}) {
          if (overlap && mode == dist::Mode::heads) continue;
          const std::string what = std::string(dist::to_string(mode)) + " " + to_string(mask) + " x" +
                                   std::to_string(world) + (overlap ? " overlap" : "");
          const RankResult rep = run_group(mode, mask, 40000 + 17, world, overlap);
          expect_matches(rep, what);
          if (mode == dist::Mode::spatial) EXPECT_GT(rep.received, 0) << what;
        }
}

// One rank of SeveralGpusMatchOneGpu, in a process of its own; skipped when run otherwise.
TEST(DistGpuRank, Run) {
  const char* out = std::getenv(kRankOut);
  const char* what = std::getenv(kRankCase);
  if (!out || !what) GTEST_SKIP() << "a rank of DistGpu.SeveralGpusMatchOneGpu, started by it";
  std::istringstream in(what);
  std::string mode, mask, tag;
  std::int64_t atoms = 0;
  int overlap = 0;
  in >> mode >> mask >> atoms >> overlap >> tag;
  ASSERT_TRUE(in) << what;
  const BlockLayout l = test::globule_layout(atoms, parse_mask(mask));
  const dist::RankInfo me = dist::rank_from_env();
  ASSERT_TRUE(me.from_env);
  dist::GpuOptions o = options(dist::parse_mode(mode), "many");
  o.run_tag = tag;
  o.overlap = overlap != 0;
  const dist::GpuReport rep = dist::run_nccl(l, o, me);
  if (me.rank == 0) write_result(out, rep);
}

}  // namespace
}  // namespace protattn
