// protattn fused engine: plan (validation, packed layouts, sorted work items, split-KV) and run.
#include <cuda.h>
#include <cudaTypedefs.h>
#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <algorithm>
#include <atomic>
#include <bit>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <limits>
#include <numeric>
#include <string>

#include "common/parallel.hpp"
#include "cuda/common/cuda_check.hpp"
#include "cuda/common/device_buffer.hpp"
#include "cuda/common/host_staging.hpp"
#include "cuda/fused/fused_engine.hpp"
#include "cuda/fused/fused_launch.hpp"
#include "cuda/fused/split_plan.hpp"
#include "engine/factories.hpp"
#include "protattn/error.hpp"

// dispatch() calls lambdas whose template parameters appear only in their bodies.
#pragma nv_diag_suppress 445

namespace protattn::fused {
namespace {

// The driver's cuTensorMapEncodeTiled (through the runtime: no link to libcuda).
PFN_cuTensorMapEncodeTiled_v12000 tensor_map_encoder() {
  static const PFN_cuTensorMapEncodeTiled_v12000 fn = [] {
    void* f = nullptr;
    cudaDriverEntryPointQueryResult found{};
    PROTATTN_CUDA_CHECK(cudaGetDriverEntryPointByVersion("cuTensorMapEncodeTiled", &f, 12000, cudaEnableDefault, &found));
    if (found != cudaDriverEntryPointSuccess || !f)
      throw Error("fused engine: the CUDA driver has no cuTensorMapEncodeTiled (needed by the ws kernel's TMA copies)");
    return reinterpret_cast<PFN_cuTensorMapEncodeTiled_v12000>(f);
  }();
  return fn;
}

// Fills `out` with the 2-D map of a [rows, dim] tensor of 2-byte elements at `base` (16-byte
// aligned) that the ws kernel's TMA copies read (fused_params.hpp: Params::tma_q). At d=32 the
// box (64 columns, the tile's width) reaches past the rows' end: TMA fills those columns with zeros.
void row_map(TmaMap& out, const void* base, std::uint64_t rows, int dim) {
  static_assert(sizeof(CUtensorMap) == sizeof(TmaMap) && alignof(CUtensorMap) <= alignof(TmaMap));
  const cuuint64_t dims[2] = {static_cast<cuuint64_t>(dim), rows};
  const cuuint64_t strides[1] = {static_cast<cuuint64_t>(dim) * 2};  // bytes between rows
  const cuuint32_t box[2] = {64, kTile};                             // 128 bytes x 128 rows
  const cuuint32_t unit[2] = {1, 1};
  CUtensorMap m;
  const CUresult r = tensor_map_encoder()(&m, CU_TENSOR_MAP_DATA_TYPE_UINT16, 2, const_cast<void*>(base), dims, strides, box,
                                          unit, CU_TENSOR_MAP_INTERLEAVE_NONE, CU_TENSOR_MAP_SWIZZLE_128B,
                                          CU_TENSOR_MAP_L2_PROMOTION_L2_256B, CU_TENSOR_MAP_FLOAT_OOB_FILL_NONE);
  if (r != CUDA_SUCCESS) throw Error("fused engine: cuTensorMapEncodeTiled failed (CUresult " + std::to_string(r) + ")");
  std::memcpy(&out, &m, sizeof m);
}

// Fewest key tiles a split piece gets: below this the combine costs more than it saves.
constexpr int kMinTilesPerSplit = 2;
// Items of the last waves (block slots) ordered longest first, the rest in the layout's order:
// with the ws kernel's blocks taking items from a counter, 6 waves measured best of 4-16
// (bench/results/2026-12-01-h200-tail-waves).
constexpr int kTailWaves = 6;
// Kept tiles per thread below which the plan packs a layout's columns and kinds on one thread.
constexpr std::size_t kPlanEdgesPerThread = 1 << 16;
// Most pieces one query tile is split into.
constexpr int kMaxSplits = 16;

bool dim_compiled(int d) {
  switch (d) {
#ifdef PROTATTN_FUSED_D32
    case 32: return true;
#endif
#ifdef PROTATTN_FUSED_D64
    case 64: return true;
#endif
#ifdef PROTATTN_FUSED_D128
    case 128: return true;
#endif
    default: return false;
  }
}

std::string compiled_dims() {
  std::string s;
  for (int d : {32, 64, 128})
    if (dim_compiled(d)) s += (s.empty() ? "" : ", ") + std::to_string(d);
  return s;
}

// Calls f.template operator()<T, D>() for the plan's dtype and dim; every unsupported value
// fails loudly.
template <typename F>
auto dispatch(DType dtype, int dim, F&& f) {
  auto by_dim = [&]<typename T>() {
    switch (dim) {
#ifdef PROTATTN_FUSED_D32
      case 32: return f.template operator()<T, 32>();
#endif
#ifdef PROTATTN_FUSED_D64
      case 64: return f.template operator()<T, 64>();
#endif
#ifdef PROTATTN_FUSED_D128
      case 128: return f.template operator()<T, 128>();
#endif
      default:
        throw Error("fused engine: unsupported head dim " + std::to_string(dim) + " (compiled: " + compiled_dims() + ")");
    }
  };
  switch (dtype) {
    case DType::f16: return by_dim.template operator()<__half>();
    case DType::bf16: return by_dim.template operator()<__nv_bfloat16>();
    default: throw Error(std::string("fused engine: unsupported dtype ") + to_string(dtype) + " (fp16 or bf16)");
  }
}

class FusedPlan final : public Plan {
 public:
  Params params{};
  PlanSummary summary;
  cuda::DeviceBuffer col_idx, kind, coords, items, combines, part_o, part_ml, item_counter;
};

class FusedEngine final : public Engine {
 public:
  explicit FusedEngine(const EngineOptions& opt) : device_(opt.device) {
    const int count = cuda::device_count("fused engine");
    if (device_ < 0 || device_ >= count)
      throw Error("fused engine: CUDA device " + std::to_string(device_) + " does not exist (" + std::to_string(count) + " present)");
    PROTATTN_CUDA_CHECK(cudaSetDevice(device_));
    PROTATTN_CUDA_CHECK(cudaDeviceGetAttribute(&sms_, cudaDevAttrMultiProcessorCount, device_));
    int major = 0, minor = 0;
    PROTATTN_CUDA_CHECK(cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, device_));
    PROTATTN_CUDA_CHECK(cudaDeviceGetAttribute(&minor, cudaDevAttrComputeCapabilityMinor, device_));
    hopper_ = major == 9 && minor == 0;
    // EngineOptions::fused_kernel, else PROTATTN_FUSED_KERNEL=ws|wgmma|mma_sync, forces a kernel
    // (ws and wgmma need sm_90); PROTATTN_FUSED_MMA_SYNC=1 is the same as mma_sync.
    const char* sync = std::getenv("PROTATTN_FUSED_MMA_SYNC");
    const char* env = std::getenv("PROTATTN_FUSED_KERNEL");
    const std::string want = !opt.fused_kernel.empty() ? opt.fused_kernel : env ? env : "";
    if ((sync && sync[0] == '1' && opt.fused_kernel.empty()) || want == "mma_sync") forced_kernel_ = kKernelMmaSync;
    else if (want == "ws") forced_kernel_ = kKernelWs;
    else if (want == "wgmma") forced_kernel_ = kKernelWgmma;
    else if (!want.empty()) throw Error("fused engine: unknown kernel '" + want + "' (ws, wgmma or mma_sync)");
    use_reach_ = !switched_off("PROTATTN_FUSED_REACH");
    if ((forced_kernel_ == kKernelWs || forced_kernel_ == kKernelWgmma) && !hopper_)
      throw Error("fused engine: kernel " + want + " needs an sm_90 GPU (device " + std::to_string(device_) + " is sm_" +
                  std::to_string(major * 10 + minor) + ")");
  }
  const char* name() const override { return "fused"; }
  bool on_device() const override { return true; }

