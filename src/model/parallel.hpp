// A small parallel-for over row ranges for the CPU forward (private).
#pragma once
#include <cstdint>

#include "common/parallel.hpp"

namespace protattn::model {

// Calls f(begin, end) on `threads` contiguous chunks of [0, n) (threads <= 0: hardware
// concurrency). Chunks depend only on n and threads, so results are deterministic.
template <typename F>
void parallel_rows(std::int64_t n, int threads, F&& f) {
  const auto rows = static_cast<std::size_t>(n);
  detail::parallel_chunks(rows, detail::resolve_threads(threads, rows, 1), [&f](int, std::size_t b, std::size_t e) {
    f(static_cast<std::int64_t>(b), static_cast<std::int64_t>(e));
  });
}

}  // namespace protattn::model
