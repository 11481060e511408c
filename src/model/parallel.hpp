// A small parallel-for over row ranges for the CPU forward (private).
#pragma once
#include <algorithm>
#include <cstdint>
#include <thread>
#include <vector>

namespace protattn::model {

// Calls f(begin, end) on `threads` contiguous chunks of [0, n) (threads <= 0: hardware
// concurrency). Chunks depend only on n and threads, so results are deterministic.
template <typename F>
void parallel_rows(std::int64_t n, int threads, F&& f) {
  if (threads <= 0) threads = static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
  const std::int64_t parts = std::max<std::int64_t>(1, std::min<std::int64_t>(threads, n));
  if (parts == 1) {
    f(std::int64_t{0}, n);
    return;
  }
  std::vector<std::thread> pool;
  pool.reserve(static_cast<std::size_t>(parts - 1));
  const std::int64_t chunk = (n + parts - 1) / parts;
  for (std::int64_t p = 1; p < parts; ++p) {
    const std::int64_t b = std::min(n, p * chunk), e = std::min(n, b + chunk);
    pool.emplace_back([&f, b, e] { f(b, e); });
  }
  f(std::int64_t{0}, std::min(n, chunk));
  for (auto& t : pool) t.join();
}

}  // namespace protattn::model
