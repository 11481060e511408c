// Tests of orderings, layout builders (against brute force), stats, validation and the layout folder.
#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include <algorithm>
#include <array>
#include <cstring>
#include <cmath>
#include <cstdlib>
#include <filesystem>
#include <unistd.h>
#include <fstream>
#include <numeric>
#include <random>
#include <set>

#include "protattn/error.hpp"
#include "protattn/layout.hpp"
#include "protattn/npy.hpp"
#include "protattn/structure.hpp"

namespace fs = std::filesystem;
using namespace protattn;
using testing::HasSubstr;

namespace {

const std::string kData = PROTATTN_TEST_DATA;

Structure real(const std::string& name) {
  const std::string path = kData + "/" + name;
  if (!fs::exists(path)) throw std::runtime_error("missing " + path + ": run scripts/fetch-data.sh");
  return read_structure(path);
}

float dist2(const float* a, const float* b) {
  const float dx = a[0] - b[0], dy = a[1] - b[1], dz = a[2] - b[2];
  return dx * dx + dy * dy + dz * dz;
}

std::set<std::pair<int, int>> kept(const BlockLayout& l) {
  std::set<std::pair<int, int>> s;
  for (int r = 0; r < l.n_tiles; ++r)
    for (int k = l.row_ptr[r]; k < l.row_ptr[r + 1]; ++k) s.emplace(r, l.col_idx[k]);
  return s;
}

// Checks that coords are xyz in perm order and perm is a permutation.
void expect_consistent(const BlockLayout& l, const float* xyz) {
  EXPECT_NO_THROW(validate_layout(l));
  for (int p = 0; p < l.n; ++p)
    for (int c = 0; c < 3; ++c) ASSERT_EQ(l.coords[3 * p + c], xyz[3 * l.perm[p] + c]) << p;
}

// Points on the integer grid 0..side-1 in each axis, in a shuffled file order.
std::vector<float> shuffled_grid(int side, std::vector<int>& cell_of_atom) {
  std::vector<int> cells(static_cast<std::size_t>(side * side * side));
  std::iota(cells.begin(), cells.end(), 0);
  std::mt19937 rng(5);
  std::shuffle(cells.begin(), cells.end(), rng);
  std::vector<float> xyz;
  for (int c : cells) {
    xyz.push_back(static_cast<float>(c % side));
    xyz.push_back(static_cast<float>(c / side % side));
    xyz.push_back(static_cast<float>(c / side / side));
  }
  cell_of_atom = cells;
  return xyz;
}

class TempDir {
 public:
  TempDir() : path_(fs::temp_directory_path() / ("protattn_layout_" + std::to_string(::getpid()) + "_" +
                                                   testing::UnitTest::GetInstance()->current_test_info()->name())) {
    fs::remove_all(path_);
  }
  ~TempDir() { fs::remove_all(path_); }
  std::string str() const { return path_.string(); }

 private:
  fs::path path_;
};

// The low corner of the bounding box of xyz ([n, 3]) and its largest side, as the spatial orders
// compute them before quantising.
double box_extent(const std::vector<float>& xyz, float (&lo)[3]) {
  const std::size_t n = xyz.size() / 3;
  float hi[3];
  for (int c = 0; c < 3; ++c) {
    lo[c] = hi[c] = xyz[static_cast<std::size_t>(c)];
    for (std::size_t i = 0; i < n; ++i) {
      lo[c] = std::min(lo[c], xyz[3 * i + c]);
      hi[c] = std::max(hi[c], xyz[3 * i + c]);
    }
  }
  return std::max({double{hi[0]} - lo[0], double{hi[1]} - lo[1], double{hi[2]} - lo[2]});
}

}  // namespace

TEST(Names, RoundTripAndErrorsListValidNames) {
  for (Order o : {Order::file, Order::morton, Order::hilbert}) EXPECT_EQ(parse_order(to_string(o)), o);
  for (MaskMode m : {MaskMode::tiles, MaskMode::atoms, MaskMode::windows}) EXPECT_EQ(parse_mask(to_string(m)), m);
  try {
    parse_order("zorder");
    ADD_FAILURE();
  } catch (const Error& e) {
    EXPECT_THAT(e.what(), HasSubstr("zorder"));
    EXPECT_THAT(e.what(), HasSubstr("file, morton, hilbert"));
  }
  try {
    parse_mask("none");
    ADD_FAILURE();
  } catch (const Error& e) {
    EXPECT_THAT(e.what(), HasSubstr("tiles, atoms, windows"));
  }
}

TEST(SpatialOrder, HilbertVisitsGridCellsAsAContinuousPath) {
  for (int side : {2, 4, 8, 16}) {
    SCOPED_TRACE(side);
    std::vector<int> cells;
    const auto xyz = shuffled_grid(side, cells);
    const std::size_t n = cells.size();
    const auto perm = spatial_order(xyz.data(), n, Order::hilbert);
    std::vector<int> sorted(perm.begin(), perm.end());
    std::sort(sorted.begin(), sorted.end());
    for (std::size_t i = 0; i < n; ++i) ASSERT_EQ(sorted[i], static_cast<int>(i));
    // Hilbert property: consecutive atoms are face neighbours (distance exactly 1).
    for (std::size_t p = 1; p < n; ++p)
      ASSERT_EQ(dist2(&xyz[3 * perm[p - 1]], &xyz[3 * perm[p]]), 1.0f) << "step " << p;
    // The curve starts at the origin corner.
    EXPECT_EQ(dist2(&xyz[3 * perm[0]], std::array<float, 3>{0, 0, 0}.data()), 0.0f);
  }
}

