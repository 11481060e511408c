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

// The row kernels below (embedding, bias + activation, head transpose) give each row of `width`
// elements tpr threads (threads per row, tpr = blockDim.x / rows per block), each taking VEC
// consecutive elements at a time: no division per element (a 64-bit one costs dozens of
// instructions), and 16-byte loads where the width allows. Rows of a block are strided by
// gridDim.x; blockIdx.y picks a group where there is one.
struct RowThreads {
  int lane, row0, rows_per_block;
  __device__ explicit RowThreads(int tpr)
      : lane(static_cast<int>(threadIdx.x) % tpr), row0(static_cast<int>(threadIdx.x) / tpr),
        rows_per_block(static_cast<int>(blockDim.x) / tpr) {}
};

// x[r, :] = emb[element[r], :]. x: [T, C] float32; emb: [119, C] float32. VEC 4 needs C % 4 == 0.
template <int VEC>
__global__ void embed_rows(float* __restrict__ x, const float* __restrict__ emb, const std::int32_t* __restrict__ element,
                           std::int64_t T, int C, int tpr) {
  const RowThreads rt(tpr);
  for (std::int64_t r = blockIdx.x * static_cast<std::int64_t>(rt.rows_per_block) + rt.row0; r < T;
       r += static_cast<std::int64_t>(gridDim.x) * rt.rows_per_block) {
    const float* er = emb + static_cast<std::int64_t>(element[r]) * C;
    float* xr = x + r * C;
    for (int v = rt.lane; v < C / VEC; v += tpr) {
      if constexpr (VEC == 4) reinterpret_cast<float4*>(xr)[v] = reinterpret_cast<const float4*>(er)[v];
      else xr[v] = er[v];
    }
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

template <bool kGelu>
__device__ __forceinline__ float activate(float v) {
  if constexpr (kGelu) v = 0.5f * v * (1.0f + tanhf(kSqrt2OverPi * (v + kGeluCubic * v * v * v)));
  return v;
}

// out[g, r, j] = fp16(act(in[g, r, j] + bias[g, j])) for groups g = blockIdx.y of [rows, width]
// blocks: the Q/K/V projections ([3H, T, d], bias [3H, d]) and fc1 ([T, M], one group). VEC 4
// needs width % 4 == 0.
template <bool kGelu, int VEC>
__global__ void bias_act_half(const float* __restrict__ in, const float* __restrict__ bias, __half* __restrict__ out,
                              std::int64_t rows, int width, int tpr) {
  const RowThreads rt(tpr);
  const std::int64_t group = blockIdx.y;
  in += group * rows * width;
  out += group * rows * width;
  bias += group * width;
  for (std::int64_t r = blockIdx.x * static_cast<std::int64_t>(rt.rows_per_block) + rt.row0; r < rows;
       r += static_cast<std::int64_t>(gridDim.x) * rt.rows_per_block) {
    const float* ir = in + r * width;
    __half* orow = out + r * width;
    for (int v = rt.lane; v < width / VEC; v += tpr) {
      if constexpr (VEC == 4) {
        const float4 a = reinterpret_cast<const float4*>(ir)[v], b = reinterpret_cast<const float4*>(bias)[v];
        const __half2 lo = __halves2half2(__float2half_rn(activate<kGelu>(a.x + b.x)), __float2half_rn(activate<kGelu>(a.y + b.y)));
        const __half2 hi = __halves2half2(__float2half_rn(activate<kGelu>(a.z + b.z)), __float2half_rn(activate<kGelu>(a.w + b.w)));
        uint2 packed;
        packed.x = *reinterpret_cast<const unsigned*>(&lo);
        packed.y = *reinterpret_cast<const unsigned*>(&hi);
        reinterpret_cast<uint2*>(orow)[v] = packed;
      } else {
        orow[v] = __float2half_rn(activate<kGelu>(ir[v] + bias[v]));
      }
    }
  }
}

// cat[t, h * d + j] = o[h, t, j]: the attention output as rows for the output projection; head
// h = blockIdx.y. VEC 8 (16-byte copies) needs d % 8 == 0.
template <int VEC>
__global__ void heads_to_rows(const __half* __restrict__ o, __half* __restrict__ cat, int H, std::int64_t T, int d, int tpr) {
  const RowThreads rt(tpr);
  const std::int64_t h = blockIdx.y;
  for (std::int64_t t = blockIdx.x * static_cast<std::int64_t>(rt.rows_per_block) + rt.row0; t < T;
       t += static_cast<std::int64_t>(gridDim.x) * rt.rows_per_block) {
    const __half* src = o + (h * T + t) * d;
    __half* dst = cat + t * H * d + h * d;
    for (int v = rt.lane; v < d / VEC; v += tpr) {
      if constexpr (VEC == 8) reinterpret_cast<uint4*>(dst)[v] = reinterpret_cast<const uint4*>(src)[v];
      else dst[v] = src[v];
    }
  }
}

}  // namespace protattn::model::gpu
