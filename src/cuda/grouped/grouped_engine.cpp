// protattn grouped engine: plan (validation, packed layout, workspace, pointer arrays, CUTLASS
// grouped GEMMs) and run (prep, Q K^T, softmax, P V, ordered reduction), with stage timing.
#include "cuda/grouped/grouped_engine.hpp"

#include <cuda_runtime.h>

#include <algorithm>
#include <array>
#include <cstdint>
#include <cstdio>
#include <string>
#include <vector>

#include "cuda/common/cuda_check.hpp"
#include "cuda/common/device_buffer.hpp"
#include "cuda/grouped/grouped_gemm.hpp"
#include "cuda/grouped/grouped_params.hpp"
#include "engine/factories.hpp"
#include "protattn/error.hpp"

namespace protattn::grouped {
namespace {

constexpr float kLog2e = 1.4426950408889634f;
constexpr std::size_t kOperandAlign = 16;  // TMA and the 16-byte vector accesses
constexpr int kMaxHeads = 65535;           // grid dimension y of the per-tile kernels
constexpr int kHopperMajor = 9;            // the GEMMs are compiled for sm_90a only
constexpr double kGiB = 1024.0 * 1024.0 * 1024.0;

bool dim_supported(int d) { return d == 64 || d == 128; }

std::string gib(double bytes) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.2f GiB", bytes / kGiB);
  return buf;
}

class GroupedPlan final : public Plan {
 public:
  Params params{};
  PlanSummary summary;
  cuda::DeviceBuffer col_idx, block_qt, qtiles, structs, coords;
  cuda::DeviceBuffer s, p, opart;                          // stage buffers
  cuda::DeviceBuffer qk_a, qk_b, qk_d, pv_a, pv_b, pv_d;  // GEMM operand pointer arrays
  cuda::DeviceBuffer qp, kp, vp;                          // tile-padded copies (ragged n only)
  std::unique_ptr<GroupedGemm> qk_gemm, pv_gemm;          // null when nothing is kept
};

// Event indices around the stages of one run.
enum Mark { kStart, kPrepDone, kQkDone, kSoftmaxDone, kPvGemmDone, kReduceDone, kMarks };

class GroupedEngine final : public Engine {
 public:
  explicit GroupedEngine(const EngineOptions& opt) : device_(opt.device) {
    const int count = cuda::device_count("grouped engine");
    if (device_ < 0 || device_ >= count)
      throw Error("grouped engine: CUDA device " + std::to_string(device_) + " does not exist (" + std::to_string(count) + " present)");
    PROTATTN_CUDA_CHECK(cudaSetDevice(device_));
    cudaDeviceProp prop{};
    PROTATTN_CUDA_CHECK(cudaGetDeviceProperties(&prop, device_));
    if (prop.major != kHopperMajor)
      throw Error(std::string("grouped engine: needs a Hopper GPU (sm_90); device ") + std::to_string(device_) + " is " +
                  prop.name + " (sm_" + std::to_string(prop.major) + std::to_string(prop.minor) + ")");
    for (cudaEvent_t& ev : events_) PROTATTN_CUDA_CHECK(cudaEventCreate(&ev));
  }
  ~GroupedEngine() override {
    for (cudaEvent_t ev : events_) cudaEventDestroy(ev);
  }
  GroupedEngine(const GroupedEngine&) = delete;
  GroupedEngine& operator=(const GroupedEngine&) = delete;

  const char* name() const override { return "grouped"; }
  bool on_device() const override { return true; }

  std::unique_ptr<Plan> plan(const std::vector<const BlockLayout*>& layouts, const ProblemShape& shape) override;
  void run(const Plan& plan, const RunArgs& args) override;

  void set_stage_timing(bool on) { timing_ = on; }
  // Times of the last run made with stage timing on; waits for it.
  StageTimes last_stage_ms() const;

