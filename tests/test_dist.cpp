// Tests of the multi-rank plans (heads, spatial split, halo, sub-layouts), the CPU executor of the
// distributed data path against one cpu engine (bit for bit), and the process-group plumbing.
#include <gtest/gtest.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <map>
#include <set>
#include <string>
#include <vector>

#include "common/reference.hpp"
#include "protattn/dist.hpp"
#include "protattn/engine.hpp"
#include "protattn/error.hpp"
#include "protattn/layout.hpp"
#include "protattn/structure.hpp"
#ifdef PROTATTN_HAVE_NCCL
#include "dist/nccl_exec.hpp"
#endif

namespace protattn {
namespace {

namespace fs = std::filesystem;

const std::vector<int> kRanks{1, 2, 3, 4, 7};

// A W2-style globule of n atoms, cutoff 8 A, Hilbert order (tests/common: seed 7).
const BlockLayout& globule(std::size_t n, MaskMode mask) {
  static std::map<std::pair<std::size_t, MaskMode>, BlockLayout> cache;  // nodes stay put
  auto it = cache.find({n, mask});
  if (it == cache.end()) it = cache.emplace(std::pair{n, mask}, test::globule_layout(n, mask)).first;
  return it->second;
}

// The W1 seed pattern of DESIGN.md (32 x 32 tiles of 128, 800 kept).
const BlockLayout& w1() {
  static const BlockLayout l = make_w1_layout(32, 800, 12, 1);
  return l;
}

// DESIGN.md's W2: 100,096 atoms at 0.058 / A^3, Morton order, tile-box cutoff 8 A (as `bench`).
const BlockLayout& w2() {
  static const BlockLayout l = [] {
    const Structure s = make_globule(100096, 0.058, 1);
    LayoutOptions opt;
    opt.order = Order::morton;
    opt.count_pairs = false;
    return build_cutoff_layout(s.xyz.data(), s.size(), opt);
  }();
  return l;
}

struct Case {
  std::string name;
  const BlockLayout* l;
};
// Rows with no kept block, the short last tile among them; columns far from the diagonal.
const BlockLayout& empty_rows() {
  static const BlockLayout l = test::hand_layout(700, {{0, 3}, {}, {1, 2, 5}, {}, {0, 5}, {}});
  return l;
}

// Ragged sizes (1, 129, 4096 + 17 atoms), both mask modes, empty rows, and W1.
std::vector<Case> cases() {
  return {{"globule n=1 tiles", &globule(1, MaskMode::tiles)},
          {"hand n=700 empty rows", &empty_rows()},
          {"globule n=129 atoms", &globule(129, MaskMode::atoms)},
          {"globule n=4113 tiles", &globule(4113, MaskMode::tiles)},
          {"globule n=4113 atoms", &globule(4113, MaskMode::atoms)},
          {"w1", &w1()}};
}

std::int64_t rows_of(const BlockLayout& l, std::int32_t t) { return std::min<std::int64_t>(l.tile, l.n - std::int64_t{t} * l.tile); }

// ---------------------------------------------------------------------------------------------

TEST(DistPlan, SplitHeadsIsContiguousAndEven) {
  EXPECT_EQ(dist::split_heads(8, 3), (std::vector<int>{0, 3, 6, 8}));
  EXPECT_EQ(dist::split_heads(8, 4), (std::vector<int>{0, 2, 4, 6, 8}));
  EXPECT_EQ(dist::split_heads(7, 7), (std::vector<int>{0, 1, 2, 3, 4, 5, 6, 7}));
  EXPECT_EQ(dist::split_heads(1, 1), (std::vector<int>{0, 1}));
  try {
    dist::split_heads(8, 9);
    FAIL() << "9 ranks for 8 heads accepted";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("8 heads over 9 ranks"), std::string::npos) << e.what();
  }
  EXPECT_THROW(dist::split_heads(8, 0), Error);
}

TEST(DistPlan, SplitTilesCoversEveryTileOnceWithinOneTileOfTheMean) {
  for (const Case& c : cases()) {
    const std::vector<double> cost = dist::tile_costs(*c.l);
    for (int P : kRanks) {
      const dist::TileSplit s = dist::split_tiles(*c.l, P);
      ASSERT_EQ(s.bounds.size(), static_cast<std::size_t>(P) + 1) << c.name;
      EXPECT_EQ(s.bounds.front(), 0) << c.name;
      EXPECT_EQ(s.bounds.back(), c.l->n_tiles) << c.name;
      std::vector<int> owners(static_cast<std::size_t>(c.l->n_tiles), 0);
      double sum = 0;
      for (int r = 0; r < P; ++r) {
        ASSERT_LE(s.bounds[r], s.bounds[r + 1]) << c.name << " P=" << P;
        double mine = 0;
        for (std::int32_t t = s.bounds[r]; t < s.bounds[r + 1]; ++t) {
          ++owners[t];
          mine += cost[t];
        }
        EXPECT_DOUBLE_EQ(mine, s.cost[r]);
        // The nearest-prefix boundaries are each within half a tile of their target.
        EXPECT_LE(s.cost[r], s.mean + s.max_tile + 1e-9) << c.name << " P=" << P << " rank " << r;
        EXPECT_GE(s.cost[r], s.mean - s.max_tile - 1e-9) << c.name << " P=" << P << " rank " << r;
        sum += mine;
      }
      EXPECT_TRUE(std::all_of(owners.begin(), owners.end(), [](int k) { return k == 1; })) << c.name;
      EXPECT_NEAR(sum, s.total, 1e-9 * std::max(1.0, s.total));
    }
  }
}

TEST(DistPlan, PartialWeightShiftsTheSplit) {
  const BlockLayout& l = globule(4113, MaskMode::atoms);
  const std::vector<double> c1 = dist::tile_costs(l, {1.0, 1.0}), c3 = dist::tile_costs(l, {1.0, 3.0});
  for (std::int32_t t = 0; t < l.n_tiles; ++t) {
    std::int64_t partial = 0;
    for (std::int32_t e = l.row_ptr[t]; e < l.row_ptr[t + 1]; ++e) partial += l.kind[e] == BlockKind::partial;
    EXPECT_DOUBLE_EQ(c1[t], l.row_ptr[t + 1] - l.row_ptr[t]);
    EXPECT_DOUBLE_EQ(c3[t], c1[t] + 2.0 * partial);
  }
}

// The halo of every rank is exactly the set of key tiles its rows reference and it does not own
// (brute force), grouped by the right owner; sends mirror receives; the sub-layout maps back to
// the global rows block for block, in order.
TEST(DistPlan, HaloAndSubLayoutsMatchBruteForce) {
  for (const Case& c : cases()) {
    const BlockLayout& l = *c.l;
    for (int P : kRanks) {
      const dist::SpatialPlan sp = dist::plan_spatial(l, P);
      const std::string where = c.name + " P=" + std::to_string(P);
      std::int64_t owned_total = 0;
      for (int r = 0; r < P; ++r) {
        const dist::RankPlan& rp = sp.rank[r];
        owned_total += rp.owned_atoms;
        std::set<std::int32_t> want;
        for (std::int32_t t = rp.tile_begin; t < rp.tile_end; ++t)
          for (std::int32_t e = l.row_ptr[t]; e < l.row_ptr[t + 1]; ++e)
            if (l.col_idx[e] < rp.tile_begin || l.col_idx[e] >= rp.tile_end) want.insert(l.col_idx[e]);
        EXPECT_EQ(std::vector<std::int32_t>(want.begin(), want.end()), rp.halo) << where << " rank " << r;
        // Receive lists: the halo, each tile from its owner.
        std::vector<std::int32_t> got;
        std::int64_t atoms = 0;
        for (const dist::PeerTiles& pt : rp.recv) {
          EXPECT_NE(pt.peer, r);
          std::int64_t a = 0;
          for (std::int32_t t : pt.tiles) {
            EXPECT_GE(t, sp.split.bounds[pt.peer]) << where;
            EXPECT_LT(t, sp.split.bounds[pt.peer + 1]) << where;
            got.push_back(t);
            a += rows_of(l, t);
          }
          EXPECT_EQ(a, pt.atoms);
          atoms += a;
          // Sends mirror receives.
          const auto& sends = sp.rank[pt.peer].send;
          const auto it = std::find_if(sends.begin(), sends.end(), [&](const dist::PeerTiles& s) { return s.peer == r; });
          ASSERT_NE(it, sends.end()) << where;
          EXPECT_EQ(it->tiles, pt.tiles) << where;
        }
        EXPECT_EQ(got, rp.halo) << where;
        EXPECT_EQ(atoms, rp.halo_atoms);
        // The local buffer: owned U halo, ascending.
        std::vector<std::int32_t> local(rp.halo);
        for (std::int32_t t = rp.tile_begin; t < rp.tile_end; ++t) local.push_back(t);
        std::sort(local.begin(), local.end());
        EXPECT_EQ(local, rp.local_tiles) << where;
        if (rp.tile_end > rp.tile_begin) EXPECT_EQ(rp.local_tiles[rp.local_tile_begin], rp.tile_begin);
        // The sub-layout: valid, one row per local tile, owned rows = global rows remapped.
        const BlockLayout& s = rp.local;
        ASSERT_NO_THROW(validate_layout(s)) << where;
        ASSERT_EQ(s.n_tiles, static_cast<std::int32_t>(rp.local_tiles.size()));
        std::int64_t n_local = 0;
        for (std::int32_t t : rp.local_tiles) n_local += rows_of(l, t);
        EXPECT_EQ(s.n, n_local) << where;
        for (std::int32_t i = 0; i < s.n_tiles; ++i) {
          const std::int32_t g = rp.local_tiles[i];
          const bool owned = g >= rp.tile_begin && g < rp.tile_end;
          std::vector<std::int32_t> cols;
          std::vector<BlockKind> kinds;
          for (std::int32_t e = s.row_ptr[i]; e < s.row_ptr[i + 1]; ++e) {
            cols.push_back(rp.local_tiles[s.col_idx[e]]);
            kinds.push_back(s.kind[e]);
          }
          if (!owned) {
            EXPECT_TRUE(cols.empty()) << where << ": halo row " << g << " is not empty";
            continue;
          }
          EXPECT_EQ(cols, std::vector<std::int32_t>(l.col_idx.begin() + l.row_ptr[g], l.col_idx.begin() + l.row_ptr[g + 1]));
          EXPECT_EQ(kinds, std::vector<BlockKind>(l.kind.begin() + l.row_ptr[g], l.kind.begin() + l.row_ptr[g + 1]));
          // Coordinates of local positions are those of the global positions (queries and keys alike).
          for (std::int64_t a = 0; a < rows_of(l, g); ++a)
            for (int x = 0; x < 3; ++x)
              ASSERT_EQ(s.coords[3 * (std::int64_t{i} * l.tile + a) + x], l.coords[3 * (std::int64_t{g} * l.tile + a) + x]);
        }
      }
      EXPECT_EQ(owned_total, l.n) << where;
    }
  }
}

// The planner on W2 (100,096 atoms, 782 tiles): cost balanced, halo far below an all-gather.
TEST(DistPlan, W2BalanceAndHaloBytes) {
  const BlockLayout& l = w2();
  constexpr int kHeads = 8, kDim = 64;
  for (int P : {2, 4, 8}) {
    const dist::SpatialPlan sp = dist::plan_spatial(l, P);
    const double imb = sp.split.imbalance();
    const std::int64_t halo = dist::kv_bytes(sp.halo_atoms(), kHeads, kDim, 2);
    const std::int64_t all = dist::kv_bytes(sp.allgather_atoms(), kHeads, kDim, 2);
    std::printf("W2 P=%d: %d tiles, %lld blocks, imbalance %.4f (bound %.4f), halo %.1f MiB vs all-gather %.1f MiB "
                "(%.1f%%), busiest rank %.1f MiB, plan %.1f ms\n",
                P, l.n_tiles, static_cast<long long>(l.nnz()), imb, 1.0 + sp.split.max_tile / sp.split.mean,
                halo / 1048576.0, all / 1048576.0, 100.0 * halo / all,
                dist::kv_bytes(sp.max_halo_atoms(), kHeads, kDim, 2) / 1048576.0, sp.plan_ms);
    RecordProperty("w2_p" + std::to_string(P) + "_imbalance", std::to_string(imb));
    // Guaranteed bound (each boundary within half the costliest tile), and what it means here.
    EXPECT_LE(imb, 1.0 + sp.split.max_tile / sp.split.mean + 1e-12);
    EXPECT_LT(imb, 1.05) << "P=" << P;
    EXPECT_LT(halo, all) << "P=" << P;
    EXPECT_LT(sp.plan_ms, 2000.0);
  }
}

// ---------------------------------------------------------------------------------------------
// The CPU executor against one cpu engine on the same inputs: every rank keeps each row's key
// tiles in the original order and the same positions' coordinates, so the bits must match.

struct Outputs {
  std::vector<std::uint8_t> o;
  std::vector<float> lse;
};

Outputs one_engine(Engine& e, const BlockLayout& l, const ProblemShape& shape, const test::Inputs& in) {
  Outputs r;
  r.o.assign(in.q.size(), 0xAB);  // poisoned
  r.lse.assign(static_cast<std::size_t>(shape.heads) * l.n, 12345.0f);
  const auto plan = e.plan({&l}, shape);
  e.run(*plan, RunArgs{in.q.data(), in.k.data(), in.v.data(), r.o.data(), r.lse.data(), nullptr});
  return r;
}

bool same_bits(const Outputs& a, const Outputs& b) {
  return a.o == b.o && a.lse.size() == b.lse.size() &&
         std::memcmp(a.lse.data(), b.lse.data(), a.lse.size() * sizeof(float)) == 0;
}

TEST(DistExec, SpatialIsBitIdenticalToOneEngine) {
  auto engine = make_engine("cpu", EngineOptions{2, 0});
  ProblemShape shape;
  shape.heads = 1;  // heads are independent; the heads test covers several
  shape.dim = 8;
  shape.dtype = DType::f32;
  for (const Case& c : cases()) {
    const BlockLayout& l = *c.l;
    const test::Inputs in = test::random_inputs(shape, l.n, 11);
    const Outputs ref = one_engine(*engine, l, shape, in);
    for (int P : kRanks) {
      const dist::SpatialPlan sp = dist::plan_spatial(l, P);
      // overlap: the interior rows run on K and V without the halo (before the unpacking), so a
      // row that needs the halo and ran with them would differ.
      for (bool overlap : {false, true}) {
        Outputs got;
        got.o.assign(in.q.size(), 0xCD);
        got.lse.assign(ref.lse.size(), -777.0f);
        const dist::ExecReport rep = dist::run_spatial_host(
            *engine, sp, l, shape, RunArgs{in.q.data(), in.k.data(), in.v.data(), got.o.data(), got.lse.data(), nullptr},
            overlap);
        EXPECT_TRUE(same_bits(got, ref)) << c.name << " P=" << P << " overlap=" << overlap;
        // Only the halo moved: K and V rows of the halo tiles, every head.
        EXPECT_EQ(rep.bytes_moved, dist::kv_bytes(sp.halo_atoms(), shape.heads, shape.dim, dtype_size(shape.dtype)));
      }
    }
  }
}

// The interior / boundary split of every rank against its definition, block for block.
TEST(DistPlan, OverlapSplitPartitionsTheOwnedRows) {
  std::int64_t w2_both = 0;  // W2's ranks with interior and boundary rows (the split exercised)
  std::vector<Case> all = cases();
  all.push_back({"w2", &w2()});
  for (const Case& c : all) {
    for (int P : kRanks) {
      const dist::SpatialPlan sp = dist::plan_spatial(*c.l, P);
      for (const dist::RankPlan& rp : sp.rank) {
        const std::string where = c.name + " P=" + std::to_string(P) + " rank " + std::to_string(rp.rank);
        const BlockLayout& s = rp.local;
        const dist::OverlapSplit o = dist::split_for_overlap(rp);
        const std::int32_t lo = rp.local_tile_begin, hi = lo + (rp.tile_end - rp.tile_begin);
        std::int32_t n_interior = 0, n_boundary = 0;
        std::vector<bool> boundary_pos(static_cast<std::size_t>(s.n), false);
        for (const BlockLayout* d : {&o.interior, &o.boundary}) {
          EXPECT_NO_THROW(validate_layout(*d)) << where;
          EXPECT_EQ(d->n, s.n) << where;
          EXPECT_EQ(d->n_tiles, s.n_tiles) << where;
          EXPECT_EQ(d->coords, s.coords) << where;
        }
        for (std::int32_t i = 0; i < s.n_tiles; ++i) {
          const std::vector<std::int32_t> cols(s.col_idx.begin() + s.row_ptr[i], s.col_idx.begin() + s.row_ptr[i + 1]);
          const std::vector<BlockKind> kinds(s.kind.begin() + s.row_ptr[i], s.kind.begin() + s.row_ptr[i + 1]);
          const bool needs_halo = std::any_of(cols.begin(), cols.end(), [&](std::int32_t t) { return t < lo || t >= hi; });
          const auto row_of = [&](const BlockLayout& d) {
            return std::pair{std::vector<std::int32_t>(d.col_idx.begin() + d.row_ptr[i], d.col_idx.begin() + d.row_ptr[i + 1]),
                             std::vector<BlockKind>(d.kind.begin() + d.row_ptr[i], d.kind.begin() + d.row_ptr[i + 1])};
          };
          const auto in_i = row_of(o.interior), in_b = row_of(o.boundary);
          if (cols.empty()) {
            EXPECT_TRUE(in_i.first.empty() && in_b.first.empty()) << where << " tile " << i;
          } else if (needs_halo) {
            ++n_boundary;
            EXPECT_EQ(in_b.first, cols) << where << " tile " << i;
            EXPECT_EQ(in_b.second, kinds) << where << " tile " << i;
            EXPECT_TRUE(in_i.first.empty()) << where << " tile " << i;
            for (std::int64_t p = std::int64_t{i} * s.tile; p < std::min<std::int64_t>(s.n, std::int64_t{i + 1} * s.tile); ++p)
              boundary_pos[static_cast<std::size_t>(p)] = true;
          } else {
            ++n_interior;
            EXPECT_EQ(in_i.first, cols) << where << " tile " << i;
            EXPECT_EQ(in_i.second, kinds) << where << " tile " << i;
            EXPECT_TRUE(in_b.first.empty()) << where << " tile " << i;
          }
          if (!cols.empty()) EXPECT_TRUE(i >= lo && i < hi) << where << ": a halo tile's row has blocks";
        }
        EXPECT_EQ(o.interior_tiles, n_interior) << where;
        EXPECT_EQ(o.boundary_tiles, n_boundary) << where;
        EXPECT_EQ(o.interior_blocks + o.boundary_blocks, s.nnz()) << where;
        // The runs cover exactly the boundary rows' positions, once each, in order.
        std::vector<bool> covered(static_cast<std::size_t>(s.n), false);
        std::int64_t last_end = -1;
        for (const dist::CopyRun& r : o.boundary_runs) {
          EXPECT_EQ(r.src, r.dst) << where;
          EXPECT_EQ(r.src_stride, s.n) << where;
          EXPECT_EQ(r.dst_stride, s.n) << where;
          EXPECT_GT(r.src, last_end) << where;
          last_end = r.src + r.rows - 1;
          for (std::int64_t p = r.src; p < r.src + r.rows; ++p) {
            ASSERT_LT(p, s.n) << where;
            EXPECT_FALSE(covered[static_cast<std::size_t>(p)]) << where;
            covered[static_cast<std::size_t>(p)] = true;
          }
        }
        EXPECT_EQ(covered, boundary_pos) << where;
        if (c.l == &w2() && (P == 2 || P == 4) && n_interior > 0 && n_boundary > 0) ++w2_both;
      }
    }
  }
  EXPECT_EQ(w2_both, 2 + 4);  // every rank of W2 at P = 2 and 4 (at 7 some ranks' rows all need the halo)
}

TEST(DistExec, HeadsIsBitIdenticalToOneEngine) {
  auto engine = make_engine("cpu", EngineOptions{2, 0});
  ProblemShape shape;
  shape.heads = 7;
  shape.dim = 8;
  shape.dtype = DType::f16;
  for (const Case& c : {Case{"globule n=129 atoms", &globule(129, MaskMode::atoms)},
                        Case{"globule n=1000 tiles", &globule(1000, MaskMode::tiles)}}) {
    const test::Inputs in = test::random_inputs(shape, c.l->n, 5);
    const Outputs ref = one_engine(*engine, *c.l, shape, in);
    for (int P : kRanks) {
      Outputs got;
      got.o.assign(in.q.size(), 0xCD);
      got.lse.assign(ref.lse.size(), -777.0f);
      dist::run_heads_host(*engine, *c.l, shape, P,
                           RunArgs{in.q.data(), in.k.data(), in.v.data(), got.o.data(), got.lse.data(), nullptr});
      EXPECT_TRUE(same_bits(got, ref)) << c.name << " P=" << P;
    }
  }
  EXPECT_THROW(dist::run_heads_host(*engine, w1(), shape, 8, RunArgs{}), Error);
}

// Window layouts are sequence-local: each rank's tiles form one range, and the shift by whole
// tiles keeps the window rule exact.
TEST(DistExec, WindowsLayoutSplitsExactly) {
  const Structure s = make_globule(1000, 0.058, 3);
  LayoutOptions opt;
  opt.mask = MaskMode::windows;
  opt.order = Order::file;
  const BlockLayout l = build_window_layout(s.xyz.data(), s.size(), opt);
  auto engine = make_engine("cpu", EngineOptions{2, 0});
  ProblemShape shape;
  shape.heads = 1;
  shape.dim = 8;
  shape.dtype = DType::f32;
  const test::Inputs in = test::random_inputs(shape, l.n, 3);
  const Outputs ref = one_engine(*engine, l, shape, in);
  for (int P : {2, 3}) {
    const dist::SpatialPlan sp = dist::plan_spatial(l, P);
    Outputs got{std::vector<std::uint8_t>(in.q.size()), std::vector<float>(ref.lse.size())};
    dist::run_spatial_host(*engine, sp, l, shape,
                           RunArgs{in.q.data(), in.k.data(), in.v.data(), got.o.data(), got.lse.data(), nullptr});
    EXPECT_TRUE(same_bits(got, ref)) << "P=" << P;
  }
}

TEST(DistExec, ExchangePlanMessagesMatchAcrossRanks) {
  const BlockLayout& l = globule(4113, MaskMode::tiles);
  for (int P : kRanks) {
    const dist::SpatialPlan sp = dist::plan_spatial(l, P);
    std::vector<dist::ExchangePlan> xs;
    for (int r = 0; r < P; ++r) xs.push_back(dist::exchange_plan(sp, r, 3));
    for (int r = 0; r < P; ++r)
      for (const dist::Message& m : xs[r].recvs) {
        const auto& s = xs[m.peer].sends;
        const auto it = std::find_if(s.begin(), s.end(), [&](const dist::Message& x) { return x.peer == r; });
        ASSERT_NE(it, s.end());
        EXPECT_EQ(it->rows, m.rows) << "P=" << P << " " << m.peer << " -> " << r;
      }
  }
}

// The pieces the GPU kernel copies move the same bytes as the whole runs.
TEST(DistExec, SplitRunsCopyTheSameBytes) {
  const BlockLayout& l = globule(4113, MaskMode::tiles);
  const dist::SpatialPlan sp = dist::plan_spatial(l, 3);
  constexpr int kHeads = 2;
  constexpr std::size_t kRowBytes = 16;
  for (int r = 0; r < 3; ++r) {
    const dist::ExchangePlan x = dist::exchange_plan(sp, r, kHeads);
    const std::size_t local = static_cast<std::size_t>(kHeads) * sp.rank[r].local.n * kRowBytes;
    std::vector<std::uint8_t> k(local), v(local);
    for (std::size_t i = 0; i < local; ++i) {
      k[i] = static_cast<std::uint8_t>(i * 7);
      v[i] = static_cast<std::uint8_t>(i * 13);
    }
    std::vector<std::uint8_t> whole(x.send_rows * kRowBytes, 0), pieces(x.send_rows * kRowBytes, 1);
    const void* srcs[2] = {k.data(), v.data()};
    void* d1[2] = {whole.data(), whole.data()};
    void* d2[2] = {pieces.data(), pieces.data()};
    dist::copy_runs(x.pack, srcs, d1, kRowBytes, kHeads);
    dist::copy_runs(dist::split_runs(x.pack, 5), srcs, d2, kRowBytes, kHeads);
    EXPECT_EQ(whole, pieces) << "rank " << r;
  }
}

// ---------------------------------------------------------------------------------------------
// Process group

class ScopedEnv {
 public:
  ScopedEnv(const char* name, const char* value) : name_(name) {
    if (const char* old = std::getenv(name)) old_ = old, had_ = true;
    if (value) ::setenv(name, value, 1);
    else ::unsetenv(name);
  }
  ~ScopedEnv() {
    if (had_) ::setenv(name_.c_str(), old_.c_str(), 1);
    else ::unsetenv(name_.c_str());
  }

