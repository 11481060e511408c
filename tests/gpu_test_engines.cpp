// GPU tests of the device engines (fused, grouped) against the float64 reference
// (tests/common/reference.hpp), and of what is particular to the fused engine.
#include <cuda_runtime.h>
#include <gtest/gtest.h>

#include <cmath>
#include <cstdlib>
#include <cstring>
#include <limits>
#include <map>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "common/device_io.hpp"
#include "common/reference.hpp"
#include "cuda/fused/fused_engine.hpp"
#include "protattn/error.hpp"
#include "protattn/engine.hpp"
#include "protattn/layout.hpp"
#include "protattn/structure.hpp"

namespace protattn {
namespace {

using test::DeviceIo;
using test::globule_layout;
using test::hand_layout;

// Bounds, relative to the largest |O| of each head (inputs N(0,1), so O is O(1)):
// fp16 carries 11 significant bits (P and O rounded once each), bf16 8.
double o_bound(DType t) { return t == DType::f16 ? 4e-3 : 2.5e-2; }
// LSE comes from fp32 arithmetic on the same rounded inputs as the reference; where the fused
// ws kernel's tensor core makes the row sums (fp16, d=64) they are sums of the probabilities
// rounded to fp16, at most 2^-11 relative off: 4.9e-4 in the LSE.
constexpr double kLseBound = 5e-4;

bool have_gpu() {
  int n = 0;
  return cudaGetDeviceCount(&n) == cudaSuccess && n > 0;
}

bool hopper() {
  int major = 0, minor = 0;
  if (!have_gpu() || cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, 0) != cudaSuccess ||
      cudaDeviceGetAttribute(&minor, cudaDevAttrComputeCapabilityMinor, 0) != cudaSuccess)
    return false;
  return major == 9 && minor == 0;
}

struct Case {
  std::vector<BlockLayout> layouts;
  ProblemShape shape;
};

// The float64 reference of a case, computed once and kept for the other engines and kernels
// that run the same case (it is the slow part of these tests): the key is everything the
// reference depends on, the layouts' contents included.
struct Reference {
  std::vector<double> o, lse;
};

std::string case_key(const Case& c, std::uint64_t seed, float spread = 1.0f) {
  std::uint64_t h = 1469598103934665603ull;  // FNV-1a over the layouts' contents
  const auto mix = [&h](const void* p, std::size_t bytes) {
    for (std::size_t i = 0; i < bytes; ++i) {
      h ^= static_cast<const unsigned char*>(p)[i];
      h *= 1099511628211ull;
    }
  };
  for (const BlockLayout& l : c.layouts) {
    mix(&l.n, sizeof l.n);
    mix(&l.tile, sizeof l.tile);
    mix(&l.mask, sizeof l.mask);
    mix(&l.cutoff, sizeof l.cutoff);
    mix(l.row_ptr.data(), l.row_ptr.size() * sizeof(l.row_ptr[0]));
    mix(l.col_idx.data(), l.col_idx.size() * sizeof(l.col_idx[0]));
    mix(l.kind.data(), l.kind.size() * sizeof(l.kind[0]));
    mix(l.coords.data(), l.coords.size() * sizeof(l.coords[0]));
  }
  return std::to_string(seed) + "/" + std::to_string(spread) + "/" + to_string(c.shape.dtype) + "/" + std::to_string(c.shape.dim) + "/" +
         std::to_string(c.shape.heads) + "/" + std::to_string(c.shape.effective_scale()) + "/" +
         std::to_string(c.layouts.size()) + "/" + std::to_string(h);
}

const Reference& reference_for(const Case& c, const Plan& plan, const test::Inputs& in, std::uint64_t seed, float spread) {
  static std::map<std::string, Reference> cache;
  const std::string key = case_key(c, seed, spread);
  auto it = cache.find(key);
  if (it == cache.end()) {
    Reference r;
    test::reference_batch(plan, in, r.o, r.lse);
    it = cache.emplace(key, std::move(r)).first;
  }
  return it->second;
}

// Runs the engine twice on poisoned outputs; checks every element against the reference and
// that the two runs are bit-identical. Inputs N(0, spread^2).
// engine_name: an engine, or "fused/<kernel>" for one kernel of the fused engine on every plan.
void check(const std::string& engine_name, const Case& c, std::uint64_t seed, float spread = 1.0f) {
  EngineOptions opt;
  std::string name = engine_name;
  if (const auto slash = name.find('/'); slash != std::string::npos) {
    opt.fused_kernel = name.substr(slash + 1);
    name = name.substr(0, slash);
  }
  auto engine = make_engine(name, opt);
  std::vector<const BlockLayout*> ptrs;
  for (const BlockLayout& l : c.layouts) ptrs.push_back(&l);
  auto plan = engine->plan(ptrs, c.shape);
  const std::int64_t T = plan->total_n();
  const test::Inputs in = test::random_inputs(c.shape, T, seed, spread);
  const Reference& ref = reference_for(c, *plan, in, seed, spread);
  const std::vector<double>& ref_o = ref.o;
  const std::vector<double>& ref_lse = ref.lse;

  const std::size_t o_bytes = in.q.size();
  const std::size_t lse_n = static_cast<std::size_t>(c.shape.heads) * T;
  std::vector<std::uint8_t> o1(o_bytes, test::kPoisonByte), o2(o_bytes, test::kPoisonByte);
  std::vector<float> l1(lse_n, std::numeric_limits<float>::quiet_NaN()), l2(lse_n, std::numeric_limits<float>::quiet_NaN());
  RunArgs a1{in.q.data(), in.k.data(), in.v.data(), o1.data(), l1.data(), nullptr};
  run_host(*engine, *plan, a1);
  const test::Compare cmp = test::compare(*plan, o1.data(), c.shape.dtype, l1.data(), ref_o, ref_lse);
  EXPECT_EQ(cmp.non_finite, 0) << "non-finite outputs (unwritten or NaN)";
  EXPECT_EQ(cmp.lse_mismatch_inf, 0) << "rows with no key must give LSE -inf, others finite";
  EXPECT_LE(cmp.max_rel_o, o_bound(c.shape.dtype));
  EXPECT_LE(cmp.max_abs_lse, kLseBound);
  RunArgs a2{in.q.data(), in.k.data(), in.v.data(), o2.data(), l2.data(), nullptr};
  run_host(*engine, *plan, a2);
  EXPECT_EQ(std::memcmp(o1.data(), o2.data(), o_bytes), 0) << "O differs between two runs";
  EXPECT_EQ(std::memcmp(l1.data(), l2.data(), lse_n * sizeof(float)), 0) << "LSE differs between two runs";
}



class EngineTest : public ::testing::TestWithParam<std::tuple<std::string, DType, int>> {
 protected:
  void SetUp() override {
    if (!have_gpu()) GTEST_SKIP() << "no CUDA device";
    const std::string& e = std::get<0>(GetParam());
    if ((e == "fused/ws" || e == "fused/wgmma") && !hopper()) GTEST_SKIP() << e << " needs an sm_90 GPU";
  }
  ProblemShape shape(int heads) const {
    ProblemShape s;
    s.heads = heads;
    s.dtype = std::get<1>(GetParam());
    s.dim = std::get<2>(GetParam());
    return s;
  }
  void check(const Case& c, std::uint64_t seed, float spread = 1.0f) const {
    protattn::check(std::get<0>(GetParam()), c, seed, spread);
  }
};

TEST_P(EngineTest, RaggedSizesBothMasks) {
  std::uint64_t seed = 100;
  for (std::size_t n : {1u, 127u, 128u, 129u, 4096u + 17u}) {
    for (MaskMode m : {MaskMode::tiles, MaskMode::atoms}) {
      SCOPED_TRACE("n=" + std::to_string(n) + " mask=" + to_string(m));
      Case c{{globule_layout(n, m)}, shape(2)};
      check(c, ++seed);
    }
  }
}

TEST_P(EngineTest, EmptyRowsOneTileAllTiles) {
  // query tile 1 keeps no key tile: its rows give O = 0 and LSE = -inf
  check(Case{{hand_layout(300, {{0, 2}, {}, {1, 2}})}, shape(3)}, 11);
  check(Case{{hand_layout(90, {{0}})}, shape(1)}, 12);
  const Structure s = make_globule(700, 0.058, 3);
  LayoutOptions opt;
  check(Case{{build_dense_layout(s.xyz.data(), s.size(), opt)}, shape(2)}, 13);
}

TEST_P(EngineTest, WindowsMask) {
  const Structure s = make_globule(1000, 0.058, 5);
  LayoutOptions opt;
  opt.order = Order::file;
  check(Case{{build_window_layout(s.xyz.data(), s.size(), opt)}, shape(2)}, 21);
}

TEST_P(EngineTest, RaggedBatch) {
  Case c;
  c.layouts.push_back(globule_layout(300, MaskMode::atoms, 8.0f, 1));
  c.layouts.push_back(globule_layout(1000, MaskMode::tiles, 6.0f, 2));
  c.layouts.push_back(globule_layout(129, MaskMode::atoms, 10.0f, 3));
  c.layouts.push_back(hand_layout(200, {{0}, {}}));
  c.shape = shape(2);
  check(c, 31);
}

// Steep scores (inputs N(0, 16): a row's scaled scores spread over tens of log2 units): a later
// key tile often raises a row's max far above the base taken from the earlier ones, so the ws
// and wgmma kernels' lazy max (fused_params.hpp: kLazyMaxShare) falls back to computing S again
// and taking the max first, and most probabilities underflow.
TEST_P(EngineTest, SteepScores) {
  std::uint64_t seed = 60;
  for (MaskMode m : {MaskMode::tiles, MaskMode::atoms}) {
    SCOPED_TRACE(std::string("mask=") + to_string(m));
    check(Case{{globule_layout(4096 + 17, m)}, shape(2)}, ++seed, 4.0f);
  }
}

TEST_P(EngineTest, W1SplitKeyRange) {
  // 32 query tiles and one head cannot fill the GPU: the plan splits the key ranges and
  // combines the pieces afterwards.
  check(Case{{make_w1_layout(32, 800, 12, 1)}, shape(1)}, 41);
}

// The fused engine as it chooses, then each of its kernels on every case (the Hopper ones on
// sm_90 only); with the grouped engine, every device engine.
const std::vector<std::string> kFusedEngines = {"fused", "fused/ws", "fused/wgmma", "fused/mma_sync"};
const std::vector<std::string> kDeviceEngines = [] {
  std::vector<std::string> e = kFusedEngines;
#ifdef PROTATTN_HAVE_GROUPED
  e.push_back("grouped");
#endif
  return e;
}();

std::string engine_case_name(const ::testing::TestParamInfo<EngineTest::ParamType>& info) {
  std::string e = std::get<0>(info.param);
  for (char& ch : e)
    if (ch == '/') ch = '_';
  return e + "_" + to_string(std::get<1>(info.param)) + "_d" + std::to_string(std::get<2>(info.param));
}

INSTANTIATE_TEST_SUITE_P(EngineDtypeDim, EngineTest,
                         ::testing::Combine(::testing::ValuesIn(kDeviceEngines), ::testing::Values(DType::f16, DType::bf16),
                                            ::testing::Values(64, 128)),
                         engine_case_name);

// d=32 (AlphaFold 3's atom attention: 128 channels in 4 heads), the fused engine only: its tiles
// keep 64 columns (fused_kernel.cuh: kTileCols), S runs over the first 32 and P V over V's 32
// (m64n32 on the tensor cores; m64n40 with the ws kernel's row sums in fp16).
INSTANTIATE_TEST_SUITE_P(FusedDim32, EngineTest,
                         ::testing::Combine(::testing::ValuesIn(kFusedEngines), ::testing::Values(DType::f16, DType::bf16),
                                            ::testing::Values(32)),
                         engine_case_name);

// The harness itself, on any machine: the CPU engine through check() on two cases, each twice
// (the second time against the cached reference), and a different case after them.
TEST(ReferenceCache, SameCaseSameReferenceOtherCaseItsOwn) {
  ProblemShape shape;
  shape.heads = 2;
  const Case a{{globule_layout(300, MaskMode::atoms)}, shape};
  const Case b{{globule_layout(129, MaskMode::tiles)}, shape};
  EXPECT_NE(case_key(a, 7), case_key(b, 7));
  EXPECT_NE(case_key(a, 7), case_key(a, 8));
  for (int round = 0; round < 2; ++round) {
    check("cpu", a, 7);
    check("cpu", b, 7);
  }
  check("cpu", a, 8);
}

TEST(FusedGraph, RunIsCapturableAndReplaysBitIdentical) {
  if (!have_gpu()) GTEST_SKIP() << "no CUDA device";
  auto engine = make_engine("fused");
  const BlockLayout l = globule_layout(3000, MaskMode::atoms);
  const BlockLayout w1 = make_w1_layout(32, 800, 12, 1);  // split key ranges: two kernels
  // 157 query tiles x 2 heads: on an sm_90 GPU the ws kernel, whose blocks take the items beyond
  // the first wave from a counter that each run (each replay) must start from zero.
  const BlockLayout big = globule_layout(20000, MaskMode::tiles);
  ProblemShape shape;
  shape.heads = 2;
  for (const BlockLayout* lp : {&l, &w1, &big}) {
    auto plan = engine->plan({lp}, shape);
    if (lp == &big && hopper()) {
      const fused::PlanSummary sum = fused::summarize(*plan);
      EXPECT_STREQ(sum.kernel, "ws");
      EXPECT_GT(sum.items, sum.sms * sum.blocks_per_sm);
    }
    const test::Inputs in = test::random_inputs(shape, plan->total_n(), 5);
    DeviceIo io(in, shape.heads);
    ASSERT_EQ(io.status(), cudaSuccess);
    cudaStream_t stream;
    ASSERT_EQ(cudaStreamCreate(&stream), cudaSuccess);
    engine->run(*plan, io.args(stream));  // direct run
    ASSERT_EQ(cudaStreamSynchronize(stream), cudaSuccess);
    std::vector<std::uint8_t> o_direct, o_graph;
    std::vector<float> l_direct, l_graph;
    ASSERT_EQ(io.fetch(o_direct, l_direct), cudaSuccess);
    cudaGraph_t graph;
    cudaGraphExec_t exec;
    ASSERT_EQ(cudaStreamBeginCapture(stream, cudaStreamCaptureModeThreadLocal), cudaSuccess);
    engine->run(*plan, io.args(stream));
    ASSERT_EQ(cudaStreamEndCapture(stream, &graph), cudaSuccess);
    ASSERT_EQ(cudaGraphInstantiate(&exec, graph, 0), cudaSuccess);
    for (int i = 0; i < 3; ++i) {  // every replay on poisoned outputs (NaN in fp16): each must write them all
      io.poison(stream);
      ASSERT_EQ(cudaGraphLaunch(exec, stream), cudaSuccess);
      ASSERT_EQ(cudaStreamSynchronize(stream), cudaSuccess);
      ASSERT_EQ(io.fetch(o_graph, l_graph), cudaSuccess);
      EXPECT_EQ(std::memcmp(o_direct.data(), o_graph.data(), io.bytes()), 0) << "replay " << i << " differs from a direct run";
      EXPECT_EQ(std::memcmp(l_direct.data(), l_graph.data(), io.lse_bytes()), 0) << "replay " << i;
    }
    cudaGraphExecDestroy(exec);
    cudaGraphDestroy(graph);
    cudaStreamDestroy(stream);
  }
}

TEST(FusedErrors, UnsupportedShapesFailLoudly) {
  if (!have_gpu()) GTEST_SKIP() << "no CUDA device";
  auto engine = make_engine("fused");
  const BlockLayout l = hand_layout(128, {{0}});
  ProblemShape s;
  s.dim = 96;
  EXPECT_THROW(engine->plan({&l}, s), Error);
  s.dim = 64;
  s.dtype = DType::f32;
  EXPECT_THROW(engine->plan({&l}, s), Error);
  // Q, K and V off the 16-byte grid (the kernels copy them in 16-byte pieces): an error, not a
  // fault in the kernel.
  s.dtype = DType::f16;
  auto plan = engine->plan({&l}, s);
  const std::size_t bytes = static_cast<std::size_t>(plan->total_n()) * s.dim * 2 + 64;
  void* buf = nullptr;
  ASSERT_EQ(cudaMalloc(&buf, 4 * bytes), cudaSuccess);
  ASSERT_EQ(cudaMemset(buf, 0, 4 * bytes), cudaSuccess);  // inputs the kernel may read (initcheck)
  auto* base = static_cast<unsigned char*>(buf);
  RunArgs a{base, base + bytes, base + 2 * bytes, base + 3 * bytes, nullptr, nullptr};
  EXPECT_NO_THROW(engine->run(*plan, a));
  EXPECT_EQ(cudaDeviceSynchronize(), cudaSuccess);
  a.k = base + bytes + 8;
  try {
    engine->run(*plan, a);
    ADD_FAILURE() << "K 8 bytes off the 16-byte grid was accepted";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("16-byte aligned"), std::string::npos) << e.what();
  }
  EXPECT_EQ(cudaDeviceSynchronize(), cudaSuccess);
  cudaFree(buf);
}

}  // namespace
}  // namespace protattn