 private:
  int device_ = 0;
  bool timing_ = false, timed_ = false;
  std::array<cudaEvent_t, kMarks> events_{};
};

std::unique_ptr<Plan> GroupedEngine::plan(const std::vector<const BlockLayout*>& layouts, const ProblemShape& shape) {
  if (shape.heads < 1 || shape.heads > kMaxHeads)
    throw Error("grouped engine: heads must be in [1, " + std::to_string(kMaxHeads) + "], got " + std::to_string(shape.heads));
  if (shape.dtype != DType::f16 && shape.dtype != DType::bf16)
    throw Error(std::string("grouped engine: unsupported dtype ") + to_string(shape.dtype) + " (fp16 or bf16)");
  if (!dim_supported(shape.dim))
    throw Error("grouped engine: unsupported head dim " + std::to_string(shape.dim) + " (64 or 128)");
  PROTATTN_CUDA_CHECK(cudaSetDevice(device_));

  auto plan = std::make_unique<GroupedPlan>();
  plan->shape = shape;
  plan->layouts = layouts;
  plan->offsets.assign(1, 0);

  std::vector<StructDesc> sds;
  std::vector<QueryTile> qts;
  std::vector<std::int32_t> cols, block_qt;
  bool any_atoms = false, padded = false;
  std::int64_t padded_rows = 0;
  for (std::size_t b = 0; b < layouts.size(); ++b) {
    const BlockLayout& l = *layouts[b];
    const std::string which = "grouped engine: layout " + std::to_string(b);
    if (l.tile != kTile) throw Error(which + " has tile " + std::to_string(l.tile) + " (tile must be 128)");
    if (l.n < 0 || static_cast<std::int64_t>(l.n_tiles) * kTile < l.n || static_cast<int>(l.row_ptr.size()) != l.n_tiles + 1 ||
        l.row_ptr.front() != 0 || l.row_ptr.back() != static_cast<std::int32_t>(l.col_idx.size()))
      throw Error(which + " is inconsistent (n / n_tiles / row_ptr / col_idx)");
    for (std::int32_t c : l.col_idx)
      if (c < 0 || c >= l.n_tiles) throw Error(which + " has a key tile " + std::to_string(c) + " out of range");
    StructDesc sd{};
    sd.row0 = plan->offsets.back();
    sd.prow0 = padded_rows;
    sd.n = l.n;
    sd.mask = l.mask == MaskMode::tiles ? kMaskTiles : l.mask == MaskMode::atoms ? kMaskAtoms : kMaskWindows;
    sd.cutoff2 = l.cutoff * l.cutoff;
    if (l.mask == MaskMode::atoms) {
      any_atoms = true;
      if (l.coords.size() != static_cast<std::size_t>(l.n) * 3) throw Error(which + " has mask atoms but no coordinates");
    }
    padded = padded || l.n % kTile != 0;
    for (int r = 0; r < l.n_tiles; ++r) {
      QueryTile qt{};
      qt.b = static_cast<std::int32_t>(b);
      qt.tile = r;
      qt.e_begin = static_cast<std::int32_t>(cols.size());
      for (std::int32_t e = l.row_ptr[r]; e < l.row_ptr[r + 1]; ++e) {
        cols.push_back(l.col_idx[e]);
        block_qt.push_back(static_cast<std::int32_t>(qts.size()));
      }
      qt.e_end = static_cast<std::int32_t>(cols.size());
      qts.push_back(qt);
    }
    sds.push_back(sd);
    plan->offsets.push_back(plan->offsets.back() + l.n);
    padded_rows += static_cast<std::int64_t>(l.n_tiles) * kTile;
  }
  const std::int64_t total_n = plan->total_n();
  const std::int64_t nnz = static_cast<std::int64_t>(cols.size());
  const std::int64_t problems = nnz * shape.heads;
  const std::size_t esize = dtype_size(shape.dtype);
  constexpr std::int64_t kBlockElems = static_cast<std::int64_t>(kTile) * kTile;
  const std::int64_t opart_elems = static_cast<std::int64_t>(kTile) * shape.dim;
  constexpr int kPointerArrays = 6;

  // Device memory first: the three-stage design keeps S, P and the P V partials of every kept
  // tile pair, which grows with heads x nnz.
  const double need = static_cast<double>(problems) *
                          (kBlockElems * (sizeof(float) + esize) + opart_elems * sizeof(float) + kPointerArrays * sizeof(void*)) +
                      (padded ? 3.0 * shape.heads * padded_rows * shape.dim * esize : 0.0);
  std::size_t free_bytes = 0, total_bytes = 0;
  cuda::trim_device_caches();  // blocks cached for reuse count as free here
  PROTATTN_CUDA_CHECK(cudaMemGetInfo(&free_bytes, &total_bytes));
  if (need > static_cast<double>(free_bytes))
    throw Error("grouped engine: the plan needs " + gib(need) + " of device memory (S, P and P V partials for " +
                std::to_string(shape.heads) + " heads x " + std::to_string(nnz) + " tile pairs), " + gib(free_bytes) + " free");

  GroupedPlan& gp = *plan;
  gp.col_idx.upload(cols);
  gp.block_qt.upload(block_qt);
  gp.qtiles.upload(qts);
  gp.structs.upload(sds);
  if (any_atoms) {
    std::vector<float> xyz(static_cast<std::size_t>(total_n) * 3, 0.0f);
    for (std::size_t b = 0; b < layouts.size(); ++b)
      if (layouts[b]->mask == MaskMode::atoms)
        std::copy(layouts[b]->coords.begin(), layouts[b]->coords.end(), xyz.begin() + sds[b].row0 * 3);
    gp.coords.upload(xyz);
  }
  gp.s.resize(problems * kBlockElems * sizeof(float));
  gp.p.resize(problems * kBlockElems * esize);
  gp.opart.resize(problems * opart_elems * sizeof(float));
  for (cuda::DeviceBuffer* buf : {&gp.qk_a, &gp.qk_b, &gp.pv_b}) buf->resize(problems * sizeof(void*));
  std::vector<const void*> qk_d(problems), pv_a(problems), pv_d(problems);
  for (std::int64_t i = 0; i < problems; ++i) {
    qk_d[i] = gp.s.as<float>() + i * kBlockElems;
    pv_a[i] = gp.p.as<char>() + i * kBlockElems * static_cast<std::int64_t>(esize);
    pv_d[i] = gp.opart.as<float>() + i * opart_elems;
  }
  gp.qk_d.upload(qk_d);
  gp.pv_a.upload(pv_a);
  gp.pv_d.upload(pv_d);
  if (padded) {
    const std::size_t bytes = static_cast<std::size_t>(shape.heads) * padded_rows * shape.dim * esize;
    for (cuda::DeviceBuffer* buf : {&gp.qp, &gp.kp, &gp.vp}) {
      buf->resize(bytes);
      PROTATTN_CUDA_CHECK(cudaMemset(buf->get(), 0, bytes));  // padding rows: finite zeros forever
    }
  }

  Params& p = gp.params;
  p.total_n = total_n;
  p.heads = shape.heads;
  p.dim = shape.dim;
  p.elem_bytes = static_cast<std::int32_t>(esize);
  p.scale_log2 = shape.effective_scale() * kLog2e;
  p.col_idx = gp.col_idx.as<std::int32_t>();
  p.block_qt = gp.block_qt.as<std::int32_t>();
  p.qtiles = gp.qtiles.as<QueryTile>();
  p.structs = gp.structs.as<StructDesc>();
  p.coords = gp.coords.as<float>();
  p.nnz = nnz;
  p.n_qtiles = static_cast<std::int32_t>(qts.size());
  p.s = gp.s.as<float>();
  p.p = gp.p.get();
  p.opart = gp.opart.as<float>();
  p.qk_a = gp.qk_a.as<const void*>();
  p.qk_b = gp.qk_b.as<const void*>();
  p.pv_b = gp.pv_b.as<const void*>();
  p.qp = gp.qp.get();
  p.kp = gp.kp.get();
  p.vp = gp.vp.get();
  p.padded_rows = padded_rows;

  if (problems > 0) {
    GemmSetup qk{static_cast<int>(problems), shape.dim, gp.qk_a.as<const void*>(), gp.qk_b.as<const void*>(),
                 gp.qk_d.as<float*>(), device_};
    GemmSetup pv{static_cast<int>(problems), shape.dim, gp.pv_a.as<const void*>(), gp.pv_b.as<const void*>(),
                 gp.pv_d.as<float*>(), device_};
    gp.qk_gemm = make_grouped_gemm(GemmStage::qk, shape.dtype, qk);
    gp.pv_gemm = make_grouped_gemm(GemmStage::pv, shape.dtype, pv);
  }
  if (padded) {
    // The operands are the padded copies: their pointers never change.
    launch_fill_pointers(p, nullptr);
    PROTATTN_CUDA_CHECK(cudaStreamSynchronize(nullptr));
  }

  gp.summary.problems = problems;
  gp.summary.padded = padded;
  for (const cuda::DeviceBuffer* buf : {&gp.col_idx, &gp.block_qt, &gp.qtiles, &gp.structs, &gp.coords, &gp.s, &gp.p, &gp.opart,
                                        &gp.qk_a, &gp.qk_b, &gp.qk_d, &gp.pv_a, &gp.pv_b, &gp.pv_d, &gp.qp, &gp.kp, &gp.vp})
    gp.summary.device_bytes += buf->bytes();
  for (const auto* g : {gp.qk_gemm.get(), gp.pv_gemm.get()})
    if (g) gp.summary.device_bytes += g->device_bytes();
  return plan;
}

void GroupedEngine::run(const Plan& plan, const RunArgs& args) {
  const auto* gp = dynamic_cast<const GroupedPlan*>(&plan);
  if (!gp) throw Error("grouped engine: the plan was made by another engine");
  if (!args.q || !args.k || !args.v || !args.o) throw Error("grouped engine: Q, K, V and O must be given");
  for (const void* ptr : {args.q, args.k, args.v, static_cast<const void*>(args.o)})
    if (reinterpret_cast<std::uintptr_t>(ptr) % kOperandAlign != 0)
      throw Error("grouped engine: Q, K, V and O must be 16-byte aligned");
  Params p = gp->params;
  p.q = args.q;
  p.k = args.k;
  p.v = args.v;
  p.o = args.o;
  p.lse = args.lse;
  auto stream = static_cast<cudaStream_t>(args.stream);

  bool timed = timing_;
  if (timed) {
    cudaStreamCaptureStatus capture = cudaStreamCaptureStatusNone;
    PROTATTN_CUDA_CHECK(cudaStreamIsCapturing(stream, &capture));
    timed = capture == cudaStreamCaptureStatusNone;
  }
  auto mark = [&](Mark m) {
    if (timed) PROTATTN_CUDA_CHECK(cudaEventRecord(events_[m], stream));
  };
  const DType dtype = plan.shape.dtype;
  mark(kStart);
  if (p.qp)
    launch_pad_copy(p, stream);  // the pointer arrays point at the padded copies since plan()
  else
    launch_fill_pointers(p, stream);
  mark(kPrepDone);
  if (gp->qk_gemm) gp->qk_gemm->launch(stream);
  mark(kQkDone);
  launch_softmax(p, dtype, stream);
  mark(kSoftmaxDone);
  if (gp->pv_gemm) gp->pv_gemm->launch(stream);
  mark(kPvGemmDone);
  launch_reduce(p, dtype, stream);
  mark(kReduceDone);
  if (timed) timed_ = true;
}

StageTimes GroupedEngine::last_stage_ms() const {
  if (!timed_) throw Error("grouped engine: no run was made with stage timing on");
  PROTATTN_CUDA_CHECK(cudaEventSynchronize(events_[kReduceDone]));
  auto between = [&](Mark a, Mark b) {
    float ms = 0;
    PROTATTN_CUDA_CHECK(cudaEventElapsedTime(&ms, events_[a], events_[b]));
    return ms;
  };
  StageTimes t;
  t.prep = between(kStart, kPrepDone);
  t.qk = between(kPrepDone, kQkDone);
  t.softmax = between(kQkDone, kSoftmaxDone);
  t.pv_gemm = between(kSoftmaxDone, kPvGemmDone);
  t.pv_reduce = between(kPvGemmDone, kReduceDone);
  t.pv = between(kSoftmaxDone, kReduceDone);
  t.total = between(kStart, kReduceDone);
  return t;
}

GroupedEngine& as_grouped(Engine& engine) {
  auto* g = dynamic_cast<GroupedEngine*>(&engine);
  if (!g) throw Error(std::string("engine '") + engine.name() + "' is not the grouped engine");
  return *g;
}

}  // namespace

