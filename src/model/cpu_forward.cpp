// The atom_encoder forward on the CPU: float32 everywhere, attention through the host engine.
#include <algorithm>
#include <cmath>
#include <memory>
#include <numbers>
#include <thread>
#include <vector>

#include "model/backend.hpp"
#include "model/half_rows.hpp"
#include "model/parallel.hpp"
#include "protattn/error.hpp"
#include "protattn/half.hpp"

namespace protattn::model {
namespace {

// GELU, tanh approximation: 0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3))).
constexpr float kGeluCubic = 0.044715f;
const float kSqrt2OverPi = static_cast<float>(std::sqrt(2.0 / std::numbers::pi));

// Independent partial sums per LayerNorm row.
constexpr int kSumLanes = 8;

// y = LayerNorm(x) * g + b over one row of C floats, mean and variance in double. kSumLanes
// independent partial sums (a fixed order, so the same bits every run): with one chain of
// dependent double additions per row, LayerNorm was most of a small model's time. Compiled for
// AVX2 as well and picked at load time (no FMA in either: the same bits on every CPU).
#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__)
__attribute__((target_clones("avx2", "default")))
#endif
void layer_norm_row(const float* xr, const float* g, const float* b, float* yr, int C) {
  double ms[kSumLanes] = {}, vs[kSumLanes] = {};
  int j0 = 0;
  for (; j0 + kSumLanes <= C; j0 += kSumLanes)
    for (int u = 0; u < kSumLanes; ++u) ms[u] += xr[j0 + u];
  for (int j = j0; j < C; ++j) ms[0] += xr[j];
  double mean = 0;
  for (int u = 0; u < kSumLanes; ++u) mean += ms[u];
  mean /= C;
  for (j0 = 0; j0 + kSumLanes <= C; j0 += kSumLanes)
    for (int u = 0; u < kSumLanes; ++u) vs[u] += (xr[j0 + u] - mean) * (xr[j0 + u] - mean);
  for (int j = j0; j < C; ++j) vs[0] += (xr[j] - mean) * (xr[j] - mean);
  double var = 0;
  for (int u = 0; u < kSumLanes; ++u) var += vs[u];
  var /= C;
  const double inv = 1.0 / std::sqrt(var + kLayerNormEps);
  for (int j = 0; j < C; ++j) yr[j] = static_cast<float>((xr[j] - mean) * inv) * g[j] + b[j];
}

float gelu_tanh(float x) { return 0.5f * x * (1.0f + std::tanh(kSqrt2OverPi * (x + kGeluCubic * x * x * x))); }

struct Linear {
  std::vector<float> wt;     // [in, out]: the weight transposed, so a row's outputs are contiguous
  const float* b = nullptr;  // [out]
  int out = 0, in = 0;
};

// Rows of the projection at a time: each weight row read from cache serves this many atoms.
constexpr int kProjRows = 4;

// y[r][j] = b[j] + sum_i x[r][i] w[j, i] for `rows` (1..kProjRows) rows. Each output sums over
// i in increasing order and adds the bias last, as a plain dot product would, so the result is
// the same whatever the row blocking; the inner loop over outputs is contiguous and vectorises.
void project(const Linear& f, const float* const* x, float* const* y, int rows) {
  if (rows == kProjRows) {
    float* __restrict y0 = y[0];
    float* __restrict y1 = y[1];
    float* __restrict y2 = y[2];
    float* __restrict y3 = y[3];
    std::fill_n(y0, f.out, 0.0f);
    std::fill_n(y1, f.out, 0.0f);
    std::fill_n(y2, f.out, 0.0f);
    std::fill_n(y3, f.out, 0.0f);
    for (int i = 0; i < f.in; ++i) {
      const float* __restrict w = f.wt.data() + static_cast<std::size_t>(i) * f.out;
      const float a0 = x[0][i], a1 = x[1][i], a2 = x[2][i], a3 = x[3][i];
      for (int j = 0; j < f.out; ++j) {
        y0[j] += a0 * w[j];
        y1[j] += a1 * w[j];
        y2[j] += a2 * w[j];
        y3[j] += a3 * w[j];
      }
    }
  } else {
    for (int r = 0; r < rows; ++r) {
      float* __restrict yr = y[r];
      std::fill_n(yr, f.out, 0.0f);
      for (int i = 0; i < f.in; ++i) {
        const float* __restrict w = f.wt.data() + static_cast<std::size_t>(i) * f.out;
        const float a = x[r][i];
        for (int j = 0; j < f.out; ++j) yr[j] += a * w[j];
      }
    }
  }
  for (int r = 0; r < rows; ++r)
    for (int j = 0; j < f.out; ++j) y[r][j] += f.b[j];
}

struct Norm {
  const float* g = nullptr;
  const float* b = nullptr;
};

struct Layer {
  Norm norm1, norm2;
  Linear q, k, v, out, fc1, fc2;
};

// A float array of the forward, not zero-filled when made: every element is written before it
// is read. (Zero-filling the buffers of a batch was half of a served request's time on the
// CPU engine for a small model.)
class Scratch {
 public:
  explicit Scratch(std::size_t n = 0) : data_(std::make_unique_for_overwrite<float[]>(n)) {}
  float* data() { return data_.get(); }