 private:
  std::string name_, old_;
  bool had_ = false;
};

TEST(DistGroup, RankFromEnvironment) {
  ScopedEnv a("RANK", nullptr), b("WORLD_SIZE", nullptr), c("LOCAL_RANK", nullptr);
  ScopedEnv d("OMPI_COMM_WORLD_RANK", nullptr), e("OMPI_COMM_WORLD_SIZE", nullptr), f("OMPI_COMM_WORLD_LOCAL_RANK", nullptr);
  EXPECT_FALSE(dist::rank_from_env().from_env);
  EXPECT_EQ(dist::rank_from_env().world, 1);
  {
    ScopedEnv r("OMPI_COMM_WORLD_RANK", "3"), w("OMPI_COMM_WORLD_SIZE", "4"), l("OMPI_COMM_WORLD_LOCAL_RANK", "1");
    const dist::RankInfo i = dist::rank_from_env();
    EXPECT_TRUE(i.from_env);
    EXPECT_EQ(i.rank, 3);
    EXPECT_EQ(i.world, 4);
    EXPECT_EQ(i.local, 1);
    ScopedEnv r2("RANK", "1"), w2("WORLD_SIZE", "2");  // torchrun's variables win
    EXPECT_EQ(dist::rank_from_env().rank, 1);
    EXPECT_EQ(dist::rank_from_env().local, 1);  // LOCAL_RANK defaults to RANK
  }
  {
    ScopedEnv r("RANK", "2"), w("WORLD_SIZE", "2");
    EXPECT_THROW(dist::rank_from_env(), Error);  // rank not below world
  }
  {
    ScopedEnv r("RANK", "x1"), w("WORLD_SIZE", "2");
    EXPECT_THROW(dist::rank_from_env(), Error);
  }
  {
    ScopedEnv r("RANK", "0");
    EXPECT_THROW(dist::rank_from_env(), Error);  // WORLD_SIZE missing
  }
}

fs::path temp_dir(const std::string& tag) {
  const fs::path d = fs::temp_directory_path() / ("protattn-test-dist-" + tag + "-" + std::to_string(::getpid()));
  fs::remove_all(d);
  return d;
}

TEST(DistGroup, IdFileRendezvous) {
  const fs::path d = temp_dir("id");
  const std::uint8_t id[128] = {1, 2, 3, 4, 5};
  dist::publish_file(d.string(), "nccl-id-x", id, sizeof id);
  const auto got = dist::wait_file(d.string(), "nccl-id-x", sizeof id, 1.0);
  EXPECT_EQ(std::vector<std::uint8_t>(id, id + sizeof id), got);
  const auto t0 = std::chrono::steady_clock::now();
  try {
    dist::wait_file(d.string(), "nccl-id-missing", sizeof id, 0.2);
    FAIL() << "a missing id file was accepted";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("nccl-id-missing"), std::string::npos) << e.what();
  }
  EXPECT_LT(std::chrono::steady_clock::now() - t0, std::chrono::seconds(5));
  fs::remove_all(d);
}