TEST(SpatialOrder, MortonIsBitInterleavingXMajor) {
  std::vector<int> cells;
  const auto xyz = shuffled_grid(4, cells);
  const auto perm = spatial_order(xyz.data(), cells.size(), Order::morton);
  auto morton = [](int x, int y, int z) {
    int k = 0;
    for (int b = 1; b >= 0; --b) k = (k << 3) | (((x >> b) & 1) << 2) | (((y >> b) & 1) << 1) | ((z >> b) & 1);
    return k;
  };
  for (std::size_t p = 0; p < perm.size(); ++p) {
    const float* a = &xyz[3 * perm[p]];
    EXPECT_EQ(morton(static_cast<int>(a[0]), static_cast<int>(a[1]), static_cast<int>(a[2])), static_cast<int>(p));
  }
}

TEST(SpatialOrder, TiesKeepFileOrderAndFileIsIdentity) {
  // Duplicates of two points, interleaved: equal keys must keep their file order.
  const std::vector<float> xyz = {5, 5, 5, 0, 0, 0, 5, 5, 5, 0, 0, 0, 5, 5, 5};
  for (Order o : {Order::morton, Order::hilbert})
    EXPECT_EQ(spatial_order(xyz.data(), 5, o), (std::vector<std::int32_t>{1, 3, 0, 2, 4}));
  EXPECT_EQ(spatial_order(xyz.data(), 5, Order::file), (std::vector<std::int32_t>{0, 1, 2, 3, 4}));
  const std::vector<float> same(30, 2.5f);
  EXPECT_EQ(spatial_order(same.data(), 10, Order::hilbert), spatial_order(same.data(), 10, Order::file));
}

// Large inputs take the bucketed sort (from 2^18 atoms): the order must be exactly a stable sort
// by the Morton key as its definition gives it (21 bits per axis on the cube of the largest
// bounding-box side, x in the top bit of each triple), ties in file order, for any thread count.
// n atoms on a coarse grid, a third of them on one point (a big bucket of ties): the order must
// be the stable sort by the Morton key, on one thread and on three; Hilbert the same on both.
void expect_stable_morton_order(std::size_t n) {
  SCOPED_TRACE("n=" + std::to_string(n));
  std::mt19937 rng(7);
  std::uniform_int_distribution<int> cell(0, 40);
  std::vector<float> xyz(3 * n);
  for (std::size_t i = 0; i < n; ++i) {
    const bool crowd = i % 3 == 0;  // a third of the atoms on one point: one big bucket of ties
    for (int c = 0; c < 3; ++c) xyz[3 * i + c] = crowd ? 17.0f : static_cast<float>(cell(rng)) * 0.75f - 3.0f;
  }
  float lo[3];
  const double extent = box_extent(xyz, lo);
  const double grid_max = (1 << 21) - 1;
  std::vector<std::uint64_t> key(n);
  for (std::size_t i = 0; i < n; ++i) {
    std::uint64_t q[3];
    for (int c = 0; c < 3; ++c)
      q[c] = static_cast<std::uint64_t>(std::min((double{xyz[3 * i + c]} - lo[c]) * (grid_max / extent), grid_max));
    std::uint64_t k = 0;
    for (int b = 20; b >= 0; --b) k = (k << 3) | (((q[0] >> b) & 1) << 2) | (((q[1] >> b) & 1) << 1) | ((q[2] >> b) & 1);
    key[i] = k;
  }
  std::vector<std::int32_t> expected(n);
  std::iota(expected.begin(), expected.end(), 0);
  std::stable_sort(expected.begin(), expected.end(), [&](std::int32_t a, std::int32_t b) { return key[a] < key[b]; });
  for (int threads : {1, 3}) {
    SCOPED_TRACE(threads);
    EXPECT_EQ(spatial_order(xyz.data(), n, Order::morton, threads), expected);
  }
  const auto hilbert = spatial_order(xyz.data(), n, Order::hilbert, 1);
  EXPECT_EQ(spatial_order(xyz.data(), n, Order::hilbert, 3), hilbert);
  std::vector<std::int32_t> sorted(hilbert);
  std::sort(sorted.begin(), sorted.end());
  for (std::size_t i = 0; i < n; ++i) ASSERT_EQ(sorted[i], static_cast<std::int32_t>(i));
}

TEST(SpatialOrder, LargeInputsAreStablySortedByTheMortonKey) { expect_stable_morton_order((std::size_t{1} << 18) + 12345); }

// Small inputs (up to 32,768 atoms) take a counting pass on the keys' top bits and then an
// insertion sort per bucket, or a comparison sort for a crowded one (here the third of the atoms
// on one point); the others a radix sort: the same order on both sides of the switch.
TEST(SpatialOrder, SmallInputsAreStablySortedByTheMortonKey) {
  for (std::size_t n : {2u, 3u, 100u, 4095u, 4096u, 4097u, 30000u, 32768u, 32769u}) expect_stable_morton_order(n);
}

