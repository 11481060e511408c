// Bulk float -> fp16 conversion and fp16 row norms: F16C eight at a time where the CPU has it,
// else the scalar ones.
#include "model/half_rows.hpp"

#if defined(__x86_64__) && defined(__GNUC__)
#include <immintrin.h>
#define PROTATTN_F16C 1
#endif

#include <cmath>

#include "protattn/half.hpp"

namespace protattn::model {
namespace {

// Partial sums of squares in float, column c into sum c % 32 (four independent vector chains
// on the F16C path), then in double: folded in halves (16, 8, 4 wide) and the last four added
// pairwise. Both paths keep that order, and the square of an fp16 value is exact in float, so
// fused multiply-adds or not, every step rounds the same.
constexpr std::size_t kPartials = 32;
inline double fold_partials(const float (&p)[kPartials]) {
  double s[kPartials];
  for (std::size_t j = 0; j < kPartials; ++j) s[j] = p[j];
  for (std::size_t half = kPartials / 2; half >= 4; half /= 2)
    for (std::size_t j = 0; j < half; ++j) s[j] += s[j + half];
  return (s[0] + s[2]) + (s[1] + s[3]);
}

#ifdef PROTATTN_F16C
__attribute__((target("avx,f16c"))) void convert_f16c(const float* in, std::uint16_t* out, std::size_t n) {
  std::size_t i = 0;
  for (; i + 8 <= n; i += 8)
    _mm_storeu_si128(reinterpret_cast<__m128i*>(out + i), _mm256_cvtps_ph(_mm256_loadu_ps(in + i), _MM_FROUND_TO_NEAREST_INT));
  for (; i < n; ++i) out[i] = float_to_half(in[i]);
}

__attribute__((target("avx,f16c"))) double mean_row_norm_f16c(const std::uint16_t* h, std::size_t rows, std::size_t width) {
  double total = 0;
  for (std::size_t r = 0; r < rows; ++r) {
    const std::uint16_t* row = h + r * width;
    __m256 acc[4];  // acc[g] lane k: columns 8 g + k mod 32
    for (auto& a : acc) a = _mm256_setzero_ps();
    std::size_t c = 0;
    for (; c + kPartials <= width; c += kPartials) {
#pragma GCC unroll 4
      for (std::size_t g = 0; g < 4; ++g) {
        const __m256 x = _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(row + c + 8 * g)));
        acc[g] = _mm256_add_ps(acc[g], _mm256_mul_ps(x, x));
      }
    }
    if (c == width) {  // no remainder: the same folds, in registers
      __m256d d[8];
      for (std::size_t g = 0; g < 4; ++g) {
        d[2 * g] = _mm256_cvtps_pd(_mm256_castps256_ps128(acc[g]));
        d[2 * g + 1] = _mm256_cvtps_pd(_mm256_extractf128_ps(acc[g], 1));
      }
      for (std::size_t i = 0; i < 4; ++i) d[i] = _mm256_add_pd(d[i], d[i + 4]);
      for (std::size_t i = 0; i < 2; ++i) d[i] = _mm256_add_pd(d[i], d[i + 2]);
      alignas(32) double q[4];
      _mm256_store_pd(q, _mm256_add_pd(d[0], d[1]));
      total += std::sqrt((q[0] + q[2]) + (q[1] + q[3]));
      continue;
    }
    float p[kPartials];
    for (std::size_t g = 0; g < 4; ++g) _mm256_storeu_ps(p + 8 * g, acc[g]);
    for (; c < width; ++c) {
      const float x = half_to_float(row[c]);
      p[c % kPartials] += x * x;
    }
    total += std::sqrt(fold_partials(p));
  }
  return rows == 0 ? 0.0 : total / static_cast<double>(rows);
}

bool have_f16c() {
  static const bool yes = __builtin_cpu_supports("avx") && __builtin_cpu_supports("f16c");
  return yes;
}
#endif

}  // namespace

void floats_to_halves(const float* in, std::uint16_t* out, std::size_t n) {
#ifdef PROTATTN_F16C
  if (have_f16c()) return convert_f16c(in, out, n);
#endif
  for (std::size_t i = 0; i < n; ++i) out[i] = float_to_half(in[i]);
}

double mean_row_norm_scalar(const std::uint16_t* h, std::size_t rows, std::size_t width) {
  double total = 0;
  for (std::size_t r = 0; r < rows; ++r) {
    const std::uint16_t* row = h + r * width;
    float p[kPartials] = {};
    for (std::size_t c = 0; c < width; ++c) {
      const float x = half_to_float(row[c]);
      p[c % kPartials] += x * x;
    }
    total += std::sqrt(fold_partials(p));
  }
  return rows == 0 ? 0.0 : total / static_cast<double>(rows);
}

double mean_row_norm(const std::uint16_t* halves, std::size_t rows, std::size_t width) {
#ifdef PROTATTN_F16C
  if (have_f16c()) return mean_row_norm_f16c(halves, rows, width);
#endif
  return mean_row_norm_scalar(halves, rows, width);
}

}  // namespace protattn::model
