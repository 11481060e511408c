// protattn cpu engine: the exact (float64-accumulating), threaded, deterministic reference engine.
#pragma once
#include <memory>

#include "protattn/engine.hpp"

namespace protattn {

std::unique_ptr<Engine> make_cpu_engine(const EngineOptions& opt);

}  // namespace protattn
