// protattn grouped engine: the flat parameter block of the non-GEMM kernels (pointer fill,
// padded copies, segmented softmax, ordered reduction), built once per plan.
#pragma once
#include <cuda_runtime.h>

#include <cstdint>

#include "protattn/engine.hpp"

namespace protattn::grouped {

// Mask rule of a structure, as mask_allows() defines it.
enum MaskCode : std::int32_t { kMaskTiles = 0, kMaskAtoms = 1, kMaskWindows = 2 };

struct StructDesc {
  std::int64_t row0;   // first row of the structure in the packed atom axis (inputs, O, LSE)
  std::int64_t prow0;  // first row in the tile-padded copies of Q, K, V
  std::int32_t n;      // atoms
  std::int32_t mask;   // MaskCode
  float cutoff2;       // cutoff * cutoff (mask atoms), rounded to float
  std::int32_t pad;
};

// One query tile of the batch and its kept key tiles [e_begin, e_end) of the packed col_idx.
struct QueryTile {
  std::int32_t b;     // structure
  std::int32_t tile;  // tile within the structure
  std::int32_t e_begin, e_end;
};

struct Params {
  // Q, K, V, O: [heads, total_n, dim] in the element type; LSE: [heads, total_n] float32 (may be null).
  const void* q;
  const void* k;
  const void* v;
  void* o;
  float* lse;
  std::int64_t total_n;
  std::int32_t heads, dim;
  std::int32_t elem_bytes;  // 2: fp16 / bf16
  float scale_log2;         // softmax scale * log2(e)

  // Layout packed over the batch; blocks e in [0, nnz) are ordered by query tile, then key tile.
  const std::int32_t* col_idx;    // [nnz] key tile (within its structure) of each kept pair
  const std::int32_t* block_qt;   // [nnz] query tile (index into qtiles) of each kept pair
  const QueryTile* qtiles;        // [n_qtiles]
  const StructDesc* structs;      // [batch]
  const float* coords;            // [total_n, 3] new order (only for mask atoms; else null)
  std::int64_t nnz;
  std::int32_t n_qtiles;

  // Workspace, one slot per (head, kept pair): slot = h * nnz + e.
  float* s;         // [heads * nnz, kTile, kTile] scores Q K^T (unscaled), fp32
  void* p;          // [heads * nnz, kTile, kTile] probabilities, element type
  float* opart;     // [heads * nnz, kTile, dim] P V of each kept pair, fp32
  // Input-dependent GEMM operands [heads * nnz]: the Q and K tiles of Q K^T, the V tile of P V.
  const void** qk_a;
  const void** qk_b;
  const void** pv_b;

  // Tile-padded copies [heads, padded_rows, dim] when a structure's n is not a multiple of
  // kTile (null otherwise: the GEMMs then read Q, K, V in place). Padding rows stay zero.
  void* qp;
  void* kp;
  void* vp;
  std::int64_t padded_rows;
};

// The kernels of grouped_kernels.cu, in the order run() launches them.
// Fills qk_a / qk_b / pv_b from q, k, v (or from the padded copies when qp is set).
void launch_fill_pointers(const Params& p, cudaStream_t stream);
// Copies Q, K, V into the padded buffers (only when qp is set).
void launch_pad_copy(const Params& p, cudaStream_t stream);
// Stage 2: row max and sum over all kept tiles of each query row, mask applied; writes P and LSE.
void launch_softmax(const Params& p, DType dtype, cudaStream_t stream);
// End of stage 3: O = sum of the P V partials of each query row in key-tile order.
void launch_reduce(const Params& p, DType dtype, cudaStream_t stream);

}  // namespace protattn::grouped
