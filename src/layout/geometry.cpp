// Bounding boxes, cell grids and the O(N) cell-list count of atom pairs within a cutoff.
#include <algorithm>
#include <cmath>

#if defined(__SSE2__)
#include <xmmintrin.h>
#endif

#include "layout/detail.hpp"
#include "protattn/error.hpp"
#include "protattn/structure.hpp"

namespace protattn::detail {
namespace {

constexpr std::size_t kMaxCellsPerAtom = 2;  // grid size bound for the pair count

}  // namespace

void bounding_box(const float* xyz, std::size_t n, float lo[3], float hi[3]) {
  for (int c = 0; c < 3; ++c) lo[c] = hi[c] = n > 0 ? xyz[c] : 0.0f;
  std::size_t i = 1;
#if defined(__SSE2__)
  // Four atoms (twelve floats, three vectors: x y z x | y z x y | z x y z) at a time, then the
  // lanes of each axis merged. min and max of the same values in another grouping: the same box
  // (the coordinates are finite; at most the sign of a zero bound can differ, and every user
  // of a box subtracts it from a coordinate or another bound, where a zero's sign is lost).
  if (n >= 8) {
    __m128 l0 = _mm_loadu_ps(xyz), l1 = _mm_loadu_ps(xyz + 4), l2 = _mm_loadu_ps(xyz + 8);
    __m128 h0 = l0, h1 = l1, h2 = l2;
    for (i = 4; i + 4 <= n; i += 4) {
      const float* p = xyz + 3 * i;
      const __m128 a = _mm_loadu_ps(p), b = _mm_loadu_ps(p + 4), c = _mm_loadu_ps(p + 8);
      l0 = _mm_min_ps(a, l0);
      l1 = _mm_min_ps(b, l1);
      l2 = _mm_min_ps(c, l2);
      h0 = _mm_max_ps(a, h0);
      h1 = _mm_max_ps(b, h1);
      h2 = _mm_max_ps(c, h2);
    }
    float l[12], h[12];
    _mm_storeu_ps(l, l0);
    _mm_storeu_ps(l + 4, l1);
    _mm_storeu_ps(l + 8, l2);
    _mm_storeu_ps(h, h0);
    _mm_storeu_ps(h + 4, h1);
    _mm_storeu_ps(h + 8, h2);
    for (int k = 0; k < 12; ++k) {
      lo[k % 3] = std::min(lo[k % 3], l[k]);
      hi[k % 3] = std::max(hi[k % 3], h[k]);
    }
  }
#endif
  // Four atoms at a time into four boxes (independent chains of min and max), then merged.
  float l4[4][3], h4[4][3];
  for (auto& b : l4) std::copy(lo, lo + 3, b);
  for (auto& b : h4) std::copy(hi, hi + 3, b);
  for (; i + 4 <= n; i += 4)
    for (int a = 0; a < 4; ++a)
      for (int c = 0; c < 3; ++c) {
        l4[a][c] = std::min(l4[a][c], xyz[3 * (i + a) + c]);
        h4[a][c] = std::max(h4[a][c], xyz[3 * (i + a) + c]);
      }
  for (; i < n; ++i)
    for (int c = 0; c < 3; ++c) {
      l4[0][c] = std::min(l4[0][c], xyz[3 * i + c]);
      h4[0][c] = std::max(h4[0][c], xyz[3 * i + c]);
    }
  for (int c = 0; c < 3; ++c) {
    lo[c] = std::min(std::min(l4[0][c], l4[1][c]), std::min(l4[2][c], l4[3][c]));
    hi[c] = std::max(std::max(h4[0][c], h4[1][c]), std::max(h4[2][c], h4[3][c]));
  }
}

void bounding_box_parallel(const float* xyz, std::size_t n, float lo[3], float hi[3], int parts) {
  if (parts <= 1 || n < static_cast<std::size_t>(parts)) {
    bounding_box(xyz, n, lo, hi);
    return;
  }
  std::vector<Box> part(static_cast<std::size_t>(parts));
  parallel_chunks(n, parts, [&](int t, std::size_t b, std::size_t e) {
    bounding_box(xyz + 3 * b, e - b, part[static_cast<std::size_t>(t)].lo, part[static_cast<std::size_t>(t)].hi);
  });
  for (int c = 0; c < 3; ++c) {
    lo[c] = part[0].lo[c];
    hi[c] = part[0].hi[c];
    for (const Box& p : part) {
      lo[c] = std::min(lo[c], p.lo[c]);
      hi[c] = std::max(hi[c], p.hi[c]);
    }
  }
}

void validate_coords_parallel(const float* xyz, std::size_t n, const std::string& what, int parts) {
  if (parts <= 1 || n > kMaxAtoms || (n > 0 && xyz == nullptr)) {
    validate_coords(xyz, n, what);
    return;
  }
  std::vector<char> bad(static_cast<std::size_t>(parts), 0);
  parallel_chunks(n, parts, [&](int t, std::size_t b, std::size_t e) {
    for (std::size_t i = 3 * b; i < 3 * e; ++i)
      if (!std::isfinite(xyz[i]) || std::fabs(xyz[i]) > kMaxAbsCoord) {
        bad[static_cast<std::size_t>(t)] = 1;
        return;
      }
  });
  for (char b : bad)
    if (b) validate_coords(xyz, n, what);  // throws, naming the first bad atom
}

std::vector<Box> tile_boxes(const float* xyz, std::size_t n, int tile, int threads) {
  const std::size_t t = static_cast<std::size_t>(tile);
  std::vector<Box> boxes((n + t - 1) / t);
  // Threads at the atom passes' grain: a box is cheap, and below 2 x kLayoutAtomsPerThread atoms
  // one thread does them all, so a process that only builds such layouts never starts the worker
  // pool (starting its 15 threads cost W2's 100k-atom layout about 1 ms on a 16-core host).
  parallel_chunks(boxes.size(), resolve_threads(threads, n, kLayoutAtomsPerThread), [&](int, std::size_t b0, std::size_t b1) {
    for (std::size_t b = b0; b < b1; ++b) {
      const std::size_t first = b * t;
      bounding_box(xyz + 3 * first, std::min(t, n - first), boxes[b].lo, boxes[b].hi);
    }
  });
  return boxes;
}

double box_max_dist2(const Box& a, const Box& b) {
  double d2 = 0;
  for (int c = 0; c < 3; ++c) {
    const double span = std::max(double{b.hi[c]} - a.lo[c], double{a.hi[c]} - b.lo[c]);
    d2 += span * span;
  }
  return d2;
}

Grid::Grid(const float lo_[3], const float hi_[3], double min_cell, std::size_t max_cells) {
  cell = min_cell > 0 ? min_cell : 1.0;
  max_cells = std::max<std::size_t>(max_cells, 1);
  while (true) {
    double total = 1;
    for (int c = 0; c < 3; ++c) {
      lo[c] = lo_[c];
      dim[c] = std::max<std::int64_t>(1, static_cast<std::int64_t>(std::floor((double{hi_[c]} - lo_[c]) / cell)) + 1);
      total *= static_cast<double>(dim[c]);
    }
    if (total <= static_cast<double>(max_cells)) break;
    cell *= std::cbrt(total / static_cast<double>(max_cells)) * 1.01;
  }
}

std::int64_t Grid::coord(double v, int axis) const {
  const auto q = static_cast<std::int64_t>(std::floor((v - lo[axis]) / cell));
  return std::clamp<std::int64_t>(q, 0, dim[axis] - 1);
}

CellList bucket_points(const Grid& g, const float* xyz, std::size_t n) {
  CellList cl;
  cl.start.assign(g.cells() + 1, 0);
  cl.cell_of.resize(n);
  cl.order.resize(n);
  for (std::size_t i = 0; i < n; ++i) {
    const auto c = g.index(g.coord(xyz[3 * i], 0), g.coord(xyz[3 * i + 1], 1), g.coord(xyz[3 * i + 2], 2));
    cl.cell_of[i] = static_cast<std::int32_t>(c);
    ++cl.start[static_cast<std::size_t>(c) + 1];
  }
  for (std::size_t c = 0; c < g.cells(); ++c) cl.start[c + 1] += cl.start[c];
  std::vector<std::int32_t> fill(cl.start.begin(), cl.start.end() - 1);
  for (std::size_t i = 0; i < n; ++i) cl.order[static_cast<std::size_t>(fill[static_cast<std::size_t>(cl.cell_of[i])]++)] = static_cast<std::int32_t>(i);
  return cl;
}

std::int64_t count_pairs_within(const float* xyz, std::size_t n, float cutoff) {
  if (n < 2 || !(cutoff > 0)) return 0;
  float lo[3], hi[3];
  bounding_box(xyz, n, lo, hi);
  const Grid g(lo, hi, cutoff, kMaxCellsPerAtom * n);
  const CellList cl = bucket_points(g, xyz, n);
  // Coordinates in cell order, one array per axis, so inner loops run over contiguous memory.
  std::vector<float> xs(n), ys(n), zs(n);
  for (std::size_t p = 0; p < n; ++p) {
    const auto i = static_cast<std::size_t>(cl.order[p]);
    xs[p] = xyz[3 * i];
    ys[p] = xyz[3 * i + 1];
    zs[p] = xyz[3 * i + 2];
  }
  const float c2 = cutoff * cutoff;
  // Half shell: the cell itself (pairs p < q) and the 13 neighbours with a larger index.
  std::int64_t unordered = 0;
  for (std::int64_t z = 0; z < g.dim[2]; ++z)
    for (std::int64_t y = 0; y < g.dim[1]; ++y)
      for (std::int64_t x = 0; x < g.dim[0]; ++x) {
        const auto a = static_cast<std::size_t>(g.index(x, y, z));
        const std::int32_t a0 = cl.start[a], a1 = cl.start[a + 1];
        if (a0 == a1) continue;
        for (std::int32_t p = a0; p < a1; ++p)
          for (std::int32_t q = p + 1; q < a1; ++q) {
            const float dx = xs[p] - xs[q], dy = ys[p] - ys[q], dz = zs[p] - zs[q];
            unordered += dx * dx + dy * dy + dz * dz <= c2;
          }
        for (int dz = -1; dz <= 1; ++dz)
          for (int dy = -1; dy <= 1; ++dy)
            for (int dx = -1; dx <= 1; ++dx) {
              const int lin = (dz * 3 + dy) * 3 + dx;
              if (lin <= 0) continue;  // each neighbour pair once
              const std::int64_t nx = x + dx, ny = y + dy, nz = z + dz;
              if (nx < 0 || ny < 0 || nz < 0 || nx >= g.dim[0] || ny >= g.dim[1] || nz >= g.dim[2]) continue;
              const auto b = static_cast<std::size_t>(g.index(nx, ny, nz));
              const std::int32_t b0 = cl.start[b], b1 = cl.start[b + 1];
              for (std::int32_t p = a0; p < a1; ++p) {
                const float px = xs[p], py = ys[p], pz = zs[p];
                std::int32_t cnt = 0;
                for (std::int32_t q = b0; q < b1; ++q) {
                  const float ex = px - xs[q], ey = py - ys[q], ez = pz - zs[q];
                  cnt += ex * ex + ey * ey + ez * ez <= c2;
                }
                unordered += cnt;
              }
            }
      }
  return 2 * unordered;
}

}  // namespace protattn::detail
