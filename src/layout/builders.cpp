// Layout builders: cutoff (tile cell lists), k nearest neighbours, AF3 windows, dense, edges, W1.
#include <algorithm>
#include <cmath>
#include <numeric>
#include <queue>

#include "common/timing.hpp"
#include "layout/detail.hpp"
#include "protattn/error.hpp"
#include "protattn/layout.hpp"
#include "protattn/structure.hpp"
#include "structure/random.hpp"

namespace protattn {
namespace {

using detail::Clock;
using detail::ms_since;
using Rows = std::vector<std::vector<std::int32_t>>;  // kept columns of each tile row

constexpr int kWindowQueries = 32;       // AF3: 32 queries per window
constexpr int kWindowKeys = 128;         // ... attend 128 keys centred on the window
constexpr std::size_t kTileCellsPerTile = 8;  // grid size bound for the tile cell lists
constexpr double kKnnAtomsPerCell = 0.2;  // knn grid: about k/5 atoms per cell (bounding-box estimate)
constexpr std::size_t kTilesPerThread = 512;  // tile rows per thread below which threads do not pay
constexpr std::size_t kDirectTiles = 64;  // up to this many tiles all pairs are tested directly

// Checks the arguments, orders the atoms and gathers their coordinates in the new order.
BlockLayout begin_layout(const char* builder, const float* xyz, std::size_t n, const LayoutOptions& opt,
                         Order order) {
  const std::string what = std::string("build_") + builder + "_layout";
  if (n == 0) throw Error(what + ": no atoms");
  if (opt.tile <= 0) throw Error(what + ": tile must be positive, got " + std::to_string(opt.tile));
  detail::validate_coords_parallel(xyz, n, what, detail::resolve_threads(opt.threads, n, detail::kLayoutAtomsPerThread));
  BlockLayout l;
  l.builder = builder;
  l.n = static_cast<std::int32_t>(n);
  l.tile = opt.tile;
  l.n_tiles = static_cast<std::int32_t>((n + static_cast<std::size_t>(opt.tile) - 1) / static_cast<std::size_t>(opt.tile));
  l.order = order;
  l.mask = opt.mask;
  const auto t0 = Clock::now();
  l.perm = detail::spatial_order_unchecked(xyz, n, order, opt.threads);  // validated above
  l.coords.resize(3 * n);
  detail::parallel_chunks(n, detail::resolve_threads(opt.threads, n, detail::kLayoutAtomsPerThread), [&](int, std::size_t b, std::size_t e) {
    for (std::size_t p = b; p < e; ++p)
      for (int c = 0; c < 3; ++c) l.coords[3 * p + c] = xyz[3 * static_cast<std::size_t>(l.perm[p]) + c];
  });
  l.stats.order_ms = ms_since(t0);
  return l;
}

void require_cutoff(const char* builder, float cutoff) {
  if (!(cutoff > 0) || !std::isfinite(cutoff))
    throw Error(std::string("build_") + builder + "_layout: cutoff must be a positive distance, got " +
                std::to_string(cutoff));
}

// The kinds of the blocks of row_ptr / col_idx: windows mode PARTIAL; atoms mode FULL only when
// the farthest corners of the two tile boxes are within the cutoff; tiles FULL.
void finish_kinds(BlockLayout& l, const std::vector<detail::Box>* boxes) {
  l.kind.assign(l.col_idx.size(), BlockKind::full);
  if (l.mask == MaskMode::windows) {
    std::fill(l.kind.begin(), l.kind.end(), BlockKind::partial);
  } else if (l.mask == MaskMode::atoms) {
    const double full2 = std::pow(double{l.cutoff} * (1 - detail::kCutoffSlack), 2);
    for (std::size_t r = 0; r < static_cast<std::size_t>(l.n_tiles); ++r)
      for (auto k = l.row_ptr[r]; k < l.row_ptr[r + 1]; ++k) {
        const auto c = static_cast<std::size_t>(l.col_idx[static_cast<std::size_t>(k)]);
        if (detail::box_max_dist2((*boxes)[r], (*boxes)[c]) > full2) l.kind[static_cast<std::size_t>(k)] = BlockKind::partial;
      }
  }
}

// Fills row_ptr / col_idx from sorted unique rows (one per tile), then the kinds.
void finish_blocks(BlockLayout& l, const Rows& rows, const std::vector<detail::Box>* boxes) {
  l.row_ptr.assign(static_cast<std::size_t>(l.n_tiles) + 1, 0);
  for (std::size_t r = 0; r < rows.size(); ++r)
    l.row_ptr[r + 1] = l.row_ptr[r] + static_cast<std::int32_t>(rows[r].size());
  l.col_idx.clear();
  l.col_idx.reserve(static_cast<std::size_t>(l.row_ptr.back()));
  for (const auto& r : rows) l.col_idx.insert(l.col_idx.end(), r.begin(), r.end());
  finish_kinds(l, boxes);
}

// The last step of every builder: the stats (pairs within the cutoff counted when `count` and
// opt.count_pairs), and rows_out on request.
void finish_layout(BlockLayout& l, const LayoutOptions& opt, bool count) {
  detail::fill_basic_stats(l);
  LayoutStats& s = l.stats;
  s.pairs_within = -1;
  s.useful = -1;
  if (count && opt.count_pairs && l.cutoff > 0) {
    s.pairs_within = detail::count_pairs_within(l.coords.data(), static_cast<std::size_t>(l.n), l.cutoff);
    s.useful = s.pairs_computed > 0 ? static_cast<double>(s.pairs_within + s.atoms) / s.pairs_computed : 0;
  }
  if (opt.mark_rows_out) mark_rows_out(l);
}

// Tile pairs whose boxes come within `cutoff`, into l.row_ptr / l.col_idx (rows of boxes.size()
// tiles): each tile is entered in every grid cell its box overlaps; a tile's candidates are the
// tiles in the cells its box, grown by the cutoff, overlaps.
void tile_pairs_within(const std::vector<detail::Box>& boxes, double cutoff, int threads, BlockLayout& l) {
  const std::size_t t = boxes.size();
  float lo[3], hi[3];
  for (int c = 0; c < 3; ++c) {
    lo[c] = boxes[0].lo[c];
    hi[c] = boxes[0].hi[c];
  }
  double mean_extent = 0;
  for (const auto& b : boxes) {
    for (int c = 0; c < 3; ++c) {
      lo[c] = std::min(lo[c], b.lo[c]);
      hi[c] = std::max(hi[c], b.hi[c]);
    }
    mean_extent += std::max({b.hi[0] - b.lo[0], b.hi[1] - b.lo[1], b.hi[2] - b.lo[2]});
  }
  mean_extent /= static_cast<double>(t);
  const detail::Grid g(lo, hi, std::max(cutoff, mean_extent), kTileCellsPerTile * t);
  // Calls fn(cell) for every grid cell that box b, grown by `grow`, overlaps.
  auto for_cells = [&g](const detail::Box& b, double grow, auto&& fn) {
    std::int64_t a[3], z[3];
    for (int c = 0; c < 3; ++c) {
      a[c] = g.coord(b.lo[c] - grow, c);
      z[c] = g.coord(b.hi[c] + grow, c);
    }
    for (auto cz = a[2]; cz <= z[2]; ++cz)
      for (auto cy = a[1]; cy <= z[1]; ++cy)
        for (auto cx = a[0]; cx <= z[0]; ++cx) fn(static_cast<std::size_t>(g.index(cx, cy, cz)));
  };
  const double cut2 = cutoff * cutoff * (1 + detail::kCutoffSlack);
  if (t <= kDirectTiles) {
    // Few tiles: every pair directly. Tile j is a candidate of row i when a cell overlapped by
    // box i grown by the cutoff is also overlapped by box j, that is when their ranges of cell
    // coordinates meet on each axis: exactly the candidates of the cell lists below, then the
    // same box test, columns in increasing order (what the sort below gives).
    struct CellRange {
      std::int64_t own_lo[3], own_hi[3], grown_lo[3], grown_hi[3];
    };
    std::vector<CellRange> range(t);
    for (std::size_t i = 0; i < t; ++i)
      for (int c = 0; c < 3; ++c) {
        range[i].own_lo[c] = g.coord(boxes[i].lo[c] - 0.0, c);
        range[i].own_hi[c] = g.coord(boxes[i].hi[c] + 0.0, c);
        range[i].grown_lo[c] = g.coord(boxes[i].lo[c] - cutoff, c);
        range[i].grown_hi[c] = g.coord(boxes[i].hi[c] + cutoff, c);
      }
    l.row_ptr.assign(t + 1, 0);
    l.col_idx.resize(t * t);  // at most; trimmed below
    std::size_t kept = 0;
    for (std::size_t i = 0; i < t; ++i) {
      const CellRange& a = range[i];
      for (std::size_t j = 0; j < t; ++j) {
        const CellRange& b = range[j];
        bool meet = true;
        for (int c = 0; c < 3; ++c) meet = meet && a.grown_lo[c] <= b.own_hi[c] && b.own_lo[c] <= a.grown_hi[c];
        if (meet && detail::box_min_dist2(boxes[i], boxes[j]) <= cut2) l.col_idx[kept++] = static_cast<std::int32_t>(j);
      }
      l.row_ptr[i + 1] = static_cast<std::int32_t>(kept);
    }
    l.col_idx.resize(kept);
    return;
  }
  // Cell -> tiles overlapping it, as CSR (count, prefix sum, fill).
  std::vector<std::int32_t> start(g.cells() + 1, 0);
  for (const auto& b : boxes) for_cells(b, 0, [&](std::size_t cell) { ++start[cell + 1]; });
  for (std::size_t c = 0; c < g.cells(); ++c) start[c + 1] += start[c];
  std::vector<std::int32_t> items(static_cast<std::size_t>(start.back()));
  std::vector<std::int32_t> fill(start.begin(), start.end() - 1);
  for (std::size_t i = 0; i < t; ++i)
    for_cells(boxes[i], 0, [&](std::size_t cell) {
      items[static_cast<std::size_t>(fill[cell]++)] = static_cast<std::int32_t>(i);
    });

  Rows rows(t);
  // Rows are independent: each thread fills its own range of them.
  detail::parallel_chunks(t, detail::resolve_threads(threads, t, kTilesPerThread), [&](int, std::size_t r0, std::size_t r1) {
    std::vector<std::size_t> seen(t, t);  // last row that met each tile
    for (std::size_t i = r0; i < r1; ++i) {
      auto& row = rows[i];
      for_cells(boxes[i], cutoff, [&](std::size_t cell) {
        for (auto k = start[cell]; k < start[cell + 1]; ++k) {
          const auto j = static_cast<std::size_t>(items[static_cast<std::size_t>(k)]);
          if (seen[j] == i) continue;
          seen[j] = i;
          if (detail::box_min_dist2(boxes[i], boxes[j]) <= cut2) row.push_back(static_cast<std::int32_t>(j));
        }
      });
      std::sort(row.begin(), row.end());
    }
  });
  l.row_ptr.assign(t + 1, 0);
  for (std::size_t r = 0; r < t; ++r) l.row_ptr[r + 1] = l.row_ptr[r] + static_cast<std::int32_t>(rows[r].size());
  l.col_idx.clear();
  l.col_idx.reserve(static_cast<std::size_t>(l.row_ptr.back()));
  for (const auto& r : rows) l.col_idx.insert(l.col_idx.end(), r.begin(), r.end());
}

Rows all_pairs(std::int32_t t) {
  Rows rows(static_cast<std::size_t>(t));
  for (auto& r : rows) {
    r.resize(static_cast<std::size_t>(t));
    std::iota(r.begin(), r.end(), 0);
  }
  return rows;
}

}  // namespace

BlockLayout build_cutoff_layout(const float* xyz, std::size_t n, const LayoutOptions& opt) {
  if (opt.mask == MaskMode::windows) throw Error("build_cutoff_layout: mask windows needs the windows builder");
  require_cutoff("cutoff", opt.cutoff);
  BlockLayout l = begin_layout("cutoff", xyz, n, opt, opt.order);
  l.cutoff = opt.cutoff;
  const auto t0 = Clock::now();
  const auto boxes = detail::tile_boxes(l.coords.data(), n, l.tile, opt.threads);
  tile_pairs_within(boxes, opt.cutoff, opt.threads, l);
  finish_kinds(l, &boxes);
  l.stats.build_ms = ms_since(t0);
  finish_layout(l, opt, true);
  return l;
}

// For every atom, its k nearest other atoms (ties: lower new-order index first) from a grid of
// about k/5 atoms per cell searched ring by ring, stopping once the k-th distance is shorter than
// the distance to any unsearched cell. Kept: (tile of the atom, tile of each neighbour) and the
// diagonal.
BlockLayout build_knn_layout(const float* xyz, std::size_t n, const LayoutOptions& opt) {
  if (opt.mask == MaskMode::windows) throw Error("build_knn_layout: mask windows needs the windows builder");
  if (opt.k < 0) throw Error("build_knn_layout: k must be >= 0, got " + std::to_string(opt.k));
  if (opt.mask == MaskMode::atoms) require_cutoff("knn", opt.cutoff);
  BlockLayout l = begin_layout("knn", xyz, n, opt, opt.order);
  l.cutoff = opt.mask == MaskMode::atoms ? opt.cutoff : 0.0f;
  const auto t0 = Clock::now();
  const float* p = l.coords.data();
  const std::size_t k = std::min<std::size_t>(static_cast<std::size_t>(opt.k), n - 1);
  float lo[3], hi[3];
  detail::bounding_box(p, n, lo, hi);
  double volume = 1;
  for (int c = 0; c < 3; ++c) volume *= std::max(1.0, double{hi[c]} - lo[c]);
  const double cell = std::cbrt(std::max(1.0, kKnnAtomsPerCell * static_cast<double>(k)) * volume / static_cast<double>(n));
  const detail::Grid g(lo, hi, cell, n);
  const detail::CellList cl = detail::bucket_points(g, p, n);
  const std::int64_t max_ring = std::max({g.dim[0], g.dim[1], g.dim[2]});

  Rows rows(static_cast<std::size_t>(l.n_tiles));
  std::vector<std::int32_t> seen(static_cast<std::size_t>(l.n_tiles), -1);
  using Cand = std::pair<float, std::int32_t>;  // (squared distance, atom), compared as a pair
  std::vector<Cand> cand;
  const auto tile = static_cast<std::size_t>(l.tile);
  for (std::size_t i = 0; i < n; ++i) {
    const auto row = static_cast<std::int32_t>(i / tile);
    auto keep = [&](std::int32_t col) {
      if (seen[static_cast<std::size_t>(col)] == row) return;
      seen[static_cast<std::size_t>(col)] = row;
      rows[static_cast<std::size_t>(row)].push_back(col);
    };
    keep(row);
    if (k == 0) continue;
    cand.clear();
    const float px = p[3 * i], py = p[3 * i + 1], pz = p[3 * i + 2];
    const std::int64_t c0[3] = {g.coord(px, 0), g.coord(py, 1), g.coord(pz, 2)};
    for (std::int64_t r = 0; r <= max_ring; ++r) {
      for (std::int64_t z = c0[2] - r; z <= c0[2] + r; ++z) {
        if (z < 0 || z >= g.dim[2]) continue;
        for (std::int64_t y = c0[1] - r; y <= c0[1] + r; ++y) {
          if (y < 0 || y >= g.dim[1]) continue;
          const bool face = z == c0[2] - r || z == c0[2] + r || y == c0[1] - r || y == c0[1] + r;
          const std::int64_t step = face || r == 0 ? 1 : 2 * r;  // cells of the ring only
          for (std::int64_t x = c0[0] - r; x <= c0[0] + r; x += step) {
            if (x < 0 || x >= g.dim[0]) continue;
            const auto cidx = static_cast<std::size_t>(g.index(x, y, z));
            for (auto q = cl.start[cidx]; q < cl.start[cidx + 1]; ++q) {
              const auto j = static_cast<std::size_t>(cl.order[static_cast<std::size_t>(q)]);
              if (j == i) continue;
              const float dx = px - p[3 * j], dy = py - p[3 * j + 1], dz = pz - p[3 * j + 2];
              cand.emplace_back(dx * dx + dy * dy + dz * dz, static_cast<std::int32_t>(j));
            }
          }
        }
      }
      if (cand.size() < k) continue;
      std::nth_element(cand.begin(), cand.begin() + static_cast<std::ptrdiff_t>(k - 1), cand.end());
      const double reach = static_cast<double>(r) * g.cell;  // no unsearched atom is nearer
      if (double{cand[k - 1].first} < reach * reach) break;
    }
    // cand[0, k) now hold the k smallest (distance, index) pairs.
    for (std::size_t m = 0; m < k; ++m) keep(static_cast<std::int32_t>(static_cast<std::size_t>(cand[m].second) / tile));
  }
  for (auto& r : rows) std::sort(r.begin(), r.end());
  std::vector<detail::Box> boxes;
  if (l.mask == MaskMode::atoms) boxes = detail::tile_boxes(p, n, l.tile);
  finish_blocks(l, rows, &boxes);
  l.stats.build_ms = ms_since(t0);
  finish_layout(l, opt, true);
  return l;
}

BlockLayout build_window_layout(const float* xyz, std::size_t n, const LayoutOptions& opt) {
  if (opt.tile <= 0 || opt.tile % kWindowQueries != 0)
    throw Error("build_window_layout: tile must be a positive multiple of " + std::to_string(kWindowQueries) +
                ", got " + std::to_string(opt.tile));
  LayoutOptions o = opt;
  o.mask = MaskMode::windows;
  BlockLayout l = begin_layout("windows", xyz, n, o, Order::file);
  const auto t0 = Clock::now();
  const std::int64_t nn = l.n;
  Rows rows(static_cast<std::size_t>(l.n_tiles));
  for (std::int64_t r = 0; r < l.n_tiles; ++r) {
    const std::int64_t first_w = r * l.tile / kWindowQueries;
    const std::int64_t last_w = (std::min<std::int64_t>(nn, (r + 1) * l.tile) - 1) / kWindowQueries;
    const std::int64_t key_lo = std::max<std::int64_t>(0, first_w * kWindowQueries + kWindowQueries / 2 - kWindowKeys / 2);
    const std::int64_t key_hi = std::min<std::int64_t>(nn, last_w * kWindowQueries + kWindowQueries / 2 + kWindowKeys / 2);
    for (std::int64_t c = key_lo / l.tile; c <= (key_hi - 1) / l.tile; ++c)
      rows[static_cast<std::size_t>(r)].push_back(static_cast<std::int32_t>(c));
  }
  finish_blocks(l, rows, nullptr);
  l.stats.build_ms = ms_since(t0);
  finish_layout(l, opt, false);
  return l;
}

BlockLayout build_dense_layout(const float* xyz, std::size_t n, const LayoutOptions& opt) {
  if (opt.mask == MaskMode::windows) throw Error("build_dense_layout: mask windows needs the windows builder");
  if (opt.mask == MaskMode::atoms) require_cutoff("dense", opt.cutoff);
  BlockLayout l = begin_layout("dense", xyz, n, opt, opt.order);
  l.cutoff = opt.mask == MaskMode::atoms ? opt.cutoff : 0.0f;
  const auto t0 = Clock::now();
  std::vector<detail::Box> boxes;
  if (l.mask == MaskMode::atoms) boxes = detail::tile_boxes(l.coords.data(), n, l.tile);
  finish_blocks(l, all_pairs(l.n_tiles), &boxes);
  l.stats.build_ms = ms_since(t0);
  finish_layout(l, opt, true);
  return l;
}

BlockLayout build_edges_layout(const float* xyz, std::size_t n,
                               const std::vector<std::pair<std::int32_t, std::int32_t>>& pairs,
                               const LayoutOptions& opt) {
  if (opt.mask == MaskMode::windows) throw Error("build_edges_layout: mask windows needs the windows builder");
  if (opt.mask == MaskMode::atoms) require_cutoff("edges", opt.cutoff);
  BlockLayout l = begin_layout("edges", xyz, n, opt, opt.order);
  l.cutoff = opt.mask == MaskMode::atoms ? opt.cutoff : 0.0f;
  const auto t0 = Clock::now();
  Rows rows(static_cast<std::size_t>(l.n_tiles));
  for (const auto& [r, c] : pairs) {
    if (r < 0 || r >= l.n_tiles || c < 0 || c >= l.n_tiles)
      throw Error("build_edges_layout: tile pair (" + std::to_string(r) + ", " + std::to_string(c) +
                  ") outside [0, " + std::to_string(l.n_tiles) + ")");
    rows[static_cast<std::size_t>(r)].push_back(c);
  }
  for (auto& r : rows) {
    std::sort(r.begin(), r.end());
    r.erase(std::unique(r.begin(), r.end()), r.end());
  }
  std::vector<detail::Box> boxes;
  if (l.mask == MaskMode::atoms) boxes = detail::tile_boxes(l.coords.data(), n, l.tile);
  finish_blocks(l, rows, &boxes);
  l.stats.build_ms = ms_since(t0);
  finish_layout(l, opt, true);
  return l;
}

// Band first, then the remaining pairs drawn uniformly without replacement (partial
// Fisher-Yates over the off-band pairs in row-major order, SplitMix64 seeded). Coordinates are
// all zero: the pattern has no geometry.
BlockLayout make_w1_layout(int n_tiles, int nnz, int band, std::uint64_t seed, int tile) {
  if (n_tiles <= 0 || tile <= 0 || band < 0)
    throw Error("make_w1_layout: n_tiles and tile must be positive and band >= 0");
  const std::int64_t n = static_cast<std::int64_t>(n_tiles) * tile;
  if (n > static_cast<std::int64_t>(kMaxAtoms))
    throw Error("make_w1_layout: " + std::to_string(n) + " atoms, more than the limit of " + std::to_string(kMaxAtoms));
  Rows rows(static_cast<std::size_t>(n_tiles));
  std::vector<std::pair<std::int32_t, std::int32_t>> rest;
  std::int64_t in_band = 0;
  for (std::int32_t r = 0; r < n_tiles; ++r)
    for (std::int32_t c = 0; c < n_tiles; ++c) {
      if (std::abs(r - c) <= band) {
        rows[static_cast<std::size_t>(r)].push_back(c);
        ++in_band;
      } else {
        rest.emplace_back(r, c);
      }
    }
  const std::int64_t total = static_cast<std::int64_t>(n_tiles) * n_tiles;
  if (nnz < in_band || nnz > total)
    throw Error("make_w1_layout: nnz " + std::to_string(nnz) + " outside [" + std::to_string(in_band) +
                " (the band), " + std::to_string(total) + " (all tiles)]");
  detail::SplitMix64 rng(seed);
  const auto fill = static_cast<std::size_t>(nnz - in_band);
  for (std::size_t i = 0; i < fill; ++i) {
    const std::size_t j = i + static_cast<std::size_t>(rng.below(rest.size() - i));
    std::swap(rest[i], rest[j]);
    rows[static_cast<std::size_t>(rest[i].first)].push_back(rest[i].second);
  }
  for (auto& r : rows) std::sort(r.begin(), r.end());
  BlockLayout l;
  l.builder = "w1";
  l.n = static_cast<std::int32_t>(n);
  l.tile = tile;
  l.n_tiles = n_tiles;
  l.order = Order::file;
  l.mask = MaskMode::tiles;
  l.perm.resize(static_cast<std::size_t>(n));
  std::iota(l.perm.begin(), l.perm.end(), 0);
  l.coords.assign(3 * static_cast<std::size_t>(n), 0.0f);
  finish_blocks(l, rows, nullptr);
  finish_layout(l, LayoutOptions{}, false);
  return l;
}

}  // namespace protattn
