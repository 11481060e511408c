// The fused engine's choice of how far to cut key lists that would leave the GPU idle
// (src/cuda/fused/split_plan.hpp; host code, checked without a GPU).
#include <gtest/gtest.h>

#include <algorithm>
#include <cstdint>
#include <numeric>
#include <random>
#include <vector>

#include "cuda/fused/split_plan.hpp"

namespace protattn::fused {
namespace {

int longest_piece(const std::vector<int>& lens, const std::vector<int>& pieces) {
  int m = 0;
  for (std::size_t i = 0; i < lens.size(); ++i) m = std::max(m, (lens[i] + pieces[i] - 1) / pieces[i]);
  return m;
}

// Whether some allocation within the limits keeps every piece at most `len` tiles.
bool feasible(const std::vector<int>& lens, std::int64_t slots, int min_tiles, int max_pieces, int len) {
  std::int64_t need = 0;
  for (int l : lens) {
    const int p = std::max(1, (l + len - 1) / len);
    const int cap = std::max(1, std::min(max_pieces, l / min_tiles));
    if (p > cap) return false;
    need += p;
  }
  return need <= std::max<std::int64_t>(slots, static_cast<std::int64_t>(lens.size()));
}

// `count` lists of `len` tiles, the first `first` of them `first_len` long.
std::vector<int> lists(std::size_t count, int len, std::size_t first, int first_len) {
  std::vector<int> lens(count, len);
  std::fill(lens.begin(), lens.begin() + static_cast<std::ptrdiff_t>(first), first_len);
  return lens;
}

// The W1 geometry on 264 slots (two blocks per SM): split_counts fills every slot exactly and its
// longest piece is `longest` tiles.
void expect_fills_264(const std::vector<int>& lens, int longest) {
  const auto p = split_counts(lens, 264, 2, 16);
  EXPECT_EQ(std::accumulate(p.begin(), p.end(), 0), 264);
  EXPECT_EQ(longest_piece(lens, p), longest);
}

TEST(FusedSplit, W1LikeListsFillTheSlots) {
  // 32 lists of about 25 tiles on 264 slots: about 8 pieces each, none longer than 4 tiles.
  const std::vector<int> lens = lists(32, 25, 8, 28);
  expect_fills_264(lens, 4);
  EXPECT_FALSE(feasible(lens, 264, 2, 16, 3));
}

TEST(FusedSplit, W1AltLikeListsStayInOneWave) {
  // 63 lists of 12-13 tiles: 4 pieces each (252), then 12 lists a fifth (264), all within the slots.
  expect_fills_264(lists(63, 13, 20, 12), 4);
}

TEST(FusedSplit, RespectsTheLimits) {
  EXPECT_EQ(split_counts({100}, 10000, 2, 16), std::vector<int>{16});  // at most 16 pieces
  EXPECT_EQ(split_counts({9, 9}, 10000, 3, 16), (std::vector<int>{3, 3}));  // pieces of >= 3 tiles
  EXPECT_EQ(split_counts({0, 1, 3}, 100, 2, 16), (std::vector<int>{1, 1, 1}));  // nothing to cut
  EXPECT_TRUE(split_counts({}, 100, 2, 16).empty());
  EXPECT_EQ(split_counts({40, 40}, 2, 2, 16), (std::vector<int>{1, 1}));  // the slots are full
}

TEST(FusedSplit, ShortestLongestPieceOnRandomBatches) {
  std::mt19937 rng(7);
  for (int round = 0; round < 500; ++round) {
    std::vector<int> lens(1 + rng() % 140);
    for (int& l : lens) l = static_cast<int>(rng() % 60);
    const std::int64_t slots = static_cast<std::int64_t>(lens.size()) + rng() % 300;
    const int min_tiles = 1 + static_cast<int>(rng() % 3);
    const auto p = split_counts(lens, slots, min_tiles, 16);
    ASSERT_EQ(p.size(), lens.size());
    std::int64_t total = 0;
    bool could_take = false;
    for (std::size_t i = 0; i < lens.size(); ++i) {
      ASSERT_GE(p[i], 1);
      ASSERT_LE(p[i], 16);
      if (p[i] > 1) ASSERT_GE(lens[i], min_tiles * p[i]) << "round " << round;
      could_take |= p[i] < 16 && lens[i] >= min_tiles * (p[i] + 1);
      total += p[i];
    }
    ASSERT_LE(total, slots);
    if (could_take) ASSERT_EQ(total, slots) << "round " << round << ": slots left unused";
    const int m = longest_piece(lens, p);
    if (m > 1) ASSERT_FALSE(feasible(lens, slots, min_tiles, 16, m - 1)) << "round " << round << ": pieces of " << m - 1 << " fit";
  }
}

TEST(FusedSplit, ListMakespan) {
  EXPECT_EQ(list_makespan({3, 3, 3}, 2), 6.0);
  EXPECT_EQ(list_makespan({5, 1, 1, 1, 1, 1}, 2), 5.0);
  EXPECT_EQ(list_makespan({1, 1, 1, 1, 1, 5}, 2), 7.0);  // in the order given
  EXPECT_EQ(list_makespan({}, 4), 0.0);
  EXPECT_EQ(list_makespan({2, 2}, 8), 2.0);
}

TEST(FusedSplit, FewerListsThanSlotsFillTheSlots) {
  std::vector<int> lens(32, 25);
  EXPECT_EQ(choose_pieces(lens, 264, 2, 16), split_counts(lens, 264, 2, 16));
  EXPECT_TRUE(choose_pieces({}, 264, 2, 16).empty());
}

TEST(FusedSplit, APartlyEmptyLastWaveIsBalanced) {
  // Four heads of a 36-tile protein (lists of 12-28 tiles) on 132 slots: 144 lists, so whole
  // lists take two waves. Cut into 264 pieces, the estimate is about half.
  std::vector<int> one_head;
  for (int t = 0; t < 36; ++t) one_head.push_back(12 + (t * 7) % 17);
  std::vector<int> lens;
  for (int h = 0; h < 4; ++h) lens.insert(lens.end(), one_head.begin(), one_head.end());
  const auto p = choose_pieces(lens, 132, 2, 16);
  ASSERT_EQ(p.size(), lens.size());
  EXPECT_EQ(std::accumulate(p.begin(), p.end(), 0), 264);
  const double whole = estimated_makespan(lens, {}, 132), cut = estimated_makespan(lens, p, 132);
  EXPECT_LT(cut, 0.7 * whole) << cut << " vs " << whole;
  const int total = std::accumulate(lens.begin(), lens.end(), 0);
  EXPECT_GE(cut, static_cast<double>(total) / 132);  // no estimate beats perfect balance
}

TEST(FusedSplit, NearlyFullOrManyWavesAreNotCut) {
  // 260 equal lists on 132 slots: cutting 4 of them into halves leaves two waves of whole lists
  // anyway, and the combine costs; not cut.
  EXPECT_TRUE(choose_pieces(std::vector<int>(260, 20), 132, 2, 16).empty());
  // Exactly two waves, and more waves than are balanced: not cut.
  EXPECT_TRUE(choose_pieces(std::vector<int>(264, 20), 132, 2, 16).empty());
  EXPECT_TRUE(choose_pieces(std::vector<int>(132 * kMaxWavesToBalance + 1, 20), 132, 2, 16).empty());
  // Lists that cannot be cut (one tile each): nothing gained, nothing cut.
  EXPECT_TRUE(choose_pieces(std::vector<int>(140, 1), 132, 2, 16).empty());
  // Seven and a half waves of equal lists: cutting gains under a tenth; not cut.
  EXPECT_TRUE(choose_pieces(std::vector<int>(990, 20), 132, 2, 16).empty());
}

// The tail of the block order: how many items, and their order.
TEST(FusedTailOrder, TailItems) {
  EXPECT_EQ(tail_items(10000, 132, 4.0), 528u);  // four waves of an H100's or H200's 132 SMs
  EXPECT_EQ(tail_items(10000, 132, 0.5), 66u);
  EXPECT_EQ(tail_items(300, 132, 4.0), 300u);  // a batch shorter than the tail: all of it
  EXPECT_EQ(tail_items(10000, 132, 0.0), 0u);
  EXPECT_EQ(tail_items(10000, 132, -1.0), 0u);
  EXPECT_EQ(tail_items(0, 132, 4.0), 0u);
  EXPECT_EQ(tail_items(10000, 0, 4.0), 0u);
}

TEST(FusedTailOrder, LastItemsLongestFirstTheRestAsTheyWere) {
  struct Item {
    int id, len;
  };
  std::mt19937 rng(5);
  std::uniform_int_distribution<int> len(0, 9);  // many ties
  std::vector<Item> items;
  for (int i = 0; i < 200; ++i) items.push_back({i, len(rng)});
  const auto by_len = [](const Item& x) { return x.len; };
  for (const std::size_t tail : {std::size_t{0}, std::size_t{1}, std::size_t{37}, std::size_t{200}, std::size_t{500}}) {
    std::vector<Item> got = items;
    order_tail_longest_first(got, tail, by_len);
    const std::size_t t = std::min(tail, items.size());
    const std::size_t head = items.size() - t;
    for (std::size_t i = 0; i < head; ++i) EXPECT_EQ(got[i].id, items[i].id) << "tail " << tail << ": item " << i << " moved";
    // The tail holds the same items, by length (longest first), ties in their earlier order.
    std::vector<Item> want(items.begin() + static_cast<std::ptrdiff_t>(head), items.end());
    std::vector<Item> sorted;
    for (int l = 9; l >= 0; --l)
      for (const Item& x : want)
        if (x.len == l) sorted.push_back(x);
    for (std::size_t i = 0; i < t; ++i) EXPECT_EQ(got[head + i].id, sorted[i].id) << "tail " << tail << ": position " << head + i;
  }
}

}  // namespace
}  // namespace protattn::fused
