// protattn fused engine: block-sparse flash attention on tensor cores (mma.sync m16n8k16).
//
// One block = one WorkItem: 128 query rows of one head against a list of kept 128-key tiles.
// 8 warps, each owning 16 query rows (on Hopper: two warpgroups of 64 rows). K/V tiles stream
// through a two-stage cp.async pipeline in 128-byte-swizzled shared memory; the online softmax
// keeps m and l in registers. FULL tiles run unmasked, PARTIAL tiles (and key tiles crossing the
// end of a structure) evaluate the mask per pair. Two tensor-core back ends share everything
// else: kWgmma (sm_90a: S = Q K^T from shared-memory descriptors, O += P V with P in registers)
// and mma.sync m16n8k16 (any sm_80+ GPU: Q in registers, K and V through ldmatrix).
#pragma once
#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <cstdint>
#include <type_traits>

#include "cuda/fused/fused_params.hpp"
#include "cuda/fused/wgmma.cuh"

namespace protattn::fused {

inline constexpr float kLog2e = 1.4426950408889634f;
inline constexpr float kLn2 = 0.6931471805599453f;

template <typename T>
struct ElemTraits;
template <>
struct ElemTraits<__half> {
  using Pair = __half2;
  static __device__ __forceinline__ std::uint32_t pack(float a, float b) {
    __half2 h = __floats2half2_rn(a, b);
    return *reinterpret_cast<std::uint32_t*>(&h);
  }
  static __device__ __forceinline__ void mma(float* c, const std::uint32_t (&a)[4], std::uint32_t b0,
                                             std::uint32_t b1) {
    asm volatile(
        "mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, "
        "{%0,%1,%2,%3};\n"
        : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
  }
};
template <>
struct ElemTraits<__nv_bfloat16> {
  using Pair = __nv_bfloat162;
  static __device__ __forceinline__ std::uint32_t pack(float a, float b) {
    __nv_bfloat162 h = __floats2bfloat162_rn(a, b);
    return *reinterpret_cast<std::uint32_t*>(&h);
  }
  static __device__ __forceinline__ void mma(float* c, const std::uint32_t (&a)[4], std::uint32_t b0,
                                             std::uint32_t b1) {
    asm volatile(
        "mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, "
        "{%0,%1,%2,%3};\n"
        : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
  }
};

__device__ __forceinline__ std::uint32_t smem_addr(const void* p) {
  return static_cast<std::uint32_t>(__cvta_generic_to_shared(p));
}

// 16-byte async copy; src_bytes 0 fills the destination with zeros (rows past the end).
__device__ __forceinline__ void cp_async_16(std::uint32_t dst, const void* src, int src_bytes) {
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(dst), "l"(src), "r"(src_bytes));
}
// 4-byte async copy (an atom's coordinate); src_bytes 0 writes zeros.
__device__ __forceinline__ void cp_async_4(std::uint32_t dst, const void* src, int src_bytes) {
  asm volatile("cp.async.ca.shared.global [%0], [%1], 4, %2;\n" ::"r"(dst), "l"(src), "r"(src_bytes) : "memory");
}
__device__ __forceinline__ void cp_async_commit() { asm volatile("cp.async.commit_group;\n" ::); }
template <int N>
__device__ __forceinline__ void cp_async_wait() { asm volatile("cp.async.wait_group %0;\n" ::"n"(N)); }

__device__ __forceinline__ void ldmatrix_x4(std::uint32_t (&r)[4], std::uint32_t addr) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0,%1,%2,%3}, [%4];\n"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
               : "r"(addr));
}
__device__ __forceinline__ void ldmatrix_x4_trans(std::uint32_t (&r)[4], std::uint32_t addr) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0,%1,%2,%3}, [%4];\n"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
               : "r"(addr));
}

// Columns of the shared-memory tiles for head dim D. Below 64 (d=32) a tile still has 64
// columns, the narrowest the 128-byte swizzle and the wgmma descriptors take: copies fill its
// first D (TMA fills the rest with zeros, cp.async leaves what the stage held), S = Q K^T runs
// over D / 16 k-steps only, and O's columns past D, computed from the rest of V's tile where a
// product is 64 wide, are never read.
template <int D>
inline constexpr int kTileCols = D < 64 ? 64 : D;

// Shared-memory tile of 128 rows x D elements of 2 bytes, stored as D/64 blocks of 128 rows x
// 128 bytes; within a block the 16-byte chunk index is XORed with (row & 7). This is the
// canonical 128-byte-swizzle layout of wgmma operands (K-major for Q and K, MN-major for V),
// and the 8 rows an ldmatrix phase reads land in 8 distinct bank groups.
template <int D>
struct SwizzledTile {
  static constexpr int kChunks = D / 8;          // 16-byte chunks per row
  static constexpr int kRowBytes = 128;          // one swizzle atom row
  static constexpr int kBlockBytes = kTile * kRowBytes;  // one 64-column block
  static constexpr int kBytes = kTile * D * 2;
  static __device__ __forceinline__ std::uint32_t offset(int row, int chunk) {
    return static_cast<std::uint32_t>((chunk / 8) * kBlockBytes + row * kRowBytes + ((chunk % 8) ^ (row & 7)) * 16);
  }
};

