// GPU tests of the grouped engine (the original three-stage design on CUTLASS grouped GEMMs)
// against the float64 reference of tests/common/reference.hpp; what is particular to it:
// padded and in-place operands, new buffers for one plan, graph capture, stage times.
#include <cuda_runtime.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

#include "common/device_io.hpp"
#include "common/reference.hpp"
#include "cuda/grouped/grouped_engine.hpp"
#include "protattn/engine.hpp"
#include "protattn/error.hpp"
#include "protattn/layout.hpp"
#include "protattn/structure.hpp"

namespace protattn {
namespace {

using test::DeviceIo;
using test::globule_layout;
using test::hand_layout;
using test::kPoisonByte;

// Bounds relative to the largest |O| of each head (inputs N(0,1), so O is O(1)): P is rounded
// to the dtype once before P V (fp16 11 significant bits, bf16 8), O once at the end.
double o_bound(DType t) { return t == DType::f16 ? 5e-3 : 2e-2; }
// LSE: fp32 max and sum on the same rounded inputs as the reference.
constexpr double kLseBound = 5e-4;

bool have_gpu() {
  int n = 0;
  return cudaGetDeviceCount(&n) == cudaSuccess && n > 0;
}

#define ASSERT_CUDA(stmt) ASSERT_EQ((stmt), cudaSuccess) << #stmt

void expect_close(const Plan& plan, const test::Inputs& in, const std::vector<std::uint8_t>& o, const std::vector<float>& lse) {
  std::vector<double> ref_o, ref_lse;
  test::reference_batch(plan, in, ref_o, ref_lse);
  const test::Compare cmp = test::compare(plan, o.data(), plan.shape.dtype, lse.data(), ref_o, ref_lse);
  EXPECT_EQ(cmp.non_finite, 0) << "non-finite outputs (unwritten or NaN)";
  EXPECT_EQ(cmp.lse_mismatch_inf, 0) << "rows with no key must give LSE -inf, others finite";
  EXPECT_LE(cmp.max_rel_o, o_bound(plan.shape.dtype));
  EXPECT_LE(cmp.max_abs_lse, kLseBound);
}

// Plans once, runs twice on poisoned outputs: every element checked against the reference,
// the two runs bit-identical.
void check(const std::vector<BlockLayout>& layouts, const ProblemShape& shape, std::uint64_t seed) {
  auto engine = make_engine("grouped");
  std::vector<const BlockLayout*> ptrs;
  for (const BlockLayout& l : layouts) ptrs.push_back(&l);
  auto plan = engine->plan(ptrs, shape);
  const test::Inputs in = test::random_inputs(shape, plan->total_n(), seed);
  DeviceIo io(in, shape.heads);
  ASSERT_CUDA(io.status());
  std::vector<std::uint8_t> o1, o2;
  std::vector<float> l1, l2;
  engine->run(*plan, io.args());
  ASSERT_CUDA(cudaDeviceSynchronize());
  ASSERT_CUDA(io.fetch(o1, l1));
  expect_close(*plan, in, o1, l1);
  io.poison();
  engine->run(*plan, io.args());
  ASSERT_CUDA(cudaDeviceSynchronize());
  ASSERT_CUDA(io.fetch(o2, l2));
  EXPECT_EQ(std::memcmp(o1.data(), o2.data(), o1.size()), 0) << "O differs between two runs";
  EXPECT_EQ(std::memcmp(l1.data(), l2.data(), l1.size() * sizeof(float)), 0) << "LSE differs between two runs";
}



class GroupedTest : public ::testing::TestWithParam<std::tuple<DType, int>> {
 protected:
  void SetUp() override {
    if (!have_gpu()) GTEST_SKIP() << "no CUDA device";
  }
  ProblemShape shape(int heads) const {
    ProblemShape s;
    s.heads = heads;
    s.dtype = std::get<0>(GetParam());
    s.dim = std::get<1>(GetParam());
    return s;
  }
};

TEST_P(GroupedTest, RaggedSizesTilesAndAtoms) {
  std::uint64_t seed = 200;
  for (std::size_t n : {1u, 127u, 128u, 129u, 4096u + 17u}) {
    for (MaskMode m : {MaskMode::tiles, MaskMode::atoms}) {
      SCOPED_TRACE("n=" + std::to_string(n) + " mask=" + to_string(m));
      check({globule_layout(n, m)}, shape(2), ++seed);
    }
  }
}

TEST_P(GroupedTest, EmptyRowsOneTileAllTiles) {
  check({hand_layout(300, {{0, 2}, {}, {1, 2}})}, shape(3), 211);  // query tile 1: O = 0, LSE = -inf
  check({hand_layout(90, {{0}})}, shape(1), 212);
  check({hand_layout(256, {{}, {}})}, shape(2), 213);  // nothing kept at all: no GEMM runs
  const Structure s = make_globule(700, 0.058, 3);
  LayoutOptions opt;
  check({build_dense_layout(s.xyz.data(), s.size(), opt)}, shape(2), 214);
}

TEST_P(GroupedTest, WindowsMask) {
  const Structure s = make_globule(1000, 0.058, 5);
  LayoutOptions opt;
  opt.order = Order::file;
  check({build_window_layout(s.xyz.data(), s.size(), opt)}, shape(2), 221);
}

TEST_P(GroupedTest, RaggedBatch) {
  std::vector<BlockLayout> ls;
  ls.push_back(globule_layout(300, MaskMode::atoms, 8.0f, 1));
  ls.push_back(globule_layout(1000, MaskMode::tiles, 6.0f, 2));
  ls.push_back(globule_layout(129, MaskMode::atoms, 10.0f, 3));
  ls.push_back(hand_layout(200, {{0}, {}}));
  check(ls, shape(2), 231);
}

TEST_P(GroupedTest, TileAlignedBatchReadsInPlace) {
  // Every n a multiple of 128: the GEMMs read Q, K, V in place (no padded copies).
  std::vector<BlockLayout> ls;
  ls.push_back(make_w1_layout(32, 800, 12, 1));
  ls.push_back(globule_layout(512, MaskMode::atoms, 8.0f, 4));
  check(ls, shape(2), 241);
}

INSTANTIATE_TEST_SUITE_P(DtypeDim, GroupedTest,
                         ::testing::Combine(::testing::Values(DType::f16, DType::bf16), ::testing::Values(64, 128)),
                         [](const auto& info) {
                           return std::string(to_string(std::get<0>(info.param))) + "_d" +
                                  std::to_string(std::get<1>(info.param));
                         });

TEST(Grouped, PlanSummaryPaddedOnlyForRaggedN) {
  if (!have_gpu()) GTEST_SKIP() << "no CUDA device";
  auto engine = make_engine("grouped");
  ProblemShape s;
  s.heads = 3;
  const BlockLayout w1 = make_w1_layout(32, 800, 12, 1);
  const BlockLayout odd = globule_layout(129, MaskMode::tiles);
  const grouped::PlanSummary a = grouped::summarize(*engine->plan({&w1}, s));
  EXPECT_FALSE(a.padded);
  EXPECT_EQ(a.problems, 800 * 3);
  // S (fp32) and P (fp16) blocks plus fp32 P V partials per problem, at the least.
  EXPECT_GE(a.device_bytes, static_cast<std::size_t>(a.problems) * (128 * 128 * 6 + 128 * 64 * 4));
  EXPECT_TRUE(grouped::summarize(*engine->plan({&w1, &odd}, s)).padded);
}

TEST(Grouped, NewBuffersForOnePlan) {
  // The operand pointer arrays follow the buffers of each run.
  if (!have_gpu()) GTEST_SKIP() << "no CUDA device";
  auto engine = make_engine("grouped");
  ProblemShape s;
  s.heads = 2;
  const BlockLayout l = make_w1_layout(8, 40, 2, 3);
  auto plan = engine->plan({&l}, s);
  for (std::uint64_t seed : {301u, 302u}) {
    const test::Inputs in = test::random_inputs(s, plan->total_n(), seed);
    DeviceIo io(in, s.heads);
    ASSERT_CUDA(io.status());
    engine->run(*plan, io.args());
    ASSERT_CUDA(cudaDeviceSynchronize());
    std::vector<std::uint8_t> o;
    std::vector<float> lse;
    ASSERT_CUDA(io.fetch(o, lse));
    expect_close(*plan, in, o, lse);
  }
}

TEST(Grouped, NoLseBuffer) {
  if (!have_gpu()) GTEST_SKIP() << "no CUDA device";
  auto engine = make_engine("grouped");
  ProblemShape s;
  const BlockLayout l = globule_layout(600, MaskMode::atoms);
  auto plan = engine->plan({&l}, s);
  const test::Inputs in = test::random_inputs(s, plan->total_n(), 311);
  DeviceIo io(in, s.heads);
  ASSERT_CUDA(io.status());
  RunArgs a = io.args();
  a.lse = nullptr;
  engine->run(*plan, a);
  ASSERT_CUDA(cudaDeviceSynchronize());
  std::vector<std::uint8_t> o;
  std::vector<float> lse;
  ASSERT_CUDA(io.fetch(o, lse));
  std::vector<double> ref_o, ref_lse;
  test::reference_batch(*plan, in, ref_o, ref_lse);
  const test::Compare cmp = test::compare(*plan, o.data(), s.dtype, nullptr, ref_o, ref_lse);
  EXPECT_EQ(cmp.non_finite, 0);
  EXPECT_LE(cmp.max_rel_o, o_bound(s.dtype));
  std::vector<float> untouched(lse.size());
  std::memset(untouched.data(), kPoisonByte, untouched.size() * sizeof(float));
  EXPECT_EQ(std::memcmp(lse.data(), untouched.data(), lse.size() * sizeof(float)), 0) << "LSE written without a buffer";
}

TEST(Grouped, RunIsCapturableAndReplaysBitIdentical) {
  if (!have_gpu()) GTEST_SKIP() << "no CUDA device";
  auto engine = make_engine("grouped");
  grouped::enable_stage_timing(*engine, true);  // events are left out while capturing
  ProblemShape s;
  s.heads = 2;
  const BlockLayout aligned = make_w1_layout(32, 800, 12, 1);
  const BlockLayout ragged = globule_layout(3000, MaskMode::atoms);
  for (const BlockLayout* lp : {&aligned, &ragged}) {
    auto plan = engine->plan({lp}, s);
    const test::Inputs in = test::random_inputs(s, plan->total_n(), 5);
    DeviceIo io(in, s.heads);
    ASSERT_CUDA(io.status());
    cudaStream_t stream;
    ASSERT_CUDA(cudaStreamCreate(&stream));
    engine->run(*plan, io.args(stream));
    ASSERT_CUDA(cudaStreamSynchronize(stream));
    std::vector<std::uint8_t> o_direct, o_graph;
    std::vector<float> l_direct, l_graph;
    ASSERT_CUDA(io.fetch(o_direct, l_direct));
    io.poison();
    cudaGraph_t graph;
    cudaGraphExec_t exec;
    ASSERT_CUDA(cudaStreamBeginCapture(stream, cudaStreamCaptureModeThreadLocal));
    engine->run(*plan, io.args(stream));
    ASSERT_CUDA(cudaStreamEndCapture(stream, &graph));
    ASSERT_CUDA(cudaGraphInstantiate(&exec, graph, 0));
    for (int i = 0; i < 3; ++i) ASSERT_CUDA(cudaGraphLaunch(exec, stream));
    ASSERT_CUDA(cudaStreamSynchronize(stream));
    ASSERT_CUDA(io.fetch(o_graph, l_graph));
    EXPECT_EQ(std::memcmp(o_direct.data(), o_graph.data(), o_direct.size()), 0) << "graph replay differs from a direct run";
    EXPECT_EQ(std::memcmp(l_direct.data(), l_graph.data(), l_direct.size() * sizeof(float)), 0);
    expect_close(*plan, in, o_graph, l_graph);
    cudaGraphExecDestroy(exec);
    cudaGraphDestroy(graph);
    cudaStreamDestroy(stream);
  }
}

TEST(Grouped, StageTimes) {
  if (!have_gpu()) GTEST_SKIP() << "no CUDA device";
  auto engine = make_engine("grouped");
  EXPECT_THROW(grouped::stage_times(*engine), Error);  // no timed run yet
  grouped::enable_stage_timing(*engine, true);
  ProblemShape s;
  const BlockLayout l = make_w1_layout(32, 800, 12, 1);
  auto plan = engine->plan({&l}, s);
  const test::Inputs in = test::random_inputs(s, plan->total_n(), 7);
  DeviceIo io(in, s.heads);
  ASSERT_CUDA(io.status());
  engine->run(*plan, io.args());
  const grouped::StageTimes t = grouped::stage_times(*engine);
  EXPECT_GT(t.qk, 0.0f);
  EXPECT_GT(t.softmax, 0.0f);
  EXPECT_GT(t.pv_gemm, 0.0f);
  EXPECT_GT(t.pv_reduce, 0.0f);
  EXPECT_NEAR(t.pv, t.pv_gemm + t.pv_reduce, 1e-3);
  EXPECT_NEAR(t.total, t.prep + t.qk + t.softmax + t.pv, 1e-3);
  auto cpu = make_engine("cpu");
  EXPECT_THROW(grouped::enable_stage_timing(*cpu, true), Error);
}

TEST(Grouped, UnsupportedShapesFailLoudly) {
  if (!have_gpu()) GTEST_SKIP() << "no CUDA device";
  auto engine = make_engine("grouped");
  const BlockLayout l = hand_layout(128, {{0}});
  ProblemShape s;
  s.dim = 96;
  EXPECT_THROW(engine->plan({&l}, s), Error);
  s.dim = 64;
  s.dtype = DType::f32;
  EXPECT_THROW(engine->plan({&l}, s), Error);
  s.dtype = DType::f16;
  BlockLayout small = l;
  small.tile = 64;
  EXPECT_THROW(engine->plan({&small}, s), Error);
  auto cpu = make_engine("cpu");
  auto cpu_plan = cpu->plan({&l}, s);
  EXPECT_THROW(grouped::summarize(*cpu_plan), Error);
}


// The stage timing of docs/grouped.md, registered as a test so that it cannot rot: W1 (fp16 and
// bf16 at d=64, fp16 at d=128) and W1-alt (fp16, d=64), 1 head, as `protattn bench` builds them;
// W2 (100,096-atom globule, Morton, cutoff 8 A, 8 heads, fp16, d=64) when
// PROTATTN_GROUPED_BENCH_W2=1. PROTATTN_GROUPED_BENCH_ITERS timed runs (default 3) after as many
// warm-up runs, each after a write of 256 MiB that flushes the L2; prints the median of each
// stage (events between the launches) and of the whole run replayed from a CUDA graph.
int env_int(const char* name, int fallback) {
  const char* v = std::getenv(name);
  return v ? std::atoi(v) : fallback;
}

float median(std::vector<float> v) {
  std::sort(v.begin(), v.end());
  const std::size_t m = v.size() / 2;
  return v.size() % 2 ? v[m] : 0.5f * (v[m - 1] + v[m]);
}

TEST(GroupedBench, StageMedians) {
  if (!have_gpu()) GTEST_SKIP() << "no CUDA device";
  constexpr std::size_t kFlushBytes = std::size_t{256} << 20;
  constexpr int kDefaultIters = 3;
  const int iters = std::max(1, env_int("PROTATTN_GROUPED_BENCH_ITERS", kDefaultIters));
  struct Work {
    std::string name;
    BlockLayout layout;
    int heads, dim;
    DType dtype;
  };
  std::vector<Work> work;
  const BlockLayout w1 = make_w1_layout(32, 800, 12, 1);
  work.push_back({"w1", w1, 1, 64, DType::f16});
  work.push_back({"w1", w1, 1, 64, DType::bf16});
  work.push_back({"w1", w1, 1, 128, DType::f16});
  work.push_back({"w1alt", make_w1_layout(63, 800, 6, 1), 1, 64, DType::f16});
  if (env_int("PROTATTN_GROUPED_BENCH_W2", 0)) {
    const Structure g = make_globule(100096, 0.058, 1);
    LayoutOptions opt;
    opt.order = Order::morton;
    opt.count_pairs = false;
    work.push_back({"w2", build_cutoff_layout(g.xyz.data(), g.size(), opt), 8, 64, DType::f16});
  }
  void* flush = nullptr;
  ASSERT_CUDA(cudaMalloc(&flush, kFlushBytes));
  cudaStream_t stream;
  ASSERT_CUDA(cudaStreamCreate(&stream));
  cudaEvent_t ev0, ev1;
  ASSERT_CUDA(cudaEventCreate(&ev0));
  ASSERT_CUDA(cudaEventCreate(&ev1));
  auto engine = make_engine("grouped");
  grouped::enable_stage_timing(*engine, true);
  std::printf("%-6s %4s %3s %6s %5s | %6s %8s %8s %8s %8s %8s | %9s %7s | %9s  (us, median of %d, L2 flushed)\n", "work",
              "type", "d", "nnz", "heads", "prep", "qk", "softmax", "pv_gemm", "reduce", "pv", "total", "TFLOPS", "graph", iters);
  for (const Work& w : work) {
    ProblemShape s;
    s.heads = w.heads;
    s.dim = w.dim;
    s.dtype = w.dtype;
    auto plan = engine->plan({&w.layout}, s);
    const test::Inputs in = test::random_inputs(s, plan->total_n(), 17);
    DeviceIo io(in, s.heads);
    ASSERT_CUDA(io.status());
    std::vector<float> prep, qk, softmax, pv_gemm, reduce, pv, total, graph_ms;
    for (int it = 0; it < 2 * iters; ++it) {
      ASSERT_CUDA(cudaMemsetAsync(flush, it & 0xff, kFlushBytes, stream));
      engine->run(*plan, io.args(stream));
      const grouped::StageTimes t = grouped::stage_times(*engine);
      if (it < iters) continue;  // warm-up
      prep.push_back(t.prep);
      qk.push_back(t.qk);
      softmax.push_back(t.softmax);
      pv_gemm.push_back(t.pv_gemm);
      reduce.push_back(t.pv_reduce);
      pv.push_back(t.pv);
      total.push_back(t.total);
    }
    cudaGraph_t graph;
    cudaGraphExec_t exec;
    ASSERT_CUDA(cudaStreamBeginCapture(stream, cudaStreamCaptureModeThreadLocal));
    engine->run(*plan, io.args(stream));
    ASSERT_CUDA(cudaStreamEndCapture(stream, &graph));
    ASSERT_CUDA(cudaGraphInstantiate(&exec, graph, 0));
    for (int it = 0; it < 2 * iters; ++it) {
      ASSERT_CUDA(cudaMemsetAsync(flush, it & 0xff, kFlushBytes, stream));
      ASSERT_CUDA(cudaEventRecord(ev0, stream));
      ASSERT_CUDA(cudaGraphLaunch(exec, stream));
      ASSERT_CUDA(cudaEventRecord(ev1, stream));
      ASSERT_CUDA(cudaEventSynchronize(ev1));
      float ms = 0;
      ASSERT_CUDA(cudaEventElapsedTime(&ms, ev0, ev1));
      if (it >= iters) graph_ms.push_back(ms);
    }
    cudaGraphExecDestroy(exec);
    cudaGraphDestroy(graph);
    constexpr float kUs = 1e3f;
    const float total_ms = median(total);
    std::printf("%-6s %4s %3d %6lld %5d | %6.1f %8.1f %8.1f %8.1f %8.1f %8.1f | %9.1f %7.1f | %9.1f\n", w.name.c_str(),
                to_string(w.dtype), w.dim, static_cast<long long>(plan->nnz_blocks()), w.heads, median(prep) * kUs,
                median(qk) * kUs, median(softmax) * kUs, median(pv_gemm) * kUs, median(reduce) * kUs, median(pv) * kUs,
                total_ms * kUs, plan->flops() / (total_ms * 1e-3) / 1e12, median(graph_ms) * kUs);
    std::fflush(stdout);
  }
  cudaEventDestroy(ev0);
  cudaEventDestroy(ev1);
  cudaStreamDestroy(stream);
  cudaFree(flush);
}

}  // namespace
}  // namespace protattn
