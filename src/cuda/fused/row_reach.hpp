// protattn fused engine: which 16-row groups of a kept tile's query rows no key of it can reach
// under mask `atoms`. Host-only (the CPU tests check it without a GPU).
//
// Protein layouts keep a tile pair when the tiles' boxes come within the cutoff, and then nearly
// every pair inside is beyond it (2HHB at 8 A: 3% of the computed pairs are within). A warp of
// the kernels owns 16 query rows of the tile; when the box of those rows and the box of the key
// tile are farther apart than the cutoff (about half of 2HHB's kept tile x warp pairs), every
// score the warp has for the tile is masked and its probabilities are all zero, so it can skip
// the mask and the softmax (the ws kernel does): the same result, bit for bit, for finite inputs.
#pragma once
#include <algorithm>
#include <cstdint>
#include <vector>
#if defined(__SSE2__)
#include <immintrin.h>
#endif

#include "protattn/layout.hpp"

namespace protattn::fused {

// Query rows of one bit of a kept tile's reach byte: rows 16w .. 16w + 15 of the tile are bit w.
inline constexpr int kReachRows = 16;

// A relative margin on the squared cutoff: a pair whose true squared distance exceeds
// cutoff^2 (1 + kReachMargin) is beyond the cutoff in the float arithmetic of mask_allows() too
// (its relative error is a few 2^-24), so a group marked out of reach never hides a pair the
// rule allows.
inline constexpr double kReachMargin = 1e-5;

// For layout `l` with mask atoms (coordinates in layout order) and tiles of 8 x kReachRows rows:
// sets bit w of out[e] for every kept tile e (out: one byte per col_idx entry) whose query rows
// 16w .. 16w + 15 either lie wholly past the structure's end or have a box farther than the
// cutoff (with the margin) from the key tile's box; clears the others. Any other layout gets 0s.
inline void mark_unreachable_rows(const BlockLayout& l, std::uint8_t* out) {
  std::fill(out, out + l.col_idx.size(), std::uint8_t{0});
  constexpr int kGroups = 8;
  if (l.mask != MaskMode::atoms || l.tile != kGroups * kReachRows || l.n <= 0 ||
      l.coords.size() != static_cast<std::size_t>(l.n) * 3)
    return;
  // Boxes of every group of rows (lo[c][w], hi[c][w] of tile t in groups[t]; float min and max
  // are exact), and of every tile (the union of its groups). A group past the end is empty: it
  // is marked whatever the key tile.
  struct Groups {
    float lo[3][kGroups], hi[3][kGroups];
    std::uint32_t empty = 0;  // bit w: group w holds no row
  };
  struct Box {
    float lo[3], hi[3];
  };
  const auto tiles = static_cast<std::size_t>(l.n_tiles);
  std::vector<Groups> groups(tiles);
  std::vector<Box> keys(tiles);
  const float* xyz = l.coords.data();
  const auto n = static_cast<std::size_t>(l.n);
  for (std::size_t t = 0; t < tiles; ++t) {
    Groups& gr = groups[t];
    Box& k = keys[t];
    for (int w = 0; w < kGroups; ++w) {
      const std::size_t first = (t * kGroups + w) * kReachRows, end = std::min(first + kReachRows, n);
      if (first >= end) {
        gr.empty |= 1u << w;
        for (int c = 0; c < 3; ++c) gr.lo[c][w] = gr.hi[c][w] = 0.0f;
        continue;
      }
      float lo[3] = {xyz[3 * first], xyz[3 * first + 1], xyz[3 * first + 2]}, hi[3] = {lo[0], lo[1], lo[2]};
      for (std::size_t i = first + 1; i < end; ++i)
        for (int c = 0; c < 3; ++c) {
          lo[c] = std::min(lo[c], xyz[3 * i + c]);
          hi[c] = std::max(hi[c], xyz[3 * i + c]);
        }
      for (int c = 0; c < 3; ++c) {
        gr.lo[c][w] = lo[c];
        gr.hi[c][w] = hi[c];
        k.lo[c] = w == 0 ? lo[c] : std::min(k.lo[c], lo[c]);
        k.hi[c] = w == 0 ? hi[c] : std::max(k.hi[c], hi[c]);
      }
    }
  }
  // The gap between boxes in float: its rounding (a few 2^-24, relative) is far inside the margin.
  const float cut2 = l.cutoff * l.cutoff;  // the threshold mask_allows() compares with
  const auto limit = static_cast<float>(static_cast<double>(cut2) * (1.0 + kReachMargin));
  for (std::size_t r = 0; r < tiles; ++r) {
    const Groups& q = groups[r];
    for (std::int32_t e = l.row_ptr[r]; e < l.row_ptr[r + 1]; ++e) {
      const Box& k = keys[static_cast<std::size_t>(l.col_idx[static_cast<std::size_t>(e)])];
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

}  // namespace protattn::fused