// Loads rows [row0, row0 + 128) of a [rows, D] matrix into a swizzled tile (kTileCols<D>
// columns) with kThr threads (tid in [0, kThr)); rows >= limit read as zeros (and are never read
// from global memory).
template <int D, int kThr = kThreads>
__device__ __forceinline__ void load_tile(std::uint32_t smem, const std::uint16_t* base, int row0, int limit,
                                          int tid) {
  using Tile = SwizzledTile<kTileCols<D>>;
  constexpr int kChunks = D / 8;  // 16-byte chunks of a row in global memory
  constexpr int kTotal = kTile * kChunks;
  static_assert(kTotal % kThr == 0, "whole chunks per thread");
#pragma unroll
  for (int i = 0; i < kTotal / kThr; ++i) {
    const int id = tid + i * kThr;
    const int row = id / kChunks, chunk = id % kChunks;
    const int grow = row0 + row;
    const bool in = grow < limit;
    const std::uint16_t* src = base + static_cast<std::int64_t>(in ? grow : 0) * D + chunk * 8;
    cp_async_16(smem + Tile::offset(row, chunk), src, in ? 16 : 0);
  }
}

struct QueryPos {
  int row;  // local row within the structure
  float x, y, z;
  float cut2;  // within_atoms' threshold: the structure's cutoff^2, -1 for a padding row
};

// Positions of a thread's two query rows (row0 and row0 + 8, local to the structure); the
// coordinates are read only for mask `atoms` and rows inside the structure.
__device__ __forceinline__ void query_positions(const Params& p, const StructDesc& sd, int row0, QueryPos (&qpos)[2]) {
#pragma unroll
  for (int r = 0; r < 2; ++r) {
    qpos[r].row = row0 + r * 8;
    qpos[r].x = qpos[r].y = qpos[r].z = 0.0f;
    qpos[r].cut2 = qpos[r].row < sd.n ? sd.cutoff2 : -1.0f;
    if (sd.mask == kMaskAtoms && qpos[r].row < sd.n) {
      const float* c = p.coords + (sd.offset + qpos[r].row) * 3;
      qpos[r].x = c[0];
      qpos[r].y = c[1];
      qpos[r].z = c[2];
    }
  }
}

// Mask `atoms` for key j at (kx, ky, kz): the rule of mask_allows(), with the same float
// arithmetic (no fused multiply-add).
__device__ __forceinline__ bool allowed_atoms(const StructDesc& sd, const QueryPos& qp, int j, float kx, float ky,
                                              float kz) {
  if (j >= sd.n || qp.row >= sd.n) return false;
  if (j == qp.row) return true;
  const float dx = __fsub_rn(qp.x, kx), dy = __fsub_rn(qp.y, ky), dz = __fsub_rn(qp.z, kz);
  const float d2 = __fadd_rn(__fadd_rn(__fmul_rn(dx, dx), __fmul_rn(dy, dy)), __fmul_rn(dz, dz));
  return d2 <= sd.cutoff2;
}

// The atoms rule, shortened for a key inside the structure: the row's cut2 is the structure's
// cutoff^2 for a query row inside it and -1 for a padding row (nothing passes). Key == query needs no
// test of its own: its d2 is 0, within any cutoff, for the finite coordinates a layout has.
// Ten instructions a pair instead of about fifteen: proteins make nearly every kept tile PARTIAL.
__device__ __forceinline__ bool within_atoms(const QueryPos& qp, float kx, float ky, float kz) {
  const float dx = __fsub_rn(qp.x, kx), dy = __fsub_rn(qp.y, ky), dz = __fsub_rn(qp.z, kz);
  const float d2 = __fadd_rn(__fadd_rn(__fmul_rn(dx, dx), __fmul_rn(dy, dy)), __fmul_rn(dz, dz));
  return d2 <= qp.cut2;
}

// The key, within its slice, of element i of a thread's scores in accumulator layout (t: the
// thread's lane within its quad): pairs of adjacent keys, the quad's four pairs every 8 keys.
__device__ __forceinline__ constexpr int acc_key(int i, int t) { return (i / 4) * 8 + 2 * t + (i & 1); }

// Mask `atoms` on a thread's slice of N scores in accumulator layout (element 4 nt + 2 r + c: row
// r of the thread's two, key key0 + acc_key(4 nt + c, t)), the 2N keys' coordinates at kxyz[0, 2N):
// the short test of within_atoms when every key of the slice is inside the structure, the full
// rule otherwise.
template <int N>
__device__ __forceinline__ void mask_atoms_slice(float (&s)[N], const StructDesc& sd, const QueryPos (&qpos)[2],
                                                 const float4* kxyz, int key0, int t) {
  if (key0 + 2 * N <= sd.n) {
#pragma unroll
    for (int nt = 0; nt < N / 4; ++nt) {
#pragma unroll
      for (int c = 0; c < 2; ++c) {
        const float4 kc = kxyz[acc_key(4 * nt + c, t)];
#pragma unroll
        for (int r = 0; r < 2; ++r)
          if (!within_atoms(qpos[r], kc.x, kc.y, kc.z)) s[4 * nt + 2 * r + c] = -INFINITY;
      }
    }
  } else {
#pragma unroll
    for (int nt = 0; nt < N / 4; ++nt) {
#pragma unroll
      for (int c = 0; c < 2; ++c) {
        const int jl = acc_key(4 * nt + c, t);
        const float4 kc = kxyz[jl];
#pragma unroll
        for (int r = 0; r < 2; ++r)
          if (!allowed_atoms(sd, qpos[r], key0 + jl, kc.x, kc.y, kc.z)) s[4 * nt + 2 * r + c] = -INFINITY;
      }
    }
  }
}