 private:
  std::unique_ptr<float[]> data_;
};

class CpuPlan final : public ForwardPlan {
 public:
  std::unique_ptr<Plan> attn;
  std::vector<std::int32_t> element;    // [T], new order
  std::vector<std::int32_t> dest;       // [T]: new position -> row of the output (input order)
  Scratch x, xn, q, k, v, o, cat, hidden, y;
  bool ran = false;
};

class CpuBackend final : public AtomEncoder::Backend {
 public:
  CpuBackend(Model m, std::unique_ptr<Engine> engine, int threads)
      : model_(std::move(m)), engine_(std::move(engine)), threads_(threads) {
    const ModelConfig& c = model_.config;
    auto lin = [&](const std::string& name) {
      const Tensor& w = model_.at(name + ".weight");
      Linear f;
      f.out = static_cast<int>(w.shape[0]);
      f.in = static_cast<int>(w.shape[1]);
      f.b = model_.at(name + ".bias").data.data();
      f.wt.resize(w.data.size());
      for (int j = 0; j < f.out; ++j)
        for (int i = 0; i < f.in; ++i)
          f.wt[static_cast<std::size_t>(i) * f.out + j] = w.data[static_cast<std::size_t>(j) * f.in + i];
      return f;
    };
    auto norm = [&](const std::string& name) {
      return Norm{model_.at(name + ".weight").data.data(), model_.at(name + ".bias").data.data()};
    };
    for (int l = 0; l < c.layers; ++l) {
      auto n = [&](const char* part) { return layer_name(l, part); };
      layers_.push_back({norm(n("norm1")), norm(n("norm2")), lin(n("attn.q")), lin(n("attn.k")), lin(n("attn.v")),
                         lin(n("attn.out")), lin(n("mlp.fc1")), lin(n("mlp.fc2"))});
    }
    final_ = norm("final_norm");
    embed_ = model_.at("embed.weight").data.data();
  }

  const ModelConfig& config() const override { return model_.config; }
  Engine& engine() override { return *engine_; }

