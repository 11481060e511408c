// protattn cpu engine: exact block-sparse softmax attention, float64 accumulation, std::thread.
#include "cpu/cpu_engine.hpp"

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <exception>
#include <limits>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "common/parallel.hpp"
#include "protattn/error.hpp"
#include "protattn/half.hpp"

namespace protattn {
namespace {

// Largest head dim accepted (attention heads use 16..256; the bound keeps per-thread buffers small).
constexpr int kMaxDim = 1024;
// Largest tile accepted (the per-thread buffers hold tile x tile scores).
constexpr int kMaxTile = 1024;
constexpr double kNegInf = -std::numeric_limits<double>::infinity();

// One unit of work: one query tile of one head of one structure. Work items write disjoint
// rows of O and LSE and compute them alone, so results do not depend on who runs them.
struct WorkItem {
  std::int32_t layout = 0, head = 0, q_tile = 0;
  std::int64_t cost = 0;  // kept key tiles x query rows: a priority for load balance
};

class CpuPlan final : public Plan {
 public:
  std::vector<WorkItem> items;  // longest first
  int max_tile = 0;
};

template <DType T>
inline void store(void* base, std::size_t idx, double x) {
  const float f = static_cast<float>(x);
  if constexpr (T == DType::f32) static_cast<float*>(base)[idx] = f;
  else if constexpr (T == DType::f16) static_cast<std::uint16_t*>(base)[idx] = float_to_half(f);
  else static_cast<std::uint16_t*>(base)[idx] = float_to_bf16(f);
}

// Per-thread buffers, sized for the largest tile of the plan.
struct Scratch {
  std::vector<double> q;    // (tile, dim)  the query rows
  std::vector<double> kt;   // (dim, tile)  the key tile, transposed: scores run along keys
  std::vector<double> v;    // (tile, dim)  the value tile
  std::vector<double> s;    // (tile, tile) scores, then probabilities
  std::vector<double> acc;  // (tile, dim)  unnormalised output
  std::vector<double> m;    // (tile)       running row max of the scaled scores
  std::vector<double> l;    // (tile)       running row sum of exp(score - m)
  Scratch(int tile, int dim) {
    const std::size_t td = static_cast<std::size_t>(tile) * dim;
    q.resize(td);
    kt.resize(td);
    v.resize(td);
    acc.resize(td);
    s.resize(static_cast<std::size_t>(tile) * tile);
    m.resize(tile);
    l.resize(tile);
  }
};

#define PROTATTN_CPU_INLINE inline __attribute__((always_inline))

namespace sse2 {
using Vec = double __attribute__((vector_size(16)));
constexpr int kVecLanes = 2;
#include "cpu/kernels.inc"
}  // namespace sse2

#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__)  // GCC's target pragma
#define PROTATTN_CPU_AVX2 1
#pragma GCC push_options
#pragma GCC target("avx2")
namespace avx2 {
using Vec = double __attribute__((vector_size(32)));
constexpr int kVecLanes = 4;
#include "cpu/kernels.inc"
}  // namespace avx2
#pragma GCC pop_options
#endif

// The products of one key tile: the widest copy this CPU runs (chosen once per engine).
struct Kernels {
  void (*score)(const double*, const double*, double*, int, int, int, int) = sse2::score_block;
  void (*accumulate)(const double*, const double*, double*, int, int, int, int) = sse2::accumulate_block;
  const char* isa = "sse2";
};

Kernels pick_kernels() {
  Kernels k;
#ifdef PROTATTN_CPU_AVX2
  if (!std::getenv("PROTATTN_CPU_NO_AVX2") && __builtin_cpu_supports("avx2")) {
    k.score = avx2::score_block;
    k.accumulate = avx2::accumulate_block;
    k.isa = "avx2";
  }
#endif
  return k;
}

template <DType T>
void run_item(const CpuPlan& plan, const WorkItem& w, const RunArgs& args, Scratch& sc, const Kernels& kern) {
  const BlockLayout& lay = *plan.layouts[w.layout];
  const int dim = plan.shape.dim, tile = lay.tile;
  const double scale = plan.shape.effective_scale();
  const std::int64_t total_n = plan.total_n();
  // Row 0 of this structure and head in the [heads, total_n, dim] tensors.
  const std::int64_t head_row0 = static_cast<std::int64_t>(w.head) * total_n + plan.offsets[w.layout];
  const std::int32_t row0 = w.q_tile * tile;
  const int rows = std::min(tile, lay.n - row0);

  for (int i = 0; i < rows; ++i) {
    const std::size_t src = static_cast<std::size_t>(head_row0 + row0 + i) * dim;
    for (int c = 0; c < dim; ++c) sc.q[static_cast<std::size_t>(i) * dim + c] = element_as_float<T>(args.q, src + c);
  }
  std::fill(sc.acc.begin(), sc.acc.begin() + static_cast<std::size_t>(rows) * dim, 0.0);
  std::fill(sc.m.begin(), sc.m.begin() + rows, kNegInf);
  std::fill(sc.l.begin(), sc.l.begin() + rows, 0.0);

  for (std::int32_t e = lay.row_ptr[w.q_tile]; e < lay.row_ptr[w.q_tile + 1]; ++e) {
    const std::int32_t col0 = lay.col_idx[e] * tile;
    const int cols = std::min(tile, lay.n - col0);  // clip at n: padding keys never count
    for (int j = 0; j < cols; ++j) {
      const std::size_t src = static_cast<std::size_t>(head_row0 + col0 + j) * dim;
      for (int c = 0; c < dim; ++c) {
        sc.kt[static_cast<std::size_t>(c) * tile + j] = element_as_float<T>(args.k, src + c);
        sc.v[static_cast<std::size_t>(j) * dim + c] = element_as_float<T>(args.v, src + c);
      }
    }
    kern.score(sc.q.data(), sc.kt.data(), sc.s.data(), rows, cols, dim, tile);

    const bool partial = lay.kind[e] == BlockKind::partial;
    const bool atoms = partial && lay.mask == MaskMode::atoms;
    for (int i = 0; i < rows; ++i) {
      double* si = sc.s.data() + static_cast<std::size_t>(i) * tile;
      double mx = kNegInf;
      if (atoms) {
        for (int j = 0; j < cols; ++j) si[j] *= scale;
        mask_atoms_row(lay, row0 + i, col0, cols, si);  // a call per row, not per pair
        for (int j = 0; j < cols; ++j) mx = std::max(mx, si[j]);
      } else {
        for (int j = 0; j < cols; ++j) {
          si[j] *= scale;
          if (partial && !mask_allows(lay, row0 + i, col0 + j)) si[j] = kNegInf;
          mx = std::max(mx, si[j]);
        }
      }
      if (mx == kNegInf) {  // no key of this tile for this row: it adds nothing
        std::fill(si, si + cols, 0.0);
        continue;
      }
      const double m_new = std::max(sc.m[i], mx);
      const double alpha = std::exp(sc.m[i] - m_new);  // 0 on the first kept tile
      double sum = 0;
      for (int j = 0; j < cols; ++j) {
        si[j] = std::exp(si[j] - m_new);
        sum += si[j];
      }
      double* acc = sc.acc.data() + static_cast<std::size_t>(i) * dim;
      if (alpha != 1.0)
        for (int c = 0; c < dim; ++c) acc[c] *= alpha;
      sc.l[i] = sc.l[i] * alpha + sum;
      sc.m[i] = m_new;
    }
    kern.accumulate(sc.s.data(), sc.v.data(), sc.acc.data(), rows, cols, dim, tile);
  }

  for (int i = 0; i < rows; ++i) {
    const std::int64_t row = head_row0 + row0 + i;
    const std::size_t dst = static_cast<std::size_t>(row) * dim;
    const double* acc = sc.acc.data() + static_cast<std::size_t>(i) * dim;
    const bool empty = sc.l[i] == 0;  // no key at all: O = 0, LSE = -inf
    for (int c = 0; c < dim; ++c) store<T>(args.o, dst + c, empty ? 0.0 : acc[c] / sc.l[i]);
    if (args.lse)
      args.lse[row] = empty ? -std::numeric_limits<float>::infinity()
                            : static_cast<float>(sc.m[i] + std::log(sc.l[i]));
  }
}

template <DType T>
void run_items(const CpuPlan& plan, const RunArgs& args, int threads, const Kernels& kern) {
  std::atomic<std::size_t> next{0};
  std::exception_ptr failure;
  std::mutex failure_mutex;
  auto worker = [&] {
    try {
      Scratch sc(plan.max_tile, plan.shape.dim);
      for (std::size_t k = next++; k < plan.items.size(); k = next++) run_item<T>(plan, plan.items[k], args, sc, kern);
    } catch (...) {
      const std::lock_guard<std::mutex> lock(failure_mutex);
      if (!failure) failure = std::current_exception();
      next = plan.items.size();
    }
  };
  const int n = static_cast<int>(std::min<std::size_t>(static_cast<std::size_t>(threads), plan.items.size()));
  if (n <= 1) {
    worker();
  } else {
    std::vector<std::thread> pool;
    pool.reserve(n);
    for (int t = 0; t < n; ++t) pool.emplace_back(worker);
    for (std::thread& t : pool) t.join();
  }
  if (failure) std::rethrow_exception(failure);
}

class CpuEngine final : public Engine {
 public:
  explicit CpuEngine(const EngineOptions& opt) {
    if (opt.threads < 0) throw Error("cpu engine: threads must be >= 0 (0 = all), got " + std::to_string(opt.threads));
    threads_ = opt.threads > 0 ? opt.threads : detail::usable_cores();
  }
  const char* name() const override { return "cpu"; }
  bool on_device() const override { return false; }