// Mask `tiles` on a thread's slice of N scores in accumulator layout (element i: key
// acc_key(i, t) of the slice): -inf for the keys past the structure's end, those
// at or after `keys_in`, the keys of the slice inside it (a suffix: allowed() for this mode, one
// comparison a score).
template <int N>
__device__ __forceinline__ void mask_keys_past_end(float (&s)[N], int keys_in, int t) {
#pragma unroll
  for (int i = 0; i < N; ++i)
    if (acc_key(i, t) >= keys_in) s[i] = -INFINITY;
}

// The mask rule of mask_allows() for any mode, key coordinates read from `coords`, for the rows
// inside the structure. A padding row of a structure's last query tile (its Q zero, its output
// never written) takes every key inside the structure, so that its scores stay finite: with all
// of them masked its max stayed -inf, and its warp lost the lazy max on every tile of that row
// (a one-head structure whose size is not a multiple of 128 ran 1.4-1.6x longer).
__device__ __forceinline__ bool allowed(const StructDesc& sd, const float* coords, const QueryPos& qp, int j) {
  if (j >= sd.n) return false;
  if (qp.row >= sd.n || sd.mask == kMaskTiles) return true;
  if (sd.mask == kMaskWindows) {
    const int centre = (qp.row / 32) * 32 + 16;
    return j >= centre - 64 && j < centre + 64;
  }
  const float* c = coords + (sd.offset + j) * 3;
  return allowed_atoms(sd, qp, j, c[0], c[1], c[2]);
}

// Programmatic dependent launch (sm_90+; no-ops elsewhere): the attention kernels let the combine
// kernel that follows be scheduled at once, and the combine kernel waits for them to have
// finished and their writes to be visible before it reads the partials. Its launch latency then
// overlaps the attention.
__device__ __forceinline__ void allow_dependent_launch() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  asm volatile("griddepcontrol.launch_dependents;\n" ::: "memory");
#endif
}
__device__ __forceinline__ void wait_for_prerequisite_grid() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  asm volatile("griddepcontrol.wait;\n" ::: "memory");
#endif
}

// 2^x on the special-function unit (flush-to-zero; 2^-inf = 0).
__device__ __forceinline__ float fast_exp2(float x) {
  float y;
  asm("ex2.approx.ftz.f32 %0, %1;\n" : "=f"(y) : "f"(x));
  return y;
}

// Masks a 16 x 64 slice of raw scores (the mma.sync back end; the wgmma one inlines the
// same steps, which keeps its registers from spilling).
template <int N>
__device__ __forceinline__ void mask_scores(float (&s)[N], const StructDesc& sd, const float* coords,
                                            const QueryPos (&qpos)[2], int key0, int t) {
#pragma unroll
  for (int i = 0; i < N; ++i)
    if (!allowed(sd, coords, qpos[(i % 4) / 2], key0 + acc_key(i, t))) s[i] = -INFINITY;
}

// Online softmax over one slice of raw scores: updates the running max m (log2 domain) and
// this thread's share of the sum l of its two rows, turns s into probabilities, and returns the
// factors alpha by which the earlier O must be scaled.
template <int N>
__device__ __forceinline__ void online_softmax(float (&s)[N], float scale_log2, float (&m_row)[2], float (&l_row)[2],
                                               float (&alpha)[2]) {
#pragma unroll
  for (int r = 0; r < 2; ++r) {
    float mx = -INFINITY;
#pragma unroll
    for (int nt = 0; nt < N / 4; ++nt) mx = fmaxf(mx, fmaxf(s[4 * nt + 2 * r], s[4 * nt + 2 * r + 1]));
    mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, 1));
    mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, 2));
    const float m_new = fmaxf(m_row[r], mx * scale_log2);
    const float base = m_new == -INFINITY ? 0.0f : m_new;  // no key yet: keep exp2 finite
    alpha[r] = fast_exp2(m_row[r] - base);
    m_row[r] = m_new;
    float sum = 0.0f;
#pragma unroll
    for (int nt = 0; nt < N / 4; ++nt) {
      s[4 * nt + 2 * r] = fast_exp2(fmaf(s[4 * nt + 2 * r], scale_log2, -base));
      s[4 * nt + 2 * r + 1] = fast_exp2(fmaf(s[4 * nt + 2 * r + 1], scale_log2, -base));
      sum += s[4 * nt + 2 * r] + s[4 * nt + 2 * r + 1];
    }
    l_row[r] = l_row[r] * alpha[r] + sum;
  }
}

// P (a 16 x 64 slice of probabilities in accumulator layout) as four k16 A fragments.
template <typename T, int N>
__device__ __forceinline__ void pack_p(const float (&s)[N], std::uint32_t (&a)[N / 8][4]) {
#pragma unroll
  for (int kk = 0; kk < N / 8; ++kk) {
#pragma unroll
    for (int j = 0; j < 4; ++j) a[kk][j] = ElemTraits<T>::pack(s[8 * kk + 2 * j], s[8 * kk + 2 * j + 1]);
  }
}

