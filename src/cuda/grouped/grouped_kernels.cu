// protattn grouped engine: the kernels around the two grouped GEMMs — operand pointer arrays,
// padded copies, the segmented softmax (stage 2) and the ordered reduction of P V (stage 3).
#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <string>

#include "cuda/common/cuda_check.hpp"
#include "cuda/grouped/grouped_gemm.hpp"
#include "cuda/grouped/grouped_params.hpp"

namespace protattn::grouped {
namespace {

constexpr int kWarps = 8;
constexpr int kThreads = kWarps * 32;
constexpr int kLanes = 32;
constexpr int kKeysPerLane = kTile / kLanes;  // 4: one float4 of scores per lane and block row
static_assert(kKeysPerLane == 4, "the softmax reads one float4 per lane and block row");
// The reduction gives each thread 4 columns of one row: dim / 4 threads per row must divide
// kThreads, and a tile must cover whole blocks (dim 64: 16 rows per block; 128: 8).
constexpr int kVecBytes = 16;                 // one uint4 / float4
constexpr float kLn2 = 0.693147180559945309f;
// The softmax gives each query row one warp: a query tile is spread over kSoftmaxParts blocks so
// that layouts with few query tiles still fill the GPU.
constexpr int kSoftmaxParts = kTile / kWarps;
// Windows mode (AlphaFold3-style), as in src/engine/mask.cpp: a block of 32 queries attends the
// 128 keys centred on it.
constexpr std::int32_t kWindowQueries = 32;
constexpr std::int32_t kWindowHalfKeys = 64;

// Whether query i attends key j of one structure (both positions within it), mask_allows()'s rule
// with the same float operations (round to nearest, no contraction). (xi, yi, zi): coords of i.
__device__ __forceinline__ bool allowed(const StructDesc& sd, const float* __restrict__ xyz, std::int32_t i,
                                        std::int32_t j, float xi, float yi, float zi) {
  if (j >= sd.n) return false;  // padding never attends (i < n is checked by the caller)
  if (sd.mask == kMaskTiles) return true;
  if (sd.mask == kMaskWindows) {
    const std::int32_t centre = (i / kWindowQueries) * kWindowQueries + kWindowQueries / 2;
    return j >= centre - kWindowHalfKeys && j < centre + kWindowHalfKeys;
  }
  if (i == j) return true;
  const float* b = xyz + 3 * static_cast<std::int64_t>(j);
  const float dx = __fsub_rn(xi, __ldg(b));
  const float dy = __fsub_rn(yi, __ldg(b + 1));
  const float dz = __fsub_rn(zi, __ldg(b + 2));
  const float d2 = __fadd_rn(__fadd_rn(__fmul_rn(dx, dx), __fmul_rn(dy, dy)), __fmul_rn(dz, dz));
  return d2 <= sd.cutoff2;
}

template <typename T>
struct Pack;
template <>
struct Pack<__half> {
  static __device__ __forceinline__ uint2 four(float a, float b, float c, float d) {
    const __half2 lo = __floats2half2_rn(a, b), hi = __floats2half2_rn(c, d);
    return make_uint2(*reinterpret_cast<const unsigned*>(&lo), *reinterpret_cast<const unsigned*>(&hi));
  }
};
template <>
struct Pack<__nv_bfloat16> {
  static __device__ __forceinline__ uint2 four(float a, float b, float c, float d) {
    const __nv_bfloat162 lo = __floats2bfloat162_rn(a, b), hi = __floats2bfloat162_rn(c, d);
    return make_uint2(*reinterpret_cast<const unsigned*>(&lo), *reinterpret_cast<const unsigned*>(&hi));
  }
};

__global__ void fill_pointers_kernel(Params p) {
  const std::int64_t count = p.heads * p.nnz;
  const bool padded = p.qp != nullptr;
  const std::int64_t head_rows = padded ? p.padded_rows : p.total_n;
  const std::int64_t row_bytes = static_cast<std::int64_t>(p.dim) * p.elem_bytes;
  const char* q = static_cast<const char*>(padded ? p.qp : p.q);
  const char* k = static_cast<const char*>(padded ? p.kp : p.k);
  const char* v = static_cast<const char*>(padded ? p.vp : p.v);
  for (std::int64_t idx = blockIdx.x * static_cast<std::int64_t>(blockDim.x) + threadIdx.x; idx < count;
       idx += static_cast<std::int64_t>(gridDim.x) * blockDim.x) {
    const std::int64_t h = idx / p.nnz, e = idx - h * p.nnz;
    const QueryTile qt = p.qtiles[p.block_qt[e]];
    const StructDesc sd = p.structs[qt.b];
    const std::int64_t base = h * head_rows + (padded ? sd.prow0 : sd.row0);
    const std::int64_t q_row = base + static_cast<std::int64_t>(qt.tile) * kTile;
    const std::int64_t k_row = base + static_cast<std::int64_t>(p.col_idx[e]) * kTile;
    p.qk_a[idx] = q + q_row * row_bytes;
    p.qk_b[idx] = k + k_row * row_bytes;
    p.pv_b[idx] = v + k_row * row_bytes;
  }
}

// Block (query tile, head): copies the tile's rows of Q, K and V into the padded buffers.
__global__ void __launch_bounds__(kThreads) pad_copy_kernel(Params p) {
  const QueryTile qt = p.qtiles[blockIdx.x];
  const StructDesc sd = p.structs[qt.b];
  const std::int64_t h = blockIdx.y;
  const std::int32_t first = qt.tile * kTile;
  const std::int32_t rows = min(kTile, sd.n - first);
  const std::int64_t row_bytes = static_cast<std::int64_t>(p.dim) * p.elem_bytes;
  const std::int64_t src = (h * p.total_n + sd.row0 + first) * row_bytes;
  const std::int64_t dst = (h * p.padded_rows + sd.prow0 + first) * row_bytes;
  const std::int64_t vecs = rows * row_bytes / kVecBytes;
  const void* from[3] = {p.q, p.k, p.v};
  void* to[3] = {p.qp, p.kp, p.vp};
#pragma unroll
  for (int t = 0; t < 3; ++t) {
    const uint4* s = reinterpret_cast<const uint4*>(static_cast<const char*>(from[t]) + src);
    uint4* d = reinterpret_cast<uint4*>(static_cast<char*>(to[t]) + dst);
    for (std::int64_t i = threadIdx.x; i < vecs; i += kThreads) d[i] = s[i];
  }
}

// Stage 2. Block (query tile part, head), one warp per query row: pass 1 keeps a running
// (max, sum) per lane over the row's kept tiles in order, then combines the lanes with a fixed
// butterfly (every lane ends with the same bits); pass 2 writes P = exp(s - max) / sum, 0 where
// masked. Scores are in log2 units (x = s * scale * log2 e). Rows >= n get P = 0 and no LSE.
template <typename T>
__global__ void __launch_bounds__(kThreads) softmax_kernel(Params p) {
  const QueryTile qt = p.qtiles[blockIdx.x / kSoftmaxParts];
  const StructDesc sd = p.structs[qt.b];
  const std::int64_t h = blockIdx.y;
  const int warp = threadIdx.x / kLanes, lane = threadIdx.x % kLanes;
  const float* xyz = p.coords ? p.coords + 3 * sd.row0 : nullptr;  // [n, 3] of this structure
  const int r = (blockIdx.x % kSoftmaxParts) * kWarps + warp;  // row within the query tile
  const std::int32_t i = qt.tile * kTile + r;  // query position within the structure
  const bool row_valid = i < sd.n;
  float xi = 0, yi = 0, zi = 0;
  if (row_valid && sd.mask == kMaskAtoms) {
    xi = xyz[3 * static_cast<std::int64_t>(i)];
    yi = xyz[3 * static_cast<std::int64_t>(i) + 1];
    zi = xyz[3 * static_cast<std::int64_t>(i) + 2];
  }
  float m = -INFINITY, l = 0.0f;
  if (row_valid) {
#pragma unroll 4
    for (std::int32_t e = qt.e_begin; e < qt.e_end; ++e) {
      const std::int32_t j0 = p.col_idx[e] * kTile + lane * kKeysPerLane;
      const float4 s4 = *reinterpret_cast<const float4*>(p.s + ((h * p.nnz + e) * kTile + r) * kTile + lane * kKeysPerLane);
      const float sv[kKeysPerLane] = {s4.x, s4.y, s4.z, s4.w};
#pragma unroll
      for (int t = 0; t < kKeysPerLane; ++t) {
        if (!allowed(sd, xyz, i, j0 + t, xi, yi, zi)) continue;
        const float x = sv[t] * p.scale_log2;
        if (x > m) {
          l = l * exp2f(m - x) + 1.0f;
          m = x;
        } else {
          l += exp2f(x - m);
        }
      }
    }
  }
#pragma unroll
  for (int off = kLanes / 2; off > 0; off /= 2) {
    const float mo = __shfl_xor_sync(0xffffffffu, m, off);
    const float lo = __shfl_xor_sync(0xffffffffu, l, off);
    const float mn = fmaxf(m, mo);
    const float a = m == -INFINITY ? 0.0f : l * exp2f(m - mn);
    const float b = mo == -INFINITY ? 0.0f : lo * exp2f(mo - mn);
    l = a + b;
    m = mn;
  }
  const float inv_l = l > 0.0f ? 1.0f / l : 0.0f;
  for (std::int32_t e = qt.e_begin; e < qt.e_end; ++e) {
    const std::int64_t at = ((h * p.nnz + e) * kTile + r) * kTile + lane * kKeysPerLane;
    float pv[kKeysPerLane] = {0.0f, 0.0f, 0.0f, 0.0f};
    if (row_valid) {
      const std::int32_t j0 = p.col_idx[e] * kTile + lane * kKeysPerLane;
      const float4 s4 = *reinterpret_cast<const float4*>(p.s + at);
      const float sv[kKeysPerLane] = {s4.x, s4.y, s4.z, s4.w};
#pragma unroll
      for (int t = 0; t < kKeysPerLane; ++t)
        if (allowed(sd, xyz, i, j0 + t, xi, yi, zi)) pv[t] = exp2f(sv[t] * p.scale_log2 - m) * inv_l;
    }
    *reinterpret_cast<uint2*>(static_cast<T*>(p.p) + at) = Pack<T>::four(pv[0], pv[1], pv[2], pv[3]);
  }
  if (lane == 0 && row_valid && p.lse)
    p.lse[h * p.total_n + sd.row0 + i] = m == -INFINITY ? -INFINITY : (m + log2f(l)) * kLn2;
}

// End of stage 3. Block (query tile part, head), one thread per 4 output columns of a row:
// O row = sum over the row's kept tiles, in key-tile order, of the fp32 P V partials; rows of a
// tile with no kept key tile get O = 0. A tile spans kTile / rows_per_block blocks.
template <typename T>
__global__ void __launch_bounds__(kThreads) reduce_kernel(Params p) {
  const int quads = p.dim / 4;
  const int rows_per_block = kThreads / quads;
  const int parts = kTile / rows_per_block;
  const QueryTile qt = p.qtiles[blockIdx.x / parts];
  const StructDesc sd = p.structs[qt.b];
  const std::int64_t h = blockIdx.y;
  const int r = (blockIdx.x % parts) * rows_per_block + threadIdx.x / quads;  // row within the tile
  const int c = threadIdx.x % quads;
  const std::int32_t i = qt.tile * kTile + r;
  if (i >= sd.n) return;
  float4 acc = make_float4(0.0f, 0.0f, 0.0f, 0.0f);
#pragma unroll 4
  for (std::int32_t e = qt.e_begin; e < qt.e_end; ++e) {
    const float4 v = *reinterpret_cast<const float4*>(p.opart + ((h * p.nnz + e) * kTile + r) * p.dim + 4 * c);
    acc.x += v.x;
    acc.y += v.y;
    acc.z += v.z;
    acc.w += v.w;
  }
  T* o = static_cast<T*>(p.o) + (h * p.total_n + sd.row0 + i) * p.dim + 4 * c;
  *reinterpret_cast<uint2*>(o) = Pack<T>::four(acc.x, acc.y, acc.z, acc.w);
}

template <typename F>
void by_dtype(DType dtype, F&& f) {
  switch (dtype) {
    case DType::f16: f.template operator()<__half>(); return;
    case DType::bf16: f.template operator()<__nv_bfloat16>(); return;
    default: throw Error(std::string("grouped engine: unsupported dtype ") + to_string(dtype) + " (fp16 or bf16)");
  }
}

dim3 tile_grid(const Params& p) { return dim3(static_cast<unsigned>(p.n_qtiles), static_cast<unsigned>(p.heads)); }

}  // namespace

void launch_fill_pointers(const Params& p, cudaStream_t stream) {
  const std::int64_t count = p.heads * p.nnz;
  if (count == 0) return;
  constexpr std::int64_t kMaxBlocks = 1 << 16;
  const auto blocks = static_cast<unsigned>(std::min<std::int64_t>(kMaxBlocks, (count + kThreads - 1) / kThreads));
  fill_pointers_kernel<<<blocks, kThreads, 0, stream>>>(p);
  PROTATTN_CUDA_CHECK_LAUNCH();
}

void launch_pad_copy(const Params& p, cudaStream_t stream) {
  if (p.n_qtiles == 0 || !p.qp) return;
  pad_copy_kernel<<<tile_grid(p), kThreads, 0, stream>>>(p);
  PROTATTN_CUDA_CHECK_LAUNCH();
}

#pragma nv_diag_suppress 445  // by_dtype's lambdas use their template parameter in the body only

void launch_softmax(const Params& p, DType dtype, cudaStream_t stream) {
  if (p.n_qtiles == 0) return;
  by_dtype(dtype, [&]<typename T>() {
    const dim3 grid(static_cast<unsigned>(p.n_qtiles) * kSoftmaxParts, static_cast<unsigned>(p.heads));
    softmax_kernel<T><<<grid, kThreads, 0, stream>>>(p);
    PROTATTN_CUDA_CHECK_LAUNCH();
  });
}

void launch_reduce(const Params& p, DType dtype, cudaStream_t stream) {
  if (p.n_qtiles == 0) return;
  by_dtype(dtype, [&]<typename T>() {
    const int parts = kTile * (p.dim / 4) / kThreads;
    const dim3 grid(static_cast<unsigned>(p.n_qtiles) * parts, static_cast<unsigned>(p.heads));
    reduce_kernel<T><<<grid, kThreads, 0, stream>>>(p);
    PROTATTN_CUDA_CHECK_LAUNCH();
  });
}

}  // namespace protattn::grouped
