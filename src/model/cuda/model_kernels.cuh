// Small CUDA kernels of the atom_encoder GPU forward: embedding, residual + LayerNorm, bias/GELU, head transpose.
#pragma once
#include <cuda_fp16.h>

#include <cstdint>

namespace protattn::model::gpu {

constexpr int kWarp = 32;
constexpr int kRowsPerBlock = 8;  // warps (rows) per block of the row kernels
constexpr int kThreads = 256;     // threads per block of the element-wise kernels
constexpr float kGeluCubic = 0.044715f;
constexpr float kSqrt2OverPi = 0.7978845608028654f;  // sqrt(2 / pi)

__device__ __forceinline__ float warp_sum(float v) {
  for (int o = kWarp / 2; o > 0; o /= 2) v += __shfl_xor_sync(0xffffffffu, v, o);
  return v;
}

// x[r, :] = emb[element[r], :]. x: [T, C] float32; emb: [119, C] float32.
__global__ void embed_rows(float* __restrict__ x, const float* __restrict__ emb, const std::int32_t* __restrict__ element,
                           std::int64_t T, int C) {
  const std::int64_t total = T * C;
  for (std::int64_t i = blockIdx.x * static_cast<std::int64_t>(blockDim.x) + threadIdx.x; i < total;
       i += static_cast<std::int64_t>(gridDim.x) * blockDim.x) {
    const std::int64_t r = i / C;
    x[i] = emb[static_cast<std::int64_t>(element[r]) * C + i % C];
  }
}

// One warp per row r: when `add` is given, x[r] += add[r] + bias (the residual); then
// y[dest ? dest[r] : r] = LayerNorm(x[r]) * g + b in fp16. Two-pass mean / variance in float32.
__global__ void residual_layernorm(float* __restrict__ x, const float* __restrict__ add, const float* __restrict__ bias,
                                   const float* __restrict__ g, const float* __restrict__ b, __half* __restrict__ y,
                                   const std::int32_t* __restrict__ dest, std::int64_t T, int C, float eps) {
  const std::int64_t r = blockIdx.x * static_cast<std::int64_t>(kRowsPerBlock) + threadIdx.x / kWarp;
  const int lane = threadIdx.x % kWarp;
  if (r >= T) return;
  float* xr = x + r * C;
  float sum = 0;
  for (int j = lane; j < C; j += kWarp) {
    float v = xr[j];
    if (add) {
      v += add[r * C + j] + bias[j];
      xr[j] = v;
    }
    sum += v;
  }
  const float mean = warp_sum(sum) / C;
  float sq = 0;
  for (int j = lane; j < C; j += kWarp) {
    const float dv = xr[j] - mean;
    sq += dv * dv;
  }
  const float inv = rsqrtf(warp_sum(sq) / C + eps);
  __half* yr = y + (dest ? static_cast<std::int64_t>(dest[r]) : r) * C;
  for (int j = lane; j < C; j += kWarp) yr[j] = __float2half_rn((xr[j] - mean) * inv * g[j] + b[j]);
}

// out[i] = fp16(act(in[i] + bias[(i / (rows * width)) * width + i % width])) over groups of
// [rows, width] blocks: the Q/K/V projections ([3H, T, d], bias [3H, d]) and fc1 ([T, M], one group).
template <bool kGelu>
__global__ void bias_act_half(const float* __restrict__ in, const float* __restrict__ bias, __half* __restrict__ out,
                              std::int64_t groups, std::int64_t rows, int width) {
  const std::int64_t per_group = rows * width, total = groups * per_group;
  for (std::int64_t i = blockIdx.x * static_cast<std::int64_t>(blockDim.x) + threadIdx.x; i < total;
       i += static_cast<std::int64_t>(gridDim.x) * blockDim.x) {
    float v = in[i] + bias[(i / per_group) * width + i % width];
    if constexpr (kGelu) v = 0.5f * v * (1.0f + tanhf(kSqrt2OverPi * (v + kGeluCubic * v * v * v)));
    out[i] = __float2half_rn(v);
  }
}

// cat[t, h * d + j] = o[h, t, j]: the attention output as rows for the output projection.
__global__ void heads_to_rows(const __half* __restrict__ o, __half* __restrict__ cat, int H, std::int64_t T, int d) {
  const std::int64_t total = static_cast<std::int64_t>(H) * T * d;
  for (std::int64_t i = blockIdx.x * static_cast<std::int64_t>(blockDim.x) + threadIdx.x; i < total;
       i += static_cast<std::int64_t>(gridDim.x) * blockDim.x) {
    const std::int64_t t = i / (static_cast<std::int64_t>(H) * d), rem = i % (static_cast<std::int64_t>(H) * d);
    const std::int64_t h = rem / d, j = rem % d;
    cat[i] = o[(h * T + t) * d + j];
  }
}

}  // namespace protattn::model::gpu
