// Benchmarks of the cpu engine: W1 (DESIGN.md) with 1 thread and all threads, and a smoke run.
#include <benchmark/benchmark.h>

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <memory>
#include <random>
#include <thread>
#include <vector>

#include "protattn/engine.hpp"
#include "protattn/half.hpp"
#include "protattn/layout.hpp"

namespace {

using namespace protattn;

// W1: 32 x 32 tiles of 128 atoms, 800 kept (band |i-j| <= 12 plus seeded fill), 1 head, d=64.
constexpr int kW1Tiles = 32, kW1Nnz = 800, kW1Band = 12;
constexpr int kW1Dim = 64;
constexpr DType kW1Type = DType::f16;
constexpr std::uint64_t kInputSeed = 1;
constexpr double kGiga = 1e9;

// Seeded N(0, 1) Q, K, V in `dtype` and the output buffers of one plan.
struct Buffers {
  std::vector<std::uint8_t> q, k, v, o;
  std::vector<float> lse;
  explicit Buffers(const Plan& plan) {
    const std::size_t count = static_cast<std::size_t>(plan.shape.heads) * plan.total_n() * plan.shape.dim;
    std::mt19937_64 rng(kInputSeed);
    std::normal_distribution<float> nd(0.0f, 1.0f);
    for (auto* raw : {&q, &k, &v}) {
      raw->resize(count * dtype_size(plan.shape.dtype));
      for (std::size_t i = 0; i < count; ++i) {
        const float x = nd(rng);
        if (plan.shape.dtype == DType::f32) {
          reinterpret_cast<float*>(raw->data())[i] = x;
        } else {
          reinterpret_cast<std::uint16_t*>(raw->data())[i] =
              plan.shape.dtype == DType::f16 ? float_to_half(x) : float_to_bf16(x);
        }
      }
    }
    o.resize(q.size());
    lse.resize(static_cast<std::size_t>(plan.shape.heads) * plan.total_n());
  }
  RunArgs args() { return RunArgs{q.data(), k.data(), v.data(), o.data(), lse.data(), nullptr}; }
};

// Runs the plan in a loop; reports GFLOPS over the computed blocks (plan.flops()) and returns
// the mean seconds per run (steady clock).
double time_plan(benchmark::State& state, Engine& engine, const Plan& plan) {
  Buffers buf(plan);
  const RunArgs args = buf.args();
  double seconds = 0;
  for (auto _ : state) {
    const auto t0 = std::chrono::steady_clock::now();
    engine.run(plan, args);
    benchmark::DoNotOptimize(buf.o.data());
    benchmark::ClobberMemory();
    seconds += std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  }
  state.counters["GFLOPS"] = benchmark::Counter(plan.flops() / kGiga, benchmark::Counter::kIsIterationInvariantRate);
  state.counters["nnz"] = static_cast<double>(plan.nnz_blocks());
  return state.iterations() ? seconds / static_cast<double>(state.iterations()) : 0;
}

int all_threads() { return static_cast<int>(std::max(1u, std::thread::hardware_concurrency())); }

// Seconds per W1 run with one thread, kept for the speed-up of the multi-threaded run.
double g_w1_single_seconds = 0;

// Argument: worker threads (1, then all). The all-threads run reports its speed-up over 1.
void BM_cpu_w1(benchmark::State& state) {
  const int threads = static_cast<int>(state.range(0));
  const BlockLayout l = make_w1_layout(kW1Tiles, kW1Nnz, kW1Band);
  auto engine = make_engine("cpu", EngineOptions{threads, 0});
  ProblemShape shape;
  shape.heads = 1;
  shape.dim = kW1Dim;
  shape.dtype = kW1Type;
  auto plan = engine->plan({&l}, shape);
  const double seconds = time_plan(state, *engine, *plan);
  state.counters["threads"] = threads;
  if (threads == 1) g_w1_single_seconds = seconds;
  else if (g_w1_single_seconds > 0 && seconds > 0) state.counters["speedup"] = g_w1_single_seconds / seconds;
}
BENCHMARK(BM_cpu_w1)->Arg(1)->Arg(all_threads())->Unit(benchmark::kMillisecond)->UseRealTime();

// A dense 3-tile layout, 2 heads, d=32: registered as the smoke test of this binary.
void BM_cpu_smoke(benchmark::State& state) {
  constexpr int kAtoms = 300;
  LayoutOptions opt;
  opt.order = Order::file;
  std::vector<float> xyz(3 * kAtoms);
  for (int i = 0; i < kAtoms; ++i) xyz[3 * i] = static_cast<float>(i);
  const BlockLayout l = build_dense_layout(xyz.data(), kAtoms, opt);
  auto engine = make_engine("cpu", EngineOptions{2, 0});
  ProblemShape shape;
  shape.heads = 2;
  shape.dim = 32;
  auto plan = engine->plan({&l}, shape);
  time_plan(state, *engine, *plan);
}
BENCHMARK(BM_cpu_smoke)->Unit(benchmark::kMillisecond)->UseRealTime();

}  // namespace

BENCHMARK_MAIN();
