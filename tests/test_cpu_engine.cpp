// Tests of the engine registry, the mask rule and the cpu engine against the float64 reference.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <limits>
#include <random>
#include <string>
#include <vector>

#include "common/reference.hpp"
#include "protattn/engine.hpp"
#include "protattn/error.hpp"
#include "protattn/layout.hpp"
#include "protattn/structure.hpp"

namespace protattn {
namespace {

// Bounds on O, relative to the largest |O| of each head (test::compare). The engine
// accumulates in float64 like the reference, so its only sizeable error is the final rounding
// of O to the dtype: half an ulp, 2^-24 (fp32), 2^-11 (fp16), 2^-8 (bf16) of |O|, plus 2^-24
// for the float64 -> float -> 16-bit double rounding. The brief's fp32 bound is 1e-6; this
// one is tighter.
double o_bound(DType t) {
  const double kSlack = std::ldexp(1.0, -24);
  switch (t) {
    case DType::f32: return 1e-7;
    case DType::f16: return std::ldexp(1.0, -11) + kSlack;
    case DType::bf16: return std::ldexp(1.0, -8) + kSlack;
  }
  return 0;
}
// LSE is rounded once to float from float64: relative error 2^-24, plus float64 noise.
constexpr double kLseRel = 6.0e-8;
constexpr double kLseAbsFloor = 1e-12;

const std::string kData = PROTATTN_TEST_DATA;

// Identity-order layout over n atoms with the given kept key tiles per query tile (sorted by
// the caller), every block of `kind`, coordinates random in a cube of `box` Angstrom.
BlockLayout hand_layout(int n, int tile, const std::vector<std::vector<int>>& rows, BlockKind kind,
                        MaskMode mask = MaskMode::tiles, float cutoff = 0, float box = 30, unsigned seed = 7) {
  BlockLayout l;
  l.n = n;
  l.tile = tile;
  l.n_tiles = (n + tile - 1) / tile;
  l.row_ptr.assign(1, 0);
  for (int r = 0; r < l.n_tiles; ++r) {
    if (r < static_cast<int>(rows.size()))
      for (int c : rows[r]) l.col_idx.push_back(c);
    l.row_ptr.push_back(static_cast<std::int32_t>(l.col_idx.size()));
  }
  l.kind.assign(l.col_idx.size(), kind);
  l.perm.resize(n);
  for (int i = 0; i < n; ++i) l.perm[i] = i;
  std::mt19937 rng(seed);
  std::uniform_real_distribution<float> u(0.0f, box);
  l.coords.resize(3 * static_cast<std::size_t>(n));
  for (float& x : l.coords) x = u(rng);
  l.cutoff = cutoff;
  l.mask = mask;
  l.builder = "edges";
  return l;
}

std::vector<std::vector<int>> all_tiles(int n, int tile) {
  const int t = (n + tile - 1) / tile;
  std::vector<int> row(t);
  for (int c = 0; c < t; ++c) row[c] = c;
  return std::vector<std::vector<int>>(t, row);
}

std::vector<std::vector<int>> band_tiles(int n, int tile, int band) {
  const int t = (n + tile - 1) / tile;
  std::vector<std::vector<int>> rows(t);
  for (int r = 0; r < t; ++r)
    for (int c = std::max(0, r - band); c <= std::min(t - 1, r + band); ++c) rows[r].push_back(c);
  return rows;
}

struct Outputs {
  std::vector<std::uint8_t> o;
  std::vector<float> lse;
};

Outputs run_poisoned(Engine& engine, const Plan& plan, const test::Inputs& in) {
  Outputs out;
  out.o.assign(in.q.size(), test::kPoisonByte);
  out.lse.assign(static_cast<std::size_t>(plan.shape.heads) * plan.total_n(), std::numeric_limits<float>::quiet_NaN());
  const RunArgs args{in.q.data(), in.k.data(), in.v.data(), out.o.data(), out.lse.data(), nullptr};
  run_host(engine, plan, args);
  return out;
}

// Plans the batch, runs it on poisoned outputs and checks every element of O and LSE against
// the reference; rows with no key must be exactly O = 0 and LSE = -inf. Then checks that a
// second run and a run with another thread count are bit-identical.
void check(const std::vector<const BlockLayout*>& layouts, const ProblemShape& shape, std::uint64_t seed,
           float spread = 1.0f, int threads = 4) {
  auto engine = make_engine("cpu", EngineOptions{threads, 0});
  auto plan = engine->plan(layouts, shape);
  const std::int64_t total = plan->total_n();
  const test::Inputs in = test::random_inputs(shape, total, seed, spread);
  std::vector<double> ref_o, ref_lse;
  test::reference_batch(*plan, in, ref_o, ref_lse);

  const Outputs a = run_poisoned(*engine, *plan, in);
  const test::Compare cmp = test::compare(*plan, a.o.data(), shape.dtype, a.lse.data(), ref_o, ref_lse);
  EXPECT_EQ(cmp.non_finite, 0) << "outputs left unwritten or NaN";
  EXPECT_EQ(cmp.lse_mismatch_inf, 0) << "rows with no key must give LSE -inf, the others finite";
  EXPECT_LE(cmp.max_rel_o, o_bound(shape.dtype)) << to_string(shape.dtype);

  const std::vector<float> of = test::to_float(a.o.data(), shape.dtype, static_cast<std::int64_t>(shape.heads) * total * shape.dim);
  std::int64_t lse_bad = 0, empty_bad = 0;
  for (std::size_t r = 0; r < ref_lse.size(); ++r) {
    if (std::isinf(ref_lse[r])) {
      for (int c = 0; c < shape.dim; ++c) empty_bad += of[r * shape.dim + c] != 0.0f;
      continue;
    }
    lse_bad += !(std::abs(a.lse[r] - ref_lse[r]) <= kLseRel * std::abs(ref_lse[r]) + kLseAbsFloor);
  }
  EXPECT_EQ(lse_bad, 0) << "LSE rows beyond the bound";
  EXPECT_EQ(empty_bad, 0) << "rows with no key must have O exactly 0";

  const Outputs b = run_poisoned(*engine, *plan, in);
  EXPECT_TRUE(a.o == b.o) << "O differs between two runs";
  EXPECT_EQ(std::memcmp(a.lse.data(), b.lse.data(), a.lse.size() * sizeof(float)), 0) << "LSE differs between two runs";
  auto single = make_engine("cpu", EngineOptions{1, 0});
  auto plan1 = single->plan(layouts, shape);
  const Outputs c = run_poisoned(*single, *plan1, in);
  EXPECT_TRUE(a.o == c.o) << "O differs between " << threads << " threads and 1";
  EXPECT_EQ(std::memcmp(a.lse.data(), c.lse.data(), a.lse.size() * sizeof(float)), 0) << "LSE differs between thread counts";
  // The baseline (SSE2) copy of the products must give the same bits as the widest this CPU runs.
  ::setenv("PROTATTN_CPU_NO_AVX2", "1", 1);
  auto narrow = make_engine("cpu", EngineOptions{threads, 0});
  ::unsetenv("PROTATTN_CPU_NO_AVX2");
  auto plan_narrow = narrow->plan(layouts, shape);
  const Outputs d = run_poisoned(*narrow, *plan_narrow, in);
  EXPECT_TRUE(a.o == d.o) << "O differs between the SSE2 and the AVX2 products";
  EXPECT_EQ(std::memcmp(a.lse.data(), d.lse.data(), a.lse.size() * sizeof(float)), 0) << "LSE differs between SSE2 and AVX2";
}

void check_one(const BlockLayout& l, const ProblemShape& shape, std::uint64_t seed, float spread = 1.0f) {
  check({&l}, shape, seed, spread);
}

ProblemShape shape_of(int heads, int dim, DType t, float scale = 0) {
  ProblemShape s;
  s.heads = heads;
  s.dim = dim;
  s.dtype = t;
  s.scale = scale;
  return s;
}

constexpr DType kAllTypes[] = {DType::f32, DType::f16, DType::bf16};

TEST(EngineRegistry, NamesDtypesAndErrors) {
  const std::vector<std::string> names = engine_names();
  ASSERT_FALSE(names.empty());
  EXPECT_EQ(names.front(), "cpu");
  auto e = make_engine("cpu");
  EXPECT_STREQ(e->name(), "cpu");
  EXPECT_FALSE(e->on_device());
  try {
    make_engine("warp-drive");
    FAIL() << "unknown engine accepted";
  } catch (const Error& err) {
    EXPECT_NE(std::string(err.what()).find("warp-drive"), std::string::npos);
    EXPECT_NE(std::string(err.what()).find("cpu"), std::string::npos);
  }
  EXPECT_THROW(make_engine("cpu", EngineOptions{-1, 0}), Error);
  EXPECT_EQ(parse_dtype("fp16"), DType::f16);
  EXPECT_EQ(parse_dtype("f32"), DType::f32);
  EXPECT_EQ(parse_dtype("bf16"), DType::bf16);
  EXPECT_THROW(parse_dtype("fp8"), Error);
  for (DType t : kAllTypes) EXPECT_EQ(parse_dtype(to_string(t)), t);
  EXPECT_EQ(dtype_size(DType::f32), 4u);
  EXPECT_EQ(dtype_size(DType::f16), 2u);
  EXPECT_EQ(dtype_size(DType::bf16), 2u);
  EXPECT_FLOAT_EQ(shape_of(1, 64, DType::f16).effective_scale(), 0.125f);
  EXPECT_FLOAT_EQ(shape_of(1, 64, DType::f16, 0.5f).effective_scale(), 0.5f);
}

TEST(EngineRegistry, PlanCountsComputedBlocksOnly) {
  const BlockLayout a = hand_layout(300, 128, band_tiles(300, 128, 1), BlockKind::full);  // 3 tiles, 7 kept
  const BlockLayout b = hand_layout(64, 32, all_tiles(64, 32), BlockKind::full);           // 2 tiles, 4 kept
  auto e = make_engine("cpu");
  auto plan = e->plan({&a, &b}, shape_of(3, 16, DType::f16));
  EXPECT_EQ(plan->nnz_blocks(), 11);
  EXPECT_EQ(plan->total_n(), 364);
  ASSERT_EQ(plan->offsets.size(), 3u);
  EXPECT_EQ(plan->offsets[1], 300);
  EXPECT_DOUBLE_EQ(plan->flops(), 4.0 * (7 * 128 * 128 + 4 * 32 * 32) * 16 * 3);
}

TEST(EngineRegistry, PlanRejectsBadShapesAndLayouts) {
  const BlockLayout a = hand_layout(100, 128, all_tiles(100, 128), BlockKind::full);
  auto e = make_engine("cpu");
  EXPECT_THROW(e->plan({&a}, shape_of(0, 64, DType::f16)), Error);
  EXPECT_THROW(e->plan({&a}, shape_of(1, 0, DType::f16)), Error);
  EXPECT_THROW(e->plan({&a}, shape_of(1, 64, DType::f16, std::numeric_limits<float>::infinity())), Error);
  EXPECT_THROW(e->plan({nullptr}, shape_of(1, 64, DType::f16)), Error);
  BlockLayout broken = a;
  broken.col_idx[0] = 5;  // beyond the only tile
  EXPECT_THROW(e->plan({&broken}, shape_of(1, 64, DType::f16)), Error);
}

TEST(MaskRule, TilesWindowsAtomsAndPadding) {
  BlockLayout l = hand_layout(300, 128, all_tiles(300, 128), BlockKind::partial);
  EXPECT_TRUE(mask_allows(l, 0, 299));
  EXPECT_FALSE(mask_allows(l, 0, 300));
  EXPECT_FALSE(mask_allows(l, 300, 0));
  EXPECT_FALSE(mask_allows(l, -1, 0));

  l.mask = MaskMode::windows;
  // Query block 2 (rows 64..95) is centred on 80: keys [16, 144).
  EXPECT_FALSE(mask_allows(l, 64, 15));
  EXPECT_TRUE(mask_allows(l, 64, 16));
  EXPECT_TRUE(mask_allows(l, 95, 143));
  EXPECT_FALSE(mask_allows(l, 95, 144));
  // Query block 0 is centred on 16: keys [-48, 80).
  EXPECT_TRUE(mask_allows(l, 0, 0));
  EXPECT_TRUE(mask_allows(l, 31, 79));
  EXPECT_FALSE(mask_allows(l, 31, 80));
  // Query block 9 (rows 288..299, the last) centred on 304: keys [240, 300) after clipping.
  EXPECT_TRUE(mask_allows(l, 299, 240));
  EXPECT_FALSE(mask_allows(l, 299, 239));

  l.mask = MaskMode::atoms;
  l.cutoff = 5.0f;
  l.coords.assign(3 * 300, 0.0f);
  l.coords[3 * 1] = 3.0f;   // atom 1 at (3, 4, 0): exactly 5 from atom 0
  l.coords[3 * 1 + 1] = 4.0f;
  l.coords[3 * 2] = 5.0f;   // atom 2 just beyond 5
  l.coords[3 * 2 + 1] = 0.001f;
  for (int i = 3; i < 300; ++i) l.coords[3 * i + 2] = 100.0f * i;  // far from every other atom
  EXPECT_TRUE(mask_allows(l, 0, 1));
  EXPECT_TRUE(mask_allows(l, 1, 0));
  EXPECT_FALSE(mask_allows(l, 0, 2));
  EXPECT_TRUE(mask_allows(l, 7, 7));
  EXPECT_FALSE(mask_allows(l, 7, 8));
  EXPECT_FALSE(mask_allows(l, 7, 300));
}

TEST(CpuEngine, SizesAroundOneTileDenseAllDtypes) {
  std::uint64_t seed = 100;
  for (int n : {1, 127, 128, 129, 300}) {
    const BlockLayout l = hand_layout(n, 128, all_tiles(n, 128), BlockKind::full);
    for (DType t : kAllTypes) {
      SCOPED_TRACE("n=" + std::to_string(n) + " " + to_string(t));
      check_one(l, shape_of(2, 64, t), ++seed);
    }
  }
}

TEST(CpuEngine, OddHeadDimAndExplicitScale) {
  const BlockLayout l = hand_layout(203, 64, all_tiles(203, 64), BlockKind::full);
  check_one(l, shape_of(3, 33, DType::f32, 0.3f), 11);
  check_one(l, shape_of(1, 1, DType::f16), 12);
  check_one(l, shape_of(2, 128, DType::bf16), 13);
}

TEST(CpuEngine, LargeScoresStayFinite) {
  // Scores of order +-100: exp() of raw scores would overflow; online softmax must not.
  const BlockLayout l = hand_layout(257, 128, band_tiles(257, 128, 1), BlockKind::full);
  check_one(l, shape_of(2, 64, DType::f32), 21, 6.0f);
}

TEST(CpuEngine, LargeBandedLayout) {
  // 4096 + 17 atoms: 33 tiles, band of 2 tiles plus a few far tiles, the last tile 17 rows.
  const int n = 4096 + 17;
  std::vector<std::vector<int>> rows = band_tiles(n, 128, 2);
  rows[0].push_back(32);
  rows[32].insert(rows[32].begin(), 0);
  rows[10].push_back(20);
  std::sort(rows[10].begin(), rows[10].end());
  const BlockLayout l = hand_layout(n, 128, rows, BlockKind::full);
  check_one(l, shape_of(1, 64, DType::f32), 31);
  check_one(l, shape_of(1, 64, DType::f16), 32);
}

TEST(CpuEngine, EmptyRowsOneTileAndPartialTilesMode) {
  // Query tile 1 keeps nothing: its 128 rows get O = 0, LSE = -inf.
  const BlockLayout holes = hand_layout(300, 128, {{0, 2}, {}, {0, 1, 2}}, BlockKind::full);
  check_one(holes, shape_of(2, 32, DType::f16), 41);
  // A layout with no kept tile at all.
  const BlockLayout none = hand_layout(200, 128, {{}, {}}, BlockKind::full);
  check_one(none, shape_of(1, 32, DType::f32), 42);
  // One kept tile, off the diagonal, in a 2-tile layout; and one tile of 50 atoms.
  check_one(hand_layout(256, 128, {{1}, {}}, BlockKind::full), shape_of(2, 64, DType::bf16), 43);
  check_one(hand_layout(50, 128, {{0}}, BlockKind::full), shape_of(2, 64, DType::f32), 44);
  // Tiles mode: PARTIAL blocks mask only the padding, exactly like FULL ones.
  check_one(hand_layout(300, 128, all_tiles(300, 128), BlockKind::partial), shape_of(2, 32, DType::f32), 45);
}

TEST(CpuEngine, AtomsMaskWithPaddingAndRowsWithoutNeighbours) {
  // 300 atoms in a 30 A box, cutoff 6 A: most pairs masked, every block PARTIAL.
  BlockLayout l = hand_layout(300, 128, all_tiles(300, 128), BlockKind::partial, MaskMode::atoms, 6.0f);
  check_one(l, shape_of(2, 32, DType::f32), 51);
  check_one(l, shape_of(2, 32, DType::f16), 52);
  // The diagonal tile of row 1 dropped: atoms 128..255 see only far tiles, and one of them is
  // isolated (far from everything), so it has no key at all inside a non-empty tile row.
  BlockLayout holes = hand_layout(300, 128, {{0, 1, 2}, {0, 2}, {0, 1, 2}}, BlockKind::partial, MaskMode::atoms, 6.0f);
  holes.coords[3 * 130 + 0] = 500.0f;
  check_one(holes, shape_of(2, 32, DType::bf16), 53);
}

TEST(CpuEngine, WindowsMask) {
  const BlockLayout l = hand_layout(300, 128, all_tiles(300, 128), BlockKind::partial, MaskMode::windows);
  check_one(l, shape_of(2, 64, DType::f32), 61);
  LayoutOptions opt;
  opt.mask = MaskMode::windows;
  const Structure s = make_globule(1000, 0.058, 3);
  const BlockLayout built = build_window_layout(s.xyz.data(), s.size(), opt);
  check_one(built, shape_of(1, 64, DType::f16), 62);
}

TEST(CpuEngine, RaggedBatchOfThreeStructures) {
  // Different sizes, tiles and mask modes in one batch; the middle one is a single atom.
  const BlockLayout a = hand_layout(517, 128, band_tiles(517, 128, 1), BlockKind::partial, MaskMode::atoms, 8.0f);
  const BlockLayout b = hand_layout(1, 64, {{0}}, BlockKind::full);
  const BlockLayout c = hand_layout(250, 64, all_tiles(250, 64), BlockKind::partial, MaskMode::windows);
  for (DType t : kAllTypes) {
    SCOPED_TRACE(to_string(t));
    check({&a, &b, &c}, shape_of(3, 32, t), 70 + static_cast<int>(t));
  }
}

TEST(CpuEngine, RealStructureCutoffLayout) {
  // Ubiquitin (tests/data/1ubq.pdb, 660 heavy atoms), Hilbert order, exact 8 A atom cutoff.
  const Structure s = read_structure(kData + "/1ubq.pdb");
  LayoutOptions opt;
  opt.mask = MaskMode::atoms;
  opt.cutoff = 8.0f;
  const BlockLayout l = build_cutoff_layout(s.xyz.data(), s.size(), opt);
  check_one(l, shape_of(2, 64, DType::f16), 81);
}

TEST(CpuEngine, NullLseWritesOnlyO) {
  const BlockLayout l = hand_layout(150, 128, all_tiles(150, 128), BlockKind::full);
  auto e = make_engine("cpu", EngineOptions{2, 0});
  const ProblemShape shape = shape_of(2, 16, DType::f32);
  auto plan = e->plan({&l}, shape);
  const test::Inputs in = test::random_inputs(shape, plan->total_n(), 91);
  const Outputs with_lse = run_poisoned(*e, *plan, in);
  std::vector<std::uint8_t> o(in.q.size(), test::kPoisonByte);
  e->run(*plan, RunArgs{in.q.data(), in.k.data(), in.v.data(), o.data(), nullptr, nullptr});
  EXPECT_TRUE(o == with_lse.o);
}

TEST(CpuEngine, RunRejectsForeignPlansAndNullBuffers) {
  const BlockLayout l = hand_layout(10, 128, {{0}}, BlockKind::full);
  auto e = make_engine("cpu");
  auto plan = e->plan({&l}, shape_of(1, 8, DType::f32));
  EXPECT_THROW(e->run(*plan, RunArgs{}), Error);
  Plan foreign;
  EXPECT_THROW(e->run(foreign, RunArgs{}), Error);
}

}  // namespace
}  // namespace protattn
