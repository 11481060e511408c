// Bulk float <-> fp16 conversions: the CPU forward's output, the loop client's answers (private).
#pragma once
#include <cstddef>
#include <cstdint>

namespace protattn::model {

// out[i] = float_to_half(in[i]) for i < n: rounded to nearest even, overflow to infinity,
// subnormals kept; with F16C where the CPU has it (NaN payloads aside, the same bits).
void floats_to_halves(const float* in, std::uint16_t* out, std::size_t n);

// out[i] = half_to_float(in[i]) for i < n (exact; with F16C where the CPU has it, which quiets
// signalling NaNs: NaN stays NaN).
void halves_to_floats(const std::uint16_t* in, float* out, std::size_t n);

}  // namespace protattn::model