  std::unique_ptr<Plan> plan(const std::vector<const BlockLayout*>& layouts, const ProblemShape& shape) override {
    if (shape.heads < 1) throw Error("fused engine: heads must be >= 1");
    if (shape.dtype != DType::f16 && shape.dtype != DType::bf16)
      throw Error(std::string("fused engine: unsupported dtype ") + to_string(shape.dtype) + " (fp16 or bf16)");
    if (!dim_compiled(shape.dim))
      throw Error("fused engine: unsupported head dim " + std::to_string(shape.dim) + " (compiled: " + compiled_dims() + ")");
    PROTATTN_CUDA_CHECK(cudaSetDevice(device_));
    auto plan = std::make_unique<FusedPlan>();
    plan->shape = shape;
    plan->layouts = layouts;
    plan->offsets.assign(1, 0);

    std::vector<StructDesc> sds;
    std::vector<std::int32_t> cols;
    std::vector<std::uint16_t> kinds;  // Params::kind
    std::vector<std::uint8_t> reach;   // one layout's rows_out_of_reach() bits
    std::vector<std::int64_t> edge_base;
    bool any_atoms = false, any_reach = false;
    std::size_t total_edges = 0;
    for (const BlockLayout* l : layouts) total_edges += l->col_idx.size();
    cols.resize(total_edges);
    kinds.resize(total_edges);
    std::size_t e0 = 0;
    for (std::size_t b = 0; b < layouts.size(); ++b) {
      const BlockLayout& l = *layouts[b];
      if (l.tile != kTile)
        throw Error("fused engine: unsupported tile " + std::to_string(l.tile) + " in structure " + std::to_string(b) + " (tile must be 128)");
      if (static_cast<int>(l.row_ptr.size()) != l.n_tiles + 1 || l.n_tiles * kTile < l.n)
        throw Error("fused engine: layout " + std::to_string(b) + " is inconsistent (row_ptr / n_tiles / n)");
      StructDesc sd{};
      sd.offset = plan->offsets.back();
      sd.n = l.n;
      sd.mask = l.mask == MaskMode::tiles ? kMaskTiles : l.mask == MaskMode::atoms ? kMaskAtoms : kMaskWindows;
      sd.cutoff2 = l.cutoff * l.cutoff;
      if (l.mask == MaskMode::atoms) {
        any_atoms = true;
        if (l.coords.size() != static_cast<std::size_t>(l.n) * 3)
          throw Error("fused engine: layout " + std::to_string(b) + " has mask atoms but no coordinates");
      }
      sds.push_back(sd);
      edge_base.push_back(static_cast<std::int64_t>(e0));
      const std::uint8_t* out = nullptr;
      if (use_reach_ && l.mask == MaskMode::atoms) {
        // The layout's own rows_out when its maker filled them (a server does, on the request's
        // thread), else computed here.
        out = l.rows_out.data();
        if (l.rows_out.size() != l.col_idx.size()) {
          reach.resize(l.col_idx.size());
          rows_out_of_reach(l, reach.data());
          out = reach.data();
        }
        any_reach = true;
      }
      // The layout's columns and kinds into the packed arrays; a large one (the 1M-atom globule
      // has 600k kept tiles) on the worker pool.
      const std::size_t ne = l.col_idx.size(), nk = std::min(ne, l.kind.size());
      detail::parallel_chunks(ne, detail::resolve_threads(0, ne, kPlanEdgesPerThread), [&](int, std::size_t a, std::size_t z) {
        std::copy(l.col_idx.begin() + static_cast<std::ptrdiff_t>(a), l.col_idx.begin() + static_cast<std::ptrdiff_t>(z),
                  cols.begin() + static_cast<std::ptrdiff_t>(e0 + a));
        for (std::size_t e = a; e < z; ++e) {
          std::uint16_t k = e < nk && l.kind[e] == BlockKind::partial ? kKindPartial : 0;
          if (out) k |= static_cast<std::uint16_t>(out[e] << kKindOutShift);
          kinds[e0 + e] = k;
        }
      });
      e0 += ne;
      plan->offsets.push_back(plan->offsets.back() + l.n);
    }
    const std::int64_t total_n = plan->total_n();

    // Work items: one per (structure, head, query tile); split the key range when there are
    // too few to fill the GPU.
    std::int64_t base_items = 0;
    for (const BlockLayout* l : layouts) base_items += static_cast<std::int64_t>(l->n_tiles) * shape.heads;
    // The kernel: on Hopper the warp-specialised one (one block of three warpgroups per SM) when
    // there is a query tile for every SM or the head dim is 128, else the one with two blocks per
    // SM, which finishes short problems at d=32 and 64 sooner (2HHB at 1 and 3 heads 9-11%, 1ubq at 4
    // and 20 heads 8-16%; W1 ran 3% faster on ws, 20.8 against 21.5 us); mma.sync elsewhere. At
    // d=128 ws was faster on six of the seven short problems measured (2HHB at 3 heads 53.0
    // against 80.9 us, W1's pattern 24.8 against 30.5) and 2% slower on 1ubq at 4 heads:
    // bench/results/2026-12-02-h200-padding-rows.
    int kernel = kKernelMmaSync;
    if (hopper_) kernel = base_items >= sms_ || shape.dim > 64 ? kKernelWs : kKernelWgmma;
    if (forced_kernel_ >= 0) kernel = forced_kernel_;
    const int bps = blocks_per_sm(shape, kernel);
    const std::int64_t target = static_cast<std::int64_t>(sms_) * bps;
    // Too few query tiles x heads to fill the GPU, or a few waves of them with the last one
    // partly empty: cut the key lists into pieces, the longest lists into the most, until the
    // pieces fill the block slots or whole waves of them (split_plan.hpp: choose_pieces).
    // PROTATTN_FUSED_MAX_SPLITS caps the pieces of a list (1: no list is cut), for comparison.
    std::vector<int> pieces;  // per list in creation order; empty: none is cut
    if (base_items > 0 && base_items < kMaxWavesToBalance * target) {
      int max_pieces = kMaxSplits;
      if (const char* cap = std::getenv("PROTATTN_FUSED_MAX_SPLITS")) max_pieces = std::clamp(std::atoi(cap), 1, kMaxSplits);
      std::vector<int> lens;
      lens.reserve(static_cast<std::size_t>(base_items));
      for (const BlockLayout* l : layouts)
        for (int h = 0; h < shape.heads; ++h)
          for (int r = 0; r < l->n_tiles; ++r) lens.push_back(l->row_ptr[r + 1] - l->row_ptr[r]);
      pieces = choose_pieces(lens, target, kMinTilesPerSplit, max_pieces);
    }
    std::vector<WorkItem> items;
    std::vector<CombineItem> combines;
    items.reserve(static_cast<std::size_t>(base_items));
    int slots = 0;
    std::size_t list = 0;
    for (std::size_t b = 0; b < layouts.size(); ++b) {
      const BlockLayout& l = *layouts[b];
      for (int h = 0; h < shape.heads; ++h) {
        for (int r = 0; r < l.n_tiles; ++r, ++list) {
          const int begin = static_cast<int>(edge_base[b] + l.row_ptr[r]);
          const int len = l.row_ptr[r + 1] - l.row_ptr[r];
          const int n_pieces = pieces.empty() ? 1 : pieces[list];
          if (n_pieces == 1) {
            items.push_back({sds[b], static_cast<int>(b), h, r, begin, begin + len, -1, len > 0 ? cols[begin] : 0});
            continue;
          }
          combines.push_back({sds[b], static_cast<int>(b), h, r, slots, n_pieces, 0});
          for (int s = 0; s < n_pieces; ++s) {
            const int e0 = begin + piece_start(len, s, n_pieces);
            items.push_back({sds[b], static_cast<int>(b), h, r, e0, begin + piece_start(len, s + 1, n_pieces), slots++, cols[e0]});
          }
        }
      }
    }
    // Order of the blocks. Unsplit, the layout's order (structure, head, query tile): blocks that
    // run together then read the same key tiles, which stay in L2 (on the H200 W2 at d=128 ran
    // 16% faster than longest first), except the last kTailWaves waves' worth of items, longest
    // first, so that the shortest items end the run (at 4 waves, with a block per item: 16 copies
    // of 2HHB 2.5% faster, the large layouts 0-1.3%: bench/results/2026-12-01-h200-tail-order;
    // PROTATTN_FUSED_TAIL=<waves> sets how many, 0 none). Split, longest first (ties in creation
    // order), so that the block scheduler approximates LPT over few long pieces.
    // PROTATTN_FUSED_ORDER=layout|longest overrides, for comparison.
    const char* order_env = std::getenv("PROTATTN_FUSED_ORDER");
    const std::string order = order_env ? order_env : (!combines.empty() ? "longest" : "layout");
    if (order != "layout" && order != "longest")
      throw Error("PROTATTN_FUSED_ORDER: unknown order '" + order + "' (layout or longest)");
    const auto tiles = [](const WorkItem& w) { return w.e_end - w.e_begin; };
    if (order == "longest") order_tail_longest_first(items, items.size(), tiles);
    if (order == "layout") {
      const char* tail_env = std::getenv("PROTATTN_FUSED_TAIL");
      const double tail_waves = tail_env ? std::atof(tail_env) : kTailWaves;
      order_tail_longest_first(items, tail_items(items.size(), target, tail_waves), tiles);
    }

    FusedPlan& fp = *plan;
    // At least one element each, so that every pointer the kernel gets is valid.
    if (cols.empty()) cols.push_back(0);
    if (kinds.empty()) kinds.push_back(0);
    std::vector<float> xyz;
    cuda::Uploads up;
    up.add(fp.col_idx, cols);
    up.add(fp.kind, kinds);
    if (any_atoms) {
      xyz.assign(static_cast<std::size_t>(total_n) * 3, 0.0f);
      for (std::size_t b = 0; b < layouts.size(); ++b)
        if (layouts[b]->mask == MaskMode::atoms)
          std::copy(layouts[b]->coords.begin(), layouts[b]->coords.end(), xyz.begin() + sds[b].offset * 3);
      up.add(fp.coords, xyz);
    }
    up.add(fp.items, items);
    up.add(fp.combines, combines);
    up.commit();
    fp.part_o.resize(static_cast<std::size_t>(slots) * kTile * shape.dim * sizeof(float));
    fp.part_ml.resize(static_cast<std::size_t>(slots) * kTile * 2 * sizeof(float));

    Params& p = fp.params;
    p.head_stride = total_n * shape.dim;
    p.total_n = total_n;
    p.col_idx = fp.col_idx.as<std::int32_t>();
    p.kind = fp.kind.as<std::uint16_t>();
    p.coords = fp.coords.as<float>();
    p.items = fp.items.as<WorkItem>();
    p.combines = fp.combines.as<CombineItem>();
    p.n_items = static_cast<int>(items.size());
    p.n_combines = static_cast<int>(combines.size());
    p.scale_log2 = shape.effective_scale() * 1.4426950408889634f;
    p.kernel = kernel;
    // Turns between the consumer warpgroups (measured faster: W2 4.41 -> 4.30 ms on the H200),
    // except for structures under mask atoms (5% slower with them); PROTATTN_FUSED_PINGPONG=0
    // turns them off, =all on for every structure, for comparison.
    const char* pingpong = std::getenv("PROTATTN_FUSED_PINGPONG");
    p.pingpong = kPingpongNotAtoms;
    if (switched_off("PROTATTN_FUSED_PINGPONG")) p.pingpong = kPingpongOff;
    if (pingpong && std::string(pingpong) == "all") p.pingpong = kPingpongAll;
    if (kernel == kKernelWs) {
      // Its stages (those of coordinates too when a structure has mask atoms), as many as fit;
      // PROTATTN_FUSED_WS_STAGES caps them, for comparison.
      const char* stages = std::getenv("PROTATTN_FUSED_WS_STAGES");
      const int max_stages = stages ? std::max(1, std::atoi(stages)) : 0;
      const WsGeometry g =
          dispatch(shape.dtype, shape.dim, [&]<typename T, int D>() { return ws_geometry<T, D>(any_atoms, max_stages); });
      p.ws_stages = g.stages;
      p.ws_stage_bytes = g.stage_bytes;
      p.ws_smem = g.smem_bytes;
    }
    // For comparisons: PROTATTN_FUSED_RESCALE_SLACK sets how far a row's max may rise without
    // rescaling ("always" rescales on every rise, as plain online softmax does).
    const char* slack = std::getenv("PROTATTN_FUSED_RESCALE_SLACK");
    p.rescale_slack = !slack ? kRescaleSlack
                      : std::string(slack) == "always" ? -std::numeric_limits<float>::infinity()
                                                        : std::clamp(static_cast<float>(std::atof(slack)), 0.0f, 12.0f);
    // The ws and wgmma kernels' lazy max (fused_params.hpp: kLazyMaxShare); PROTATTN_FUSED_LAZY_MAX=0 takes
    // every tile's max first, for comparison.
    p.lazy_max = switched_off("PROTATTN_FUSED_LAZY_MAX") ? 0 : 1;
    // The ws kernel's tiles by TMA (its maps are made by run, for the run's pointers);
    // PROTATTN_FUSED_TMA=0 copies every tile with cp.async, for comparison.
    p.tma = kernel == kKernelWs && !switched_off("PROTATTN_FUSED_TMA") ? 1 : 0;
    // The ws kernel: a block per SM slot, each taking items until they run out (the next one from
    // a counter as it nears the end of the last, its Q and first K/V tiles loading while the
    // consumers finish); PROTATTN_FUSED_PERSISTENT=0 launches a block per item. With a block per
    // item, the producer brings the Q tile of the item a wave ahead into L2 (that item's block
    // starts about when this one's wave ends); PROTATTN_FUSED_Q_PREFETCH=0 does not.
    p.ws_grid = switched_off("PROTATTN_FUSED_PERSISTENT") ? p.n_items : static_cast<int>(std::min<std::int64_t>(p.n_items, target));
    // PROTATTN_FUSED_WS_GRID=<blocks> runs the persistent blocks on fewer SMs, to see how the
    // tile rate of an SM moves with the power the GPU draws (docs/fused.md: the power cap).
    if (const char* grid = std::getenv("PROTATTN_FUSED_WS_GRID"); grid && !switched_off("PROTATTN_FUSED_PERSISTENT"))
      p.ws_grid = std::clamp(std::atoi(grid), 1, p.ws_grid);
    p.q_prefetch = p.tma && p.ws_grid == p.n_items && !switched_off("PROTATTN_FUSED_Q_PREFETCH") ? static_cast<int>(target) : 0;
    if (kernel == kKernelWs) {
      // Zeroed here (a blocking copy, done before any stream's launch); each run's last block sets
      // them back to zero (fused_ws_kernel).
      fp.item_counter.upload(std::vector<std::int32_t>{0, 0});
      p.item_counter = fp.item_counter.as<std::int32_t>();
    }
    p.part_o = fp.part_o.as<float>();
    p.part_ml = fp.part_ml.as<float>();

    fp.summary.items = p.n_items;
    fp.summary.combines = p.n_combines;
    fp.summary.slots = slots;
    fp.summary.blocks_per_sm = bps;
    fp.summary.blocks = attention_grid(p);
    fp.summary.kernel = kernel == kKernelWs ? "ws" : kernel == kKernelWgmma ? "wgmma" : "mma_sync";
    fp.summary.sms = sms_;
    for (const BlockLayout* l : layouts) fp.summary.warp_tiles += 8 * l->nnz();
    if (any_reach)
      for (std::uint16_t k : kinds) fp.summary.warps_out += std::popcount(static_cast<unsigned>(k >> kKindOutShift));
    for (const cuda::DeviceBuffer* buf :
         {&fp.col_idx, &fp.kind, &fp.coords, &fp.items, &fp.combines, &fp.part_o, &fp.part_ml, &fp.item_counter})
      fp.summary.device_bytes += buf->bytes();
    return plan;
  }

