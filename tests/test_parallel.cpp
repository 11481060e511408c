// The fork-join helpers (src/common/parallel.hpp) on their shared worker threads: every part runs
// once with its own chunk, from one caller or many at once, nested calls finish, and an exception
// thrown by a part reaches the caller after every part has run.
#include <gtest/gtest.h>

#include <atomic>
#include <cstddef>
#include <stdexcept>
#include <thread>
#include <vector>
#ifdef __linux__
#include <sched.h>
#endif

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
  const int cores = usable_cores();
  for (const std::size_t n : {std::size_t{0}, std::size_t{1}, std::size_t{7}, std::size_t{1000}, std::size_t{100003}})
    for (const int parts : {1, 2, 3, cores, 4 * cores + 1}) check_chunks(n, parts);
}

#ifdef __linux__
// "All cores" counts the CPUs a thread may run on: a thread pinned to k of them (taskset, a
// container's cpuset) gets k, or the cgroup's quota where that is less, as the whole process does.
TEST(Parallel, UsableCoresFollowTheAffinityMask) {
  cpu_set_t all;
  CPU_ZERO(&all);
  ASSERT_EQ(sched_getaffinity(0, sizeof all, &all), 0);
  const int here = count_usable_cores();
  EXPECT_GE(here, 1);
  EXPECT_LE(here, CPU_COUNT(&all));
  EXPECT_EQ(usable_cores(), here);  // the process's own mask has not changed since the first call
  for (const int k : {1, 2}) {
    if (k > CPU_COUNT(&all)) break;
    cpu_set_t some;
    CPU_ZERO(&some);
    for (int cpu = 0, taken = 0; taken < k; ++cpu)
      if (CPU_ISSET(cpu, &all)) {
        CPU_SET(cpu, &some);
        ++taken;
      }
    int pinned = -1;
    std::thread([&] {
      if (sched_setaffinity(0, sizeof some, &some) == 0) pinned = count_usable_cores();
    }).join();
    ASSERT_NE(pinned, -1) << "sched_setaffinity to " << k << " CPU(s) failed";
    EXPECT_EQ(pinned, std::min(k, here)) << k << " CPU(s)";
  }
}
#endif

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
