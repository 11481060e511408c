// protattn fused engine: the warp-specialised Hopper kernel (sm_90a).
//
// Blocks of three warpgroups, as many as the GPU holds at once (Params::ws_grid), each taking
// WorkItems until they run out: item blockIdx.x first, then the next from a counter once its
// producer has issued the last copy of an item (PROTATTN_FUSED_PERSISTENT=0: a block per item).
// Warpgroup 0 is the producer: with few registers (setmaxnreg) it copies an item's Q (once the
// consumers are done with the last one's) and then each kept K/V tile (and, for mask `atoms`, the
// keys' coordinates) into a ring of shared-memory stages that runs on from item to item, and each
// copy's completion arrives on the stage's "full" mbarrier. Tiles inside the structure come by
// TMA (one thread issues them, the bytes complete on the barrier); a tile that crosses the
// structure's end (and every tile when Params::tma is off) by cp.async from all 128 threads, rows
// past the end read as zeros. With a block per item, its copies issued, it brings the Q tile of
// the item a wave ahead into L2 (Params::q_prefetch).
// Warpgroups 1 and 2 are consumers of 64 query rows each, with raised register limits. They
// never wait for one another: per tile a consumer waits for the stage to be full and, once its
// P V product has read the stage, arrives on the stage's "empty" mbarrier, which the producer
// waits for before refilling it.
// In the consumer, S = Q K^T of tile j+1 is issued on the tensor cores together with
// O += P V of tile j, and the softmax of tile j+1 runs while P V of tile j is in flight
// (one 64 x 128 S accumulator and one P in registers). In fp16 at d=64 and d=32
// (WsKernel::kSumsByMma) P V also makes the rows' sums, from a block of ones after the stages (at
// d=32 in the columns beside V's in each stage, V then coming by cp.async: WsKernel::kVByCopy).
// Rows, masks and results are those of fused_attention_kernel; the online softmax takes a whole
// 128-key tile per step (that kernel takes 64 keys), so the two agree within the engine's bound,
// not bit for bit. Each is deterministic.
#pragma once
#include <climits>

#include "cuda/fused/fused_kernel.cuh"
#include "cuda/fused/fused_launch.hpp"
#include "cuda/fused/sm90_sync.cuh"