  void run(const Plan& plan, const RunArgs& args) override {
    const auto* fp = dynamic_cast<const FusedPlan*>(&plan);
    if (!fp) throw Error("fused engine: the plan was made by another engine");
    if (!args.q || !args.k || !args.v || !args.o) throw Error("fused engine: Q, K, V and O must be given");
    // The kernels copy Q, K and V in 16-byte pieces (cp.async, TMA) and write O in pairs.
    const auto misaligned = [](const void* ptr, std::uintptr_t to) { return reinterpret_cast<std::uintptr_t>(ptr) % to != 0; };
    if (misaligned(args.q, 16) || misaligned(args.k, 16) || misaligned(args.v, 16) || misaligned(args.o, 4))
      throw Error("fused engine: Q, K and V must be 16-byte aligned and O 4-byte aligned in device memory");
    Params p = fp->params;
    p.q = args.q;
    p.k = args.k;
    p.v = args.v;
    p.o = args.o;
    p.lse = args.lse;
    const auto rows = static_cast<std::uint64_t>(plan.shape.heads) * static_cast<std::uint64_t>(p.total_n);
    if (rows > static_cast<std::uint64_t>(std::numeric_limits<std::int32_t>::max())) p.tma = 0;  // TMA rows are int32
    if (p.tma) {
      row_map(p.tma_q, p.q, rows, plan.shape.dim);
      row_map(p.tma_k, p.k, rows, plan.shape.dim);
      row_map(p.tma_v, p.v, rows, plan.shape.dim);
    }
    auto stream = static_cast<cudaStream_t>(args.stream);
    // PROTATTN_FUSED_SELF_RESET=0 also zeroes the item counters ahead of each launch (as before
    // the kernel set them back itself), for comparison.
    if (p.kernel == kKernelWs && p.n_items > 0 && memset_counters_)
      PROTATTN_CUDA_CHECK(cudaMemsetAsync(p.item_counter, 0, 2 * sizeof(std::int32_t), stream));
    dispatch(plan.shape.dtype, plan.shape.dim, [&]<typename T, int D>() { launch_fused<T, D>(p, stream); });
  }