// Independent reference for the Hilbert order: coordinates quantised as spatial_order defines it
// (the cube of the largest bounding-box side on 2^21 - 1 steps per axis), each key by Skilling's
// transpose algorithm ("Programming the Hilbert curve", 2004) worked one level at a time from the
// top, x the most significant bit of each 3-bit digit, then a stable sort by the full 63-bit key.
std::uint64_t skilling_hilbert_key(std::uint32_t q[3]) {
  constexpr std::uint32_t top = 1u << 20;
  std::uint32_t x[3] = {q[0], q[1], q[2]};
  for (std::uint32_t level = top; level > 1; level >>= 1) {  // undo excess work, level by level
    const std::uint32_t below = level - 1;
    for (int i = 0; i < 3; ++i) {
      if (x[i] & level) {
        x[0] ^= below;  // invert
      } else {
        const std::uint32_t t = (x[0] ^ x[i]) & below;  // exchange
        x[0] ^= t;
        x[i] ^= t;
      }
    }
  }
  for (int i = 1; i < 3; ++i) x[i] ^= x[i - 1];  // Gray encode
  std::uint32_t t = 0;
  for (std::uint32_t level = top; level > 1; level >>= 1)
    if (x[2] & level) t ^= level - 1;
  for (auto& v : x) v ^= t;
  std::uint64_t key = 0;
  for (int b = 20; b >= 0; --b)
    key = (key << 3) | (std::uint64_t{(x[0] >> b) & 1} << 2) | (std::uint64_t{(x[1] >> b) & 1} << 1) | ((x[2] >> b) & 1);
  return key;
}

std::vector<std::int32_t> reference_hilbert_order(const std::vector<float>& xyz) {
  const std::size_t n = xyz.size() / 3;
  float lo[3];
  const double extent = box_extent(xyz, lo);
  const double grid_max = (1 << 21) - 1;
  const double scale = extent > 0 ? grid_max / extent : 0.0;
  std::vector<std::uint64_t> key(n);
  for (std::size_t i = 0; i < n; ++i) {
    std::uint32_t q[3];
    for (int c = 0; c < 3; ++c)
      q[c] = static_cast<std::uint32_t>(std::min((double{xyz[3 * i + c]} - lo[c]) * scale, grid_max));
    key[i] = skilling_hilbert_key(q);
  }
  std::vector<std::int32_t> order(n);
  std::iota(order.begin(), order.end(), 0);
  std::stable_sort(order.begin(), order.end(), [&](std::int32_t a, std::int32_t b) { return key[a] < key[b]; });
  return order;
}

// The Hilbert order takes shortcuts on small inputs (keys of fewer levels first, the full key
// only where atoms share a cell at that depth): it must still be exactly the reference order,
// ties in file order, on easy and adversarial inputs alike.
TEST(SpatialOrder, HilbertMatchesTheFullKeyReference) {
  std::mt19937 rng(11);
  std::uniform_real_distribution<float> unit(0.0f, 1.0f);
  struct Case {
    std::string name;
    std::vector<float> xyz;
  };
  std::vector<Case> cases;
  auto uniform = [&](std::size_t n, float side) {
    std::vector<float> v(3 * n);
    for (auto& x : v) x = unit(rng) * side;
    return v;
  };
  for (std::size_t n : {2u, 3u, 7u, 64u, 1000u, 4095u, 4096u, 4097u, 12345u, 30000u})
    cases.push_back({"uniform " + std::to_string(n), uniform(n, 60.0f)});
  for (std::size_t n : {4096u, 20000u, 30000u}) {
    const Structure g = make_globule(n, 0.058, 9);
    cases.push_back({"globule " + std::to_string(n), g.xyz});
    // The same with one far atom stretching the box a thousandfold: most atoms share cells.
    std::vector<float> v = g.xyz;
    v[3 * (n / 2) + 0] = 9.5e4f;
    v[3 * (n / 2) + 1] = -9.0e4f;
    cases.push_back({"globule + outlier " + std::to_string(n), v});
  }
  {
    const Structure s = real("2hhb.pdb");
    cases.push_back({"2hhb 4096", std::vector<float>(s.xyz.begin(), s.xyz.begin() + 3 * 4096)});
    cases.push_back({"2hhb", s.xyz});
  }
  for (std::size_t n : {2u, 100u, 5000u}) {  // every atom on one point
    cases.push_back({"one point " + std::to_string(n), std::vector<float>(3 * n, -7.25f)});
  }
  for (std::size_t n : {3000u, 25000u}) {  // duplicates: many atoms on a few points, shuffled
    std::vector<float> pts = uniform(16, 40.0f), v(3 * n);
    for (std::size_t i = 0; i < n; ++i) {
      const std::size_t k = rng() % 16;
      for (int c = 0; c < 3; ++c) v[3 * i + c] = pts[3 * k + c];
    }
    cases.push_back({"duplicates " + std::to_string(n), v});
  }
  for (std::size_t n : {4000u, 30000u}) {  // a crowd in one tiny cell inside a spread structure
    std::vector<float> v = uniform(n, 80.0f);
    for (std::size_t i = 0; i < n; i += 3)
      for (int c = 0; c < 3; ++c) v[3 * i + c] = 31.0f + unit(rng) * 1e-4f;
    cases.push_back({"tiny crowd " + std::to_string(n), v});
  }
  for (std::size_t n : {500u, 9000u}) {  // on a line, and on a line with neighbours 1e-6 apart
    std::vector<float> v(3 * n), w(3 * n);
    for (std::size_t i = 0; i < n; ++i) {
      const float t = unit(rng);
      v[3 * i] = 100.0f * t;
      v[3 * i + 1] = 4.0f;
      v[3 * i + 2] = -3.0f;
      w[3 * i] = 1.0f + 1e-6f * static_cast<float>(rng() % 64);
      w[3 * i + 1] = w[3 * i];
      w[3 * i + 2] = 2.0f * w[3 * i];
    }
    cases.push_back({"line " + std::to_string(n), v});
    cases.push_back({"diagonal steps " + std::to_string(n), w});
  }
  {  // integer grid points (atoms on cell boundaries at every depth), shuffled, some repeated
    std::vector<int> cells;
    std::vector<float> v = shuffled_grid(24, cells);
    v.insert(v.end(), v.begin(), v.begin() + 3 * 2000);
    cases.push_back({"grid 24 + repeats", v});
  }
  for (int k = 0; k < 24; ++k) {  // random sizes: clumps of atoms of random spread, some far out
    const std::size_t n = 2 + rng() % 29999;
    std::vector<float> v(3 * n);
    float centre[3] = {0, 0, 0}, spread = 1;
    for (std::size_t i = 0; i < n; ++i) {
      if (rng() % 64 == 0) {  // a new clump
        for (auto& c : centre) c = (unit(rng) - 0.5f) * (rng() % 8 == 0 ? 2e4f : 100.0f);
        spread = std::pow(10.0f, -4.0f + 6.0f * unit(rng));
      }
      for (int c = 0; c < 3; ++c) v[3 * i + c] = centre[c] + (unit(rng) - 0.5f) * spread;
    }
    cases.push_back({"clumps " + std::to_string(n), v});
  }
  for (const auto& c : cases) {
    SCOPED_TRACE(c.name);
    const std::size_t n = c.xyz.size() / 3;
    const auto expected = reference_hilbert_order(c.xyz);
    ASSERT_EQ(spatial_order(c.xyz.data(), n, Order::hilbert, 1), expected);
    LayoutOptions opt;
    opt.order = Order::hilbert;
    opt.count_pairs = false;
    ASSERT_EQ(build_cutoff_layout(c.xyz.data(), n, opt).perm, expected);
  }
}