namespace protattn::fused {

template <typename T, int D>
struct WsKernel {
  static constexpr int kConsumers = 2;  // warpgroups of 64 query rows
  static constexpr int kThreads = 128 * (1 + kConsumers);
  static constexpr int kProducerThreads = 128;
  // Register limits after the split (multiples of 8). The block is launched with 168 registers a
  // thread (65,536 / 384, rounded down to 8), and setmaxnreg moves registers only within what the
  // block holds: a consumer warpgroup's raise waits until the producer's release covers it, so the
  // limits must fit that budget (48 / 232, 1,024 over it, hung the GPU tests once the combine
  // kernel's blocks shared the multiprocessors: bench/results/2026-12-01-h200-persistent). The
  // producer mostly issues TMA copies; with the TMA code the consumers spilled at 224 (d=64, 28
  // bytes) and 216 (d=128, 12 bytes), and ptxas reports no spill at 40 / 232.
  static constexpr int kProducerRegs = 40;
  static constexpr int kConsumerRegs = 232;
  static constexpr int kLaunchRegs = 65536 / kThreads / 8 * 8;
  static_assert(kProducerThreads * kProducerRegs + kConsumers * 128 * kConsumerRegs <= kThreads * kLaunchRegs,
                "the register limits fit what the block is launched with");
  using Tile = SwizzledTile<kTileCols<D>>;
  // Shared memory: the mbarriers in the first KiB, then Q, then the stages (K, V and, when the
  // batch has mask `atoms`, the keys' coordinates), as many as fit (the plan decides: see
  // ws_geometry; 6 at d=64, 3 at d=128 without coordinates, 2 with).
  static constexpr int kMaxStages = 8;
  static constexpr int kBarBytes = 1024;
  static constexpr int kQBytes = Tile::kBytes;
  static constexpr int kXyzBytes = kTile * static_cast<int>(sizeof(float4));  // key coordinates
  static constexpr int kSmemLimit = 227 * 1024;                                // per block on sm_90
  // After the barriers (Q, full and empty of each stage, Q free): the next item's index, where its
  // tiles start in the ring, and the item itself, which the producer writes and the consumers read
  // after Q's barrier.
  static constexpr int kIdxOffset = 8 * (2 + 2 * kMaxStages);
  static constexpr int kFetchOffset = kIdxOffset + 4;
  static constexpr int kRingOffset = kIdxOffset + 8;  // the item's first stage | the parity of its round << 8
  static constexpr int kItemOffset = kIdxOffset + 16;
  // Each stage's key tile and kind (Params::col_idx, Params::kind), which the producer writes
  // ahead of the stage's "full" arrival: the consumers read them from here once the stage is full.
  static constexpr int kTileTableOffset = 512;
  static_assert(kItemOffset % 16 == 0 && kItemOffset + static_cast<int>(sizeof(WorkItem)) <= kTileTableOffset &&
                    kTileTableOffset + 8 * kMaxStages <= kBarBytes,
                "barriers, index, item and the stages' tiles in the first KiB");
  static constexpr int kSAcc = kTile / 2;  // S accumulators per thread: 64 rows x 128 keys per warpgroup
  // fp16 at d=64: the tensor core sums each row's probabilities. P V takes 72 columns, V's 64 and
  // 8 of a block of ones in shared memory (16 keys x 64 columns, which every k-step of every stage
  // reads), so O's accumulators end in the row sums and the softmax issues no additions for them
  // (32 FADD a row and tile; the lazy max then checks the exponents instead of the sums):
  // W1b 1.9-2.2%, W2 1.3-1.4%, the 1M-atom globule 1.6% faster
  // (bench/results/2026-12-01-h200-sums-by-mma). The sums are then those of the probabilities
  // rounded to fp16, as O gets them: l is off by at most 2^-11 relative, the LSE by at most 4.9e-4
  // (under the GPU tests' 5e-4). Not bf16 (2^-9: its LSE went over that bound), not d=128 (V's
  // two column blocks would have to lie as far apart as the ones; not tried). At d=32 too, whose
  // tiles have 64 columns (kTileCols).
  static constexpr bool kSumsByMma = kTileCols<D> == 64 && std::is_same_v<T, __half>;
  static constexpr int kOCols = kTileCols<D>;  // columns of the tiles in shared memory
  // P V's width: V's columns. At d=32 the product takes V's 32 columns (m64n32, or m64n40 with
  // the sums) instead of its tile's 64, the rest of which would make O columns never written: 44%
  // fewer P V products with the sums (bench/results/2026-12-03-h200-d32-narrow-pv).
  static constexpr bool kNarrowPv = D < kOCols;
  static constexpr int kPvCols = kNarrowPv ? D : kOCols;
  static constexpr int kSumsAt = kPvCols / 2;  // the accumulators of the row sums (kSumsByMma), after O's
  // The block of ones the sums read: after the stages (read through the LBO, P V being 72
  // columns); at d=32 inside each stage's V tile instead, its columns 32-39 (m64n40 reads them
  // within the same 64-column swizzle atom as V's). The copies must then leave those columns
  // alone: V comes by cp.async, which writes V's 32 columns only, not by TMA, whose 64-column box
  // fills the columns past D with zeros (kVByCopy).
  static constexpr bool kVByCopy = kNarrowPv && kSumsByMma;
  static constexpr int kOnesBytes = kSumsByMma && !kNarrowPv ? 16 * Tile::kRowBytes : 0;
  // O's accumulators, then the row sums' (kSumsByMma); finish_rows takes the first D / 2.
  static constexpr int kOAcc = kPvCols / 2 + (kSumsByMma ? 4 : 0);
  static constexpr int kKSteps = D / 16;
  static constexpr bool kLazyMax = true;  // the lazy max: see softmax in fused_ws_kernel
  // S = Q K^T with Q's fragment in registers (16 per thread at d=64, 8 at d=32; 32 at d=128
  // would not fit): Q then is not read from shared memory again for every key tile.
  static constexpr bool kQInRegs = D <= 64;
  static_assert(D == 32 || D == 64 || D == 128, "head dim 32, 64 or 128");
};

// Declared in fused_launch.hpp (the plan calls it).
template <typename T, int D>
WsGeometry ws_geometry(bool atoms, int max_stages) {
  using K_ = WsKernel<T, D>;
  const int stage = 2 * K_::Tile::kBytes + (atoms ? K_::kXyzBytes : 0);
  int stages = (K_::kSmemLimit - K_::kBarBytes - K_::kQBytes - K_::kOnesBytes) / stage;
  stages = stages < K_::kMaxStages ? stages : K_::kMaxStages;
  if (max_stages > 0 && max_stages < stages) stages = max_stages;
  return {stages, stage, K_::kBarBytes + K_::kQBytes + stages * stage + K_::kOnesBytes};
}

// load_tile for the producer's kThr threads with few registers: a thread always copies the same
// 16-byte chunk column of rows tid / chunks + i * step, and since step is a multiple of 8 the
// swizzled destination moves by a constant too.
template <int D, int kThr>
__device__ __forceinline__ void load_tile_lean(std::uint32_t smem, const std::uint16_t* base, int row0, int limit,
                                               int tid) {
  using Tile = SwizzledTile<kTileCols<D>>;
  constexpr int kChunks = D / 8;  // 16-byte chunks of a row in global memory
  constexpr int kStep = kThr / kChunks;
  static_assert(kThr % kChunks == 0 && kStep % 8 == 0, "rows a multiple of 8 apart");
  const int chunk = tid % kChunks, r0 = tid / kChunks;
  const std::uint32_t dst = smem + Tile::offset(r0, chunk);
  const std::uint16_t* src = base + static_cast<std::int64_t>(row0 + r0) * D + chunk * 8;
  const int left = limit - row0 - r0;  // rows of this thread's column still inside
#pragma unroll
  for (int i = 0; i < kTile / kStep; ++i) {
    const bool in = i * kStep < left;
    cp_async_16(dst + i * kStep * Tile::kRowBytes, in ? src + i * kStep * D : base, in ? 16 : 0);
  }
}

// Row of item w's structure's first atom in the tensor maps ([heads * total_n, D]).
__device__ __forceinline__ int map_row0_of(const Params& p, const WorkItem& w) {
  return static_cast<int>(w.h * p.total_n + w.sd.offset);
}

// Copies a WorkItem in 16-byte words (a plain struct copy went byte by byte through its padding).
__device__ __forceinline__ void copy_item(WorkItem* dst, const WorkItem* src) {
  static_assert(sizeof(WorkItem) % 16 == 0, "whole 16-byte words");
#pragma unroll
  for (int i = 0; i < static_cast<int>(sizeof(WorkItem) / 16); ++i)
    reinterpret_cast<int4*>(dst)[i] = reinterpret_cast<const int4*>(src)[i];
}

template <typename T, int D>
__global__ void __launch_bounds__(WsKernel<T, D>::kThreads, 1) fused_ws_kernel(const __grid_constant__ Params p) {
#if !PROTATTN_WGMMA_ARCH
  __trap();  // never launched: the host picks this kernel on sm_90 only
#else
  using K_ = WsKernel<T, D>;
  using Tile = typename K_::Tile;
  using E = ElemTraits<T>;
  allow_dependent_launch();
  extern __shared__ __align__(1024) unsigned char smem[];
  const std::uint32_t bar_q = smem_addr(smem);
  const std::uint32_t s_q = bar_q + K_::kBarBytes;
  const std::uint32_t s_stage0 = s_q + K_::kQBytes;
  const int stages = p.ws_stages;
  const auto bar_full = [&](int s) { return bar_q + 8u * (1 + s); };
  const auto bar_empty = [&](int s) { return bar_q + 8u * (1 + K_::kMaxStages + s); };
  const auto stage_addr = [&](int s) { return s_stage0 + static_cast<std::uint32_t>(s * p.ws_stage_bytes); };
  // The block of ones after the stages (K_::kSumsByMma), filled before the block's first barrier.
  const std::uint32_t s_ones = stage_addr(stages);

  // Q's "free" barrier: every consumer warp is done with the block's Q (the producer waits for it
  // before copying the next item's).
  const std::uint32_t bar_qfree = bar_q + 8u * (1 + 2 * K_::kMaxStages);
  volatile int* s_idx = reinterpret_cast<volatile int*>(smem + K_::kIdxOffset);
  volatile int* s_fetch = reinterpret_cast<volatile int*>(smem + K_::kFetchOffset);
  WorkItem* s_item = reinterpret_cast<WorkItem*>(smem + K_::kItemOffset);

  const int tid = threadIdx.x, warp = tid / 32, lane = tid % 32;

  if (tid == 0) {
    // Q's and each "full" barrier: every producer thread's cp.async arrival (.noinc) and thread
    // 0's arrival that sets the TMA bytes to expect (or a plain one when the tile came by cp.async).
    sm90::mbar_init(bar_q, K_::kProducerThreads + 1);
    for (int s = 0; s < stages; ++s) {
      sm90::mbar_init(bar_full(s), K_::kProducerThreads + 1);
      sm90::mbar_init(bar_empty(s), K_::kConsumers * 4);  // one lane per consumer warp
    }
    sm90::mbar_init(bar_qfree, K_::kConsumers * 128);  // every consumer thread
    sm90::mbar_init_fence();
  }
  if constexpr (K_::kSumsByMma) {
    const std::uint32_t ones = E::pack(1.0f, 1.0f);
    if constexpr (K_::kVByCopy) {
      // Columns 32-39 (16-byte chunk 4) of every row of every stage's V tile.
      for (int i = tid; i < stages * kTile; i += K_::kThreads) {
        const std::uint32_t at = stage_addr(i / kTile) + Tile::kBytes + Tile::offset(i % kTile, 4);
        asm volatile("st.shared.v4.b32 [%0], {%1, %1, %1, %1};\n" ::"r"(at), "r"(ones) : "memory");
      }
    } else {
      auto* dst = reinterpret_cast<std::uint32_t*>(smem + (s_ones - bar_q));
      for (int i = tid; i < K_::kOnesBytes / 4; i += K_::kThreads) dst[i] = ones;
    }
    sm90::fence_proxy_async();  // before the products read them (after the barrier)
  }
  __syncthreads();

  if (warp < 4) {
    // Producer warpgroup: item blockIdx.x, then items taken from Params::item_counter (each
    // block its next one as it nears the end of the last), until they run out.
    sm90::regs_release<K_::kProducerRegs>();
    if (p.tma && tid == 0) {
      sm90::tma_prefetch_map(&p.tma_k);
      sm90::tma_prefetch_map(&p.tma_v);
    }
    // The 128 producer threads (named barrier 5).
    const auto producer_sync = [] { asm volatile("bar.sync 5, 128;\n" ::: "memory"); };
    int idx = static_cast<int>(blockIdx.x);
    WorkItem item;
    copy_item(&item, p.items + idx);
    for (int iter = 0, s = 0, round = 0;; ++iter) {
      // Q's tile is free once every consumer warp is done with the last item's.
      if (iter > 0) sm90::mbar_wait(bar_qfree, (iter - 1) & 1);
      if (tid == 0) {
        *s_idx = idx < p.n_items ? idx : -1;
        *reinterpret_cast<volatile int*>(smem + K_::kRingOffset) = s | (round & 1) << 8;
        if (idx < p.n_items) copy_item(s_item, &item);
      }
      if (idx >= p.n_items) {
        // No more items: Q's barrier completes without a copy, and the consumers read -1.
        sm90::mbar_arrive(bar_q);
        if (tid == 0) {
          sm90::mbar_arrive(bar_q);
          // This block takes no more items. The last block to get here, when every block's last
          // take is behind it, sets the counters back to zero for the plan's next run (which
          // then needs no memset ahead of its launch: one less operation in the stream, W1b
          // 1.7% faster; bench/results/2026-12-03-h200-fb470ca).
          __threadfence();
          if (atomicAdd(p.item_counter + 1, 1) == static_cast<int>(gridDim.x) - 1) {
            __threadfence();
            atomicExch(p.item_counter, 0);
            atomicExch(p.item_counter + 1, 0);
          }
        }
        break;
      }
      const StructDesc sd = item.sd;
      const int row0 = item.q_tile * kTile;
      const std::int64_t head_off = static_cast<std::int64_t>(item.h) * p.head_stride + sd.offset * D;
      const int n_kv = item.e_end - item.e_begin;
      const auto* qg = static_cast<const std::uint16_t*>(p.q) + head_off;
      const auto* kg = static_cast<const std::uint16_t*>(p.k) + head_off;
      const auto* vg = static_cast<const std::uint16_t*>(p.v) + head_off;
      const int map_row0 = map_row0_of(p, item);
      // Copies rows r0 .. r0 + 127 of Q, K or V (map m, global g) into the tile at dst, completing
      // on `bar`: by TMA when `whole` (thread 0 issues one box per 64 columns of the tile; it has
      // already set the bytes to expect, a whole box's, the columns past D filled with zeros), else
      // by every thread's cp.async.
      const auto copy_tile = [&](std::uint32_t dst, const TmaMap& m, const std::uint16_t* g, int r0, std::uint32_t bar,
                                 bool whole) {
        if (whole) {
          if (tid == 0) {
#pragma unroll
            for (int c = 0; c < K_::kOCols / 64; ++c)
              sm90::tma_load_2d(dst + c * Tile::kBlockBytes, &m, c * 64, map_row0 + r0, bar);
          }
        } else {
          load_tile_lean<D, K_::kProducerThreads>(dst, g, r0, sd.n, tid);
        }
      };
      // Thread 0's arrival on a barrier of one (whole) or two tiles' copies.
      const auto arrive_first = [&](std::uint32_t bar, bool whole, int tiles) {
        if (tid != 0) return;
        if (whole) sm90::mbar_arrive_expect_tx(bar, tiles * Tile::kBytes);
        else sm90::mbar_arrive(bar);
      };
      const bool q_whole = p.tma && row0 + kTile <= sd.n;
      arrive_first(bar_q, q_whole, 1);
      copy_tile(s_q, p.tma_q, qg, row0, bar_q, q_whole);
      sm90::cp_async_arrive_noinc(bar_q);
      const bool atoms = sd.mask == kMaskAtoms;
      // The ring of stages runs on from one item to the next.
      // The next tile's column and kind are read an iteration ahead, so that their loads run
      // during the wait for a free stage.
      int kt_next = item.first_col;
      int kind_next = n_kv > 0 ? p.kind[item.e_begin] : 0;
      for (int it = 0; it < n_kv; ++it) {
        const int kt = kt_next, kind = kind_next;
        if (it + 1 < n_kv) {
          kt_next = p.col_idx[item.e_begin + it + 1];
          kind_next = p.kind[item.e_begin + it + 1];
        }
        if (round > 0) sm90::mbar_wait(bar_empty(s), (round - 1) & 1);
        const std::uint32_t st = stage_addr(s);
        const bool whole = p.tma && (kt + 1) * kTile <= sd.n;
        if (tid == 0) {
          auto* entry = reinterpret_cast<volatile int*>(smem + K_::kTileTableOffset + 8 * s);
          entry[0] = kt;
          entry[1] = kind;
        }
        arrive_first(bar_full(s), whole, K_::kVByCopy ? 1 : 2);
        copy_tile(st, p.tma_k, kg, kt * kTile, bar_full(s), whole);
        if constexpr (K_::kVByCopy) load_tile_lean<D, K_::kProducerThreads>(st + Tile::kBytes, vg, kt * kTile, sd.n, tid);
        else copy_tile(st + Tile::kBytes, p.tma_v, vg, kt * kTile, bar_full(s), whole);
        if (atoms) {
          // Key `tid` of the tile: x, y, z into a float4 slot (the fourth float is never read).
          const int j = kt * kTile + tid;
          const bool in = j < sd.n;
          const float* c = p.coords + (sd.offset + (in ? j : 0)) * 3;
          const std::uint32_t dst = st + 2 * Tile::kBytes + tid * 16;
#pragma unroll
          for (int k = 0; k < 3; ++k) cp_async_4(dst + 4 * k, c + k, in ? 4 : 0);
        }
        sm90::cp_async_arrive_noinc(bar_full(s));
        if (++s == stages) {
          s = 0;
          ++round;
        }
      }
      // Every copy of this item issued: the next item (its block's consumers still have about
      // `stages` tiles to go), and, when blocks take one item each, the Q tile of the item a wave
      // ahead into L2, so that its block, which starts about when this wave ends, does not wait
      // for memory for it.
      if (tid == 0) {
        *s_fetch = static_cast<int>(gridDim.x) + atomicAdd(p.item_counter, 1);
        if (p.tma && p.q_prefetch > 0) {
          const int ahead = static_cast<int>(blockIdx.x) + p.q_prefetch;
          if (ahead < p.n_items) {
            const WorkItem& ni = p.items[ahead];
            const int nrow0 = ni.q_tile * kTile;
            if (nrow0 + kTile <= ni.sd.n) {
              const int nmap = map_row0_of(p, ni) + nrow0;
#pragma unroll
              for (int c = 0; c < K_::kOCols / 64; ++c) sm90::tma_prefetch_2d(&p.tma_q, c * 64, nmap);
            }
          }
        }
      }
      producer_sync();
      idx = *s_fetch;
      producer_sync();
      if (idx < p.n_items) copy_item(&item, p.items + idx);
    }
    sm90::cp_async_wait_all();
    return;
  }

  // Consumer warpgroups: warp cw of 8 owns query rows cw * 16 .. + 16 of the tile.
  sm90::regs_claim<K_::kConsumerRegs>();
  const int cw = warp - 4;
  const int g = lane / 4, t = lane % 4;
  const int wg_row = (cw / 4) * 64;
  const int my_wg = cw / 4;
  // Turns on the tensor cores (below): warpgroup 0 goes first, in the block's first item and
  // every later one (each item leaves warpgroup 1's last pass pending, which warpgroup 0's first
  // wait of the next item with turns takes; the block's last is taken at the end).
  if (my_wg == 1) asm volatile("bar.arrive 1, 256;\n" ::: "memory");
  // Q's descriptor (its warpgroup's rows), when S takes Q from shared memory.
  const std::uint64_t q_desc = sm90::smem_desc(s_q + wg_row * Tile::kRowBytes, 16, 1024);
  for (int iter = 0;; ++iter) {
    sm90::mbar_wait(bar_q, iter & 1);
    // A plain load from one address (not volatile, not shuffled): the compiler then knows it is
    // the same for the whole warp and keeps the loop counters and the stage ring in uniform
    // registers. Q's barrier wait (a "memory" clobber) keeps it from moving.
    const int idx = *reinterpret_cast<const int*>(smem + K_::kIdxOffset);
    if (idx < 0) break;
    // Where the item's tiles start in the ring of stages, as the producer wrote it (carried from
    // item to item in the consumers' registers instead, the stage and its parity left the uniform
    // registers: two R2UR ahead of every wgmma).
    const int ring = *reinterpret_cast<const int*>(smem + K_::kRingOffset);
    WorkItem item;
    copy_item(&item, s_item);
    const StructDesc sd = item.sd;
    const int row0 = item.q_tile * kTile;
    const std::int64_t head_off = static_cast<std::int64_t>(item.h) * p.head_stride + sd.offset * D;
    const int n_kv = item.e_end - item.e_begin;
    QueryPos qpos[2];
    query_positions(p, sd, row0 + cw * 16 + g, qpos);
    const bool atoms_mask = sd.mask == kMaskAtoms;

    float o_acc[K_::kOAcc];
#pragma unroll
    for (int i = 0; i < K_::kOAcc; ++i) o_acc[i] = 0.0f;
    auto& o_part = reinterpret_cast<float(&)[D / 2]>(o_acc);           // O (finish_rows' view)
    auto& o_pv = reinterpret_cast<float(&)[K_::kPvCols / 2]>(o_acc);   // O's accumulators of P V
    auto& o_sums = reinterpret_cast<float(&)[K_::kPvCols / 2 + 4]>(o_acc);  // O and the row sums (kSumsByMma)
    float m_row[2] = {-INFINITY, -INFINITY};  // running max of scaled scores (log2 domain)
    float l_row[2] = {0.0f, 0.0f};            // this thread's share of the running sum (or in O)
    float s_acc[K_::kSAcc];                   // S of the newest tile, then its probabilities
    std::uint32_t p_frag[kTile / 16][4];      // P of the tile whose P V is next
    std::uint32_t q_frag[K_::kQInRegs ? K_::kKSteps : 1][4];  // K_::kQInRegs: this warp's Q rows

    // S = Q K^T of the tile in stage s (committed as one group).
    const auto issue_s = [&](int s) {
      const std::uint64_t db0 = sm90::smem_desc(stage_addr(s), 16, 1024);
      sm90::fence();
#pragma unroll
      for (int ks = 0; ks < K_::kKSteps; ++ks) {
        const std::uint32_t k_off = (ks / 4) * Tile::kBlockBytes + (ks % 4) * 32;
        const std::uint64_t db = sm90::desc_advance(db0, k_off);
        if constexpr (K_::kQInRegs) {
          wgmma_qk_rs<T>(s_acc, q_frag[ks], db, ks > 0);
        } else {
          wgmma_qk<T, kTile>(s_acc, sm90::desc_advance(q_desc, k_off), db, ks > 0);
        }
      }
      sm90::commit();
    };
    // O += P V with the V of stage s (committed as one group).
    // kSums: with the row sums (K_::kSumsByMma).
    const auto issue_pv = [&]<bool kSums>(int s) {
      const std::uint32_t v = stage_addr(s) + Tile::kBytes;
      if constexpr (kSums) {
        if constexpr (K_::kSumsByMma) {  // (so that the head dims and types without it do not compile this)
          // d=64: V's 64 columns, then, the LBO further, 8 of the ones: the LBO shrinks as each
          // k-step's start moves 16 rows on (the ones lie after every stage: it stays positive).
          // d=32: V's 32 columns and the ones in its tile's columns 32-39, one swizzle atom.
          const std::uint64_t db0 = sm90::smem_desc(v, K_::kNarrowPv ? Tile::kBlockBytes : s_ones - v, 1024);
#pragma unroll
          for (int kk = 0; kk < kTile / 16; ++kk) {
            const std::uint32_t step = kk * 16 * Tile::kRowBytes;
            wgmma_pv_sums<T, K_::kPvCols>(o_sums, p_frag[kk],
                                          K_::kNarrowPv ? sm90::desc_advance(db0, step) : sm90::desc_advance_fixed_lbo(db0, step));
          }
        }
      } else {
        const std::uint64_t db0 = sm90::smem_desc(v, Tile::kBlockBytes, 1024);
#pragma unroll
        for (int kk = 0; kk < kTile / 16; ++kk)
          wgmma_pv<T, K_::kPvCols>(o_pv, p_frag[kk], sm90::desc_advance(db0, kk * 16 * Tile::kRowBytes));
      }
      sm90::commit();
    };
    // Whether key tile kt of kind `kind` (Params::kind) needs the mask: PARTIAL, or keys past the
    // structure's end (the padding rows of its last query tile need none: they are never written).
    const auto tile_masked = [&](int kind, int kt) { return (kind & kKindPartial) != 0 || (kt + 1) * kTile > sd.n; };
    // Masks the scores in s_acc of key tile kt (kind `kind`, in stage s): -inf where not allowed.
    const auto mask_scores = [&](int kt, int kind, int s) {
      if (!tile_masked(kind, kt)) return;
      if (atoms_mask) {
        const auto* kxyz = reinterpret_cast<const float4*>(smem + (stage_addr(s) - bar_q) + 2 * Tile::kBytes);
        mask_atoms_slice(s_acc, sd, qpos, kxyz, kt * kTile, t);
      } else if (sd.mask == kMaskTiles) {
        mask_keys_past_end(s_acc, sd.n - kt * kTile, t);
      } else {
#pragma unroll
        for (int i = 0; i < K_::kSAcc; ++i) {
          const int j = kt * kTile + acc_key(i, t);
          if (!allowed(sd, p.coords, qpos[(i % 4) / 2], j)) s_acc[i] = -INFINITY;
        }
      }
    };
    // Row r's scores in s_acc become exp2(score * scale_log2 - base); returns this thread's share of
    // their sum (four independent chains: the latency of a dependent chain of 32, not the issue
    // rate, would set the time with two warps per scheduler).
    const auto exp_row = [&](int r, float base) {
      float s4[4] = {0.0f, 0.0f, 0.0f, 0.0f};
#pragma unroll
      for (int nt = 0; nt < K_::kSAcc / 4; ++nt) {
        s_acc[4 * nt + 2 * r] = fast_exp2(fmaf(s_acc[4 * nt + 2 * r], p.scale_log2, -base));
        s_acc[4 * nt + 2 * r + 1] = fast_exp2(fmaf(s_acc[4 * nt + 2 * r + 1], p.scale_log2, -base));
        s4[nt % 4] += s_acc[4 * nt + 2 * r] + s_acc[4 * nt + 2 * r + 1];
      }
      return (s4[0] + s4[1]) + (s4[2] + s4[3]);
    };
    // exp_row for the lazy max where the tensor core makes the sums (K_::kSumsByMma): returns the
    // largest exponent argument of the row's scores as its float's bits read as a signed int,
    // which order as the floats do where one is positive (over kLazyArgBits: some probability over
    // kLazyMaxShare; NaN, whose bits the GPU's arithmetic makes positive, too). The maxima need
    // only the FMAs' results, so ptxas spreads them among the exponentials. (The check on the
    // packed P it replaced stood after the wait for the last P V, ahead of the next products:
    // bench/results/2026-12-01-h200-amax-check.)
    const auto exp_row_amax = [&](int r, float base) {
      int a4[4] = {INT_MIN, INT_MIN, INT_MIN, INT_MIN};
#pragma unroll
      for (int nt = 0; nt < K_::kSAcc / 4; ++nt) {
        const float x0 = fmaf(s_acc[4 * nt + 2 * r], p.scale_log2, -base);
        const float x1 = fmaf(s_acc[4 * nt + 2 * r + 1], p.scale_log2, -base);
        a4[nt % 4] = max(a4[nt % 4], max(__float_as_int(x0), __float_as_int(x1)));
        s_acc[4 * nt + 2 * r] = fast_exp2(x0);
        s_acc[4 * nt + 2 * r + 1] = fast_exp2(x1);
      }
      return max(max(a4[0], a4[1]), max(a4[2], a4[3]));
    };
    // log2(kLazyMaxShare) = 15 as float bits (a positive float's bits order as its value).
    static_assert(kLazyMaxShare == 32768.0f, "2^15");
    constexpr int kLazyArgBits = 0x41700000;  // 15.0f
    // The lazy max's way back: this warp's S of the tile in stage s again, on its own (mma.sync from
    // Q's fragments in registers, or Q's tile, and the stage's shared memory; a wgmma would need
    // the whole warpgroup).
    const auto rescore = [&](int s) {
      if constexpr (K_::kQInRegs) warp_scores_rq<T, D, kTile>(s_acc, q_frag, stage_addr(s), 0, lane);
      else warp_scores<T, D, kTile>(s_acc, s_q, stage_addr(s), wg_row + (cw % 4) * 16, 0, lane);
    };
    bool rescaled = true;  // whether the last softmax moved the base (O must then be scaled)
    // Mask and online softmax of the scores in s_acc (key tile kt, in stage s) as one step over its
    // 128 keys: s_acc becomes the probabilities, m (the base) and l are updated; returns the
    // factors (one per row) by which the earlier O must be scaled when `rescaled` is set.
    // kSums: the row sums come with P V (K_::kSumsByMma), not from here.
    const auto softmax = [&]<bool kLazy, bool kSums>(int kt, int kind, int s) {
      mask_scores(kt, kind, s);
      // Lazy max (kLazy: the tile loop of structures without mask atoms, whose tiles are mostly
      // FULL; compiled into the loop of mask atoms, whose tiles' masks set the time, it made 16
      // copies of 2HHB 21% slower): once every row of the warp has a base, exponentiate against it
      // at once, without the max (a chain of 64 comparisons and two shuffles ahead of the first
      // exponential). Kept when no thread's share of a row's sum exceeds kLazyMaxShare: every
      // probability then fits fp16, and O and l need no rescaling, the result after the final
      // O / l being the same. Otherwise (a row's max rose far above its base, rare after the first
      // tile; or NaN) the warp computes its S again alone (warp_scores: a wgmma would need the
      // whole warpgroup; the stage is still held) and takes the max first, below. With the sums
      // by the tensor core (kSums) no sums are made here: the exponents are checked instead.
      if constexpr (kLazy) {
        if (p.lazy_max && __all_sync(0xffffffffu, m_row[0] != -INFINITY && m_row[1] != -INFINITY)) {
          if constexpr (kSums) {
            const int a = max(exp_row_amax(0, m_row[0]), exp_row_amax(1, m_row[1]));
            if (__all_sync(0xffffffffu, a <= kLazyArgBits)) {
              rescaled = false;
              return make_float2(1.0f, 1.0f);
            }
          } else {
            const float share0 = exp_row(0, m_row[0]);
            const float share1 = exp_row(1, m_row[1]);
            if (__all_sync(0xffffffffu, share0 <= kLazyMaxShare && share1 <= kLazyMaxShare)) {
              l_row[0] += share0;
              l_row[1] += share1;
              rescaled = false;
              return make_float2(1.0f, 1.0f);
            }
          }
          rescore(s);
          mask_scores(kt, kind, s);
        }
      }
      float m_new[2];
      bool grow = false;  // some row's max rose by more than p.rescale_slack
#pragma unroll
      for (int r = 0; r < 2; ++r) {
        float m4[4] = {-INFINITY, -INFINITY, -INFINITY, -INFINITY};
#pragma unroll
        for (int nt = 0; nt < K_::kSAcc / 4; ++nt)
          m4[nt % 4] = fmaxf(m4[nt % 4], fmaxf(s_acc[4 * nt + 2 * r], s_acc[4 * nt + 2 * r + 1]));
        float mx = fmaxf(fmaxf(m4[0], m4[1]), fmaxf(m4[2], m4[3]));
        mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, 1));
        mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, 2));
        m_new[r] = fmaxf(m_row[r], mx * p.scale_log2);  // log2 domain
        grow |= m_new[r] > m_row[r] + p.rescale_slack;   // always on a row's first key (m_row = -inf)
      }
      // The base of the exponentials moves, and O and l are rescaled, only when some row of the
      // warp needs it; otherwise the old base stays (probabilities up to 2^p.rescale_slack, exact the
      // same after the final O / l) and the rescaling is skipped (warp-uniform: one vote).
      const bool rescale = __any_sync(0xffffffffu, grow);
      float2 alpha = make_float2(1.0f, 1.0f);
