// protattn fused engine: the flat parameter block the kernels read (built once per plan).
#pragma once
#include <cstdint>

namespace protattn::fused {

// Tile shape of the kernel: 128 query rows (8 warps x 16) against 128 keys, taken in two
// halves of 64 keys.
inline constexpr int kTile = 128;
inline constexpr int kWarps = 8;
inline constexpr int kThreads = kWarps * 32;
inline constexpr int kKeyChunk = 64;

// The attention kernel a plan runs (chosen at plan time, see FusedEngine::plan).
enum KernelCode : std::int32_t {
  kKernelWs = 0,       // sm_90a warp-specialised: producer warpgroup, two consumer warpgroups
  kKernelWgmma = 1,    // sm_90a, every warp loads and computes; two blocks per SM at d=64
  kKernelMmaSync = 2,  // any sm_80+ GPU
};

// How far (log2 units) a row's running max may rise before the ws kernel moves the base of its
// exponentials: below it, probabilities up to 2^8 = 256 (exact in fp16 and bf16, and far from
// overflow in the fp32 sums) and no rescaling of O.
inline constexpr float kRescaleSlack = 8.0f;

// The lazy max of the ws and wgmma kernels: once every row of a warp has a base, they
// exponentiate a tile's scores against it before taking their max, and keep the result when every
// thread's share of a row's sum is at most this (so every probability fits fp16, whose largest
// value is 65,504; where the tensor core makes the sums, every probability); otherwise the warp
// computes its scores again and takes the max first.
// Params::lazy_max turns this off.
inline constexpr float kLazyMaxShare = 32768.0f;

// Params::pingpong: when the ws kernel's consumer warpgroups take turns issuing their products.
enum PingpongCode : std::int32_t { kPingpongOff = 0, kPingpongNotAtoms = 1, kPingpongAll = 2 };

// Bits of a kept tile in Params::kind.
inline constexpr int kKindPartial = 1;
inline constexpr int kKindOutShift = 8;

// Mask rule of a structure, as mask_allows() defines it.
enum MaskCode : std::int32_t { kMaskTiles = 0, kMaskAtoms = 1, kMaskWindows = 2 };

struct StructDesc {
  std::int64_t offset;  // first row of the structure in the packed atom axis
  std::int32_t n;       // atoms
  std::int32_t mask;    // MaskCode
  float cutoff2;        // cutoff * cutoff (mask atoms)
  std::int32_t pad;
};

// One block's work: one query tile of one head of one structure, over the kept key tiles
// [e_begin, e_end) of the packed col_idx. slot < 0: write O/LSE; else write a partial result
// into workspace slot `slot` (split key range, combined in a fixed order afterwards).
struct alignas(16) WorkItem {
  StructDesc sd;  // structure b's, copied here: a block reads it with its item, not after it
  std::int32_t b, h, q_tile, e_begin, e_end, slot;
  std::int32_t first_col;  // col_idx[e_begin] (0 when the range is empty): the first K/V load waits on no other
};

// The rows of one query tile split into slots [slot_begin, slot_begin + n_slots).
struct alignas(16) CombineItem {
  StructDesc sd;  // structure b's, as in WorkItem
  std::int32_t b, h, q_tile, slot_begin, n_slots, pad;
};

// A CUtensorMap (cuda.h), opaque here: 128 bytes, 128-byte aligned.
struct alignas(128) TmaMap {
  std::uint64_t bits[16];
};

struct alignas(128) Params {
  // ws kernel when `tma`: 2-D maps of Q, K and V as [heads * total_n, dim] rows, boxes of 64
  // columns x 128 rows, 128-byte swizzle (the layout of SwizzledTile), made by run() for the
  // run's pointers (the kernel takes Params as a __grid_constant__ parameter).
  TmaMap tma_q, tma_k, tma_v;
  // Q, K, V, O: [heads, total_n, dim] in the element type; LSE [heads, total_n] float32.
  const void* q;
  const void* k;
  const void* v;
  void* o;
  float* lse;
  std::int64_t head_stride;  // total_n * dim (elements)
  std::int64_t total_n;
  // layout, packed over the batch
  const std::int32_t* col_idx;  // [nnz] key tile of each kept pair
  // [nnz] bit 0 (kKindPartial): PARTIAL, else FULL; bit kKindOutShift + w, mask atoms only:
  // query rows 16w .. 16w + 15 of the tile reach no key of it (BlockLayout::rows_out), that warp's
  // probabilities are all zero.
  const std::uint16_t* kind;
  const float* coords;          // [total_n, 3] new order (mask atoms)
  const WorkItem* items;        // [n_items], longest first
  const CombineItem* combines;  // [n_combines]
  std::int32_t n_items, n_combines;
  float scale_log2;             // softmax scale * log2(e)
  std::int32_t kernel;          // KernelCode
  std::int32_t pingpong;        // ws kernel: PingpongCode, whether its consumer warpgroups take turns issuing
  std::int32_t ws_stages, ws_stage_bytes, ws_smem;  // ws kernel: its ring of K/V stages (the plan: ws_geometry)
  float rescale_slack;          // its online softmax: rises of the max kept without rescaling
  std::int32_t lazy_max;        // ws and wgmma kernels: the lazy max (kLazyMaxShare)
  std::int32_t tma;             // ws kernel: K/V (and Q) tiles inside a structure by TMA (tma_*), else cp.async
  std::int32_t q_prefetch;      // ws kernel: a block brings the Q tile of the item this many ahead into L2 (0: none)
  std::int32_t ws_grid;         // ws kernel: blocks launched; each takes item blockIdx.x, then items from item_counter
  // ws kernel: [0] items taken beyond the first gridDim.x, [1] blocks done taking; zero before each
  // launch (zeroed with the plan; the last block to finish taking sets both back to zero).
  std::int32_t* item_counter;
  // split-KV workspace: O partials [slots, kTile, dim] fp32; (m, l) [slots, kTile, 2] fp32
  float* part_o;
  float* part_ml;
};

// Blocks of the attention kernel: one per work item, or Params::ws_grid for the ws kernel.
inline int attention_grid(const Params& p) { return p.kernel == kKernelWs ? p.ws_grid : p.n_items; }

}  // namespace protattn::fused