  std::unique_ptr<Plan> plan(const std::vector<const BlockLayout*>& layouts, const ProblemShape& shape) override {
    if (shape.heads < 1) throw Error("cpu engine: heads must be >= 1, got " + std::to_string(shape.heads));
    if (shape.dim < 1 || shape.dim > kMaxDim)
      throw Error("cpu engine: unsupported head_dim " + std::to_string(shape.dim) + " (1.." + std::to_string(kMaxDim) + ")");
    if (!std::isfinite(shape.scale)) throw Error("cpu engine: softmax scale is not finite");
    auto p = std::make_unique<CpuPlan>();
    p->shape = shape;
    p->layouts = layouts;
    p->offsets.assign(1, 0);
    for (std::size_t b = 0; b < layouts.size(); ++b) {
      const BlockLayout* l = layouts[b];
      if (!l) throw Error("cpu engine: layout " + std::to_string(b) + " is null");
      validate_layout(*l);
      if (l->tile < 1 || l->tile > kMaxTile)
        throw Error("cpu engine: unsupported tile " + std::to_string(l->tile) + " (1.." + std::to_string(kMaxTile) + ")");
      p->max_tile = std::max(p->max_tile, l->tile);
      p->offsets.push_back(p->offsets.back() + l->n);
      for (std::int32_t t = 0; t < l->n_tiles; ++t) {
        const std::int64_t rows = std::min(l->tile, l->n - t * l->tile);
        const std::int64_t cost = (l->row_ptr[t + 1] - l->row_ptr[t]) * rows;
        for (int h = 0; h < shape.heads; ++h)
          p->items.push_back({static_cast<std::int32_t>(b), h, t, cost});
      }
    }
    std::stable_sort(p->items.begin(), p->items.end(),
                     [](const WorkItem& a, const WorkItem& b) { return a.cost > b.cost; });
    return p;
  }

  void run(const Plan& plan, const RunArgs& args) override {
    const auto* p = dynamic_cast<const CpuPlan*>(&plan);
    if (!p) throw Error("cpu engine: the plan was made by another engine");
    if (p->total_n() == 0) return;
    if (!args.q || !args.k || !args.v || !args.o) throw Error("cpu engine: q, k, v and o must not be null");
    switch (p->shape.dtype) {
      case DType::f32: run_items<DType::f32>(*p, args, threads_, kernels_); break;
      case DType::f16: run_items<DType::f16>(*p, args, threads_, kernels_); break;
      case DType::bf16: run_items<DType::bf16>(*p, args, threads_, kernels_); break;
    }
  }

 private:
  int threads_ = 1;
  Kernels kernels_ = pick_kernels();
};

}  // namespace

std::unique_ptr<Engine> make_cpu_engine(const EngineOptions& opt) { return std::make_unique<CpuEngine>(opt); }

}  // namespace protattn
