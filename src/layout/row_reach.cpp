// protattn layouts: the 16-row groups of a kept tile's query rows that no key of it can reach
// under mask atoms (BlockLayout::rows_out).
//
// Protein layouts keep a tile pair when the tiles' boxes come within the cutoff, and then nearly
// every pair inside is beyond it (2HHB at 8 A: 3% of the computed pairs are within). A warp of
// the fused kernels owns 16 query rows of the tile; when the box of those rows and the box of the
// key tile are farther apart than the cutoff (about half of 2HHB's kept tile x warp pairs), every
// score the warp has for the tile is masked and its probabilities are all zero, so it can skip
// the mask and the softmax: the same result, bit for bit, for finite inputs.
#include <algorithm>
#include <cstdint>
#include <vector>
#if defined(__SSE2__)
#include <immintrin.h>
#endif

#include "layout/detail.hpp"
#include "protattn/layout.hpp"

namespace protattn {
namespace {

constexpr int kGroups = 8;  // row groups of a tile

// Whether any bit can be set in `l`: mask atoms, tiles of kGroups groups, its coordinates.
bool marks_rows(const BlockLayout& l) {
  return l.mask == MaskMode::atoms && l.tile == kGroups * kRowGroup && l.n > 0 &&
         l.coords.size() == static_cast<std::size_t>(l.n) * 3;
}

}  // namespace

void rows_out_of_reach(const BlockLayout& l, std::uint8_t* out) {
  std::fill(out, out + l.col_idx.size(), std::uint8_t{0});
  if (!marks_rows(l)) return;
  // The boxes of every group of rows (detail::tile_boxes over groups of kRowGroup atoms) laid out
  // per tile as lo[c][w], hi[c][w] for the four-wide gap tests, and of every key tile (their
  // union). A group past the end has no box: it is marked whatever the key tile.
  struct Groups {
    float lo[3][kGroups], hi[3][kGroups];
    std::uint32_t empty = 0;  // bit w: group w holds no row
  };
  const auto tiles = static_cast<std::size_t>(l.n_tiles);
  const auto n = static_cast<std::size_t>(l.n);
  const std::vector<detail::Box> boxes = detail::tile_boxes(l.coords.data(), n, kRowGroup);
  std::vector<Groups> groups(tiles);
  std::vector<detail::Box> keys(tiles);  // the union of a tile's groups
  for (std::size_t t = 0; t < tiles; ++t)
    for (int w = 0; w < kGroups; ++w) {
      const std::size_t g = t * kGroups + static_cast<std::size_t>(w);
      if (g >= boxes.size()) {
        groups[t].empty |= 1u << w;
        for (int c = 0; c < 3; ++c) groups[t].lo[c][w] = groups[t].hi[c][w] = 0.0f;
        continue;
      }
      for (int c = 0; c < 3; ++c) {
        groups[t].lo[c][w] = boxes[g].lo[c];
        groups[t].hi[c][w] = boxes[g].hi[c];
        keys[t].lo[c] = w == 0 ? boxes[g].lo[c] : std::min(keys[t].lo[c], boxes[g].lo[c]);
        keys[t].hi[c] = w == 0 ? boxes[g].hi[c] : std::max(keys[t].hi[c], boxes[g].hi[c]);
      }
    }
  // The gap between boxes in float: its rounding (a few 2^-24, relative) is far inside the margin.
  const float cut2 = l.cutoff * l.cutoff;  // the threshold the mask rule compares with
  const auto limit = static_cast<float>(static_cast<double>(cut2) * (1.0 + detail::kCutoffSlack));
  for (std::size_t r = 0; r < tiles; ++r) {
    const Groups& q = groups[r];
    for (std::int32_t e = l.row_ptr[r]; e < l.row_ptr[r + 1]; ++e) {
      const detail::Box& k = keys[static_cast<std::size_t>(l.col_idx[static_cast<std::size_t>(e)])];
      std::uint32_t bits = q.empty;
#if defined(__SSE2__)
      for (int w0 = 0; w0 < kGroups; w0 += 4) {  // four groups at a time, no branches
        __m128 gap2 = _mm_setzero_ps();
        for (int c = 0; c < 3; ++c) {
          const __m128 below = _mm_sub_ps(_mm_set1_ps(k.lo[c]), _mm_loadu_ps(&q.hi[c][w0]));
          const __m128 above = _mm_sub_ps(_mm_loadu_ps(&q.lo[c][w0]), _mm_set1_ps(k.hi[c]));
          const __m128 gap = _mm_max_ps(_mm_max_ps(below, above), _mm_setzero_ps());
          gap2 = _mm_add_ps(gap2, _mm_mul_ps(gap, gap));
        }
        bits |= static_cast<std::uint32_t>(_mm_movemask_ps(_mm_cmpgt_ps(gap2, _mm_set1_ps(limit)))) << w0;
      }
#else
      for (int w = 0; w < kGroups; ++w) {
        float gap2 = 0.0f;
        for (int c = 0; c < 3; ++c) {
          const float gap = std::max(0.0f, std::max(k.lo[c] - q.hi[c][w], q.lo[c][w] - k.hi[c]));
          gap2 += gap * gap;
        }
        bits |= static_cast<std::uint32_t>(gap2 > limit) << w;
      }
#endif
      out[e] = static_cast<std::uint8_t>(bits);
    }
  }
}

void mark_rows_out(BlockLayout& l) {
  l.rows_out.clear();
  if (!marks_rows(l)) return;
  l.rows_out.resize(l.col_idx.size());
  rows_out_of_reach(l, l.rows_out.data());
}

}  // namespace protattn
