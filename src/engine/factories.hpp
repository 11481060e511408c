// protattn engine registry: the constructors of the engines, implemented in their own folders.
#pragma once
#include <memory>

#include "protattn/engine.hpp"

namespace protattn {

#ifdef PROTATTN_HAVE_FUSED
std::unique_ptr<Engine> make_fused_engine(const EngineOptions& opt);  // src/cuda/fused
#endif
#ifdef PROTATTN_HAVE_GROUPED
std::unique_ptr<Engine> make_grouped_engine(const EngineOptions& opt);  // src/cuda/grouped
#endif
#ifdef PROTATTN_HAVE_CUDA
// Copies host Q/K/V to the device, runs a device engine, waits and copies O/LSE back.
void run_host_on_device(Engine& engine, const Plan& plan, const RunArgs& host);  // src/cuda/common
#endif

}  // namespace protattn
