// The cache of freed blocks in front of the device allocator (common/block_cache.hpp), with malloc
// standing in for cudaMalloc.
#include <gtest/gtest.h>

#include <cstdlib>
#include <map>
#include <mutex>
#include <set>
#include <thread>
#include <vector>

#include "common/block_cache.hpp"

namespace protattn {
namespace {

using detail::BlockCache;

// A malloc-backed allocator that counts, and fails past `limit` live bytes.
struct CountingHeap {
  std::size_t live = 0, limit = SIZE_MAX;
  int allocs = 0, frees = 0;
  std::map<void*, std::size_t> blocks;
  BlockCache make(std::size_t max_cached, std::size_t max_block) {
    return BlockCache(
        [this](std::size_t b) -> void* {
          if (live + b > limit) return nullptr;
          void* p = std::malloc(b);
          live += b;
          ++allocs;
          blocks[p] = b;
          return p;
        },
        [this](void* p) {
          const auto it = blocks.find(p);
          EXPECT_NE(it, blocks.end()) << "freed a block twice or one never allocated";
          if (it != blocks.end()) {
            live -= it->second;
            blocks.erase(it);
          }
          std::free(p);
          ++frees;
        },
        max_cached, max_block);
  }
};

TEST(BlockCache, SizeClassesAreAtMostAThirdAbove) {
  CountingHeap h;
  BlockCache c = h.make(1 << 30, 1 << 28);
  EXPECT_EQ(c.size_class(1), 512u);
  EXPECT_EQ(c.size_class(512), 512u);
  EXPECT_EQ(c.size_class(513), 768u);
  EXPECT_EQ(c.size_class(769), 1024u);
  EXPECT_EQ(c.size_class(1025), 1536u);
  for (std::size_t b : {std::size_t{1000}, std::size_t{4097}, std::size_t{123457}, std::size_t{(1 << 28) - 1}}) {
    const std::size_t cls = c.size_class(b);
    EXPECT_GE(cls, b);
    EXPECT_LE(cls, b + b / 2) << b;  // worst just above a power of two
    EXPECT_EQ(c.size_class(cls), cls) << "a class is its own class";
  }
  EXPECT_EQ(c.size_class((1 << 28) + 1), std::size_t{(1 << 28) + 1}) << "large blocks keep their size";
}

TEST(BlockCache, ReusesFreedBlocksOfTheSameClass) {
  CountingHeap h;
  BlockCache c = h.make(1 << 20, 1 << 18);
  BlockCache::Block a = c.take(1000);
  ASSERT_NE(a.ptr, nullptr);
  EXPECT_EQ(a.bytes, 1024u);
  c.give(a);
  EXPECT_EQ(h.frees, 0) << "a freed block is kept";
  BlockCache::Block b = c.take(900);  // same class
  EXPECT_EQ(b.ptr, a.ptr);
  EXPECT_EQ(h.allocs, 1);
  BlockCache::Block d = c.take(2000);  // another class: a new block
  EXPECT_NE(d.ptr, a.ptr);
  EXPECT_EQ(h.allocs, 2);
  const BlockCache::Stats s = c.stats();
  EXPECT_EQ(s.hits, 1);
  EXPECT_EQ(s.misses, 2);
  c.give(b);
  c.give(d);
  EXPECT_EQ(c.stats().cached_bytes, 1024u + 2048u);
  c.trim();
  EXPECT_EQ(c.stats().cached_bytes, 0u);
  EXPECT_EQ(h.frees, 2);
  EXPECT_TRUE(h.blocks.empty());
  EXPECT_EQ(c.take(0).ptr, nullptr);
}

TEST(BlockCache, BlocksInUseAreNeverHandedOutTwice) {
  CountingHeap h;
  BlockCache c = h.make(1 << 20, 1 << 18);
  std::vector<BlockCache::Block> live;
  for (int i = 0; i < 8; ++i) live.push_back(c.take(4096));
  std::set<void*> distinct;
  for (auto& b : live) distinct.insert(b.ptr);
  EXPECT_EQ(distinct.size(), live.size());
  for (auto& b : live) c.give(b);
  live.clear();
  for (int i = 0; i < 8; ++i) live.push_back(c.take(4096));
  distinct.clear();
  for (auto& b : live) distinct.insert(b.ptr);
  EXPECT_EQ(distinct.size(), live.size());
  EXPECT_EQ(h.allocs, 8) << "the second round came from the cache";
  for (auto& b : live) c.give(b);
}

TEST(BlockCache, LargeBlocksAndAFullCacheGoBackToTheAllocator) {
  CountingHeap h;
  BlockCache c = h.make(8192, 4096);
  BlockCache::Block big = c.take(5000);
  EXPECT_EQ(big.bytes, 5000u) << "above max_block: not rounded";
  c.give(big);
  EXPECT_EQ(h.frees, 1) << "above max_block: freed at once";
  BlockCache::Block a = c.take(4096), b = c.take(4096), d = c.take(3000);
  c.give(a);
  c.give(b);
  EXPECT_EQ(c.stats().cached_bytes, 8192u);
  c.give(d);  // over 8192 cached: the cache is emptied, then keeps this one
  EXPECT_EQ(c.stats().cached_bytes, d.bytes);
  EXPECT_EQ(h.frees, 3);
}

TEST(BlockCache, OutOfMemoryFreesTheCacheAndRetries) {
  CountingHeap h;
  h.limit = 3 * 4096;
  BlockCache c = h.make(1 << 20, 1 << 18);
  BlockCache::Block a = c.take(4096), b = c.take(4096);
  c.give(a);
  c.give(b);
  // 8192 bytes are cached: a 6144-byte class fits the heap only once they are freed.
  BlockCache::Block d = c.take(6000);
  ASSERT_NE(d.ptr, nullptr);
  EXPECT_EQ(c.stats().cached_bytes, 0u);
  EXPECT_EQ(h.live, 6144u) << "the cached blocks were freed";
  BlockCache::Block e = c.take(1 << 16);
  EXPECT_EQ(e.ptr, nullptr) << "still too big after the trim: nullptr";
  EXPECT_EQ(e.bytes, 0u);
  c.give(d);
}

TEST(BlockCache, ThreadsShareOneCache) {
  CountingHeap h;
  std::mutex heap_mu;  // the counting heap itself is not thread-safe
  BlockCache c(
      [&](std::size_t b) {
        std::lock_guard<std::mutex> lock(heap_mu);
        ++h.allocs;
        return std::malloc(b);
      },
      [&](void* p) {
        std::lock_guard<std::mutex> lock(heap_mu);
        ++h.frees;
        std::free(p);
      },
      1 << 24, 1 << 22);
  std::vector<std::thread> threads;
  for (int t = 0; t < 4; ++t)
    threads.emplace_back([&c, t] {
      for (int i = 0; i < 2000; ++i) {
        BlockCache::Block b = c.take(static_cast<std::size_t>(1000 + 100 * ((i + t) % 7)));
        ASSERT_NE(b.ptr, nullptr);
        static_cast<char*>(b.ptr)[0] = static_cast<char>(i);
        c.give(b);
      }
    });
  for (auto& t : threads) t.join();
  const BlockCache::Stats s = c.stats();
  EXPECT_EQ(s.hits + s.misses, 8000);
  EXPECT_LE(h.allocs, 4 * 7) << "at most one block per class per thread";
  c.trim();
  EXPECT_EQ(h.allocs, h.frees);
}

}  // namespace
}  // namespace protattn
