// protattn grouped engine: the original three-stage design, kept as the baseline the fused
// engine is measured against.
//   0. gather Q, K, V into tile-padded buffers (the GEMMs read whole 128-row tiles);
//   1. S = Q K^T: one 128 x 128 x d GEMM per kept tile pair (cuBLAS pointer-array batched
//      GEMM, fp16/bf16 in, fp32 out), scores in a block buffer [nnz * heads, 128, 128];
//   2. segmented softmax over each query row's kept tiles (fp32 max and sum, mask applied),
//      P written in the input dtype, LSE written;
//   3. O_part = P V per kept tile pair (the same batched GEMM, fp32 out), then O = the sum of
//      a row's parts in column order (deterministic), in the input dtype.
#include <cublas_v2.h>
#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <algorithm>
#include <string>
#include <vector>

#include "cuda/common/cuda_check.hpp"
#include "cuda/common/device_buffer.hpp"
#include "cuda/grouped/grouped_engine.hpp"
#include "engine/factories.hpp"
#include "protattn/error.hpp"

namespace protattn::grouped {
namespace {

constexpr int kTile = 128;
constexpr int kThreads = 256;
// Query rows of a tile that one block of the softmax and the reduction handles: a tile is
// spread over kTile / kRowsPerBlock blocks so that small layouts still fill the GPU.
constexpr int kRowsPerBlock = 16;
constexpr float kLog2e = 1.4426950408889634f;
constexpr float kLn2 = 0.6931471805599453f;

#define PROTATTN_CUBLAS_CHECK(stmt)                                                                    \
  do {                                                                                                 \
    const cublasStatus_t s_ = (stmt);                                                                  \
    if (s_ != CUBLAS_STATUS_SUCCESS)                                                                   \
      throw Error(std::string("cuBLAS error ") + cublasGetStatusString(s_) + " from `" #stmt "` at " + \
                  __FILE__ + ":" + std::to_string(__LINE__));                                          \
  } while (0)

// One kept tile pair of one head: where its operands and results live.
struct Block {
  std::int32_t b, h, q_tile, k_tile;  // structure, head, tiles (local to the structure)
  std::int32_t kind;                  // BlockKind
  std::int32_t pad;
};
// One query tile of one head: its blocks are [first, first + count) in row order.
struct Row {
  std::int32_t b, h, q_tile, first, count, pad;
};
struct Struct {
  std::int64_t offset;      // first row in the packed atom axis
  std::int64_t pad_offset;  // first row in the tile-padded buffers
  std::int32_t n, mask;     // atoms, MaskMode
  float cutoff2;
  std::int32_t pad;
};

struct Params {
  const Block* blocks;
  const Row* rows;
  const Struct* structs;
  const float* coords;        // [total_n, 3] new order (mask atoms)
  std::int64_t head_stride;   // total_n * dim
  std::int64_t pad_stride;    // padded rows * dim
  std::int64_t total_n;
  std::int32_t dim, n_blocks, n_rows, heads;
  float scale_log2;
};

template <typename T>
__device__ __forceinline__ float to_f(T x) {
  if constexpr (std::is_same_v<T, __half>) return __half2float(x);
  else return __bfloat162float(x);
}
template <typename T>
__device__ __forceinline__ T from_f(float x) {
  if constexpr (std::is_same_v<T, __half>) return __float2half_rn(x);
  else return __float2bfloat16_rn(x);
}

// Copies [heads, total_n, dim] into [heads, padded rows, dim], rows past a structure zeroed.
template <typename T>
__global__ void gather_padded(const T* __restrict__ src, T* __restrict__ dst, Params p, int n_structs) {
  const std::int64_t per_head = p.pad_stride;
  for (std::int64_t i = blockIdx.x * static_cast<std::int64_t>(blockDim.x) + threadIdx.x; i < per_head * p.heads;
       i += static_cast<std::int64_t>(gridDim.x) * blockDim.x) {
    const std::int64_t h = i / per_head, r = (i % per_head) / p.dim, c = i % p.dim;
    int b = 0;
    while (b + 1 < n_structs && p.structs[b + 1].pad_offset <= r) ++b;
    const Struct sd = p.structs[b];
    const std::int64_t local = r - sd.pad_offset;
    dst[i] = local < sd.n ? src[h * p.head_stride + (sd.offset + local) * p.dim + c] : from_f<T>(0.0f);
  }
}

// Pointer arrays of both batched GEMMs for the run's buffers (a kernel, so run() stays
// capturable in a CUDA graph).
template <typename T>
__global__ void make_pointers(Params p, const T* q, const T* k, const T* v, float* s, T* pm, float* opart,
                              const void** a1, const void** b1, void** c1, const void** a3, const void** b3,
                              void** c3) {
  const int i = blockIdx.x * blockDim.x + threadIdx.x;
  if (i >= p.n_blocks) return;
  const Block bl = p.blocks[i];
  const Struct sd = p.structs[bl.b];
  const std::int64_t head = bl.h * p.pad_stride;
  a1[i] = k + head + (sd.pad_offset + static_cast<std::int64_t>(bl.k_tile) * kTile) * p.dim;
  b1[i] = q + head + (sd.pad_offset + static_cast<std::int64_t>(bl.q_tile) * kTile) * p.dim;
  c1[i] = s + static_cast<std::int64_t>(i) * kTile * kTile;
  a3[i] = v + head + (sd.pad_offset + static_cast<std::int64_t>(bl.k_tile) * kTile) * p.dim;
  b3[i] = pm + static_cast<std::int64_t>(i) * kTile * kTile;
  c3[i] = opart + static_cast<std::int64_t>(i) * kTile * p.dim;
}

// The mask rule of mask_allows() (same float operations, no FMA contraction).
__device__ __forceinline__ bool allowed(const Struct& sd, const float* coords, int i, int j) {
  if (i >= sd.n || j >= sd.n) return false;
  if (sd.mask == static_cast<int>(MaskMode::tiles)) return true;
  if (sd.mask == static_cast<int>(MaskMode::windows)) {
    const int centre = (i / 32) * 32 + 16;
    return j >= centre - 64 && j < centre + 64;
  }
  if (i == j) return true;
  const float* a = coords + (sd.offset + i) * 3;
  const float* c = coords + (sd.offset + j) * 3;
  const float dx = __fsub_rn(a[0], c[0]), dy = __fsub_rn(a[1], c[1]), dz = __fsub_rn(a[2], c[2]);
  return __fadd_rn(__fadd_rn(__fmul_rn(dx, dx), __fmul_rn(dy, dy)), __fmul_rn(dz, dz)) <= sd.cutoff2;
}

// Stage 2: block (Row, group of kRowsPerBlock query rows), one warp per query row at a time;
// the row's scores over all its blocks, in block order: max, then sum of exp, then
// P = exp / sum and LSE.
template <typename T>
__global__ void __launch_bounds__(kThreads) segmented_softmax(Params p, float* s, T* pm, float* lse) {
  const Row row = p.rows[blockIdx.x];
  const Struct sd = p.structs[row.b];
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const int first_row = blockIdx.y * kRowsPerBlock;
  for (int lr = first_row + warp; lr < first_row + kRowsPerBlock; lr += kThreads / 32) {
    const int i = row.q_tile * kTile + lr;
    float mx = -INFINITY;
    for (int e = 0; e < row.count; ++e) {
      const Block bl = p.blocks[row.first + e];
      float* sb = s + (static_cast<std::int64_t>(row.first + e) * kTile + lr) * kTile;
      for (int c = lane; c < kTile; c += 32) {
        const int j = bl.k_tile * kTile + c;
        float x = sb[c] * p.scale_log2;
        if ((bl.kind != 0 || (bl.k_tile + 1) * kTile > sd.n || i >= sd.n) && !allowed(sd, p.coords, i, j)) x = -INFINITY;
        sb[c] = x;
        mx = fmaxf(mx, x);
      }
    }
    for (int o = 16; o > 0; o /= 2) mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, o));
    const float base = mx == -INFINITY ? 0.0f : mx;
    float sum = 0.0f;
    for (int e = 0; e < row.count; ++e) {
      const float* sb = s + (static_cast<std::int64_t>(row.first + e) * kTile + lr) * kTile;
      for (int c = lane; c < kTile; c += 32) sum += exp2f(sb[c] - base);
    }
    for (int o = 16; o > 0; o /= 2) sum += __shfl_xor_sync(0xffffffffu, sum, o);
    const float inv = sum > 0.0f ? 1.0f / sum : 0.0f;
    for (int e = 0; e < row.count; ++e) {
      const float* sb = s + (static_cast<std::int64_t>(row.first + e) * kTile + lr) * kTile;
      T* pb = pm + (static_cast<std::int64_t>(row.first + e) * kTile + lr) * kTile;
      for (int c = lane; c < kTile; c += 32) pb[c] = from_f<T>(exp2f(sb[c] - base) * inv);
    }
    if (lse && lane == 0 && i < sd.n)
      lse[static_cast<std::int64_t>(row.h) * p.total_n + sd.offset + i] = sum > 0.0f ? (mx + log2f(sum)) * kLn2 : -INFINITY;
  }
}

