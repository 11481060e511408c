// Bulk float -> fp16 conversion for the CPU forward's output (private).
#pragma once
#include <cstddef>
#include <cstdint>

namespace protattn::model {

// out[i] = float_to_half(in[i]) for i < n: rounded to nearest even, overflow to infinity,
// subnormals kept; with F16C where the CPU has it (NaN payloads aside, the same bits).
void floats_to_halves(const float* in, std::uint16_t* out, std::size_t n);

}  // namespace protattn::model
