// Layout internals: bounding boxes, uniform cell grids and O(N) neighbour counting.
#pragma once
#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#include "common/parallel.hpp"
#include "protattn/layout.hpp"

namespace protattn {
struct BlockLayout;
}

namespace protattn::detail {

// Relative slack on cutoff tests between boxes: keeping a tile pair never hurts correctness,
// and a FULL block must hold only pairs within the cutoff however distances are rounded.
inline constexpr double kCutoffSlack = 1e-5;

void bounding_box(const float* xyz, std::size_t n, float lo[3], float hi[3]);
// The same box from `parts` threads (min and max do not depend on the order: same result).
void bounding_box_parallel(const float* xyz, std::size_t n, float lo[3], float hi[3], int parts);
// spatial_order() for coordinates already validated (at most kMaxAtoms, all finite and sane).
std::vector<std::int32_t> spatial_order_unchecked(const float* xyz, std::size_t n, Order order, int threads);
// validate_coords() on `parts` threads: the same checks, and the same error (with the first bad
// atom) when one fails.
void validate_coords_parallel(const float* xyz, std::size_t n, const std::string& what, int parts);

struct Box {
  float lo[3], hi[3];
};
// Bounding box of each tile of `tile` consecutive atoms (the last one may be short).
std::vector<Box> tile_boxes(const float* xyz, std::size_t n, int tile, int threads = 1);
// Smallest / largest distance between two boxes, squared, in double.
inline double box_min_dist2(const Box& a, const Box& b) {  // inline: the cutoff builder's inner loop
  double d2 = 0;
  for (int c = 0; c < 3; ++c) {
    const double gap = std::max({0.0, double{b.lo[c]} - a.hi[c], double{a.lo[c]} - b.hi[c]});
    d2 += gap * gap;
  }
  return d2;
}
double box_max_dist2(const Box& a, const Box& b);

// Uniform grid of cubic cells over a box; cells are enlarged past `min_cell` when needed to keep
// at most `max_cells` cells (sparse inputs), so memory stays O(items).
struct Grid {
  double lo[3] = {0, 0, 0};
  double cell = 1;
  std::int64_t dim[3] = {1, 1, 1};
  Grid(const float lo_[3], const float hi_[3], double min_cell, std::size_t max_cells);
  std::int64_t coord(double v, int axis) const;  // clamped cell index along one axis
  std::int64_t index(std::int64_t x, std::int64_t y, std::int64_t z) const {
    return (z * dim[1] + y) * dim[0] + x;
  }
  std::size_t cells() const { return static_cast<std::size_t>(dim[0] * dim[1] * dim[2]); }
};

// Points bucketed by grid cell (counting sort): points of cell c are order[start[c]..start[c+1]).
struct CellList {
  std::vector<std::int32_t> start;  // [cells + 1]
  std::vector<std::int32_t> order;  // point indices, by cell
  std::vector<std::int32_t> cell_of;  // [n] cell of each point
};
CellList bucket_points(const Grid& g, const float* xyz, std::size_t n);

// Ordered atom pairs (i, j), i != j, with float squared distance <= cutoff^2, both directions
// counted. Cell lists of side >= cutoff, half shell of neighbour cells: O(N) at fixed density.
std::int64_t count_pairs_within(const float* xyz, std::size_t n, float cutoff);

// Sets stats.atoms, tiles, nnz, density and pairs_computed from the blocks.
void fill_basic_stats(BlockLayout& l);

}  // namespace protattn::detail