// S of one warp's 16 query rows against N keys, on mma.sync from the swizzled Q and K tiles in
// shared memory (rows q_row0 .. + 16 of the Q tile, keys key0 .. + N of the K tile), in the
// accumulator layout of wgmma and mma.sync alike (element i: row g + 8 * ((i % 4) / 2), key
// 8 * (i / 4) + 2 * t + (i % 2)). Warp-local: the lazy max's way back to the max-first path,
// taken by one warp alone where a wgmma would need its whole warpgroup.
// A warp's A fragment of Q for k-step ks (rows q_row0 .. + 16 of the swizzled Q tile), the
// mma.sync layout: what warp_scores, the mma.sync kernel and the ws kernel's Q registers load.
template <int D>
__device__ __forceinline__ void load_q_fragment(std::uint32_t (&a)[4], std::uint32_t s_q, int q_row0, int ks, int lane) {
  using Tile = SwizzledTile<kTileCols<D>>;
  ldmatrix_x4(a, s_q + Tile::offset(q_row0 + (lane % 8) + ((lane / 8) % 2) * 8, ks * 2 + lane / 16));
}
// One k-step of it: the warp's A fragment `a` of Q (k-step ks) against the N keys.
template <typename T, int D, int N>
__device__ __forceinline__ void warp_scores_step(float (&s)[N / 2], const std::uint32_t (&a)[4], std::uint32_t s_k, int key0,
                                                 int ks, int lane) {
  using Tile = SwizzledTile<kTileCols<D>>;
#pragma unroll
  for (int np = 0; np < N / 16; ++np) {
    std::uint32_t b[4];
    ldmatrix_x4(b, s_k + Tile::offset(key0 + np * 16 + (lane % 8) + (lane / 16) * 8, ks * 2 + (lane / 8) % 2));
    ElemTraits<T>::mma(&s[8 * np], a, b[0], b[1]);
    ElemTraits<T>::mma(&s[8 * np + 4], a, b[2], b[3]);
  }
}
template <typename T, int D, int N>
__device__ __forceinline__ void warp_scores(float (&s)[N / 2], std::uint32_t s_q, std::uint32_t s_k, int q_row0, int key0,
                                            int lane) {
#pragma unroll
  for (int i = 0; i < N / 2; ++i) s[i] = 0.0f;
#pragma unroll
  for (int ks = 0; ks < D / 16; ++ks) {
    std::uint32_t a[4];
    load_q_fragment<D>(a, s_q, q_row0, ks, lane);
    warp_scores_step<T, D, N>(s, a, s_k, key0, ks, lane);
  }
}
// warp_scores with the warp's fragments of Q already in registers (q[ks]: what warp_scores loads
// for k-step ks), so that Q's tile in shared memory is not needed.
template <typename T, int D, int N>
__device__ __forceinline__ void warp_scores_rq(float (&s)[N / 2], const std::uint32_t (&q)[D / 16][4], std::uint32_t s_k,
                                               int key0, int lane) {
#pragma unroll
  for (int i = 0; i < N / 2; ++i) s[i] = 0.0f;
#pragma unroll
  for (int ks = 0; ks < D / 16; ++ks) warp_scores_step<T, D, N>(s, q[ks], s_k, key0, ks, lane);
}

// Finishes a warp's 16 rows (local rows lrow0 and lrow0 + 8 of the query tile for this thread,
// accumulator layout of mma.sync / wgmma): full row sums across the quad, then O / l and the
// LSE, or the unnormalised partial (O, m, l) of a split piece for the combine kernel. O's D
// columns are the first D / 2 accumulators (the layout of m64nDk16, or of D / 8 mma.sync n8 tiles).
template <typename T, int D>
__device__ __forceinline__ void finish_rows(const Params& p, const WorkItem& item, const StructDesc& sd,
                                            std::int64_t head_off, const float (&o_acc)[D / 2], const float (&m_row)[2],
                                            float (&l_row)[2], int lrow0, int t) {
  using E = ElemTraits<T>;
#pragma unroll
  for (int r = 0; r < 2; ++r) {
    l_row[r] += __shfl_xor_sync(0xffffffffu, l_row[r], 1);
    l_row[r] += __shfl_xor_sync(0xffffffffu, l_row[r], 2);
  }
  if (item.slot < 0) {
    auto* og = static_cast<T*>(p.o) + head_off;
#pragma unroll
    for (int r = 0; r < 2; ++r) {
      const int row = item.q_tile * kTile + lrow0 + r * 8;
      if (row >= sd.n) continue;
      const float inv = l_row[r] > 0.0f ? 1.0f / l_row[r] : 0.0f;
#pragma unroll
      for (int dn = 0; dn < D / 8; ++dn) {
        const std::uint32_t packed = E::pack(o_acc[4 * dn + 2 * r] * inv, o_acc[4 * dn + 2 * r + 1] * inv);
        *reinterpret_cast<std::uint32_t*>(og + static_cast<std::int64_t>(row) * D + dn * 8 + 2 * t) = packed;
      }
      if (p.lse && t == 0) {
        p.lse[static_cast<std::int64_t>(item.h) * p.total_n + sd.offset + row] =
            l_row[r] > 0.0f ? (m_row[r] + log2f(l_row[r])) * kLn2 : -INFINITY;
      }
    }
  } else {
    float* po = p.part_o + static_cast<std::int64_t>(item.slot) * kTile * D;
    float* pml = p.part_ml + static_cast<std::int64_t>(item.slot) * kTile * 2;
#pragma unroll
    for (int r = 0; r < 2; ++r) {
      const int lrow = lrow0 + r * 8;
#pragma unroll
      for (int dn = 0; dn < D / 8; ++dn) {
        *reinterpret_cast<float2*>(po + lrow * D + dn * 8 + 2 * t) =
            make_float2(o_acc[4 * dn + 2 * r], o_acc[4 * dn + 2 * r + 1]);
      }
      if (t == 0) {
        pml[2 * lrow] = m_row[r];
        pml[2 * lrow + 1] = l_row[r];
      }
    }
  }
}

