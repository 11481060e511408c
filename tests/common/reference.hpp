// Test support: the float64 naive dense masked softmax every engine is checked against, and
// seeded random inputs in any dtype.
#pragma once
#include <cstdint>
#include <vector>

#include "protattn/engine.hpp"
#include "protattn/layout.hpp"

namespace protattn::test {

// Poisons outputs before a run, so that an element the engine leaves unwritten shows: 0xffff is
// a NaN in fp16 and bf16, 0xffffffff in fp32.
constexpr std::uint8_t kPoisonByte = 0xff;

// Q, K, V of a batch as RunArgs expects them ([heads, total_n, dim] in shape.dtype), plus the
// same values as float (after rounding to the dtype) for the reference.
struct Inputs {
  ProblemShape shape;
  std::int64_t total_n = 0;
  std::vector<std::uint8_t> q, k, v;   // raw, in shape.dtype
  std::vector<float> qf, kf, vf;       // the same values as float
};
// Normal(0, 1) values (times `spread`), seeded.
Inputs random_inputs(const ProblemShape& shape, std::int64_t total_n, std::uint64_t seed, float spread = 1.0f);

// Naive dense reference over one structure: for every query i and every key j < n, attends iff
// the tile pair (i/tile, j/tile) is kept in the layout and mask_allows(l, i, j). Computes in
// float64. q/k/v point at [heads, row_stride, dim] floats starting at the structure's first row;
// o ([heads, n, dim]) and lse ([heads, n]) are resized and filled. Rows with no key: o = 0,
// lse = -inf.
void reference_attention(const BlockLayout& l, int heads, int dim, double scale,
                         const float* q, const float* k, const float* v, std::int64_t row_stride,
                         std::vector<double>& o, std::vector<double>& lse);

// Reference for a whole planned batch: o [heads, total_n, dim], lse [heads, total_n].
void reference_batch(const Plan& plan, const Inputs& in, std::vector<double>& o, std::vector<double>& lse);

// Largest error of `o` (raw, in dtype) against the reference, relative to the largest |ref|
// of its head, and whether every element is finite; lse compared absolutely (-inf must match).
struct Compare {
  double max_rel_o = 0, max_abs_lse = 0;
  std::int64_t non_finite = 0, lse_mismatch_inf = 0;
};
Compare compare(const Plan& plan, const void* o, DType dtype, const float* lse,
                const std::vector<double>& ref_o, const std::vector<double>& ref_lse);

// Layouts the GPU tests share: the cutoff layout (Hilbert order) of a seeded W2-style globule
// of n atoms, and a layout by hand over n atoms where rows[r] lists the kept key tiles of
// query tile r (identity order, FULL tiles, coordinates zero).
BlockLayout globule_layout(std::size_t n, MaskMode mask, float cutoff = 8.0f, std::uint64_t seed = 7);
BlockLayout hand_layout(int n, const std::vector<std::vector<int>>& rows, MaskMode mask = MaskMode::tiles);

// Converts raw dtype values to float.
std::vector<float> to_float(const void* data, DType dtype, std::int64_t count);

}  // namespace protattn::test