TEST(CutoffLayout, CompleteAndExactAgainstBruteForce) {
  struct Case {
    std::string name;
    Structure s;
  };
  std::vector<Case> cases = {{"1ubq", real("1ubq.pdb")},
                             {"2hhb", real("2hhb.pdb")},
                             {"globule", make_globule(3001, 0.058, 3)}};
  for (const auto& c : cases)
    for (Order order : {Order::file, Order::morton, Order::hilbert})
      for (int tile : {32, 128})
        for (float cutoff : {5.0f, 8.0f}) {
          SCOPED_TRACE(c.name + " " + to_string(order) + " tile " + std::to_string(tile) + " cutoff " +
                       std::to_string(cutoff));
          const std::size_t n = c.s.size();
          ASSERT_NE(n % static_cast<std::size_t>(tile), 0u);  // ragged last tile covered
          LayoutOptions opt;
          opt.order = order;
          opt.tile = tile;
          opt.cutoff = cutoff;
          const BlockLayout l = build_cutoff_layout(c.s.xyz.data(), n, opt);
          expect_consistent(l, c.s.xyz.data());
          EXPECT_EQ(l.builder, "cutoff");
          EXPECT_EQ(l.order, order);
          const auto pairs = kept(l);
          std::vector<char> is_kept(static_cast<std::size_t>(l.n_tiles) * l.n_tiles, 0);
          for (const auto& [r, k] : pairs) is_kept[static_cast<std::size_t>(r) * l.n_tiles + k] = 1;
          // Completeness: every atom pair within the cutoff lies in a kept tile pair; count them.
          const float c2 = cutoff * cutoff;
          std::int64_t within = 0;
          for (std::size_t i = 0; i < n; ++i)
            for (std::size_t j = 0; j < n; ++j) {
              if (i == j || dist2(&l.coords[3 * i], &l.coords[3 * j]) > c2) continue;
              ++within;
              ASSERT_TRUE(is_kept[i / tile * static_cast<std::size_t>(l.n_tiles) + j / tile]) << i << "," << j;
            }
          EXPECT_EQ(l.stats.pairs_within, within);
          // Exactness: kept pairs are exactly those whose tile boxes are within the cutoff
          // (boxes computed here from scratch), diagonal included.
          std::vector<std::array<double, 6>> box(static_cast<std::size_t>(l.n_tiles));
          for (auto& b : box) b = {1e30, 1e30, 1e30, -1e30, -1e30, -1e30};
          for (std::size_t i = 0; i < n; ++i)
            for (int a = 0; a < 3; ++a) {
              auto& b = box[i / static_cast<std::size_t>(tile)];
              b[a] = std::min<double>(b[a], l.coords[3 * i + a]);
              b[3 + a] = std::max<double>(b[3 + a], l.coords[3 * i + a]);
            }
          std::size_t expected = 0;
          for (int r = 0; r < l.n_tiles; ++r)
            for (int k = 0; k < l.n_tiles; ++k) {
              double g2 = 0;
              for (int a = 0; a < 3; ++a) {
                const double gap = std::max({0.0, box[k][a] - box[r][3 + a], box[r][a] - box[k][3 + a]});
                g2 += gap * gap;
              }
              if (g2 <= double{cutoff} * cutoff) {
                ++expected;
                EXPECT_TRUE(pairs.count({r, k})) << r << "," << k;
              }
            }
          EXPECT_EQ(pairs.size(), expected);
          for (int r = 0; r < l.n_tiles; ++r) EXPECT_TRUE(pairs.count({r, r}));
          // Stats.
          std::int64_t computed = 0;
          for (const auto& [r, k] : pairs)
            computed += std::min<std::int64_t>(tile, static_cast<std::int64_t>(n) - r * tile) *
                        std::min<std::int64_t>(tile, static_cast<std::int64_t>(n) - k * tile);
          EXPECT_EQ(l.stats.pairs_computed, computed);
          EXPECT_EQ(l.stats.nnz, static_cast<std::int64_t>(pairs.size()));
          EXPECT_EQ(l.stats.tiles, l.n_tiles);
          EXPECT_DOUBLE_EQ(l.stats.density, static_cast<double>(pairs.size()) / (double{1} * l.n_tiles * l.n_tiles));
          EXPECT_DOUBLE_EQ(l.stats.useful, static_cast<double>(within + static_cast<std::int64_t>(n)) / computed);
          for (auto k : l.kind) EXPECT_EQ(k, BlockKind::full);
        }
}

