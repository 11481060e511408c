// protattn fused engine: how far to cut the key lists of a batch that would leave the GPU idle.
// Host-only (the CPU tests check it without a GPU).
#pragma once
#include <algorithm>
#include <cstdint>
#include <vector>

namespace protattn::fused {

// Pieces when each key list of `lens` (kept key tiles per query tile and head) is cut into
// pieces of at most `chunk` tiles; an empty list is still one (it writes zeros).
inline std::int64_t split_pieces(const std::vector<int>& lens, int chunk) {
  std::int64_t pieces = 0;
  for (int len : lens) pieces += std::max(1, (len + chunk - 1) / chunk);
  return pieces;
}

// The chunk (most key tiles per piece) for lists too few to fill `slots` block slots: the one
// whose pieces finish first, estimated as waves of the GPU (pieces / slots, rounded up) times
// the chunk; ties go to the longer chunk (fewer partials to combine). A chunk is at least
// `min_chunk` tiles and cuts no list into more than `max_pieces`. Returns the longest list's
// length (at least 1) when cutting does not pay.
inline int split_chunk(const std::vector<int>& lens, std::int64_t slots, int min_chunk, int max_pieces) {
  const int longest = std::max(1, lens.empty() ? 1 : *std::max_element(lens.begin(), lens.end()));
  slots = std::max<std::int64_t>(1, slots);
  int best = longest;
  std::int64_t best_cost = (split_pieces(lens, longest) + slots - 1) / slots * longest;
  const int first = std::max({1, min_chunk, (longest + max_pieces - 1) / std::max(1, max_pieces)});
  for (int c = longest - 1; c >= first; --c) {
    const std::int64_t cost = (split_pieces(lens, c) + slots - 1) / slots * c;
    if (cost < best_cost) {
      best = c;
      best_cost = cost;
    }
  }
  return best;
}

}  // namespace protattn::fused
