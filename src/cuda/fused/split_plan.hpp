// protattn fused engine: how far to cut the key lists of a batch that would leave the GPU idle.
// Host-only (the CPU tests check it without a GPU).
#pragma once
#include <algorithm>
#include <cstdint>
#include <functional>
#include <queue>
#include <utility>
#include <vector>

namespace protattn::fused {

// Where piece s of a list of `len` tiles cut into `pieces` begins (piece s is [start(s), start(s + 1))).
inline int piece_start(int len, int s, int pieces) {
  return static_cast<int>(static_cast<std::int64_t>(len) * s / pieces);
}

// Pieces per key list (lens: kept key tiles per query tile and head) when the lists are too few
// for the `slots` block slots of the GPU. Every list starts as one piece; each further piece goes
// to the list whose pieces are longest now (ceil(len / pieces); ties: the earlier list), until
// the pieces fill the slots or no list can take one more: a piece keeps at least `min_tiles`
// tiles, a list is cut into at most `max_pieces`. This gives the shortest longest piece the slots
// allow, and spreads the rest of the slots over the next longest, so that the multiprocessors
// get about the same number of tiles. A list of p pieces is cut at piece_start(len, s, p), s = 1 .. p - 1.
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

// The time, in key tiles, the block scheduler takes to run blocks of these costs in this order
// on `slots` slots: each block goes to the slot that frees first (a list-scheduling estimate).
inline double list_makespan(const std::vector<double>& costs, std::int64_t slots) {
  if (slots < 1 || costs.empty()) return 0.0;
  std::priority_queue<double, std::vector<double>, std::greater<double>> free_at;
  for (std::int64_t s = 0; s < std::min<std::int64_t>(slots, static_cast<std::int64_t>(costs.size())); ++s) free_at.push(0.0);
  double end = 0.0;
  for (double c : costs) {
    const double t = free_at.top() + c;
    free_at.pop();
    free_at.push(t);
    end = std::max(end, t);
  }
  return end;
}

// What a split piece costs beyond its tiles (writing its partial, its share of the combine), and
// what the combine kernel costs once, in key tiles: the cost model of choose_pieces.
inline constexpr double kPieceOverheadTiles = 1.0;
inline constexpr double kCombineOverheadTiles = 2.0;
// Batches of up to this many waves of lists are considered for cutting into full waves, and cut
// when the estimate is at most this share of the uncut one (larger batches gain little, and their
// blocks then lose the layout order, which keeps the key tiles they share in L2).
inline constexpr std::int64_t kMaxWavesToBalance = 8;
inline constexpr double kCutWhenEstimateBelow = 0.9;

// The estimated time, in key tiles, of the lists cut into `pieces` (empty: none cut; the blocks
// then run in list order), the pieces longest first, as the plan orders them.
inline double estimated_makespan(const std::vector<int>& lens, const std::vector<int>& pieces, std::int64_t slots) {
  std::vector<double> costs;
  bool cut = false;
  for (std::size_t i = 0; i < lens.size(); ++i) {
    const int p = pieces.empty() ? 1 : pieces[i];
    cut |= p > 1;
    for (int s = 0; s < p; ++s)
      costs.push_back(static_cast<double>(piece_start(lens[i], s + 1, p) - piece_start(lens[i], s, p)) +
                      (p > 1 ? kPieceOverheadTiles : 0.0));
  }
  if (!cut) return list_makespan(costs, slots);
  std::stable_sort(costs.begin(), costs.end(), std::greater<double>());
  return list_makespan(costs, slots) + kCombineOverheadTiles;
}

// Pieces per key list for a batch on `slots` block slots (empty: no list is cut).
// - Fewer lists than slots: fill the slots (split_counts).
// - Up to kMaxWavesToBalance waves of lists whose last wave is partly empty (4 heads of a
//   4,500-atom protein: 144 lists on 132 slots, the second wave 12 blocks long, so the batch took
//   two whole lists' time): cut them into as many pieces as whole waves hold, when the estimate
//   (estimated_makespan) says it finishes in under kCutWhenEstimateBelow of the time.
// - More: none is cut (the tail of the last wave is short against the whole).
inline std::vector<int> choose_pieces(const std::vector<int>& lens, std::int64_t slots, int min_tiles, int max_pieces) {
  const auto lists = static_cast<std::int64_t>(lens.size());
  if (lists == 0 || slots < 1) return {};
  if (lists < slots) return split_counts(lens, slots, min_tiles, max_pieces);
  const std::int64_t waves = (lists + slots - 1) / slots;
  if (waves > kMaxWavesToBalance || lists == waves * slots) return {};
  std::vector<int> pieces = split_counts(lens, waves * slots, min_tiles, max_pieces);
  if (estimated_makespan(lens, pieces, slots) < kCutWhenEstimateBelow * estimated_makespan(lens, {}, slots)) return pieces;
  return {};
}

// The blocks of an uncut batch run in the layout's order (structure, head, query tile: blocks
// resident together read the same key tiles from L2), except the last `tail_waves` waves of
// `slots` items, longest first, so that the shortest items end the run. How many items that is
// (none for tail_waves <= 0, all when the batch is shorter).
inline std::size_t tail_items(std::size_t items, std::int64_t slots, double tail_waves) {
  if (!(tail_waves > 0.0) || slots < 1) return 0;
  const double tail = tail_waves * static_cast<double>(slots);
  return tail >= static_cast<double>(items) ? items : static_cast<std::size_t>(tail);
}

// Orders the last `tail` items longest first (stable: ties keep their order); len(item) is an
// item's number of key tiles. The items before them keep their order.
template <typename Item, typename Len>
void order_tail_longest_first(std::vector<Item>& items, std::size_t tail, Len len) {
  tail = std::min(tail, items.size());
  std::stable_sort(items.end() - static_cast<std::ptrdiff_t>(tail), items.end(),
                   [&](const Item& a, const Item& b) { return len(a) > len(b); });
}

}  // namespace protattn::fused