std::unique_ptr<GroupedGemm> make_grouped_gemm(GemmStage stage, DType dtype, const GemmSetup& setup) {
  if (!dim_supported(setup.dim))
    throw Error("grouped engine: unsupported head dim " + std::to_string(setup.dim) + " (64 or 128)");
  switch (dtype) {
    case DType::f16: return stage == GemmStage::qk ? make_qk_gemm_f16(setup) : make_pv_gemm_f16(setup);
    case DType::bf16: return stage == GemmStage::qk ? make_qk_gemm_bf16(setup) : make_pv_gemm_bf16(setup);
    default: throw Error(std::string("grouped engine: unsupported dtype ") + to_string(dtype) + " (fp16 or bf16)");
  }
}

void enable_stage_timing(Engine& engine, bool on) { as_grouped(engine).set_stage_timing(on); }

StageTimes stage_times(Engine& engine) { return as_grouped(engine).last_stage_ms(); }

PlanSummary summarize(const Plan& plan) {
  const auto* gp = dynamic_cast<const GroupedPlan*>(&plan);
  if (!gp) throw Error("grouped engine: not a grouped plan");
  return gp->summary;
}

}  // namespace protattn::grouped

namespace protattn {

std::unique_ptr<Engine> make_grouped_engine(const EngineOptions& opt) { return std::make_unique<grouped::GroupedEngine>(opt); }

}  // namespace protattn
