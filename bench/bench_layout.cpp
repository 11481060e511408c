// Benchmarks of ordering and layout building: the W2 globule and the 6zu5 ribosome end to end.
#include <benchmark/benchmark.h>

#include <cstdlib>
#include <filesystem>

#include "protattn/layout.hpp"
#include "protattn/structure.hpp"

namespace {

using namespace protattn;

constexpr std::size_t kW2Atoms = 100'096;  // DESIGN.md W2
constexpr double kW2Density = 0.058;       // atoms per cubic Angstrom
constexpr float kW2Cutoff = 8.0f;
constexpr std::size_t kSmokeAtoms = 5'000;
constexpr std::size_t k1MAtoms = 1'000'000;
constexpr Order kOrders[] = {Order::file, Order::morton, Order::hilbert};

const Structure& w2_globule() {
  static const Structure s = make_globule(kW2Atoms, kW2Density);
  return s;
}

// tests/data next to this source, or $PROTATTN_TEST_DATA.
std::string data_file(const std::string& name) {
  if (const char* env = std::getenv("PROTATTN_TEST_DATA")) return std::string(env) + "/" + name;
  return (std::filesystem::path(__FILE__).parent_path().parent_path() / "tests" / "data" / name).string();
}

void report(benchmark::State& state, const BlockLayout& l) {
  state.counters["atoms"] = static_cast<double>(l.n);
  state.counters["nnz"] = static_cast<double>(l.nnz());
  state.counters["density"] = l.stats.density;
  state.counters["order_ms"] = l.stats.order_ms;
  state.counters["build_ms"] = l.stats.build_ms;
  if (l.stats.useful >= 0) state.counters["useful"] = l.stats.useful;
}

// Times build_cutoff_layout(s, opt), reports the layout and returns it.
BlockLayout time_cutoff_layout(benchmark::State& state, const Structure& s, const LayoutOptions& opt) {
  BlockLayout l;
  for (auto _ : state) {
    l = build_cutoff_layout(s.xyz.data(), s.size(), opt);
    benchmark::DoNotOptimize(l.col_idx.data());
  }
  report(state, l);
  return l;
}

// Cutoff layout of a small globule: registered as the smoke test of this binary.
void BM_smoke_cutoff_layout(benchmark::State& state) {
  const Structure s = make_globule(kSmokeAtoms, kW2Density);
  time_cutoff_layout(state, s, LayoutOptions{});
}
BENCHMARK(BM_smoke_cutoff_layout)->Unit(benchmark::kMillisecond);

// W2: 100,096-atom globule, 8 A tile-box cutoff, 128-atom tiles; ordering included, pair count
// off (target: <= 30 ms on one core).
void BM_w2_cutoff_layout(benchmark::State& state) {
  const Structure& s = w2_globule();
  LayoutOptions opt;
  opt.order = kOrders[state.range(0)];
  opt.cutoff = kW2Cutoff;
  opt.count_pairs = false;
  time_cutoff_layout(state, s, opt);
  state.SetLabel(to_string(opt.order));
}
BENCHMARK(BM_w2_cutoff_layout)->DenseRange(0, 2)->Unit(benchmark::kMillisecond);

// The same with the O(N) cell-list count of atom pairs within the cutoff (stats.useful).
void BM_w2_cutoff_layout_counted(benchmark::State& state) {
  const Structure& s = w2_globule();
  LayoutOptions opt;
  opt.order = kOrders[state.range(0)];
  opt.cutoff = kW2Cutoff;
  opt.count_pairs = true;
  const BlockLayout l = time_cutoff_layout(state, s, opt);
  state.SetLabel(to_string(opt.order));
  state.counters["pairs_within"] = static_cast<double>(l.stats.pairs_within);
}
BENCHMARK(BM_w2_cutoff_layout_counted)->Arg(1)->Arg(2)->Unit(benchmark::kMillisecond);

// The 1,000,000-atom globule of issue 3 (Morton, 8 A, pair count off) on state.range(0) layout
// threads (0: all cores): the layout must build well under the attention time.
void BM_1m_cutoff_layout(benchmark::State& state) {
  static const Structure s = make_globule(k1MAtoms, kW2Density);
  LayoutOptions opt;
  opt.order = Order::morton;
  opt.cutoff = kW2Cutoff;
  opt.count_pairs = false;
  opt.threads = static_cast<int>(state.range(0));
  time_cutoff_layout(state, s, opt);
}
BENCHMARK(BM_1m_cutoff_layout)->Arg(1)->Arg(2)->Arg(0)->Unit(benchmark::kMillisecond)->UseRealTime();

void BM_w2_spatial_order(benchmark::State& state) {
  const Structure& s = w2_globule();
  const Order order = kOrders[state.range(0)];
  for (auto _ : state) {
    auto perm = spatial_order(s.xyz.data(), s.size(), order);
    benchmark::DoNotOptimize(perm.data());
  }
  state.SetLabel(to_string(order));
}
BENCHMARK(BM_w2_spatial_order)->Arg(1)->Arg(2)->Unit(benchmark::kMillisecond);

// Spatial order alone on one thread: globules of the atom_encoder's served sizes (4,096 and
// 20,000 atoms), one at the small-sort limit (65,536) and the 1M globule.
void BM_spatial_order_size(benchmark::State& state) {
  const Structure s = make_globule(static_cast<std::size_t>(state.range(0)), kW2Density);
  for (auto _ : state) {
    auto perm = spatial_order(s.xyz.data(), s.size(), Order::morton, 1);
    benchmark::DoNotOptimize(perm.data());
  }
}
BENCHMARK(BM_spatial_order_size)->Arg(4096)->Arg(20000)->Arg(65536)->Arg(k1MAtoms)->Unit(benchmark::kMicrosecond);

// The same with the Hilbert order (the served requests' order), one thread.
void BM_spatial_order_size_hilbert(benchmark::State& state) {
  const Structure s = make_globule(static_cast<std::size_t>(state.range(0)), kW2Density);
  for (auto _ : state) {
    auto perm = spatial_order(s.xyz.data(), s.size(), Order::hilbert, 1);
    benchmark::DoNotOptimize(perm.data());
  }
}
BENCHMARK(BM_spatial_order_size_hilbert)->Arg(4096)->Arg(20000)->Arg(32768)->Arg(65536)->Unit(benchmark::kMicrosecond);

void BM_w2_knn_layout(benchmark::State& state) {
  const Structure& s = w2_globule();
  LayoutOptions opt;
  opt.k = static_cast<int>(state.range(0));
  BlockLayout l;
  for (auto _ : state) {
    l = build_knn_layout(s.xyz.data(), s.size(), opt);
    benchmark::DoNotOptimize(l.col_idx.data());
  }
  report(state, l);
}
BENCHMARK(BM_w2_knn_layout)->Arg(32)->Unit(benchmark::kMillisecond);

// 6zu5 ribosome (165k atoms): read the mmCIF, order (Hilbert) and tile (8 A cutoff), end to end
// (target: < 1 s). Skipped when the file has not been fetched.
void BM_ribosome_read_order_tile(benchmark::State& state) {
  const std::string path = data_file("6zu5.cif");
  if (!std::filesystem::exists(path)) {
    state.SkipWithError(("missing " + path + " (run scripts/fetch-data.sh)").c_str());
    return;
  }
  LayoutOptions opt;
  opt.count_pairs = false;
  BlockLayout l;
  for (auto _ : state) {
    const Structure s = read_structure(path);
    l = build_cutoff_layout(s.xyz.data(), s.size(), opt);
    benchmark::DoNotOptimize(l.col_idx.data());
  }
  report(state, l);
}
BENCHMARK(BM_ribosome_read_order_tile)->Unit(benchmark::kMillisecond)->UseRealTime();

// What the server does per atom_encoder request of the serving benchmark: the cutoff layout
// (Hilbert order, 8 A, 128-atom tiles, pairs not counted) of the first 4,096 atoms of 2HHB.
void BM_served_request_layout(benchmark::State& state) {
  const std::string path = data_file("2hhb.pdb");
  if (!std::filesystem::exists(path)) {
    state.SkipWithError(("missing " + path).c_str());
    return;
  }
  const Structure s = read_structure(path);
  const std::size_t n = std::min<std::size_t>(4096, s.size());
  LayoutOptions opt;
  opt.order = Order::hilbert;
  opt.cutoff = 8.0f;
  opt.count_pairs = false;
  BlockLayout l;
  for (auto _ : state) {
    l = build_cutoff_layout(s.xyz.data(), n, opt);
    benchmark::DoNotOptimize(l.col_idx.data());
  }
  report(state, l);
}
BENCHMARK(BM_served_request_layout)->Unit(benchmark::kMicrosecond);

void BM_ribosome_read(benchmark::State& state) {
  const std::string path = data_file("6zu5.cif");
  if (!std::filesystem::exists(path)) {
    state.SkipWithError(("missing " + path + " (run scripts/fetch-data.sh)").c_str());
    return;
  }
  std::size_t atoms = 0;
  for (auto _ : state) {
    const Structure s = read_structure(path);
    atoms = s.size();
    benchmark::DoNotOptimize(s.xyz.data());
  }
  state.counters["atoms"] = static_cast<double>(atoms);
}
BENCHMARK(BM_ribosome_read)->Unit(benchmark::kMillisecond)->UseRealTime();

}  // namespace

BENCHMARK_MAIN();