  std::unique_ptr<ForwardPlan> make_plan(std::vector<BlockLayout> layouts, std::vector<std::int64_t> offsets,
                                         const std::vector<AtomInput>& batch) override {
    const ModelConfig& c = model_.config;
    auto p = std::make_unique<CpuPlan>();
    p->layouts = std::move(layouts);
    p->offsets = std::move(offsets);
    std::vector<const BlockLayout*> ptrs;
    for (const BlockLayout& l : p->layouts) ptrs.push_back(&l);
    ProblemShape shape;
    shape.heads = c.heads;
    shape.dim = c.head_dim;
    shape.dtype = DType::f32;
    p->attn = engine_->plan(ptrs, shape);
    const auto T = static_cast<std::size_t>(p->total_n());
    p->element.resize(T);
    p->dest.resize(T);
    for (std::size_t b = 0; b < batch.size(); ++b) {
      const BlockLayout& l = p->layouts[b];
      const auto base = static_cast<std::size_t>(p->offsets[b]);
      for (std::size_t i = 0; i < static_cast<std::size_t>(l.n); ++i) {
        p->element[base + i] = batch[b].elements[static_cast<std::size_t>(l.perm[i])];
        p->dest[base + i] = static_cast<std::int32_t>(base) + l.perm[i];
      }
    }
    const std::size_t C = c.channels, Q = c.qkv_width(), M = c.mlp_width();
    // The blocks' buffers only when there are blocks.
    const std::size_t L = c.layers > 0 ? 1 : 0;
    p->x = Scratch(T * C);
    p->xn = Scratch(L * T * C);
    p->q = Scratch(L * T * Q);
    p->k = Scratch(L * T * Q);
    p->v = Scratch(L * T * Q);
    p->o = Scratch(L * T * Q);
    p->cat = Scratch(L * T * Q);
    p->hidden = Scratch(L * T * M);
    p->y = Scratch(T * C);
    return p;
  }

  void run(ForwardPlan& plan, void*) override {
    auto& p = as_cpu(plan);
    const ModelConfig& c = model_.config;
    const std::int64_t T = p.total_n();
    const int C = c.channels, H = c.heads, d = c.head_dim, Q = c.qkv_width();
    parallel_rows(T, threads_, [&](std::int64_t r0, std::int64_t r1) {
      for (std::int64_t r = r0; r < r1; ++r)
        std::copy_n(embed_ + static_cast<std::size_t>(p.element[r]) * C, C, p.x.data() + r * C);
    });
    const int M = c.mlp_width();
    for (const Layer& L : layers_) {
      layer_norm(p.x.data(), L.norm1, p.xn.data(), T, C);
      // Q, K, V straight into the engine's [heads, T, d] layout.
      for_row_blocks(T, [&](std::int64_t r0, int rows, Rows& t) {
        const float* xs[kProjRows];
        for (int r = 0; r < rows; ++r) xs[r] = p.xn.data() + (r0 + r) * C;
        for (const Linear* f : {&L.q, &L.k, &L.v}) {
          project(*f, xs, t.a, rows);
          float* dst = f == &L.q ? p.q.data() : f == &L.k ? p.k.data() : p.v.data();
          for (int r = 0; r < rows; ++r)
            for (int h = 0; h < H; ++h)
              std::copy_n(t.a[r] + h * d, d, dst + (static_cast<std::size_t>(h) * T + r0 + r) * d);
        }
      });
      RunArgs args{p.q.data(), p.k.data(), p.v.data(), p.o.data(), nullptr, nullptr};
      engine_->run(*p.attn, args);
      for_row_blocks(T, [&](std::int64_t r0, int rows, Rows& t) {
        const float* cs[kProjRows];
        for (int r = 0; r < rows; ++r) {
          float* cr = p.cat.data() + (r0 + r) * Q;
          for (int h = 0; h < H; ++h)
            std::copy_n(p.o.data() + (static_cast<std::size_t>(h) * T + r0 + r) * d, d, cr + h * d);
          cs[r] = cr;
        }
        project(L.out, cs, t.a, rows);
        for (int r = 0; r < rows; ++r) {
          float* xr = p.x.data() + (r0 + r) * C;
          for (int j = 0; j < C; ++j) xr[j] += t.a[r][j];
        }
      });
      layer_norm(p.x.data(), L.norm2, p.xn.data(), T, C);
      for_row_blocks(T, [&](std::int64_t r0, int rows, Rows& t) {
        const float* xs[kProjRows];
        const float* hs[kProjRows];
        float* hidden[kProjRows];
        for (int r = 0; r < rows; ++r) {
          xs[r] = p.xn.data() + (r0 + r) * C;
          hidden[r] = p.hidden.data() + (r0 + r) * M;
          hs[r] = hidden[r];
        }
        project(L.fc1, xs, hidden, rows);
        for (int r = 0; r < rows; ++r)
          for (int j = 0; j < M; ++j) hidden[r][j] = gelu_tanh(hidden[r][j]);
        project(L.fc2, hs, t.a, rows);
        for (int r = 0; r < rows; ++r) {
          float* xr = p.x.data() + (r0 + r) * C;
          for (int j = 0; j < C; ++j) xr[j] += t.a[r][j];
        }
      });
    }
    layer_norm(p.x.data(), final_, p.y.data(), T, C);
    p.ran = true;
  }