 private:
  // Resident blocks per SM of the plan's kernel, asked of CUDA once per (dtype, dim, kernel) and
  // kept: a server plans a batch on every inference thread, and the query (with the shared-memory
  // limit it raises first) takes a lock. Racing threads store the same value.
  int blocks_per_sm(const ProblemShape& shape, int kernel) {
    std::atomic<int>& slot = bps_[shape.dtype == DType::bf16 ? 1 : 0][shape.dim == 32 ? 0 : shape.dim == 64 ? 1 : 2][kernel];
    int bps = slot.load(std::memory_order_relaxed);
    if (bps == 0) {
      bps = dispatch(shape.dtype, shape.dim, [&]<typename T, int D>() { return fused_blocks_per_sm<T, D>(kernel); });
      slot.store(bps, std::memory_order_relaxed);
    }
    return bps;
  }

  int device_ = 0;
  int sms_ = 0;
  bool hopper_ = false;
  int forced_kernel_ = -1;  // a KernelCode from the environment, or -1
  // Params::kind's out-of-reach bits set (mask atoms, BlockLayout::rows_out); PROTATTN_FUSED_REACH=0
  // leaves them clear, for comparison.
  bool use_reach_ = true;
  bool memset_counters_ = switched_off("PROTATTN_FUSED_SELF_RESET");
  std::atomic<int> bps_[2][3][3] = {};  // [fp16, bf16][d 32, 64, 128][KernelCode]; 0: not asked yet
};

}  // namespace

PlanSummary summarize(const Plan& plan) {
  const auto* fp = dynamic_cast<const FusedPlan*>(&plan);
  if (!fp) throw Error("fused engine: not a fused plan");
  return fp->summary;
}

}  // namespace protattn::fused

namespace protattn {

std::unique_ptr<Engine> make_fused_engine(const EngineOptions& opt) { return std::make_unique<fused::FusedEngine>(opt); }

}  // namespace protattn
