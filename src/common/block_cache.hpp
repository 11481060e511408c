// A cache of freed memory blocks by size class, in front of an allocator whose free is costly
// (cudaFree synchronises the whole device). Private to the library; the allocator is passed in,
// so the cache is tested on the CPU with malloc.
#pragma once
#include <cstddef>
#include <cstdint>
#include <functional>
#include <map>
#include <mutex>
#include <utility>

namespace protattn::detail {

class BlockCache {
 public:
  using Alloc = std::function<void*(std::size_t)>;  // nullptr when out of memory
  using Free = std::function<void(void*)>;

  struct Block {
    void* ptr = nullptr;
    std::size_t bytes = 0;  // the size class: what was allocated, at least what was asked
  };
  struct Stats {
    std::int64_t hits = 0, misses = 0, frees = 0;
    std::size_t cached_bytes = 0;
  };

  // Keeps at most `max_cached` bytes of freed blocks; blocks above `max_block` bytes are neither
  // rounded up nor kept (a large one-off plan returns its memory at once).
  BlockCache(Alloc alloc, Free free, std::size_t max_cached, std::size_t max_block)
      : alloc_(std::move(alloc)), free_(std::move(free)), max_cached_(max_cached), max_block_(max_block) {}
  BlockCache(const BlockCache&) = delete;
  BlockCache& operator=(const BlockCache&) = delete;
  ~BlockCache() { trim(); }

  // The size class of a request: the next of 2^k and 3 * 2^(k-1) at or above it (less than half
  // as much again as asked), at least 512 bytes; requests above max_block keep their size.
  std::size_t size_class(std::size_t bytes) const {
    if (bytes > max_block_) return bytes;
    std::size_t c = 512;
    while (c < bytes) {
      const std::size_t mid = c + c / 2;
      if (mid >= bytes) return mid;
      c *= 2;
    }
    return c;
  }

  // A block of at least `bytes` (0: none): a cached block of the same class, else a new one; when
  // the allocator fails, the cache is freed and the allocation tried once more. ptr is nullptr
  // when that fails too.
  Block take(std::size_t bytes) {
    if (bytes == 0) return {};
    const std::size_t cls = size_class(bytes);
    {
      std::lock_guard<std::mutex> lock(mu_);
      auto it = free_blocks_.find(cls);
      if (it != free_blocks_.end()) {
        void* p = it->second;
        free_blocks_.erase(it);
        stats_.cached_bytes -= cls;
        ++stats_.hits;
        return {p, cls};
      }
      ++stats_.misses;
    }
    void* p = alloc_(cls);
    if (!p) {
      trim();
      p = alloc_(cls);
    }
    return {p, p ? cls : 0};
  }

  // Returns a block from take(): kept for reuse, or freed when too large or the cache is full
  // (then the cache is emptied first, so that the sizes now in use take its place).
  void give(Block b) {
    if (!b.ptr) return;
    if (b.bytes > max_block_ || b.bytes > max_cached_) {
      release(b.ptr);
      return;
    }
    if (stats_cached() + b.bytes > max_cached_) trim();
    std::lock_guard<std::mutex> lock(mu_);
    free_blocks_.emplace(b.bytes, b.ptr);
    stats_.cached_bytes += b.bytes;
  }

  // Frees every cached block (before asking the device how much memory is free, say).
  void trim() {
    std::multimap<std::size_t, void*> blocks;
    {
      std::lock_guard<std::mutex> lock(mu_);
      blocks.swap(free_blocks_);
      stats_.cached_bytes = 0;
    }
    for (auto& [bytes, p] : blocks) release(p);
  }

  Stats stats() const {
    std::lock_guard<std::mutex> lock(mu_);
    return stats_;
  }

 private:
  std::size_t stats_cached() const {
    std::lock_guard<std::mutex> lock(mu_);
    return stats_.cached_bytes;
  }
  void release(void* p) {
    free_(p);
    std::lock_guard<std::mutex> lock(mu_);
    ++stats_.frees;
  }

  Alloc alloc_;
  Free free_;
  std::size_t max_cached_, max_block_;
  mutable std::mutex mu_;
  std::multimap<std::size_t, void*> free_blocks_;  // size class -> block
  Stats stats_;
};

}  // namespace protattn::detail