template <typename T, int D>
struct FusedKernel {
  static constexpr int kQBytes = SwizzledTile<kTileCols<D>>::kBytes;
  static constexpr int kStageBytes = 2 * SwizzledTile<kTileCols<D>>::kBytes;  // K and V
  static constexpr int kSmemBytes = kQBytes + 2 * kStageBytes;  // the mma.sync back end
  // The wgmma back end adds, for mask `atoms`, the key tile's coordinates (one float4 per key) in
  // two stages like K and V, read from shared memory instead of global memory per score.
  static constexpr int kKeyXyzBytes = kTile * static_cast<int>(sizeof(float4));
  static constexpr int kSmemBytesWgmma = kSmemBytes + 2 * kKeyXyzBytes;
  static constexpr int kMinBlocks = D <= 64 ? 2 : 1;
  static constexpr int kKSteps = D / 16;          // k16 steps of Q K^T
  // O accumulators per thread (16 x D per warp): P V spans V's D columns, at d=32 half of its
  // 64-column tile (m64n32 on the tensor cores, 4 n8 tiles on mma.sync).
  static constexpr int kOAcc = D / 2;
  static constexpr int kSAcc = kKeyChunk / 2;     // S accumulators per thread (16 x 64 per warp)
  // The shared-memory tiles are 128-byte rows of 64 columns (kTileCols).
  static_assert(D == 32 || D == 64 || D == 128, "head dim 32, 64 or 128");
};

// The sm_90a wgmma back end exists only where the compiler targets sm_90a.
#if defined(__CUDA_ARCH__) && defined(__CUDA_ARCH_FEAT_SM90_ALL)
#define PROTATTN_WGMMA_ARCH 1
#else
#define PROTATTN_WGMMA_ARCH 0
#endif

// S (+)= Q K^T for N = 64 or 128 keys (wgmma m64nNk16, both operands in shared memory).
template <typename T, int N = 64>
__device__ __forceinline__ void wgmma_qk(float (&d)[N / 2], std::uint64_t a, std::uint64_t b, int scale_d) {
#if PROTATTN_WGMMA_ARCH
  static_assert(N == 64 || N == 128, "64 or 128 keys");
  if constexpr (N == 64 && std::is_same_v<T, __half>) sm90::ss_m64n64k16_f16(d, a, b, scale_d);
  else if constexpr (N == 64) sm90::ss_m64n64k16_bf16(d, a, b, scale_d);
  else if constexpr (std::is_same_v<T, __half>) sm90::ss_m64n128k16_f16(d, a, b, scale_d);
  else sm90::ss_m64n128k16_bf16(d, a, b, scale_d);
#endif
}
// S (+)= Q K^T for 128 keys with Q's fragment in registers (the mma.sync A layout: warp w of the
// warpgroup holds rows 16w .. 16w + 15) and K in shared memory.
template <typename T>
__device__ __forceinline__ void wgmma_qk_rs(float (&d)[64], const std::uint32_t (&a)[4], std::uint64_t b, int scale_d) {
#if PROTATTN_WGMMA_ARCH
  if constexpr (std::is_same_v<T, __half>) sm90::rs_kmajor_m64n128k16_f16(d, a, b, scale_d);
  else sm90::rs_kmajor_m64n128k16_bf16(d, a, b, scale_d);
#endif
}
// O += P V with V's D columns and 8 more (the ws kernel's row sums: ones; D = 64, or 32); fp16.
template <typename T, int D>
__device__ __forceinline__ void wgmma_pv_sums(float (&d)[D / 2 + 4], const std::uint32_t (&a)[4], std::uint64_t b) {
  static_assert(std::is_same_v<T, __half>, "the row sums by the tensor core are fp16 only");
  static_assert(D == 64 || D == 32, "m64n72 or m64n40");
#if PROTATTN_WGMMA_ARCH
  if constexpr (D == 64) sm90::rs_m64n72k16_f16(d, a, b);
  else sm90::rs_m64n40k16_f16(d, a, b);
#endif
}
template <typename T, int D>
__device__ __forceinline__ void wgmma_pv(float (&d)[D / 2], const std::uint32_t (&a)[4], std::uint64_t b) {
#if PROTATTN_WGMMA_ARCH
  if constexpr (D == 32) {
    if constexpr (std::is_same_v<T, __half>) sm90::rs_m64n32k16_f16(d, a, b);
    else sm90::rs_m64n32k16_bf16(d, a, b);
  } else if constexpr (D == 64) {
    if constexpr (std::is_same_v<T, __half>) sm90::rs_m64n64k16_f16(d, a, b);
    else sm90::rs_m64n64k16_bf16(d, a, b);
  } else if constexpr (D == 128) {
    if constexpr (std::is_same_v<T, __half>) sm90::rs_m64n128k16_f16(d, a, b);
    else sm90::rs_m64n128k16_bf16(d, a, b);
  }
#endif
}