#pragma unroll
      for (int r = 0; r < 2; ++r) {
        if (rescale) {
          const float base_new = m_new[r] == -INFINITY ? 0.0f : m_new[r];  // no key yet: keep exp2 finite
          (r == 0 ? alpha.x : alpha.y) = fast_exp2(m_row[r] - base_new);
          m_row[r] = m_new[r];
        }
        const float sum = exp_row(r, m_row[r] == -INFINITY ? 0.0f : m_row[r]);
        if constexpr (!kSums) l_row[r] = rescale ? l_row[r] * (r == 0 ? alpha.x : alpha.y) + sum : l_row[r] + sum;
      }
      rescaled = rescale;
      return alpha;
    };
    // P of the tile for its P V; zero when this warp's rows reach no key of it.
    const auto pack_p = [&](bool out) {
#pragma unroll
      for (int kk = 0; kk < kTile / 16; ++kk) {
#pragma unroll
        for (int j = 0; j < 4; ++j) p_frag[kk][j] = out ? 0u : E::pack(s_acc[8 * kk + 2 * j], s_acc[8 * kk + 2 * j + 1]);
      }
    };
    // O (and with it the row sums, K_::kSumsByMma) scaled by the factors the softmax returned.
    const auto rescale_o = [&]<bool kSums>(float2 alpha) {
#pragma unroll
      for (int i = 0; i < (kSums ? K_::kOAcc : K_::kPvCols / 2); ++i) o_acc[i] *= (i % 4) / 2 == 0 ? alpha.x : alpha.y;
    };
    // Whether this warp's rows reach no key of a tile of kind `kind` (Params::kind): every score
    // masked, so the probabilities are 0 and m, l and O stay; the mask and softmax are skipped.
    const auto out_of_reach = [&](int kind) { return ((kind >> (kKindOutShift + cw)) & 1) != 0; };

    // Turns on the tensor cores (Params::pingpong): a consumer warpgroup issues its
    // matrix products only in its turn and then hands the turn to the other, so that one's softmax
    // runs while the other's products are on the tensor cores. Named barrier 1 + w is warpgroup
    // w's turn (256 threads: its own 128 waiting, the other's 128 arriving). Not under mask atoms
    // by default (kPingpongNotAtoms): there the masks, not the products, set the pace, and the turns
    // made 16 copies of 2HHB 5% slower (with TMA, bench/results/2026-12-01-h200-tma).
    const bool turns = p.pingpong == kPingpongAll || (p.pingpong == kPingpongNotAtoms && !atoms_mask);
    const auto turn_wait = [&] {
      if (turns) asm volatile("bar.sync %0, 256;\n" ::"r"(1 + my_wg) : "memory");
    };
    const auto turn_pass = [&] {
      if (turns) asm volatile("bar.arrive %0, 256;\n" ::"r"(2 - my_wg) : "memory");
    };
    // This thread is done with Q's tile and the item in shared memory: the producer may copy the
    // next item's. With Q in registers (K_::kQInRegs; the lazy max's way back takes it from there
    // too) as soon as they are loaded, at the item's start, so that the next item's Q arrives
    // while this one's tiles run; else once the last S has completed and the way back is behind.
    // Every thread arrives, each for its own reads (once an item, not once a tile): one lane
    // arriving after a __syncwarp is as ordered in the memory model, but compute-sanitizer's
    // racecheck reported each other lane's read of the item against the producer's next write.
    const auto release_q = [&] { sm90::mbar_arrive(bar_qfree); };

    // The tile loop, compiled twice: with the out-of-reach checks (kReach: a structure under mask
    // atoms, whose tiles carry the bits) and without them (every other mask runs code with no trace
    // of them).
    const auto tile_loop = [&]<bool kReach>() {
      constexpr bool kLazyLoop = K_::kLazyMax && !kReach;
      // The row sums by the tensor core (K_::kSumsByMma) only without the reach checks: with them
      // (mask atoms: the query atoms' coordinates held too) the four more accumulators made ptxas
      // serialise every wgmma of the kernel for want of registers.
      constexpr bool kSums = K_::kSumsByMma && !kReach;
      int s = ring & 0xff, phase = ring >> 8;  // stage of the current tile and the parity of its "full" phase
      // The stage's key tile and kind, as the producer wrote them ahead of its "full" arrival.
      const auto tile_of = [&](int st, int& kt_out, int& kind_out) {
        const int2 e = *reinterpret_cast<const int2*>(smem + K_::kTileTableOffset + 8 * st);
        kt_out = e.x;
        kind_out = e.y;
      };
      int kt = 0, kind = 0;
      sm90::mbar_wait(bar_full(s), phase);
      tile_of(s, kt, kind);
      sm90::fence_proxy_async();
      turn_wait();
      issue_s(s);
      turn_pass();
      sm90::wait<0>();
      const bool out0 = kReach && out_of_reach(kind);
      if (!out0) softmax.template operator()<false, kSums>(kt, kind, s);  // O is still zero: alpha is not needed
      pack_p(out0);
      for (int it = 1; it < n_kv; ++it) {
        const int prev = s;
        if (++s == stages) {
          s = 0;
          phase ^= 1;
        }
        sm90::mbar_wait(bar_full(s), phase);
        tile_of(s, kt, kind);
        sm90::fence_proxy_async();
        turn_wait();
        issue_s(s);      // S of this tile ...
        issue_pv.template operator()<kSums>(prev);  // ... and P V of the one before, both in flight
        turn_pass();
        sm90::wait<1>();
        const bool out = kReach && out_of_reach(kind);
        float2 alpha = make_float2(1.0f, 1.0f);
        if (!out) alpha = softmax.template operator()<kLazyLoop, kSums>(kt, kind, s);  // under the P V
        sm90::wait<0>();
        if (lane == 0) sm90::mbar_arrive(bar_empty(prev));
        if (rescaled && !out) rescale_o.template operator()<kSums>(alpha);
        pack_p(out);
      }
      if constexpr (!K_::kQInRegs) release_q();
      sm90::fence();
      turn_wait();
      issue_pv.template operator()<kSums>(s);
      turn_pass();
      sm90::wait<0>();
      if (lane == 0) sm90::mbar_arrive(bar_empty(s));  // the item's last stage goes back too
    };
    if constexpr (K_::kQInRegs) {
#pragma unroll
      for (int ks = 0; ks < K_::kKSteps; ++ks)
        load_q_fragment<D>(q_frag[ks], s_q, wg_row + (cw % 4) * 16, ks, lane);
      release_q();
    }
    if (n_kv > 0) {
      if (atoms_mask) tile_loop.template operator()<true>();
      else tile_loop.template operator()<false>();
    } else if constexpr (!K_::kQInRegs) {
      release_q();
    }
    if (K_::kSumsByMma && !atoms_mask) {
      // The row sums: P V's columns after O's (64-71, at d=32 32-39) hold each (the same in all);
      // one thread of the quad's (finish_rows adds the quad's shares up).
      l_row[0] = t == 0 ? o_acc[K_::kSumsAt] : 0.0f;
      l_row[1] = t == 0 ? o_acc[K_::kSumsAt + 2] : 0.0f;
    }
    finish_rows<T, D>(p, item, sd, head_off, o_part, m_row, l_row, cw * 16 + g, t);
  }
  if (my_wg == 0) asm volatile("bar.sync 1, 256;\n" ::: "memory");  // warpgroup 1's last pass
#endif
}

}  // namespace protattn::fused
