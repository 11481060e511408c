// Wall-clock milliseconds for the library's own timings (layout stats, executor reports); private.
#pragma once
#include <chrono>

namespace protattn::detail {

using Clock = std::chrono::steady_clock;

inline double ms_since(Clock::time_point t0) {
  return std::chrono::duration<double, std::milli>(Clock::now() - t0).count();
}

}  // namespace protattn::detail