namespace protattn {
namespace {

// Runs `layouts` on a fresh plan of the fused engine (kernel forced) with the given inputs, on
// poisoned outputs; returns O and LSE.
void fused_outputs_of(const std::string& kernel, const std::vector<const BlockLayout*>& layouts, const ProblemShape& shape,
                      const test::Inputs& in, std::vector<std::uint8_t>& o, std::vector<float>& lse,
                      fused::PlanSummary* summary = nullptr) {
  EngineOptions opt;
  opt.fused_kernel = kernel;
  auto engine = make_engine("fused", opt);
  auto plan = engine->plan(layouts, shape);
  if (summary) *summary = fused::summarize(*plan);
  o.assign(in.q.size(), test::kPoisonByte);
  lse.assign(static_cast<std::size_t>(shape.heads) * plan->total_n(), std::numeric_limits<float>::quiet_NaN());
  RunArgs a{in.q.data(), in.k.data(), in.v.data(), o.data(), lse.data(), nullptr};
  run_host(*engine, *plan, a);
}

// fused_outputs_of on random inputs (seed 11).
void fused_outputs(const std::string& kernel, const std::vector<const BlockLayout*>& layouts, const ProblemShape& shape,
                   std::vector<std::uint8_t>& o, std::vector<float>& lse, fused::PlanSummary* summary) {
  std::int64_t total_n = 0;
  for (const BlockLayout* l : layouts) total_n += l->n;
  fused_outputs_of(kernel, layouts, shape, test::random_inputs(shape, total_n, 11), o, lse, summary);
}

// fused_outputs with the engine switch `env` (PROTATTN_FUSED_...) set to 0, then unset again.
void fused_outputs_switched_off(const char* env, const std::string& kernel, const std::vector<const BlockLayout*>& layouts,
                                const ProblemShape& shape, std::vector<std::uint8_t>& o, std::vector<float>& lse,
                                fused::PlanSummary* summary) {
  ASSERT_EQ(setenv(env, "0", 1), 0);
  fused_outputs(kernel, layouts, shape, o, lse, summary);
  unsetenv(env);
}

// The same bits of O and LSE from two runs.
void expect_same_bits(const std::vector<std::uint8_t>& o_a, const std::vector<float>& l_a,
                      const std::vector<std::uint8_t>& o_b, const std::vector<float>& l_b, const std::string& what) {
  ASSERT_EQ(o_a.size(), o_b.size()) << what;
  ASSERT_EQ(l_a.size(), l_b.size()) << what;
  EXPECT_EQ(std::memcmp(o_a.data(), o_b.data(), o_b.size()), 0) << what << ": O differs";
  EXPECT_EQ(std::memcmp(l_a.data(), l_b.data(), l_b.size() * sizeof(float)), 0) << what << ": LSE differs";
}

// On the ws kernel, f16 at d=64, bf16 at d=128 and f16 at d=32, `heads` heads of `batch`: the
// outputs with the engine switch `env` on and off are the same bits, and match the float64
// reference (with steep scores too when `steep`). Returns the plans' summaries (switch on), one per
// case.
std::vector<fused::PlanSummary> ws_switch_keeps_bits(const char* env, const std::vector<BlockLayout>& batch, int heads,
                                                     bool steep) {
  std::vector<const BlockLayout*> layouts;
  for (const BlockLayout& l : batch) layouts.push_back(&l);
  std::vector<fused::PlanSummary> sums;
  for (const auto& [dtype, dim] : {std::pair{DType::f16, 64}, std::pair{DType::bf16, 128}, std::pair{DType::f16, 32}}) {
    ProblemShape shape;
    shape.heads = heads;
    shape.dtype = dtype;
    shape.dim = dim;
    const std::string what = std::string(env) + ", " + to_string(dtype) + " d" + std::to_string(dim);
    std::vector<std::uint8_t> o_on, o_off;
    std::vector<float> l_on, l_off;
    sums.emplace_back();
    fused_outputs("ws", layouts, shape, o_on, l_on, &sums.back());
    fused_outputs_switched_off(env, "ws", layouts, shape, o_off, l_off, nullptr);
    expect_same_bits(o_on, l_on, o_off, l_off, what);
    Case c;
    c.layouts = batch;
    c.shape = shape;
    check("fused/ws", c, 11);
    if (steep) check("fused/ws", c, 12, 4.0f);  // steep scores: the lazy max's way back
  }
  return sums;
}

// Params::kind's out-of-reach bits (BlockLayout::rows_out, src/layout/row_reach.cpp): in the ws kernel a warp whose
// 16 query rows reach no key of a tile skips the tile's mask and softmax; the other kernels leave
// the bits alone. On every kernel, for a protein alone and in a ragged batch with a globule whose
// last tile is mostly padding, the outputs are the bits computed with nothing skipped
// (PROTATTN_FUSED_REACH=0), and they match the float64 reference; the protein skips many warps.
TEST(FusedReach, SkippingGivesTheSameBits) {
  if (!have_gpu()) GTEST_SKIP() << "no CUDA device";
  const char* env_data = std::getenv("PROTATTN_TEST_DATA");
  const Structure s = read_structure(std::string(env_data ? env_data : PROTATTN_TEST_DATA) + "/2hhb.pdb");
  LayoutOptions lo;
  lo.mask = MaskMode::atoms;
  lo.cutoff = 8.0f;
  const BlockLayout protein = build_cutoff_layout(s.xyz.data(), s.xyz.size() / 3, lo);
  const BlockLayout glob = globule_layout(1000 + 17, MaskMode::atoms);
  std::vector<std::string> kernels = {"mma_sync"};
  if (hopper()) kernels = {"ws", "wgmma", "mma_sync"};
  for (const std::string& kernel : kernels)
    for (const auto& [dtype, dim] : {std::pair{DType::f16, 64}, std::pair{DType::bf16, 128}})
      for (const bool ragged : {false, true}) {
        ProblemShape shape;
        shape.heads = 2;
        shape.dtype = dtype;
        shape.dim = dim;
        std::vector<const BlockLayout*> layouts = {&protein};
        if (ragged) layouts.push_back(&glob);
        const std::string what = kernel + " " + to_string(dtype) + " d" + std::to_string(dim) + (ragged ? " ragged" : "");
        std::vector<std::uint8_t> o_skip, o_all;
        std::vector<float> l_skip, l_all;
        fused::PlanSummary sum_skip, sum_all;
        fused_outputs(kernel, layouts, shape, o_skip, l_skip, &sum_skip);
        fused_outputs_switched_off("PROTATTN_FUSED_REACH", kernel, layouts, shape, o_all, l_all, &sum_all);
        EXPECT_GT(sum_skip.warps_out, sum_skip.warp_tiles / 3) << what;  // 2HHB: about half
        EXPECT_EQ(sum_all.warps_out, 0) << what;
        expect_same_bits(o_skip, l_skip, o_all, l_all, what);
        // The protein's bits made by its builder (LayoutOptions::mark_rows_out, as a server's
        // network thread does) instead of by the plan: the same plan, the same outputs.
        BlockLayout marked = protein;
        mark_rows_out(marked);
        ASSERT_EQ(marked.rows_out.size(), protein.col_idx.size());
        layouts[0] = &marked;
        std::vector<std::uint8_t> o_marked;
        std::vector<float> l_marked;
        fused::PlanSummary sum_marked;
        fused_outputs(kernel, layouts, shape, o_marked, l_marked, &sum_marked);
        EXPECT_EQ(sum_marked.warps_out, sum_skip.warps_out) << what;
        expect_same_bits(o_marked, l_marked, o_skip, l_skip, what + ", rows_out given");
        if (kernel == kernels.front() && !ragged) {
          Case c;
          for (const BlockLayout* l : layouts) c.layouts.push_back(*l);
          c.shape = shape;
          check("fused/" + kernel, c, 11);  // against the float64 reference
        }
      }
}

// The ws kernel's tiles by TMA (tiles inside a structure) and by cp.async (tiles crossing a
// structure's end, with zeros past it): a ragged batch of sizes off the tile grid, both masks,
// gives the bits of the run that copies every tile with cp.async (PROTATTN_FUSED_TMA=0), and
// matches the float64 reference.
TEST(FusedTma, SameBitsAsCpAsync) {
  if (!have_gpu()) GTEST_SKIP() << "no CUDA device";
  if (!hopper()) GTEST_SKIP() << "the ws kernel needs an sm_90 GPU";
  std::vector<BlockLayout> batch;
  batch.push_back(globule_layout(1000 + 17, MaskMode::atoms, 8.0f, 4));
  batch.push_back(globule_layout(640, MaskMode::tiles, 6.0f, 5));
  batch.push_back(globule_layout(129, MaskMode::atoms, 10.0f, 6));
  ws_switch_keeps_bits("PROTATTN_FUSED_TMA", batch, 3, false);
}

// A ragged batch of different structures, masks, an empty row and lengths off the tile grid:
// 17 query tiles a head (x 16 heads: 272 items, more than an H100's or H200's 132 SMs). The
// globules' seeds are seed, seed + 1 and seed + 2.
std::vector<BlockLayout> persistent_batch(std::uint64_t seed) {
  std::vector<BlockLayout> batch;
  batch.push_back(globule_layout(1000 + 17, MaskMode::atoms, 8.0f, seed));
  batch.push_back(globule_layout(640, MaskMode::tiles, 6.0f, seed + 1));
  batch.push_back(hand_layout(200, {{0}, {}}));
  batch.push_back(globule_layout(129, MaskMode::atoms, 10.0f, seed + 2));
  return batch;
}

// The ws kernel with a block per SM slot taking items from a counter (the stage ring, its
// barriers and Q's tile running on from item to item of different structures, masks, empty rows
// and lengths) gives the bits of a block per item (PROTATTN_FUSED_PERSISTENT=0), and matches the
// float64 reference, steep scores too (the lazy max's way back reads Q's tile).
TEST(FusedPersistent, SameBitsAsBlockPerItem) {
  if (!have_gpu()) GTEST_SKIP() << "no CUDA device";
  if (!hopper()) GTEST_SKIP() << "the ws kernel needs an sm_90 GPU";
  const std::vector<BlockLayout> batch = persistent_batch(7);
  for (const fused::PlanSummary& sum : ws_switch_keeps_bits("PROTATTN_FUSED_PERSISTENT", batch, 16, true))
    EXPECT_GT(sum.items, sum.sms);
}

// The persistent blocks on a few SMs (PROTATTN_FUSED_WS_GRID=5: each block takes about 50 of the
// 272 items from the counter, its stage ring and Q's tile running on across them) give the bits of
// the default grid, and the plan launches those 5 blocks.
TEST(FusedPersistent, FewBlocksSameBits) {
  if (!have_gpu()) GTEST_SKIP() << "no CUDA device";
  if (!hopper()) GTEST_SKIP() << "the ws kernel needs an sm_90 GPU";
  const std::vector<BlockLayout> batch = persistent_batch(10);
  std::vector<const BlockLayout*> layouts;
  for (const BlockLayout& l : batch) layouts.push_back(&l);
  for (const auto& [dtype, dim] : {std::pair{DType::f16, 64}, std::pair{DType::bf16, 128}}) {
    ProblemShape shape;
    shape.heads = 16;
    shape.dtype = dtype;
    shape.dim = dim;
    const std::string what = std::string("WS_GRID=5, ") + to_string(dtype) + " d" + std::to_string(dim);
    std::vector<std::uint8_t> o_all, o_few;
    std::vector<float> l_all, l_few;
    fused::PlanSummary sum_all, sum_few;
    fused_outputs("ws", layouts, shape, o_all, l_all, &sum_all);
    ASSERT_EQ(setenv("PROTATTN_FUSED_WS_GRID", "5", 1), 0);
    fused_outputs("ws", layouts, shape, o_few, l_few, &sum_few);
    unsetenv("PROTATTN_FUSED_WS_GRID");
    EXPECT_EQ(sum_few.blocks, 5) << what;
    EXPECT_EQ(sum_all.blocks, std::min(sum_all.items, sum_all.sms * sum_all.blocks_per_sm)) << what;
    EXPECT_GT(sum_few.items, 10 * sum_few.blocks) << what;
    expect_same_bits(o_all, l_all, o_few, l_few, what);
  }
}

// Split tiles on one plan, run after run with other inputs queued back to back on one stream:
// each run's combine must merge its own run's partials (the workspace is the plan's, shared by
// its runs). W1's split lists in a batch with a structure whose lists are too short to cut (those
// tiles write O directly): every run gives the bits of a fresh plan on the same inputs, on each
// kernel.
TEST(FusedSplitGpu, RunsOnOnePlanEachCombineTheirOwnPieces) {
  if (!have_gpu()) GTEST_SKIP() << "no CUDA device";
  const BlockLayout w1 = make_w1_layout(32, 800, 12, 1);
  const BlockLayout small = hand_layout(200, {{0}, {}});
  ProblemShape shape;
  shape.dtype = DType::f16;
  shape.dim = 64;
  std::vector<std::string> kernels = {"mma_sync"};
  if (hopper()) kernels = {"ws", "wgmma", "mma_sync"};
  for (const std::string& kernel : kernels) {
    SCOPED_TRACE("kernel " + kernel);
    EngineOptions opt;
    opt.fused_kernel = kernel;
    auto engine = make_engine("fused", opt);
    auto plan = engine->plan({&w1, &small}, shape);
    ASSERT_GT(fused::summarize(*plan).combines, 0);
    const test::Inputs in[2] = {test::random_inputs(shape, plan->total_n(), 21), test::random_inputs(shape, plan->total_n(), 22)};
    constexpr int kRuns = 6;  // inputs 0, 1, 0, 1, ...: each run its own buffers, poisoned
    std::vector<std::unique_ptr<DeviceIo>> io;
    for (int r = 0; r < kRuns; ++r) {
      io.push_back(std::make_unique<DeviceIo>(in[r % 2], shape.heads));
      ASSERT_EQ(io.back()->status(), cudaSuccess);
    }
    cudaStream_t stream;
    ASSERT_EQ(cudaStreamCreate(&stream), cudaSuccess);
    for (int r = 0; r < kRuns; ++r) engine->run(*plan, io[r]->args(stream));  // queued back to back, no wait between the runs
    ASSERT_EQ(cudaStreamSynchronize(stream), cudaSuccess);
    for (int i = 0; i < 2; ++i) {
      std::vector<std::uint8_t> o_fresh;
      std::vector<float> l_fresh;
      fused_outputs_of(kernel, {&w1, &small}, shape, in[i], o_fresh, l_fresh);
      for (int r = i; r < kRuns; r += 2) {
        std::vector<std::uint8_t> o_run, o_other;
        std::vector<float> l_run, l_other;
        ASSERT_EQ(io[r]->fetch(o_run, l_run), cudaSuccess);
        expect_same_bits(o_fresh, l_fresh, o_run, l_run, "run " + std::to_string(r) + " against a fresh plan");
        if (i == 1) {
          ASSERT_EQ(io[r - 1]->fetch(o_other, l_other), cudaSuccess);
          EXPECT_NE(std::memcmp(o_other.data(), o_run.data(), o_run.size()), 0) << "the two inputs must give other outputs";
        }
      }
    }
    cudaStreamDestroy(stream);
  }
}

// A batch of a little more than one wave of query tiles x heads on the ws kernel (one block per
// multiprocessor): the plan cuts the key lists into two waves' worth of pieces
// (split_plan.hpp: choose_pieces) instead of leaving a short second wave of whole lists, and the
// result matches the float64 reference, run after run.
TEST(FusedSplitGpu, PartlyEmptyLastWaveIsCut) {
  if (!have_gpu()) GTEST_SKIP() << "no CUDA device";
  if (!hopper()) GTEST_SKIP() << "the ws kernel needs an sm_90 GPU";
  int device = 0, sms = 0;
  ASSERT_EQ(cudaGetDevice(&device), cudaSuccess);
  ASSERT_EQ(cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, device), cudaSuccess);
  const BlockLayout w1 = make_w1_layout(32, 800, 12, 1);
  ProblemShape shape;
  shape.heads = (sms * 11 / 10) / 32 + 1;  // 32 lists a head: 1.1-1.35 waves of lists
  shape.dtype = DType::f16;
  shape.dim = 64;
  std::vector<std::uint8_t> o;
  std::vector<float> lse;
  fused::PlanSummary sum;
  fused_outputs("ws", {&w1}, shape, o, lse, &sum);
  ASSERT_EQ(sum.blocks_per_sm, 1);
  EXPECT_EQ(sum.items, 2 * sum.sms) << "two whole waves of pieces";
  EXPECT_GT(sum.combines, 0);
  check("fused/ws", Case{{w1}, shape}, 51);
}

}  // namespace
}  // namespace protattn
