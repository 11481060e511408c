#include "common/reference.hpp"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <random>

#include "protattn/half.hpp"
#include "protattn/structure.hpp"

namespace protattn::test {

std::vector<float> to_float(const void* data, DType dtype, std::int64_t count) {
  std::vector<float> out(static_cast<std::size_t>(count));
  for (std::size_t i = 0; i < out.size(); ++i) out[i] = element_as_float(data, dtype, i);
  return out;
}

Inputs random_inputs(const ProblemShape& shape, std::int64_t total_n, std::uint64_t seed, float spread) {
  Inputs in;
  in.shape = shape;
  in.total_n = total_n;
  const std::int64_t count = static_cast<std::int64_t>(shape.heads) * total_n * shape.dim;
  std::mt19937_64 rng(seed);
  std::normal_distribution<float> nd(0.0f, 1.0f);
  auto fill = [&](std::vector<std::uint8_t>& raw, std::vector<float>& f) {
    raw.resize(static_cast<std::size_t>(count) * dtype_size(shape.dtype));
    f.resize(static_cast<std::size_t>(count));
    for (std::int64_t i = 0; i < count; ++i) {
      const float x = nd(rng) * spread;
      if (shape.dtype == DType::f32) {
        std::memcpy(raw.data() + 4 * i, &x, 4);
        f[i] = x;
      } else {
        const std::uint16_t h = shape.dtype == DType::f16 ? float_to_half(x) : float_to_bf16(x);
        std::memcpy(raw.data() + 2 * i, &h, 2);
        f[i] = shape.dtype == DType::f16 ? half_to_float(h) : bf16_to_float(h);
      }
    }
  };
  fill(in.q, in.qf);
  fill(in.k, in.kf);
  fill(in.v, in.vf);
  return in;
}

void reference_attention(const BlockLayout& l, int heads, int dim, double scale,
                         const float* q, const float* k, const float* v, std::int64_t row_stride,
                         std::vector<double>& o, std::vector<double>& lse) {
  const std::int64_t n = l.n;
  o.assign(static_cast<std::size_t>(heads) * n * dim, 0.0);
  lse.assign(static_cast<std::size_t>(heads) * n, -std::numeric_limits<double>::infinity());
  // kept[tq * n_tiles + tk]
  std::vector<std::uint8_t> kept(static_cast<std::size_t>(l.n_tiles) * l.n_tiles, 0);
  for (int r = 0; r < l.n_tiles; ++r)
    for (int e = l.row_ptr[r]; e < l.row_ptr[r + 1]; ++e) kept[static_cast<std::size_t>(r) * l.n_tiles + l.col_idx[e]] = 1;
  std::vector<double> s(static_cast<std::size_t>(n));
  std::vector<std::uint8_t> on(static_cast<std::size_t>(n));
  for (int h = 0; h < heads; ++h) {
    const float* qh = q + static_cast<std::int64_t>(h) * row_stride * dim;
    const float* kh = k + static_cast<std::int64_t>(h) * row_stride * dim;
    const float* vh = v + static_cast<std::int64_t>(h) * row_stride * dim;
    for (std::int64_t i = 0; i < n; ++i) {
      double mx = -std::numeric_limits<double>::infinity();
      for (std::int64_t j = 0; j < n; ++j) {
        on[j] = kept[static_cast<std::size_t>(i / l.tile) * l.n_tiles + j / l.tile] &&
                mask_allows(l, static_cast<std::int32_t>(i), static_cast<std::int32_t>(j));
        if (!on[j]) continue;
        double acc = 0;
        for (int c = 0; c < dim; ++c) acc += static_cast<double>(qh[i * dim + c]) * kh[j * dim + c];
        s[j] = acc * scale;
        mx = std::max(mx, s[j]);
      }
      if (mx == -std::numeric_limits<double>::infinity()) continue;  // no key: o = 0, lse = -inf
      double sum = 0;
      double* oi = &o[(static_cast<std::size_t>(h) * n + i) * dim];
      for (std::int64_t j = 0; j < n; ++j) {
        if (!on[j]) continue;
        const double p = std::exp(s[j] - mx);
        sum += p;
        for (int c = 0; c < dim; ++c) oi[c] += p * vh[j * dim + c];
      }
      for (int c = 0; c < dim; ++c) oi[c] /= sum;
      lse[static_cast<std::size_t>(h) * n + i] = mx + std::log(sum);
    }
  }
}

void reference_batch(const Plan& plan, const Inputs& in, std::vector<double>& o, std::vector<double>& lse) {
  const int H = plan.shape.heads, D = plan.shape.dim;
  const std::int64_t T = plan.total_n();
  o.assign(static_cast<std::size_t>(H) * T * D, 0.0);
  lse.assign(static_cast<std::size_t>(H) * T, 0.0);
  std::vector<double> ob, lb;
  for (std::size_t b = 0; b < plan.layouts.size(); ++b) {
    const std::int64_t off = plan.offsets[b], n = plan.layouts[b]->n;
    reference_attention(*plan.layouts[b], H, D, plan.shape.effective_scale(), in.qf.data() + off * D,
                        in.kf.data() + off * D, in.vf.data() + off * D, T, ob, lb);
    for (int h = 0; h < H; ++h) {
      std::copy_n(&ob[static_cast<std::size_t>(h) * n * D], n * D, &o[(static_cast<std::size_t>(h) * T + off) * D]);
      std::copy_n(&lb[static_cast<std::size_t>(h) * n], n, &lse[static_cast<std::size_t>(h) * T + off]);
    }
  }
}

Compare compare(const Plan& plan, const void* o, DType dtype, const float* lse,
                const std::vector<double>& ref_o, const std::vector<double>& ref_lse) {
  Compare c;
  const int H = plan.shape.heads, D = plan.shape.dim;
  const std::int64_t T = plan.total_n();
  const std::vector<float> of = to_float(o, dtype, static_cast<std::int64_t>(H) * T * D);
  for (int h = 0; h < H; ++h) {
    double peak = 0;
    const std::size_t base = static_cast<std::size_t>(h) * T * D;
    for (std::int64_t i = 0; i < T * D; ++i) peak = std::max(peak, std::abs(ref_o[base + i]));
    peak = std::max(peak, 1e-30);
    for (std::int64_t i = 0; i < T * D; ++i) {
      const double x = of[base + i];
      if (!std::isfinite(x)) { ++c.non_finite; continue; }
      c.max_rel_o = std::max(c.max_rel_o, std::abs(x - ref_o[base + i]) / peak);
    }
  }
  if (lse) {
    for (std::int64_t i = 0; i < static_cast<std::int64_t>(H) * T; ++i) {
      const double r = ref_lse[i], x = lse[i];
      if (std::isinf(r) || std::isinf(x)) {
        if (!(std::isinf(r) && std::isinf(x) && r < 0 && x < 0)) ++c.lse_mismatch_inf;
        continue;
      }
      if (std::isnan(x)) { ++c.non_finite; continue; }
      c.max_abs_lse = std::max(c.max_abs_lse, std::abs(x - r));
    }
  }
  return c;
}

BlockLayout globule_layout(std::size_t n, MaskMode mask, float cutoff, std::uint64_t seed) {
  const Structure s = make_globule(n, 0.058, seed);
  LayoutOptions opt;
  opt.mask = mask;
  opt.cutoff = cutoff;
  opt.order = Order::hilbert;
  return build_cutoff_layout(s.xyz.data(), s.size(), opt);
}

BlockLayout hand_layout(int n, const std::vector<std::vector<int>>& rows, MaskMode mask) {
  BlockLayout l;
  l.n = n;
  l.tile = 128;
  l.n_tiles = (n + 127) / 128;
  l.row_ptr.assign(1, 0);
  for (const auto& r : rows) {
    for (int c : r) {
      l.col_idx.push_back(c);
      l.kind.push_back(BlockKind::full);
    }
    l.row_ptr.push_back(static_cast<std::int32_t>(l.col_idx.size()));
  }
  l.perm.resize(n);
  for (int i = 0; i < n; ++i) l.perm[i] = i;
  l.coords.assign(static_cast<std::size_t>(n) * 3, 0.0f);
  l.mask = mask;
  l.builder = "edges";
  return l;
}

}  // namespace protattn::test