// Stage 3 tail: O = sum of the row's parts in block (column) order; block (Row, row group).
template <typename T>
__global__ void __launch_bounds__(kThreads) reduce_rows(Params p, const float* opart, T* o) {
  const Row row = p.rows[blockIdx.x];
  const Struct sd = p.structs[row.b];
  for (int idx = threadIdx.x; idx < kRowsPerBlock * p.dim; idx += kThreads) {
    const int lr = blockIdx.y * kRowsPerBlock + idx / p.dim, c = idx % p.dim;
    const int i = row.q_tile * kTile + lr;
    if (i >= sd.n) break;
    float acc = 0.0f;
    for (int e = 0; e < row.count; ++e) acc += opart[(static_cast<std::int64_t>(row.first + e) * kTile + lr) * p.dim + c];
    o[static_cast<std::int64_t>(row.h) * p.head_stride + (sd.offset + i) * p.dim + c] = from_f<T>(acc);
  }
}

class GroupedPlan final : public Plan {
 public:
  Params params{};
  std::int64_t padded_rows = 0;
  int n_structs = 0;
  cuda::DeviceBuffer blocks, rows, structs, coords, qp, kp, vp, s, pm, opart, ptrs;
};

class GroupedEngine final : public Engine {
 public:
  explicit GroupedEngine(const EngineOptions& opt) : device_(opt.device) {
    PROTATTN_CUDA_CHECK(cudaSetDevice(device_));
    PROTATTN_CUBLAS_CHECK(cublasCreate(&handle_));
    PROTATTN_CUDA_CHECK(cudaEventCreate(&ev_[0]));
    for (int i = 1; i < 4; ++i) PROTATTN_CUDA_CHECK(cudaEventCreate(&ev_[i]));
  }
  ~GroupedEngine() override {
    for (cudaEvent_t e : ev_) cudaEventDestroy(e);
    cublasDestroy(handle_);
  }
  const char* name() const override { return "grouped"; }
  bool on_device() const override { return true; }