template <typename T, int D, bool kWgmma>
__global__ void __launch_bounds__(kThreads, FusedKernel<T, D>::kMinBlocks) fused_attention_kernel(const Params p) {
  using K_ = FusedKernel<T, D>;
  using Tile = SwizzledTile<kTileCols<D>>;
  using E = ElemTraits<T>;
#if !PROTATTN_WGMMA_ARCH
  if constexpr (kWgmma) {
    __trap();  // never launched: the host picks this back end on sm_90 only
  } else
#endif
  {
  allow_dependent_launch();
  extern __shared__ __align__(1024) unsigned char smem[];
  const std::uint32_t s_q = smem_addr(smem);
  const std::uint32_t s_stage0 = s_q + K_::kQBytes;

  const int tid = threadIdx.x, warp = tid / 32, lane = tid % 32;
  const int g = lane / 4, t = lane % 4;
  const int wg_row = (warp / 4) * 64;  // first row of this warp's warpgroup (wgmma back end)
  const WorkItem item = p.items[blockIdx.x];
  const StructDesc sd = item.sd;
  const int row0 = item.q_tile * kTile;
  const std::int64_t head_off = static_cast<std::int64_t>(item.h) * p.head_stride + sd.offset * D;
  const auto* qg = static_cast<const std::uint16_t*>(p.q) + head_off;
  const auto* kg = static_cast<const std::uint16_t*>(p.k) + head_off;
  const auto* vg = static_cast<const std::uint16_t*>(p.v) + head_off;

  // Query positions of this thread's two rows (g and g + 8 of the warp's 16).
  QueryPos qpos[2];
  query_positions(p, sd, row0 + warp * 16 + g, qpos);

  // Key coordinates of a tile into stage `stage` (mask `atoms`, wgmma back end): key `tid`'s x, y
  // and z into a float4 slot (the fourth float is never read) by cp.async, in the tile's commit
  // group, so they land with its K and V (plain loads held every thread that stores them, and with
  // it the block at the barrier, for a memory round trip per tile).
  auto* key_xyz = reinterpret_cast<float4*>(smem + K_::kQBytes + 2 * K_::kStageBytes);
  const bool atoms_mask = kWgmma && sd.mask == kMaskAtoms;
  const auto load_key_xyz = [&](int stage, int kt) {
    if (!atoms_mask || tid >= kTile) return;
    const int j = kt * kTile + tid;
    const bool in = j < sd.n;
    const float* c = p.coords + (sd.offset + (in ? j : 0)) * 3;
    const std::uint32_t dst = smem_addr(key_xyz + stage * kTile + tid);
#pragma unroll
    for (int k = 0; k < 3; ++k) cp_async_4(dst + 4 * k, c + k, in ? 4 : 0);
  };

  const int n_kv = item.e_end - item.e_begin;
  load_tile<D>(s_q, qg, row0, sd.n, tid);
  if (n_kv > 0) {
    const int kt = item.first_col;
    load_tile<D>(s_stage0, kg, kt * kTile, sd.n, tid);
    load_tile<D>(s_stage0 + Tile::kBytes, vg, kt * kTile, sd.n, tid);
    load_key_xyz(0, kt);
  }
  cp_async_commit();

  // Accumulator element i of a 16-row slice: row g + 8 * ((i % 4) / 2), column
  // 8 * (i / 4) + 2 * t + (i % 2) (the mma.sync C layout and the wgmma one per warp alike).
  float o_acc[K_::kOAcc];
#pragma unroll
  for (int i = 0; i < K_::kOAcc; ++i) o_acc[i] = 0.0f;
  float m_row[2] = {-INFINITY, -INFINITY};  // running max of scaled scores (log2 domain)
  float l_row[2] = {0.0f, 0.0f};            // this thread's share of the running sum
  std::uint32_t q_frag[kWgmma ? 1 : K_::kKSteps][4];

  for (int it = 0; it < n_kv; ++it) {
    const int e = item.e_begin + it;
    if (it + 1 < n_kv) {
      const int kt_next = p.col_idx[e + 1];
      const std::uint32_t st = s_stage0 + ((it + 1) & 1) * K_::kStageBytes;
      load_tile<D>(st, kg, kt_next * kTile, sd.n, tid);
      load_tile<D>(st + Tile::kBytes, vg, kt_next * kTile, sd.n, tid);
      load_key_xyz((it + 1) & 1, kt_next);  // that stage was last read before the loop's end barrier
    }
    cp_async_commit();
    cp_async_wait<1>();
    if constexpr (kWgmma) sm90::fence_proxy_async();
    __syncthreads();

    if constexpr (!kWgmma) {
      if (it == 0) {
#pragma unroll
        for (int ks = 0; ks < K_::kKSteps; ++ks) load_q_fragment<D>(q_frag[ks], s_q, warp * 16, ks, lane);
      }
    }

    const int kt = p.col_idx[e];
    // (The out-of-reach bits of Params::kind are the ws kernel's: here they cost W1, which this
    // kernel runs, 9% at run time; bench/results/2026-11-30-h200-e541354.)
    // Masked: PARTIAL, or keys past the structure's end. A query tile past the end needs no mask
    // of its own (its padding rows are never written; allowed() keeps their scores finite).
    const bool masked = (p.kind[e] & kKindPartial) != 0 || (kt + 1) * kTile > sd.n;
    const std::uint32_t s_k = s_stage0 + (it & 1) * K_::kStageBytes;
    const std::uint32_t s_v = s_k + Tile::kBytes;

    if constexpr (kWgmma) {
      // One 64-key half at a time: S on the tensor cores, softmax, then P V. (Issuing both
      // halves first to overlap softmax with the tensor cores needs a second S buffer, which
      // spills at two blocks per multiprocessor and measured slower.)
#pragma unroll
      for (int half = 0; half < kTile / kKeyChunk; ++half) {
        float s_acc[K_::kSAcc];
        const std::uint64_t da0 = sm90::smem_desc(s_q + wg_row * Tile::kRowBytes, 16, 1024);
        const std::uint64_t db0 = sm90::smem_desc(s_k + half * kKeyChunk * Tile::kRowBytes, 16, 1024);
        sm90::fence();
#pragma unroll
        for (int ks = 0; ks < K_::kKSteps; ++ks) {
          const std::uint32_t k_off = (ks / 4) * Tile::kBlockBytes + (ks % 4) * 32;
          wgmma_qk<T>(s_acc, sm90::desc_advance(da0, k_off), sm90::desc_advance(db0, k_off), ks > 0);
        }
        sm90::commit();
        sm90::wait<0>();
        // Mask on the raw scores; the max is taken raw (the scale is positive) and the scale
        // folds into one FFMA before each exp2.
        const auto mask = [&] {
          if (masked && atoms_mask) {
            mask_atoms_slice(s_acc, sd, qpos, key_xyz + (it & 1) * kTile + half * kKeyChunk,
                             kt * kTile + half * kKeyChunk, t);
          } else if (masked && sd.mask == kMaskTiles) {
            mask_keys_past_end(s_acc, sd.n - (kt * kTile + half * kKeyChunk), t);
          } else if (masked) {
#pragma unroll
            for (int i = 0; i < K_::kSAcc; ++i) {
              const int j = kt * kTile + half * kKeyChunk + acc_key(i, t);
              if (!allowed(sd, p.coords, qpos[(i % 4) / 2], j)) s_acc[i] = -INFINITY;
            }
          }
        };
        mask();
        // Row r's scores become exp2(score * scale_log2 - base); returns this thread's share of their sum.
        const auto exp_row = [&](int r, float base) {
          float sum = 0.0f;
#pragma unroll
          for (int nt = 0; nt < K_::kSAcc / 4; ++nt) {
            s_acc[4 * nt + 2 * r] = fast_exp2(fmaf(s_acc[4 * nt + 2 * r], p.scale_log2, -base));
            s_acc[4 * nt + 2 * r + 1] = fast_exp2(fmaf(s_acc[4 * nt + 2 * r + 1], p.scale_log2, -base));
            sum += s_acc[4 * nt + 2 * r] + s_acc[4 * nt + 2 * r + 1];
          }
          return sum;
        };
        // The lazy max of the ws kernel (fused_params.hpp: kLazyMaxShare; not under mask atoms,
        // as there): with a base in every row of the warp, exponentiate against it at once and
        // keep the result when no thread's share of a row's sum exceeds kLazyMaxShare; else the
        // warp's S again (warp_scores) and the max first.
        bool exact = true;
        if (p.lazy_max && !atoms_mask && __all_sync(0xffffffffu, m_row[0] != -INFINITY && m_row[1] != -INFINITY)) {
          float share[2];
#pragma unroll
          for (int r = 0; r < 2; ++r) share[r] = exp_row(r, m_row[r]);
          if (__all_sync(0xffffffffu, share[0] <= kLazyMaxShare && share[1] <= kLazyMaxShare)) {
            l_row[0] += share[0];
            l_row[1] += share[1];
            exact = false;
          } else {
            warp_scores<T, D, kKeyChunk>(s_acc, s_q, s_k, wg_row + (warp % 4) * 16, half * kKeyChunk, lane);
            mask();
          }
        }
        float alpha[2] = {1.0f, 1.0f};
        if (exact) {
#pragma unroll
          for (int r = 0; r < 2; ++r) {
            float mx = -INFINITY;
#pragma unroll
            for (int nt = 0; nt < K_::kSAcc / 4; ++nt) mx = fmaxf(mx, fmaxf(s_acc[4 * nt + 2 * r], s_acc[4 * nt + 2 * r + 1]));
            mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, 1));
            mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, 2));
            const float m_new = fmaxf(m_row[r], mx * p.scale_log2);  // log2 domain
            const float base = m_new == -INFINITY ? 0.0f : m_new;    // no key yet: keep exp2 finite
            alpha[r] = fast_exp2(m_row[r] - base);
            m_row[r] = m_new;
            l_row[r] = l_row[r] * alpha[r] + exp_row(r, base);
          }
#pragma unroll
          for (int i = 0; i < K_::kOAcc; ++i) o_acc[i] *= alpha[(i % 4) / 2];
        }
        // V rows (keys) half*64 + kk*16 .. +16, MN-major: 8-key groups 1024 B apart, 64-column
        // blocks kBlockBytes apart.
        const std::uint64_t dv0 = sm90::smem_desc(s_v + half * kKeyChunk * Tile::kRowBytes, Tile::kBlockBytes, 1024);
        sm90::fence();
#pragma unroll
        for (int kk = 0; kk < kKeyChunk / 16; ++kk) {
          std::uint32_t a[4];
#pragma unroll
          for (int j = 0; j < 4; ++j) a[j] = E::pack(s_acc[8 * kk + 2 * j], s_acc[8 * kk + 2 * j + 1]);
          wgmma_pv<T, D>(o_acc, a, sm90::desc_advance(dv0, kk * 16 * Tile::kRowBytes));
        }
        sm90::commit();
        sm90::wait<0>();
      }
    } else {
#pragma unroll
      for (int half = 0; half < kTile / kKeyChunk; ++half) {
        float s_acc[K_::kSAcc];
#pragma unroll
        for (int i = 0; i < K_::kSAcc; ++i) s_acc[i] = 0.0f;
#pragma unroll
        for (int ks = 0; ks < K_::kKSteps; ++ks) {
#pragma unroll
          for (int np = 0; np < kKeyChunk / 16; ++np) {
            std::uint32_t b[4];
            const int key = half * kKeyChunk + np * 16 + (lane % 8) + (lane / 16) * 8;
            const int chunk = ks * 2 + (lane / 8) % 2;
            ldmatrix_x4(b, s_k + Tile::offset(key, chunk));
            E::mma(&s_acc[8 * np], q_frag[ks], b[0], b[1]);
            E::mma(&s_acc[8 * np + 4], q_frag[ks], b[2], b[3]);
          }
        }
        if (masked) mask_scores(s_acc, sd, p.coords, qpos, kt * kTile + half * kKeyChunk, t);
        float alpha[2];
        online_softmax(s_acc, p.scale_log2, m_row, l_row, alpha);
        std::uint32_t a[kKeyChunk / 16][4];
        pack_p<T>(s_acc, a);
#pragma unroll
        for (int i = 0; i < K_::kOAcc; ++i) o_acc[i] *= alpha[(i % 4) / 2];
#pragma unroll
        for (int kk = 0; kk < kKeyChunk / 16; ++kk) {
#pragma unroll
          for (int dp = 0; dp < D / 16; ++dp) {
            std::uint32_t b[4];
            const int key = half * kKeyChunk + kk * 16 + (lane % 8) + ((lane / 8) % 2) * 8;
            const int chunk = dp * 2 + lane / 16;
            ldmatrix_x4_trans(b, s_v + Tile::offset(key, chunk));
            E::mma(&o_acc[8 * dp], a[kk], b[0], b[1]);
            E::mma(&o_acc[8 * dp + 4], a[kk], b[2], b[3]);
          }
        }
      }
    }
    __syncthreads();  // the stage is refilled by the next iteration's prefetch
  }

  finish_rows<T, D>(p, item, sd, head_off, o_acc, m_row, l_row, warp * 16 + g, t);
  }
}

