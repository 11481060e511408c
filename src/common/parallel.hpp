// Small fork-join helpers shared by the library's threaded loops (private).
#pragma once
#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <thread>
#include <vector>
#ifdef __linux__
#include <pthread.h>
#endif

namespace protattn::detail {

// Names the calling thread (Linux: at most 15 characters shown) so that per-thread CPU time in
// /proc/PID/task, top and perf tells the threads apart; elsewhere nothing.
inline void name_this_thread(const char* name) {
#ifdef __linux__
  pthread_setname_np(pthread_self(), name);
#else
  (void)name;
#endif
}

// Threads to use for `threads` as options give it (0 or less: all cores), at most one per
// `grain` items of the `n` to share out, at least 1.
inline int resolve_threads(int threads, std::size_t n, std::size_t grain) {
  if (threads <= 0) threads = static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
  const std::size_t by_size = std::max<std::size_t>(1, n / std::max<std::size_t>(1, grain));
  return static_cast<int>(std::min<std::size_t>(static_cast<std::size_t>(threads), by_size));
}

// Calls fn(part, begin, end) for `parts` contiguous chunks of [0, n), part 0 on the calling
// thread. Chunks depend only on n and parts, so results that depend on them are deterministic.
template <class F>
void parallel_chunks(std::size_t n, int parts, F&& fn) {
  if (parts <= 1) {
    fn(0, std::size_t{0}, n);
    return;
  }
  const std::size_t chunk = (n + static_cast<std::size_t>(parts) - 1) / static_cast<std::size_t>(parts);
  std::vector<std::thread> pool;
  for (int p = 1; p < parts; ++p) {
    const std::size_t b = std::min(n, static_cast<std::size_t>(p) * chunk), e = std::min(n, b + chunk);
    pool.emplace_back([&fn, p, b, e] {
      name_this_thread("protattn-pool");
      fn(p, b, e);
    });
  }
  fn(0, std::size_t{0}, std::min(n, chunk));
  for (auto& t : pool) t.join();
}

// Cuts items [0, m) into `parts` contiguous ranges of about equal weight, given prefix[i] = the
// weight of items [0, i) (m + 1 non-negative, non-decreasing entries): range p is
// [first[p], first[p + 1]), first[p] being the first item whose prefix reaches total * p / parts.
template <typename T>
std::vector<std::size_t> weighted_ranges(const T* prefix, std::size_t m, int parts) {
  std::vector<std::size_t> first(static_cast<std::size_t>(parts) + 1, m);
  first[0] = 0;
  const auto total = static_cast<std::uint64_t>(prefix[m]);
  std::size_t i = 0;
  for (int p = 1; p < parts; ++p) {
    const std::uint64_t goal = total * static_cast<std::uint64_t>(p) / static_cast<std::uint64_t>(parts);
    while (i < m && static_cast<std::uint64_t>(prefix[i]) < goal) ++i;
    first[static_cast<std::size_t>(p)] = i;
  }
  return first;
}

// Calls fn(part, begin, end) for each range [first[part], first[part + 1]) of weighted_ranges(),
// each part on its own thread (part 0 on the calling thread).
template <class F>
void parallel_ranges(const std::vector<std::size_t>& first, F&& fn) {
  const int parts = static_cast<int>(first.size()) - 1;
  parallel_chunks(static_cast<std::size_t>(parts), parts, [&](int, std::size_t p0, std::size_t p1) {
    for (std::size_t p = p0; p < p1; ++p) fn(static_cast<int>(p), first[p], first[p + 1]);
  });
}

// Below this many atoms per thread, ordering and layout passes lose more to threads than they gain.
inline constexpr std::size_t kLayoutAtomsPerThread = 65536;

}  // namespace protattn::detail