TEST(DistGroup, SpawnRanksSetsVariablesAndReportsFailures) {
  const fs::path d = temp_dir("spawn");
  fs::create_directories(d);
  dist::spawn_ranks({"/bin/sh", "-c", "test \"$WORLD_SIZE\" = 3 && test \"$LOCAL_RANK\" = \"$RANK\" && echo \"$X\" > \"$D/$RANK\""},
                    3, {"D=" + d.string(), "X=hello"});
  for (int r = 0; r < 3; ++r) EXPECT_TRUE(fs::exists(d / std::to_string(r))) << r;
  try {
    dist::spawn_ranks({"/bin/sh", "-c", "test \"$RANK\" != 1"}, 3, {});
    FAIL() << "a failing rank was not reported";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("rank 1 failed with exit code 1"), std::string::npos) << e.what();
  }
  // A failed rank stops the others (which would otherwise wait for it).
  const auto t0 = std::chrono::steady_clock::now();
  try {
    dist::spawn_ranks({"/bin/sh", "-c", "if [ \"$RANK\" = 1 ]; then exit 3; else exec sleep 60; fi"}, 3, {});
    FAIL();
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("rank 1 failed with exit code 3"), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("stopped ranks 0, 2"), std::string::npos) << e.what();
  }
  EXPECT_LT(std::chrono::steady_clock::now() - t0, std::chrono::seconds(15));
  fs::remove_all(d);
}

#ifdef PROTATTN_HAVE_NCCL
// The library loads through the run-time loader (no GPU needed for that).
TEST(DistNccl, LibraryLoads) {
  try {
    const std::string info = dist::nccl_library_info();
    EXPECT_EQ(info.rfind("NCCL 2.", 0), 0u) << info;
    std::printf("%s\n", info.c_str());
  } catch (const Error& e) {
    GTEST_SKIP() << e.what();
  }
}
#endif

}  // namespace
}  // namespace protattn
