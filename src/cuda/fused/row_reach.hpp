// protattn fused engine: which 16-row groups of a kept tile's query rows no key of it can reach
// under mask `atoms`. Host-only (the CPU tests check it without a GPU).
//
// Protein layouts keep a tile pair when the tiles' boxes come within the cutoff, and then nearly
// every pair inside is beyond it (2HHB at 8 A: 3% of the computed pairs are within). A warp of
// the kernels owns 16 query rows of the tile; when the box of those rows and the box of the key
// tile are farther apart than the cutoff (about half of 2HHB's kept tile x warp pairs), every
// score the warp has for the tile is masked and its probabilities are all zero, so it can skip
// the mask and the softmax (and a warpgroup whose four warps all can, its products too): the
// same result, bit for bit, for finite inputs.
#pragma once
#include <algorithm>
#include <cstdint>
#include <vector>

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
  struct Box {
    double lo[3], hi[3];
    bool empty = true;
  };
  const auto box_of = [&](std::int64_t first, std::int64_t end) {
    Box b;
    for (std::int64_t i = first; i < std::min<std::int64_t>(end, l.n); ++i) {
      const float* x = &l.coords[static_cast<std::size_t>(3 * i)];
      for (int c = 0; c < 3; ++c) {
        b.lo[c] = b.empty ? x[c] : std::min(b.lo[c], static_cast<double>(x[c]));
        b.hi[c] = b.empty ? x[c] : std::max(b.hi[c], static_cast<double>(x[c]));
      }
      b.empty = false;
    }
    return b;
  };
  const auto tiles = static_cast<std::size_t>(l.n_tiles);
  std::vector<Box> keys(tiles), rows(tiles * kGroups);
  for (std::size_t t = 0; t < tiles; ++t) {
    const auto r0 = static_cast<std::int64_t>(t) * l.tile;
    keys[t] = box_of(r0, r0 + l.tile);
    for (int w = 0; w < kGroups; ++w) rows[t * kGroups + w] = box_of(r0 + w * kReachRows, r0 + (w + 1) * kReachRows);
  }
  const float cut2 = l.cutoff * l.cutoff;  // the threshold mask_allows() compares with
  const double limit = static_cast<double>(cut2) * (1.0 + kReachMargin);
  for (std::size_t r = 0; r < tiles; ++r)
    for (std::int32_t e = l.row_ptr[r]; e < l.row_ptr[r + 1]; ++e) {
      const Box& k = keys[static_cast<std::size_t>(l.col_idx[static_cast<std::size_t>(e)])];
      std::uint8_t bits = 0;
      for (int w = 0; w < kGroups; ++w) {
        const Box& q = rows[r * kGroups + w];
        bool unreachable = q.empty || k.empty;
        if (!unreachable) {
          double gap2 = 0;
          for (int c = 0; c < 3; ++c) {
            const double gap = std::max({0.0, k.lo[c] - q.hi[c], q.lo[c] - k.hi[c]});
            gap2 += gap * gap;
          }
          unreachable = gap2 > limit;
        }
        if (unreachable) bits |= static_cast<std::uint8_t>(1u << w);
      }
      out[e] = bits;
    }
}

}  // namespace protattn::fused
