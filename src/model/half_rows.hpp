// Bulk float -> fp16 conversion (the CPU forward's output) and fp16 row norms (the loop
// client's score) (private).
#pragma once
#include <cstddef>
#include <cstdint>

namespace protattn::model {

// out[i] = float_to_half(in[i]) for i < n: rounded to nearest even, overflow to infinity,
// subnormals kept; with F16C where the CPU has it (NaN payloads aside, the same bits).
void floats_to_halves(const float* in, std::uint16_t* out, std::size_t n);

// The mean over `rows` rows of `width` fp16 values of each row's L2 norm (0 for no rows), read
// straight from the fp16 bits: squares (exact in float) summed in float by column mod 32, the 32
// partial sums folded in double: a fixed order, the same bits with or without F16C.
double mean_row_norm(const std::uint16_t* halves, std::size_t rows, std::size_t width);

// mean_row_norm without F16C (the reference the tests hold the F16C path to).
double mean_row_norm_scalar(const std::uint16_t* halves, std::size_t rows, std::size_t width);

}  // namespace protattn::model
