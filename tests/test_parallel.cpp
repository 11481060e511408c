// The fork-join helpers (src/common/parallel.hpp) on their shared worker threads: every part runs
// once with its own chunk, from one caller or many at once, nested calls finish, and an exception
// thrown by a part reaches the caller after every part has run.
#include <gtest/gtest.h>

#include <atomic>
#include <cstddef>
#include <stdexcept>
#include <thread>
#include <vector>

#include "common/parallel.hpp"

namespace protattn::detail {
namespace {

// parallel_chunks over n items in `parts`: each item is visited once, by the part whose chunk
// holds it, and every part is called.
void check_chunks(std::size_t n, int parts) {
  std::vector<std::atomic<int>> seen(n);
  std::vector<std::atomic<int>> calls(static_cast<std::size_t>(parts));
  const std::size_t chunk = (n + static_cast<std::size_t>(parts) - 1) / static_cast<std::size_t>(parts);
  parallel_chunks(n, parts, [&](int p, std::size_t b, std::size_t e) {
    ++calls[static_cast<std::size_t>(p)];
    EXPECT_EQ(b, std::min(n, static_cast<std::size_t>(p) * chunk));
    for (std::size_t i = b; i < e; ++i) ++seen[i];
  });
  for (std::size_t i = 0; i < n; ++i) ASSERT_EQ(seen[i].load(), 1) << "item " << i << " of " << n << ", " << parts << " parts";
  for (int p = 0; p < parts; ++p) ASSERT_EQ(calls[static_cast<std::size_t>(p)].load(), 1) << "part " << p;
}

TEST(Parallel, EveryPartRunsOnceWithItsChunk) {
  const int cores = static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
  for (const std::size_t n : {std::size_t{0}, std::size_t{1}, std::size_t{7}, std::size_t{1000}, std::size_t{100003}})
    for (const int parts : {1, 2, 3, cores, 4 * cores + 1}) check_chunks(n, parts);
}

TEST(Parallel, ManyCallersAtOnceAndNestedCalls) {
  std::vector<std::thread> callers;
  std::atomic<long> total{0};
  for (int c = 0; c < 8; ++c)
    callers.emplace_back([&total] {
      for (int round = 0; round < 50; ++round)
        parallel_chunks(64, 4, [&](int, std::size_t b, std::size_t e) {
          // A nested call from inside a part (on a worker or the caller) finishes too.
          parallel_chunks(e - b, 3, [&](int, std::size_t b2, std::size_t e2) { total += static_cast<long>(e2 - b2); });
        });
    });
  for (auto& t : callers) t.join();
  EXPECT_EQ(total.load(), 8L * 50 * 64);
}

TEST(Parallel, AnExceptionReachesTheCallerAfterEveryPart) {
  std::atomic<int> ran{0};
  EXPECT_THROW(parallel_chunks(100, 5,
                               [&](int p, std::size_t, std::size_t) {
                                 ++ran;
                                 if (p == 3) throw std::runtime_error("part 3");
                               }),
               std::runtime_error);
  EXPECT_EQ(ran.load(), 5);
  // The pool still works after it.
  check_chunks(1000, 4);
}

}  // namespace
}  // namespace protattn::detail