  std::unique_ptr<Plan> plan(const std::vector<const BlockLayout*>& layouts, const ProblemShape& shape) override {
    if (shape.dtype != DType::f16 && shape.dtype != DType::bf16)
      throw Error(std::string("grouped engine: unsupported dtype ") + to_string(shape.dtype) + " (fp16 or bf16)");
    if (shape.dim != 64 && shape.dim != 128)
      throw Error("grouped engine: unsupported head dim " + std::to_string(shape.dim) + " (64, 128)");
    PROTATTN_CUDA_CHECK(cudaSetDevice(device_));
    auto plan = std::make_unique<GroupedPlan>();
    plan->shape = shape;
    plan->layouts = layouts;
    plan->offsets.assign(1, 0);
    std::vector<Struct> sds;
    std::vector<Block> blocks;
    std::vector<Row> rows;
    std::int64_t padded = 0;
    bool any_atoms = false;
    for (std::size_t b = 0; b < layouts.size(); ++b) {
      const BlockLayout& l = *layouts[b];
      if (l.tile != kTile) throw Error("grouped engine: unsupported tile " + std::to_string(l.tile) + " (128)");
      Struct sd{plan->offsets.back(), padded, l.n, static_cast<std::int32_t>(l.mask), l.cutoff * l.cutoff, 0};
      any_atoms = any_atoms || l.mask == MaskMode::atoms;
      sds.push_back(sd);
      padded += static_cast<std::int64_t>(l.n_tiles) * kTile;
      plan->offsets.push_back(plan->offsets.back() + l.n);
    }
    for (int h = 0; h < shape.heads; ++h) {
      for (std::size_t b = 0; b < layouts.size(); ++b) {
        const BlockLayout& l = *layouts[b];
        for (int r = 0; r < l.n_tiles; ++r) {
          rows.push_back({static_cast<int>(b), h, r, static_cast<int>(blocks.size()), l.row_ptr[r + 1] - l.row_ptr[r], 0});
          for (int e = l.row_ptr[r]; e < l.row_ptr[r + 1]; ++e)
            blocks.push_back({static_cast<int>(b), h, r, l.col_idx[e], static_cast<int>(l.kind.empty() ? 0 : static_cast<int>(l.kind[e])), 0});
        }
      }
    }
    const std::size_t nb = blocks.size(), esz = dtype_size(shape.dtype);
    const std::size_t work = nb * kTile * kTile * (sizeof(float) + esz) + nb * kTile * shape.dim * sizeof(float) +
                             3 * static_cast<std::size_t>(shape.heads) * padded * shape.dim * esz;
    std::size_t free_b = 0, total_b = 0;
    PROTATTN_CUDA_CHECK(cudaMemGetInfo(&free_b, &total_b));
    if (work > free_b)
      throw Error("grouped engine: the three stages need " + std::to_string(work >> 20) + " MiB of workspace (scores, P, partial O for " +
                  std::to_string(nb) + " blocks), more than the " + std::to_string(free_b >> 20) + " MiB free");
    GroupedPlan& gp = *plan;
    gp.blocks.upload(blocks.empty() ? std::vector<Block>(1) : blocks);
    gp.rows.upload(rows.empty() ? std::vector<Row>(1) : rows);
    gp.structs.upload(sds);
    if (any_atoms) {
      std::vector<float> xyz(static_cast<std::size_t>(plan->total_n()) * 3, 0.0f);
      for (std::size_t b = 0; b < layouts.size(); ++b)
        if (layouts[b]->mask == MaskMode::atoms) std::copy(layouts[b]->coords.begin(), layouts[b]->coords.end(), xyz.begin() + sds[b].offset * 3);
      gp.coords.upload(xyz);
    }
    const std::size_t padded_bytes = static_cast<std::size_t>(shape.heads) * padded * shape.dim * esz;
    gp.qp.resize(padded_bytes);
    gp.kp.resize(padded_bytes);
    gp.vp.resize(padded_bytes);
    gp.s.resize(nb * kTile * kTile * sizeof(float));
    gp.pm.resize(nb * kTile * kTile * esz);
    gp.opart.resize(nb * kTile * shape.dim * sizeof(float));
    gp.ptrs.resize(std::max<std::size_t>(1, nb) * 6 * sizeof(void*));
    gp.padded_rows = padded;
    gp.n_structs = static_cast<int>(layouts.size());
    Params& p = gp.params;
    p.blocks = gp.blocks.as<Block>();
    p.rows = gp.rows.as<Row>();
    p.structs = gp.structs.as<Struct>();
    p.coords = gp.coords.as<float>();
    p.head_stride = plan->total_n() * shape.dim;
    p.pad_stride = padded * shape.dim;
    p.total_n = plan->total_n();
    p.dim = shape.dim;
    p.n_blocks = static_cast<int>(nb);
    p.n_rows = static_cast<int>(rows.size());
    p.heads = shape.heads;
    p.scale_log2 = shape.effective_scale() * kLog2e;
    return plan;
  }