TEST(CutoffLayout, ThreadsChangeNothingButTime) {
  // 200,017 atoms: enough for 3 threads in the ordering (65,536 atoms each) and the tile rows
  // (512 tiles each); the last tile is short. Every field must equal the one-thread build.
  const Structure s = make_globule(200017, 0.058, 5);
  for (Order order : {Order::morton, Order::hilbert}) {
    for (MaskMode mask : {MaskMode::tiles, MaskMode::atoms}) {
      LayoutOptions opt;
      opt.order = order;
      opt.mask = mask;
      opt.count_pairs = false;
      const BlockLayout one = build_cutoff_layout(s.xyz.data(), s.size(), opt);
      for (int threads : {2, 3, 0}) {
        opt.threads = threads;
        const BlockLayout many = build_cutoff_layout(s.xyz.data(), s.size(), opt);
        SCOPED_TRACE(std::string(to_string(order)) + " " + to_string(mask) + " threads " + std::to_string(threads));
        EXPECT_EQ(many.perm, one.perm);
        EXPECT_EQ(many.coords, one.coords);
        EXPECT_EQ(many.row_ptr, one.row_ptr);
        EXPECT_EQ(many.col_idx, one.col_idx);
        EXPECT_TRUE(many.kind == one.kind);
      }
      EXPECT_EQ(spatial_order(s.xyz.data(), s.size(), order, 4), one.perm);
    }
  }
}

TEST(CutoffLayout, AtomsMaskMarksFullOnlyWhenEveryPairIsWithin) {
  // A dense small globule with a large cutoff, so that both kinds occur.
  const Structure s = make_globule(1500, 0.058, 11);
  LayoutOptions opt;
  opt.mask = MaskMode::atoms;
  opt.tile = 32;
  opt.cutoff = 16.0f;
  const BlockLayout l = build_cutoff_layout(s.xyz.data(), s.size(), opt);
  EXPECT_EQ(l.mask, MaskMode::atoms);
  const float c2 = opt.cutoff * opt.cutoff;
  int full = 0, partial = 0;
  for (int r = 0; r < l.n_tiles; ++r)
    for (int k = l.row_ptr[r]; k < l.row_ptr[r + 1]; ++k) {
      const int c = l.col_idx[k];
      bool all_within = true;
      for (int i = r * 32; i < std::min(l.n, (r + 1) * 32); ++i)
        for (int j = c * 32; j < std::min(l.n, (c + 1) * 32); ++j)
          all_within = all_within && dist2(&l.coords[3 * i], &l.coords[3 * j]) <= c2;
      if (l.kind[k] == BlockKind::full) {
        ++full;
        EXPECT_TRUE(all_within) << r << "," << c;
      } else {
        ++partial;
      }
    }
  EXPECT_GT(full, 0);
  EXPECT_GT(partial, 0);
}

TEST(CutoffLayout, RejectsBadInput) {
  const Structure s = make_globule(100);
  LayoutOptions opt;
  opt.cutoff = 0;
  EXPECT_THROW(build_cutoff_layout(s.xyz.data(), s.size(), opt), Error);
  opt.cutoff = 8;
  opt.tile = 0;
  EXPECT_THROW(build_cutoff_layout(s.xyz.data(), s.size(), opt), Error);
  opt.tile = 128;
  EXPECT_THROW(build_cutoff_layout(s.xyz.data(), 0, opt), Error);
  opt.mask = MaskMode::windows;
  EXPECT_THROW(build_cutoff_layout(s.xyz.data(), s.size(), opt), Error);
  opt.mask = MaskMode::tiles;
  auto bad = s.xyz;
  bad[7] = std::nanf("");
  EXPECT_THROW(build_cutoff_layout(bad.data(), s.size(), opt), Error);
}

