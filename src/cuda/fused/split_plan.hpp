// protattn fused engine: how far to cut the key lists of a batch that would leave the GPU idle.
// Host-only (the CPU tests check it without a GPU).
#pragma once
#include <algorithm>
#include <cstdint>
#include <queue>
#include <utility>
#include <vector>

namespace protattn::fused {

// Pieces per key list (lens: kept key tiles per query tile and head) when the lists are too few
// for the `slots` block slots of the GPU. Every list starts as one piece; each further piece goes
// to the list whose pieces are longest now (ceil(len / pieces); ties: the earlier list), until
// the pieces fill the slots or no list can take one more: a piece keeps at least `min_tiles`
// tiles, a list is cut into at most `max_pieces`. This gives the shortest longest piece the slots
// allow, and spreads the rest of the slots over the next longest, so that the multiprocessors
// get about the same number of tiles. A list of p pieces is cut at len * s / p, s = 1 .. p - 1.
inline std::vector<int> split_counts(const std::vector<int>& lens, std::int64_t slots, int min_tiles, int max_pieces) {
  std::vector<int> pieces(lens.size(), 1);
  const auto longest_piece = [&](std::size_t i) { return (lens[i] + pieces[i] - 1) / pieces[i]; };
  const auto can_take = [&](std::size_t i) {
    return pieces[i] < max_pieces && static_cast<std::int64_t>(lens[i]) >= static_cast<std::int64_t>(min_tiles) * (pieces[i] + 1);
  };
  // (longest piece, -index): the top is the list with the longest pieces, the earliest on ties.
  std::priority_queue<std::pair<int, std::int64_t>> queue;
  for (std::size_t i = 0; i < lens.size(); ++i)
    if (can_take(i)) queue.push({longest_piece(i), -static_cast<std::int64_t>(i)});
  for (auto used = static_cast<std::int64_t>(lens.size()); used < slots && !queue.empty(); ++used) {
    const auto i = static_cast<std::size_t>(-queue.top().second);
    queue.pop();
    ++pieces[i];
    if (can_take(i)) queue.push({longest_piece(i), -static_cast<std::int64_t>(i)});
  }
  return pieces;
}

}  // namespace protattn::fused