  void run(const Plan& plan, const RunArgs& args) override {
    const auto* gp = dynamic_cast<const GroupedPlan*>(&plan);
    if (!gp) throw Error("grouped engine: the plan was made by another engine");
    if (plan.shape.dtype == DType::f16) run_typed<__half>(*gp, args, CUDA_R_16F);
    else run_typed<__nv_bfloat16>(*gp, args, CUDA_R_16BF);
  }

  StageTimes last_stage_ms() const {
    StageTimes t;
    if (!timed_) return t;
    PROTATTN_CUDA_CHECK(cudaEventSynchronize(ev_[3]));
    PROTATTN_CUDA_CHECK(cudaEventElapsedTime(&t.qk, ev_[0], ev_[1]));
    PROTATTN_CUDA_CHECK(cudaEventElapsedTime(&t.softmax, ev_[1], ev_[2]));
    PROTATTN_CUDA_CHECK(cudaEventElapsedTime(&t.pv, ev_[2], ev_[3]));
    return t;
  }
  void set_stage_timing(bool on) { stage_timing_ = on; }

 private:
  template <typename T>
  void run_typed(const GroupedPlan& gp, const RunArgs& args, cudaDataType dt) {
    const Params& p = gp.params;
    auto stream = static_cast<cudaStream_t>(args.stream);
    PROTATTN_CUBLAS_CHECK(cublasSetStream(handle_, stream));
    const int grid = std::max(1, std::min<int>(4096, static_cast<int>((static_cast<std::int64_t>(p.heads) * p.pad_stride + kThreads - 1) / kThreads)));
    gather_padded<T><<<grid, kThreads, 0, stream>>>(static_cast<const T*>(args.q), gp.qp.as<T>(), p, gp.n_structs);
    gather_padded<T><<<grid, kThreads, 0, stream>>>(static_cast<const T*>(args.k), gp.kp.as<T>(), p, gp.n_structs);
    gather_padded<T><<<grid, kThreads, 0, stream>>>(static_cast<const T*>(args.v), gp.vp.as<T>(), p, gp.n_structs);
    PROTATTN_CUDA_CHECK_LAUNCH();
    if (p.n_rows == 0) return;
    auto** ptr = gp.ptrs.as<void*>();
    const std::size_t nb = static_cast<std::size_t>(std::max(1, p.n_blocks));
    const void** a1 = const_cast<const void**>(ptr);
    const void** b1 = const_cast<const void**>(ptr + nb);
    void** c1 = ptr + 2 * nb;
    const void** a3 = const_cast<const void**>(ptr + 3 * nb);
    const void** b3 = const_cast<const void**>(ptr + 4 * nb);
    void** c3 = ptr + 5 * nb;
    if (p.n_blocks > 0) {
      make_pointers<T><<<(p.n_blocks + kThreads - 1) / kThreads, kThreads, 0, stream>>>(
          p, gp.qp.as<T>(), gp.kp.as<T>(), gp.vp.as<T>(), gp.s.as<float>(), gp.pm.as<T>(), gp.opart.as<float>(), a1, b1, c1,
          a3, b3, c3);
      PROTATTN_CUDA_CHECK_LAUNCH();
    }
    const float one = 1.0f, zero = 0.0f;
    timed_ = stage_timing_;
    if (timed_) PROTATTN_CUDA_CHECK(cudaEventRecord(ev_[0], stream));
    // Stage 1, column-major view: S^T (128 x 128) = K (128 x d) * Q^T (d x 128).
    if (p.n_blocks > 0)
      PROTATTN_CUBLAS_CHECK(cublasGemmBatchedEx(handle_, CUBLAS_OP_T, CUBLAS_OP_N, kTile, kTile, p.dim, &one, a1, dt, p.dim, b1, dt,
                                                p.dim, &zero, c1, CUDA_R_32F, kTile, p.n_blocks, CUBLAS_COMPUTE_32F,
                                                CUBLAS_GEMM_DEFAULT));
    if (timed_) PROTATTN_CUDA_CHECK(cudaEventRecord(ev_[1], stream));
    segmented_softmax<T><<<dim3(p.n_rows, kTile / kRowsPerBlock), kThreads, 0, stream>>>(p, gp.s.as<float>(), gp.pm.as<T>(), args.lse);
    PROTATTN_CUDA_CHECK_LAUNCH();
    if (timed_) PROTATTN_CUDA_CHECK(cudaEventRecord(ev_[2], stream));
    // Stage 3, column-major view: O_part^T (d x 128) = V^T (d x 128) * P^T (128 x 128).
    if (p.n_blocks > 0)
      PROTATTN_CUBLAS_CHECK(cublasGemmBatchedEx(handle_, CUBLAS_OP_N, CUBLAS_OP_N, p.dim, kTile, kTile, &one, a3, dt, p.dim, b3, dt,
                                                kTile, &zero, c3, CUDA_R_32F, p.dim, p.n_blocks, CUBLAS_COMPUTE_32F,
                                                CUBLAS_GEMM_DEFAULT));
    reduce_rows<T><<<dim3(p.n_rows, kTile / kRowsPerBlock), kThreads, 0, stream>>>(p, gp.opart.as<float>(), static_cast<T*>(args.o));
    PROTATTN_CUDA_CHECK_LAUNCH();
    if (timed_) PROTATTN_CUDA_CHECK(cudaEventRecord(ev_[3], stream));
  }

  int device_ = 0;
  cublasHandle_t handle_ = nullptr;
  cudaEvent_t ev_[4] = {};
  bool stage_timing_ = false, timed_ = false;
};

}  // namespace

StageTimes stage_times(Engine& engine) {
  auto* g = dynamic_cast<GroupedEngine*>(&engine);
  if (!g) throw Error("grouped engine: stage times asked of engine " + std::string(engine.name()));
  return g->last_stage_ms();
}

void enable_stage_timing(Engine& engine, bool on) {
  auto* g = dynamic_cast<GroupedEngine*>(&engine);
  if (!g) throw Error("grouped engine: stage timing asked of engine " + std::string(engine.name()));
  g->set_stage_timing(on);
}

}  // namespace protattn::grouped

namespace protattn {

std::unique_ptr<Engine> make_grouped_engine(const EngineOptions& opt) { return std::make_unique<grouped::GroupedEngine>(opt); }

}  // namespace protattn