// Rows of a split query tile one combine block handles.
inline constexpr int kCombineRows = 16;

// Combines the partial results of a split query tile in slot order (deterministic).
// Block (x = CombineItem, y = group of kCombineRows rows); thread = (row, 4-wide column group).
template <typename T, int D>
__global__ void __launch_bounds__(kCombineRows * D / 4) fused_combine_kernel(const Params p) {
  constexpr int kQuads = D / 4;
  // The plan's items and structures were uploaded before the attention kernel ran: they are read,
  // and the addresses made, while it still runs; only the partials wait for it.
  const CombineItem ci = p.combines[blockIdx.x];
  const StructDesc sd = ci.sd;
  const int lrow = blockIdx.y * kCombineRows + threadIdx.x / kQuads, dq = threadIdx.x % kQuads;
  const int row = ci.q_tile * kTile + lrow;
  if (row >= sd.n) return;
  const float* ml = p.part_ml + (static_cast<std::int64_t>(ci.slot_begin) * kTile + lrow) * 2;
  const float4* po = reinterpret_cast<const float4*>(p.part_o + (static_cast<std::int64_t>(ci.slot_begin) * kTile + lrow) * D) + dq;
  constexpr std::int64_t kSlotMl = kTile * 2, kSlotO = kTile * D / 4;
  wait_for_prerequisite_grid();
  float mx = -INFINITY;
#pragma unroll 8
  for (int s = 0; s < ci.n_slots; ++s) mx = fmaxf(mx, ml[s * kSlotMl]);
  const float base = mx == -INFINITY ? 0.0f : mx;
  float4 acc = make_float4(0.0f, 0.0f, 0.0f, 0.0f);
  float l = 0.0f;
#pragma unroll 8
  for (int s = 0; s < ci.n_slots; ++s) {
    const float w = fast_exp2(ml[s * kSlotMl] - base);
    l += w * ml[s * kSlotMl + 1];
    const float4 x = po[s * kSlotO];
    acc.x += w * x.x;
    acc.y += w * x.y;
    acc.z += w * x.z;
    acc.w += w * x.w;
  }
  const float inv = l > 0.0f ? 1.0f / l : 0.0f;
  const std::int64_t head_off = static_cast<std::int64_t>(ci.h) * p.head_stride + sd.offset * D;
  T* og = static_cast<T*>(p.o) + head_off + static_cast<std::int64_t>(row) * D + dq * 4;
  reinterpret_cast<std::uint32_t*>(og)[0] = ElemTraits<T>::pack(acc.x * inv, acc.y * inv);
  reinterpret_cast<std::uint32_t*>(og)[1] = ElemTraits<T>::pack(acc.z * inv, acc.w * inv);
  if (p.lse && dq == 0)
    p.lse[static_cast<std::int64_t>(ci.h) * p.total_n + sd.offset + row] = l > 0.0f ? (mx + log2f(l)) * kLn2 : -INFINITY;
}

}  // namespace protattn::fused