// Bad coordinates are checked on several threads in large inputs: the error still names the
// first bad atom, whatever the thread count.
TEST(CutoffLayout, BadCoordinatesNamedAlikeOnAnyThreadCount) {
  const Structure s = make_globule(200'000, 0.058, 3);
  auto bad = s.xyz;
  bad[3 * 180'000 + 1] = 2e5f;              // absurd, later
  bad[3 * 150'000 + 2] = std::nanf("");    // non-finite, first
  for (int threads : {1, 4}) {
    SCOPED_TRACE(threads);
    LayoutOptions opt;
    opt.threads = threads;
    try {
      build_cutoff_layout(bad.data(), s.size(), opt);
      ADD_FAILURE() << "no error";
    } catch (const Error& e) {
      EXPECT_THAT(e.what(), HasSubstr("atom 150000 has a non-finite coordinate"));
    }
    try {
      spatial_order(bad.data(), s.size(), Order::hilbert, threads);
      ADD_FAILURE() << "no error";
    } catch (const Error& e) {
      EXPECT_THAT(e.what(), HasSubstr("atom 150000 has a non-finite coordinate"));
    }
  }
}

TEST(CutoffLayout, SingleAtomAndCountOff) {
  const float one[3] = {1, 2, 3};
  LayoutOptions opt;
  const BlockLayout l = build_cutoff_layout(one, 1, opt);
  EXPECT_EQ(l.n_tiles, 1);
  EXPECT_EQ(l.nnz(), 1);
  EXPECT_EQ(l.stats.pairs_within, 0);
  EXPECT_EQ(l.stats.pairs_computed, 1);
  const Structure s = make_globule(500);
  opt.count_pairs = false;
  const BlockLayout m = build_cutoff_layout(s.xyz.data(), s.size(), opt);
  EXPECT_EQ(m.stats.pairs_within, -1);
  EXPECT_EQ(m.stats.useful, -1);
}

TEST(KnnLayout, MatchesBruteForceNeighbours) {
  for (const auto& [name, s] : {std::pair<std::string, Structure>{"1ubq", real("1ubq.pdb")},
                                {"globule", make_globule(1234, 0.058, 2)}})
    for (int k : {1, 8, 40}) {
      SCOPED_TRACE(name + " k " + std::to_string(k));
      LayoutOptions opt;
      opt.k = k;
      opt.tile = 32;
      const BlockLayout l = build_knn_layout(s.xyz.data(), s.size(), opt);
      expect_consistent(l, s.xyz.data());
      const int n = l.n;
      std::set<std::pair<int, int>> expected;
      std::vector<std::pair<float, int>> d(static_cast<std::size_t>(n));
      for (int i = 0; i < n; ++i) {
        expected.emplace(i / 32, i / 32);
        for (int j = 0; j < n; ++j) d[j] = {j == i ? INFINITY : dist2(&l.coords[3 * i], &l.coords[3 * j]), j};
        std::sort(d.begin(), d.end());
        for (int m = 0; m < k; ++m) expected.emplace(i / 32, d[m].second / 32);
      }
      EXPECT_EQ(kept(l), expected);
      EXPECT_EQ(l.stats.pairs_within, -1);  // no cutoff in tiles mode
    }
  const float two[6] = {0, 0, 0, 1, 0, 0};
  LayoutOptions big;
  big.k = 100;
  EXPECT_EQ(build_knn_layout(two, 2, big).nnz(), 1);
  big.k = -1;
  EXPECT_THROW(build_knn_layout(two, 2, big), Error);
}

TEST(WindowLayout, MatchesTheAf3WindowRule) {
  const Structure s = make_globule(1000);
  for (int tile : {32, 128}) {
    LayoutOptions opt;
    opt.tile = tile;
    opt.order = Order::hilbert;  // ignored: windows are sequence-local
    const BlockLayout l = build_window_layout(s.xyz.data(), s.size(), opt);
    expect_consistent(l, s.xyz.data());
    EXPECT_EQ(l.order, Order::file);
    EXPECT_EQ(l.mask, MaskMode::windows);
    for (int p = 0; p < l.n; ++p) ASSERT_EQ(l.perm[p], p);
    std::set<std::pair<int, int>> expected;
    for (int i = 0; i < l.n; ++i) {
      const int w = i / 32;
      for (int j = std::max(0, 32 * w + 16 - 64); j < std::min(l.n, 32 * w + 16 + 64); ++j)
        expected.emplace(i / tile, j / tile);
    }
    EXPECT_EQ(kept(l), expected);
    for (auto k : l.kind) EXPECT_EQ(k, BlockKind::partial);
  }
  LayoutOptions bad;
  bad.tile = 48;
  EXPECT_THROW(build_window_layout(s.xyz.data(), s.size(), bad), Error);
}

TEST(DenseAndEdges, KeepWhatTheyAreGiven) {
  const Structure s = make_globule(300);
  LayoutOptions opt;
  opt.tile = 64;
  const BlockLayout d = build_dense_layout(s.xyz.data(), s.size(), opt);
  EXPECT_EQ(d.n_tiles, 5);
  EXPECT_EQ(d.nnz(), 25);
  EXPECT_EQ(d.stats.pairs_computed, 300 * 300);
  const BlockLayout e = build_edges_layout(s.xyz.data(), s.size(), {{4, 0}, {1, 3}, {4, 0}, {1, 1}}, opt);
  expect_consistent(e, s.xyz.data());
  EXPECT_EQ(kept(e), (std::set<std::pair<int, int>>{{1, 1}, {1, 3}, {4, 0}}));
  EXPECT_EQ(e.row_ptr, (std::vector<std::int32_t>{0, 0, 2, 2, 2, 3}));
  EXPECT_THROW(build_edges_layout(s.xyz.data(), s.size(), {{5, 0}}, opt), Error);
  EXPECT_THROW(build_edges_layout(s.xyz.data(), s.size(), {{0, -1}}, opt), Error);
}

TEST(W1Layout, BandPlusSeededFill) {
  const BlockLayout l = make_w1_layout();
  EXPECT_NO_THROW(validate_layout(l));
  EXPECT_EQ(l.n, 4096);
  EXPECT_EQ(l.n_tiles, 32);
  EXPECT_EQ(l.nnz(), 800);
  const auto pairs = kept(l);
  int band = 0;
  for (int r = 0; r < 32; ++r)
    for (int c = 0; c < 32; ++c)
      if (std::abs(r - c) <= 12) {
        ++band;
        EXPECT_TRUE(pairs.count({r, c}));
      }
  EXPECT_EQ(band, 644);  // 32*25 - 2*(1+...+12)
  EXPECT_EQ(kept(make_w1_layout()), pairs);
  EXPECT_NE(kept(make_w1_layout(32, 800, 12, 2)), pairs);
  // W1-alt: 63x63 tiles, 800 kept; a band of 12 would hold 1419 tiles, so it takes band 6 (777).
  const BlockLayout alt = make_w1_layout(63, 800, 6);
  EXPECT_EQ(alt.n, 8064);
  EXPECT_EQ(alt.nnz(), 800);
  EXPECT_EQ(alt.stats.pairs_computed, 800 * 128 * 128);
  EXPECT_THROW(make_w1_layout(32, 643), Error);
  EXPECT_THROW(make_w1_layout(32, 1025), Error);
  EXPECT_EQ(make_w1_layout(32, 1024).nnz(), 1024);
}

TEST(ValidateLayout, CatchesBrokenInvariants) {
  const Structure s = make_globule(500);
  const BlockLayout good = build_cutoff_layout(s.xyz.data(), s.size(), LayoutOptions{});
  auto expect_invalid = [](BlockLayout l, const std::string& what) {
    try {
      validate_layout(l);
      ADD_FAILURE() << "accepted: " << what;
    } catch (const Error& e) {
      EXPECT_THAT(e.what(), HasSubstr(what));
    }
  };
  BlockLayout l = good;
  std::swap(l.col_idx[0], l.col_idx[1]);
  expect_invalid(l, "not sorted");
  l = good;
  l.perm[3] = l.perm[4];
  expect_invalid(l, "permutation");
  l = good;
  l.row_ptr.back() += 1;
  expect_invalid(l, "row_ptr");
  l = good;
  l.n_tiles += 1;
  expect_invalid(l, "n_tiles");
  l = good;
  l.kind.pop_back();
  expect_invalid(l, "kind");
  l = good;
  l.col_idx.back() = l.n_tiles;
  expect_invalid(l, "outside");
}

TEST(LayoutFolder, RoundTripAndFileOrderCoords) {
  TempDir dir;
  const Structure s = real("1ubq.pdb");
  LayoutOptions opt;
  opt.mask = MaskMode::atoms;
  opt.tile = 64;
  const BlockLayout l = build_cutoff_layout(s.xyz.data(), s.size(), opt);
  export_layout(l, dir.str());
  std::set<std::string> files;
  for (const auto& e : fs::directory_iterator(dir.str())) files.insert(e.path().filename().string());
  EXPECT_EQ(files, (std::set<std::string>{"row_ptr.npy", "col_idx.npy", "perm.npy", "coords.npy", "kind.npy", "meta.json"}));
  const NpyArray coords = read_npy(dir.str() + "/coords.npy");
  EXPECT_EQ(coords.descr, "<f4");
  EXPECT_EQ(coords.shape, (std::vector<std::int64_t>{static_cast<std::int64_t>(s.size()), 3}));
  EXPECT_EQ(std::memcmp(coords.data.data(), s.xyz.data(), s.xyz.size() * sizeof(float)), 0);  // file order
  EXPECT_EQ(read_npy(dir.str() + "/row_ptr.npy").descr, "<i4");
  EXPECT_EQ(read_npy(dir.str() + "/kind.npy").descr, "|u1");
  nlohmann::json meta;
  std::ifstream(dir.str() + "/meta.json") >> meta;
  EXPECT_EQ(meta["n"], l.n);
  EXPECT_EQ(meta["tile"], 64);
  EXPECT_EQ(meta["n_tiles"], l.n_tiles);
  EXPECT_EQ(meta["nnz"], l.nnz());
  EXPECT_EQ(meta["order"], "hilbert");
  EXPECT_EQ(meta["mask"], "atoms");
  EXPECT_EQ(meta["builder"], "cutoff");
  EXPECT_FLOAT_EQ(meta["cutoff"].get<float>(), 8.0f);
  EXPECT_DOUBLE_EQ(meta["density"].get<double>(), l.stats.density);

  const BlockLayout r = load_layout(dir.str());
  EXPECT_EQ(r.n, l.n);
  EXPECT_EQ(r.tile, l.tile);
  EXPECT_EQ(r.n_tiles, l.n_tiles);
  EXPECT_EQ(r.row_ptr, l.row_ptr);
  EXPECT_EQ(r.col_idx, l.col_idx);
  EXPECT_EQ(r.kind, l.kind);
  EXPECT_EQ(r.perm, l.perm);
  EXPECT_EQ(r.coords, l.coords);
  EXPECT_EQ(r.cutoff, l.cutoff);
  EXPECT_EQ(r.mask, l.mask);
  EXPECT_EQ(r.order, l.order);
  EXPECT_EQ(r.builder, l.builder);
  EXPECT_EQ(r.stats.pairs_computed, l.stats.pairs_computed);

  // Only the arrays peers need: kind / perm / coords default to full / identity / zeros.
  fs::remove(dir.str() + "/kind.npy");
  fs::remove(dir.str() + "/perm.npy");
  fs::remove(dir.str() + "/coords.npy");
  const BlockLayout m = load_layout(dir.str());
  EXPECT_EQ(m.col_idx, l.col_idx);
  for (auto k : m.kind) EXPECT_EQ(k, BlockKind::full);
  for (int p = 0; p < m.n; ++p) EXPECT_EQ(m.perm[p], p);
}

TEST(LayoutFolder, PythonPeerLoaderAcceptsIt) {
  if (std::system("python3 -c 'import numpy' >/dev/null 2>&1") != 0) GTEST_SKIP() << "python3 with numpy not found";
  TempDir dir;
  export_layout(make_w1_layout(63, 800, 6), dir.str());
  // The checks of bench/peers.py load_layout: row_ptr length ceil(n/tile)+1, last = len(col_idx).
  const std::string cmd =
      "python3 -c \"import json, math, numpy as np, sys; d=sys.argv[1]; m=json.load(open(d+'/meta.json')); "
      "rp=np.load(d+'/row_ptr.npy'); ci=np.load(d+'/col_idx.npy'); nb=math.ceil(m['n']/m['tile']); "
      "assert rp.dtype==np.int32 and ci.dtype==np.int32; assert len(rp)==nb+1 and rp[-1]==len(ci)==800; "
      "c=np.load(d+'/coords.npy'); assert c.shape==(8064,3) and c.dtype==np.float32\" " + dir.str();
  EXPECT_EQ(std::system(cmd.c_str()), 0);
}

TEST(LayoutFolder, LoadNamesTheBadFile) {
  TempDir dir;
  EXPECT_THROW(load_layout(dir.str()), Error);
  export_layout(make_w1_layout(4, 10, 1), dir.str());
  const std::vector<std::int32_t> short_rp = {0, 1, 2};
  write_npy(dir.str() + "/row_ptr.npy", "<i4", {3}, short_rp.data());
  try {
    load_layout(dir.str());
    ADD_FAILURE();
  } catch (const Error& e) {
    EXPECT_THAT(e.what(), HasSubstr("row_ptr.npy"));
  }
  fs::remove(dir.str() + "/meta.json");
  try {
    load_layout(dir.str());
    ADD_FAILURE();
  } catch (const Error& e) {
    EXPECT_THAT(e.what(), HasSubstr("meta.json"));
  }
}

// Arrays written by other tools come in whatever integer width numpy picked: every width loads
// (kind as bool or int8, columns as uint16 or int64), and a value that does not fit int32 is
// named with its file.
TEST(LayoutFolder, LoadsEveryIntegerWidth) {
  TempDir dir;
  const BlockLayout l = make_w1_layout(4, 10, 1);
  export_layout(l, dir.str());
  const auto nnz = static_cast<std::int64_t>(l.nnz());
  std::vector<std::uint8_t> kind_bool(static_cast<std::size_t>(nnz), 0);
  kind_bool.back() = 1;
  write_npy(dir.str() + "/kind.npy", "|b1", {nnz}, kind_bool.data());
  std::vector<std::uint16_t> cols_u2(l.col_idx.begin(), l.col_idx.end());
  write_npy(dir.str() + "/col_idx.npy", "<u2", {nnz}, cols_u2.data());
  std::vector<std::int64_t> rp_i8(l.row_ptr.begin(), l.row_ptr.end());
  write_npy(dir.str() + "/row_ptr.npy", "<i8", {static_cast<std::int64_t>(rp_i8.size())}, rp_i8.data());
  BlockLayout r = load_layout(dir.str());
  EXPECT_EQ(r.col_idx, l.col_idx);
  EXPECT_EQ(r.row_ptr, l.row_ptr);
  ASSERT_EQ(r.kind.size(), l.kind.size());
  EXPECT_EQ(r.kind.back(), BlockKind::partial);
  EXPECT_EQ(r.kind.front(), BlockKind::full);

  std::vector<std::int8_t> kind_i1(static_cast<std::size_t>(nnz), 0);
  write_npy(dir.str() + "/kind.npy", "|i1", {nnz}, kind_i1.data());
  std::vector<std::uint64_t> cols_u8(l.col_idx.begin(), l.col_idx.end());
  write_npy(dir.str() + "/col_idx.npy", "<u8", {nnz}, cols_u8.data());
  r = load_layout(dir.str());
  EXPECT_EQ(r.col_idx, l.col_idx);
  for (auto k : r.kind) EXPECT_EQ(k, BlockKind::full);

  cols_u8.back() = std::uint64_t{1} << 40;
  write_npy(dir.str() + "/col_idx.npy", "<u8", {nnz}, cols_u8.data());
  try {
    load_layout(dir.str());
    ADD_FAILURE() << "a column of 2^40 loaded";
  } catch (const Error& e) {
    EXPECT_THAT(e.what(), HasSubstr("col_idx.npy"));
    EXPECT_THAT(e.what(), HasSubstr("does not fit int32"));
  }
  const std::vector<float> cols_f(static_cast<std::size_t>(nnz), 0.0f);
  write_npy(dir.str() + "/col_idx.npy", "<f4", {nnz}, cols_f.data());
  try {
    load_layout(dir.str());
    ADD_FAILURE() << "float columns loaded";
  } catch (const Error& e) {
    EXPECT_THAT(e.what(), HasSubstr("integer type is expected"));
  }
}
