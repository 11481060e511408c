// The fused engine's choice of how far to cut key lists that would leave the GPU idle
// (src/cuda/fused/split_plan.hpp; host code, checked without a GPU).
#include <gtest/gtest.h>

#include <cstdint>
#include <random>
#include <vector>

#include "cuda/fused/split_plan.hpp"

namespace protattn::fused {
namespace {

// The brute-force estimate the choice minimises: waves times chunk.
std::int64_t cost(const std::vector<int>& lens, std::int64_t slots, int chunk) {
  return (split_pieces(lens, chunk) + slots - 1) / slots * chunk;
}

TEST(FusedSplit, PiecesCountEmptyListsOnce) {
  EXPECT_EQ(split_pieces({0, 1, 4, 5}, 2), 1 + 1 + 2 + 3);
  EXPECT_EQ(split_pieces({}, 3), 0);
}

TEST(FusedSplit, StaysInOneWaveWhenThatIsFastest) {
  // 63 lists of 12-13 tiles on 264 slots: chunks of 3 make 5 pieces a list (315 > 264, two
  // waves); chunks of 4 make 4 (252, one wave of at most 4 tiles).
  std::vector<int> lens(63, 13);
  for (int i = 0; i < 20; ++i) lens[static_cast<std::size_t>(i)] = 12;
  EXPECT_EQ(split_chunk(lens, 264, 2, 16), 4);
  EXPECT_LE(split_pieces(lens, 4), 264);
}

TEST(FusedSplit, DoesNotCutWhatFitsAlready) {
  EXPECT_EQ(split_chunk(std::vector<int>(200, 5), 132, 2, 16), 5);  // one wave unsplit
  EXPECT_EQ(split_chunk({1, 1, 1}, 264, 2, 16), 1);
  EXPECT_EQ(split_chunk({0, 0}, 264, 2, 16), 1);
  EXPECT_EQ(split_chunk({}, 264, 2, 16), 1);
}

TEST(FusedSplit, RespectsTheLimits) {
  // One list of 100 tiles on many slots: at most 16 pieces, so chunks of at least 7.
  EXPECT_EQ(split_chunk({100}, 10000, 2, 16), 7);
  // Never below the smallest piece.
  EXPECT_EQ(split_chunk({9, 9}, 10000, 3, 16), 3);
}

TEST(FusedSplit, IsTheCheapestChunkOnRandomBatches) {
  std::mt19937 rng(7);
  for (int round = 0; round < 300; ++round) {
    std::vector<int> lens(1 + rng() % 140);
    for (int& l : lens) l = static_cast<int>(rng() % 60);
    const std::int64_t slots = 1 + rng() % 300;
    const int c = split_chunk(lens, slots, 2, 16);
    int longest = 1;
    for (int l : lens) longest = std::max(longest, l);
    ASSERT_GE(c, 1);
    ASSERT_LE(c, longest);
    for (int d = std::max(2, (longest + 15) / 16); d <= longest; ++d) {
      ASSERT_LE(cost(lens, slots, c), cost(lens, slots, d)) << "round " << round << " chunk " << d;
      if (cost(lens, slots, c) == cost(lens, slots, d)) ASSERT_GE(c, d) << "ties go to the longer chunk";
    }
  }
}

}  // namespace
}  // namespace protattn::fused