  void wait(void*) override {}  // run() is synchronous

  std::vector<Embedding> fetch(ForwardPlan& plan, void*, const std::vector<void*>& dests) override {
    auto& p = as_cpu(plan);
    if (!p.ran) throw Error("atom_encoder: fetch before run");
    const int C = model_.config.channels;
    std::vector<Embedding> out(p.layouts.size());
    for (std::size_t b = 0; b < out.size(); ++b) {
      std::uint16_t* to = b < dests.size() ? static_cast<std::uint16_t*>(dests[b]) : nullptr;
      if (!to) {
        out[b].resize(static_cast<std::size_t>(p.offsets[b + 1] - p.offsets[b]) * C);
        to = out[b].data();
      }
      for (std::int64_t r = p.offsets[b]; r < p.offsets[b + 1]; ++r) {
        const std::int64_t row = p.dest[r] - p.offsets[b];
        floats_to_halves(p.y.data() + r * C, to + row * C, C);
      }
    }
    return out;
  }

 private:
  static CpuPlan& as_cpu(ForwardPlan& plan) {
    auto* p = dynamic_cast<CpuPlan*>(&plan);
    if (!p) throw Error("atom_encoder: the plan was made by another backend");
    return *p;
  }

  // Per-thread output rows of one projection block (widest output of any projection).
  struct Rows {
    std::vector<float> buf;
    float* a[kProjRows];
    explicit Rows(int width) : buf(static_cast<std::size_t>(kProjRows) * width) {
      for (int r = 0; r < kProjRows; ++r) a[r] = buf.data() + static_cast<std::size_t>(r) * width;
    }
  };

  // Calls f(first_row, rows, scratch) on blocks of up to kProjRows rows, split over threads.
  template <typename F>
  void for_row_blocks(std::int64_t T, F&& f) const {
    const int width = std::max(model_.config.qkv_width(), std::max(model_.config.channels, model_.config.mlp_width()));
    const std::int64_t blocks = (T + kProjRows - 1) / kProjRows;
    parallel_rows(blocks, threads_, [&](std::int64_t b0, std::int64_t b1) {
      Rows t(width);
      for (std::int64_t b = b0; b < b1; ++b) {
        const std::int64_t r0 = b * kProjRows;
        f(r0, static_cast<int>(std::min<std::int64_t>(kProjRows, T - r0)), t);
      }
    });
  }

  void layer_norm(const float* x, const Norm& n, float* y, std::int64_t T, int C) const {
    parallel_rows(T, threads_, [&](std::int64_t r0, std::int64_t r1) {
      for (std::int64_t r = r0; r < r1; ++r) layer_norm_row(x + r * C, n.g, n.b, y + r * C, C);
    });
  }

  Model model_;
  std::unique_ptr<Engine> engine_;
  int threads_ = 0;
  std::vector<Layer> layers_;
  Norm final_;
  const float* embed_ = nullptr;
};

}  // namespace

std::unique_ptr<AtomEncoder::Backend> make_cpu_backend(Model m, std::unique_ptr<Engine> engine, int threads) {
  return std::make_unique<CpuBackend>(std::move(m), std::move(engine), threads);
}

}  // namespace protattn::model
