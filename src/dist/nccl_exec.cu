// protattn dist: the NCCL executor. One process per GPU, the fused engine on every rank.
//
// A step, spatial mode: pack the halo tiles the peers need (copy kernel) -> one grouped round of
// ncclSend/ncclRecv, one message per peer -> unpack into the local K/V buffer (copy kernel) ->
// fused engine on the rank's sub-layout. Heads mode: the fused engine on the rank's heads. Then,
// unless kept distributed, O and LSE are gathered to rank 0 (timed apart from the step).
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <memory>
#include <string>
#include <vector>

#include "cuda/common/bench_support.hpp"
#include "cuda/common/cuda_check.hpp"
#include "cuda/common/device_buffer.hpp"
#include "cuda/fused/fused_engine.hpp"
#include "dist/nccl_exec.hpp"
#include "dist/nccl_lib.hpp"
#include "protattn/error.hpp"
#include "protattn/half.hpp"

namespace protattn::dist {
namespace {

// A copy run longer than this is cut into pieces, so that a long run is spread over blocks.
constexpr std::int64_t kRowsPerBlock = 32;
constexpr int kCopyThreads = 256;
constexpr std::size_t kCopyAlign = sizeof(int4);  // rows are copied in 16-byte words
// Seeds of the Q, K, V fills (the same on every rank: every rank holds the same global tensors).
constexpr std::uint64_t kSeedQ = 1, kSeedK = 2, kSeedV = 3;

// blockIdx.x: run, blockIdx.y: head. Copies the run's rows of one head in words W (16 bytes for
// rows of K, V and O, whose bytes run_nccl checks; 4 for the LSE's one-float rows).
template <typename W>
__global__ void copy_runs_kernel(const CopyRun* runs, const std::uint8_t* src0, const std::uint8_t* src1,
                                 std::uint8_t* dst0, std::uint8_t* dst1, std::int64_t row_bytes) {
  const CopyRun run = runs[blockIdx.x];
  const std::int64_t h = blockIdx.y;
  const auto* s = reinterpret_cast<const W*>((run.tensor ? src1 : src0) + (run.src + h * run.src_stride) * row_bytes);
  auto* d = reinterpret_cast<W*>((run.tensor ? dst1 : dst0) + (run.dst + h * run.dst_stride) * row_bytes);
  const std::int64_t words = run.rows * row_bytes / static_cast<std::int64_t>(sizeof(W));
  for (std::int64_t i = threadIdx.x; i < words; i += blockDim.x) d[i] = s[i];
}

// Runs cut to kRowsPerBlock rows, on the device.
class DeviceRuns {
 public:
  explicit DeviceRuns(const std::vector<CopyRun>& runs) {
    const std::vector<CopyRun> cut = split_runs(runs, kRowsPerBlock);
    count_ = static_cast<int>(cut.size());
    buf_.upload(cut);
  }
  template <typename W = int4>
  void launch(const void* src0, const void* src1, void* dst0, void* dst1, std::size_t row_bytes, int heads,
              cudaStream_t stream) const {
    if (count_ == 0) return;
    copy_runs_kernel<W><<<dim3(count_, heads), kCopyThreads, 0, stream>>>(
        buf_.as<CopyRun>(), static_cast<const std::uint8_t*>(src0), static_cast<const std::uint8_t*>(src1),
        static_cast<std::uint8_t*>(dst0), static_cast<std::uint8_t*>(dst1), static_cast<std::int64_t>(row_bytes));
    PROTATTN_CUDA_CHECK_LAUNCH();
  }

 private:
  cuda::DeviceBuffer buf_;
  int count_ = 0;
};

// NVLink multicast (NVLS) can put a host's shared GPUs out of service: always off, before any
// communicator exists; a request to turn it on is refused.
void disable_nvls() {
  if (const char* nvls = std::getenv("NCCL_NVLS_ENABLE")) {
    if (std::string(nvls) != "0")
      throw Error(std::string("dist: NCCL_NVLS_ENABLE=") + nvls + ": NVLink multicast must stay off (set it to 0)");
    return;
  }
  ::setenv("NCCL_NVLS_ENABLE", "0", 0);
}

// The communicator, destroyed (or aborted after an error) on scope exit.
class Comm {
 public:
  Comm(const RankInfo& me, const GpuOptions& o) {
    const nccl::Api& api = nccl::api();
    disable_nvls();
    ncclUniqueId id{};
    const std::string name = "nccl-id-" + (o.run_tag.empty() ? std::string("default") : o.run_tag);
    if (me.rank == 0) {
      PROTATTN_NCCL_CHECK(api.GetUniqueId(&id));
      publish_file(o.rendezvous, name, &id, sizeof id);
    } else {
      const std::vector<std::uint8_t> bytes = wait_file(o.rendezvous, name, sizeof id, o.timeout_s);
      std::memcpy(&id, bytes.data(), sizeof id);
    }
    PROTATTN_NCCL_CHECK(api.CommInitRank(&comm_, me.world, id, me.rank));
    // Every rank has joined once init returns: the id file has served (a later run gets a new one).
    if (me.rank == 0) {
      std::error_code ec;
      std::filesystem::remove(std::filesystem::path(o.rendezvous) / name, ec);
    }
  }
  ~Comm() {
    if (!comm_) return;
    const nccl::Api& api = nccl::api();
    if (std::uncaught_exceptions() > 0) api.CommAbort(comm_);
    else api.CommDestroy(comm_);
  }
  Comm(const Comm&) = delete;
  Comm& operator=(const Comm&) = delete;
  ncclComm_t get() const { return comm_; }

 private:
  ncclComm_t comm_ = nullptr;
};

struct Events {
  std::vector<cudaEvent_t> ev;
  explicit Events(std::size_t n) : ev(n) {
    for (auto& e : ev) PROTATTN_CUDA_CHECK(cudaEventCreate(&e));
  }
  ~Events() {
    for (auto& e : ev) cudaEventDestroy(e);
  }
  float ms(std::size_t a, std::size_t b) const {
    float t = 0;
    PROTATTN_CUDA_CHECK(cudaEventElapsedTime(&t, ev[a], ev[b]));
    return t;
  }
};

double median(std::vector<double> v) {
  if (v.empty()) return 0;
  std::sort(v.begin(), v.end());
  const std::size_t m = v.size() / 2;
  return v.size() % 2 ? v[m] : 0.5 * (v[m - 1] + v[m]);
}

// Compares the gathered result with the one-GPU result, on the host.
void compare(GpuReport& rep, const cuda::DeviceBuffer& o, const cuda::DeviceBuffer& lse, const cuda::DeviceBuffer& ref_o,
             const cuda::DeviceBuffer& ref_lse, DType dtype) {
  std::vector<std::uint16_t> a(o.bytes() / 2), b(ref_o.bytes() / 2);
  std::vector<float> la(lse.bytes() / 4), lb(ref_lse.bytes() / 4);
  PROTATTN_CUDA_CHECK(cudaMemcpy(a.data(), o.get(), o.bytes(), cudaMemcpyDeviceToHost));
  PROTATTN_CUDA_CHECK(cudaMemcpy(b.data(), ref_o.get(), ref_o.bytes(), cudaMemcpyDeviceToHost));
  PROTATTN_CUDA_CHECK(cudaMemcpy(la.data(), lse.get(), lse.bytes(), cudaMemcpyDeviceToHost));
  PROTATTN_CUDA_CHECK(cudaMemcpy(lb.data(), ref_lse.get(), ref_lse.bytes(), cudaMemcpyDeviceToHost));
  double peak = 0;
  for (std::size_t i = 0; i < a.size(); ++i) {
    const double x = element_as_float(a.data(), dtype, i), y = element_as_float(b.data(), dtype, i);
    peak = std::max(peak, std::fabs(y));
    rep.max_abs_o = std::max(rep.max_abs_o, std::fabs(x - y));
    if (a[i] != b[i]) ++rep.differing;
  }
  rep.max_rel_o = peak > 0 ? rep.max_abs_o / peak : rep.max_abs_o;
  bool lse_same = true;
  for (std::size_t i = 0; i < la.size(); ++i) {
    if (std::isinf(la[i]) || std::isinf(lb[i])) {
      if (la[i] != lb[i]) ++rep.lse_inf_mismatch;
      continue;
    }
    rep.max_abs_lse = std::max(rep.max_abs_lse, static_cast<double>(std::fabs(la[i] - lb[i])));
    lse_same = lse_same && std::memcmp(&la[i], &lb[i], sizeof(float)) == 0;
  }
  rep.checked = true;
  rep.bit_identical = rep.differing == 0 && rep.lse_inf_mismatch == 0 && lse_same;
}

}  // namespace

std::string nccl_library_info() {
  const nccl::Api& a = nccl::api();
  const int v = a.version;
  // NCCL_VERSION(X,Y,Z): X*1000+Y*100+Z up to 2.8, X*10000+Y*100+Z after.
  const int major = v >= 10000 ? v / 10000 : v / 1000, minor = v >= 10000 ? v / 100 % 100 : v / 100 % 10;
  return "NCCL " + std::to_string(major) + "." + std::to_string(minor) + "." + std::to_string(v % 100) + " (" + a.path +
         ")";
}

GpuReport run_nccl(const BlockLayout& l, const GpuOptions& o, const RankInfo& me) {
  disable_nvls();
  const ProblemShape& shape = o.shape;
  if (shape.dtype != DType::f16 && shape.dtype != DType::bf16)
    throw Error(std::string("dist: the fused engine takes fp16 or bf16, not ") + to_string(shape.dtype));
  if (o.iters < 1 || o.warmup < 0) throw Error("dist: iters must be >= 1 and warmup >= 0");
  if (o.check && !o.gather) throw Error("dist: --check needs the result gathered to rank 0");
  const std::size_t row_bytes = static_cast<std::size_t>(shape.dim) * dtype_size(shape.dtype);
  if (row_bytes % kCopyAlign != 0)
    throw Error("dist: rows of " + std::to_string(row_bytes) + " bytes are not a multiple of 16 (head dim " +
                std::to_string(shape.dim) + ")");
  const int devices = cuda::device_count("dist (the NCCL path)");
  if (me.local >= devices)
    throw Error("dist: rank " + std::to_string(me.rank) + " has LOCAL_RANK " + std::to_string(me.local) + " but " +
                std::to_string(devices) + " GPU(s) are visible");
  PROTATTN_CUDA_CHECK(cudaSetDevice(me.local));
  const int heads = shape.heads, P = me.world;
  const std::int64_t n = l.n;

  GpuReport rep;
  rep.me = me;
  rep.gpu = cuda::device_info(me.local).name;
  rep.nccl_library = nccl::api().path;
  rep.nccl_version = nccl::api().version;
  // Plans first: an error here (e.g. heads < ranks) fails every rank alike, before NCCL waits.
  std::vector<int> hb;
  SpatialPlan sp;
  if (o.mode == Mode::heads) hb = split_heads(heads, P);
  else sp = plan_spatial(l, P, o.cost);

  Comm comm(me, o);
  const nccl::Api& api = nccl::api();
  cudaStream_t stream;
  PROTATTN_CUDA_CHECK(cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking));
  struct StreamGuard {
    cudaStream_t s;
    ~StreamGuard() { cudaStreamDestroy(s); }
  } stream_guard{stream};
  cuda::DeviceBuffer flag(sizeof(float));
  PROTATTN_CUDA_CHECK(cudaMemset(flag.get(), 0, sizeof(float)));
  const auto barrier = [&] {
    PROTATTN_NCCL_CHECK(api.AllReduce(flag.get(), flag.get(), 1, ncclFloat32, ncclSum, comm.get(), stream));
    PROTATTN_CUDA_CHECK(cudaStreamSynchronize(stream));
  };

  // The global inputs, seeded alike on every rank; each rank keeps only its part.
  const std::size_t global_elems = static_cast<std::size_t>(heads) * n * shape.dim;
  const std::size_t global_bytes = global_elems * dtype_size(shape.dtype);
  const std::size_t lse_row = sizeof(float);
  auto gq = std::make_unique<cuda::DeviceArray>(global_bytes);
  auto gk = std::make_unique<cuda::DeviceArray>(global_bytes);
  auto gv = std::make_unique<cuda::DeviceArray>(global_bytes);
  gq->fill_random(shape.dtype, global_elems, o.seed * 16 + kSeedQ);
  gk->fill_random(shape.dtype, global_elems, o.seed * 16 + kSeedK);
  gv->fill_random(shape.dtype, global_elems, o.seed * 16 + kSeedV);

  // This rank's buffers: [rank_heads, local_n, dim] (heads: local_n = n; spatial: the local buffer).
  const BlockLayout* local_layout = &l;
  int rank_heads = heads;
  std::int64_t local_n = n, h0 = 0;
  if (o.mode == Mode::heads) {
    h0 = hb[me.rank];
    rank_heads = hb[me.rank + 1] - hb[me.rank];
  } else {
    local_layout = &sp.rank[me.rank].local;
    local_n = local_layout->n;
  }
  const std::size_t local_bytes = static_cast<std::size_t>(rank_heads) * local_n * row_bytes;
  const std::size_t local_lse_bytes = static_cast<std::size_t>(rank_heads) * local_n * lse_row;
  cuda::DeviceBuffer q(local_bytes), k(local_bytes), v(local_bytes), out(local_bytes), lse(local_lse_bytes);
  if (local_bytes) {
    PROTATTN_CUDA_CHECK(cudaMemset(q.get(), 0, local_bytes));
    PROTATTN_CUDA_CHECK(cudaMemset(k.get(), 0, local_bytes));
    PROTATTN_CUDA_CHECK(cudaMemset(v.get(), 0, local_bytes));
  }
  std::unique_ptr<ExchangePlan> xp;
  std::unique_ptr<DeviceRuns> pack, unpack;
  cuda::DeviceBuffer send_buf, recv_buf;
  if (o.mode == Mode::heads) {
    const std::size_t off = static_cast<std::size_t>(h0) * n * row_bytes;
    if (local_bytes) {
      PROTATTN_CUDA_CHECK(cudaMemcpy(q.get(), static_cast<std::uint8_t*>(gq->get()) + off, local_bytes, cudaMemcpyDeviceToDevice));
      PROTATTN_CUDA_CHECK(cudaMemcpy(k.get(), static_cast<std::uint8_t*>(gk->get()) + off, local_bytes, cudaMemcpyDeviceToDevice));
      PROTATTN_CUDA_CHECK(cudaMemcpy(v.get(), static_cast<std::uint8_t*>(gv->get()) + off, local_bytes, cudaMemcpyDeviceToDevice));
    }
  } else {
    // Owned rows, written once in place (as a model's previous layer would write them).
    const RankPlan& rp = sp.rank[me.rank];
    if (rp.owned_atoms > 0) {
      for (auto [dst, src] : {std::pair{&q, gq.get()}, std::pair{&k, gk.get()}, std::pair{&v, gv.get()}})
        PROTATTN_CUDA_CHECK(cudaMemcpy2D(static_cast<std::uint8_t*>(dst->get()) + rp.local_atom_begin * row_bytes,
                                         local_n * row_bytes,
                                         static_cast<std::uint8_t*>(src->get()) + rp.atom_begin * row_bytes, n * row_bytes,
                                         rp.owned_atoms * row_bytes, heads, cudaMemcpyDeviceToDevice));
    }
    xp = std::make_unique<ExchangePlan>(exchange_plan(sp, me.rank, heads));
    pack = std::make_unique<DeviceRuns>(xp->pack);
    unpack = std::make_unique<DeviceRuns>(xp->unpack);
    send_buf.resize(static_cast<std::size_t>(xp->send_rows) * row_bytes);
    recv_buf.resize(static_cast<std::size_t>(xp->recv_rows) * row_bytes);
  }
  // Rank 0 keeps the global tensors for the one-GPU run; the others free them.
  const bool keep_global = me.rank == 0 && (o.check || o.baseline);
  if (!keep_global) {
    gq.reset();
    gk.reset();
    gv.reset();
  }

  auto engine = make_engine("fused", EngineOptions{0, me.local});
  ProblemShape rs = shape;
  rs.heads = rank_heads;
  std::unique_ptr<Plan> plan;
  GpuRankStats mine;
  mine.rank = me.rank;
  mine.device = me.local;
  mine.heads = rank_heads;
  mine.tiles = o.mode == Mode::heads ? l.n_tiles : sp.rank[me.rank].tile_end - sp.rank[me.rank].tile_begin;
  mine.local_atoms = local_n;
  const auto count_plan = [&](const Plan& pl) {
    const auto s = fused::summarize(pl);
    mine.fused_items += s.items;
    mine.fused_splits += s.combines;
  };
  // With overlap, two runs instead of one: the interior rows (into out, the other rows 0 / -inf)
  // while the exchange runs on xstream, then the boundary rows into out_b, whose rows `merge`
  // copies into out (O in 16-byte words, the LSE in floats).
  const bool overlap = o.overlap && o.mode == Mode::spatial && local_n > 0;
  OverlapSplit ov;
  std::unique_ptr<Plan> plan_interior, plan_boundary;
  cuda::DeviceBuffer out_b, lse_b;
  std::unique_ptr<DeviceRuns> merge;
  if (overlap) {
    ov = split_for_overlap(sp.rank[me.rank]);
    plan_interior = engine->plan({&ov.interior}, rs);
    count_plan(*plan_interior);
    if (ov.boundary_tiles > 0) {
      plan_boundary = engine->plan({&ov.boundary}, rs);
      count_plan(*plan_boundary);
      out_b.resize(local_bytes);
      lse_b.resize(local_lse_bytes);
      merge = std::make_unique<DeviceRuns>(ov.boundary_runs);
    }
  } else if (local_n > 0) {
    plan = engine->plan({local_layout}, rs);
    count_plan(*plan);
  }
  // The exchange's stream, of the highest priority: its copy and NCCL kernels get multiprocessors
  // ahead of the attention's blocks launched beside them.
  cudaStream_t xstream = stream;
  cudaEvent_t go = nullptr, packed = nullptr, exchanged = nullptr;
  struct OverlapGuard {
    cudaStream_t s, main;
    cudaEvent_t e[3];
    ~OverlapGuard() {
      for (cudaEvent_t x : e)
        if (x) cudaEventDestroy(x);
      if (s != main) cudaStreamDestroy(s);
    }
  } overlap_guard{stream, stream, {nullptr, nullptr, nullptr}};
  if (overlap) {
    int least = 0, greatest = 0;
    PROTATTN_CUDA_CHECK(cudaDeviceGetStreamPriorityRange(&least, &greatest));
    PROTATTN_CUDA_CHECK(cudaStreamCreateWithPriority(&xstream, cudaStreamNonBlocking, greatest));
    overlap_guard.s = xstream;
    for (cudaEvent_t* e : {&go, &packed, &exchanged}) PROTATTN_CUDA_CHECK(cudaEventCreateWithFlags(e, cudaEventDisableTiming));
    overlap_guard.e[0] = go;
    overlap_guard.e[1] = packed;
    overlap_guard.e[2] = exchanged;
  }
  if (xp) {
    mine.bytes_sent = xp->send_rows * static_cast<std::int64_t>(row_bytes);
    mine.bytes_received = xp->recv_rows * static_cast<std::int64_t>(row_bytes);
  }

  // Gathered result on rank 0: [heads, n, dim] and [heads, n].
  cuda::DeviceBuffer g_out, g_lse, stage_o, stage_lse;
  if (o.gather && me.rank == 0) {
    g_out.resize(global_bytes);
    g_lse.resize(static_cast<std::size_t>(heads) * n * lse_row);
    if (o.mode == Mode::spatial) {
      stage_o.resize(global_bytes);
      stage_lse.resize(static_cast<std::size_t>(heads) * n * lse_row);
    }
  }
  cuda::DeviceBuffer my_o, my_lse;  // spatial, rank > 0: owned rows packed for the gather
  if (o.gather && o.mode == Mode::spatial && me.rank > 0) {
    my_o.resize(static_cast<std::size_t>(heads) * sp.rank[me.rank].owned_atoms * row_bytes);
    my_lse.resize(static_cast<std::size_t>(heads) * sp.rank[me.rank].owned_atoms * lse_row);
  }
  // One 2D copy of `rows` rows per head between [heads, src_n] and [heads, dst_n] tensors.
  const auto copy_rows = [&](void* dst, std::int64_t dst_n, std::int64_t dst_row, const void* src, std::int64_t src_n,
                             std::int64_t src_row, std::int64_t rows, std::size_t rb) {
    if (rows <= 0) return;
    PROTATTN_CUDA_CHECK(cudaMemcpy2DAsync(static_cast<std::uint8_t*>(dst) + dst_row * rb, dst_n * rb,
                                          static_cast<const std::uint8_t*>(src) + src_row * rb, src_n * rb, rows * rb,
                                          heads, cudaMemcpyDeviceToDevice, stream));
  };
  const auto gather = [&] {
    if (o.mode == Mode::heads) {
      const std::size_t head_bytes = static_cast<std::size_t>(n) * row_bytes, head_lse = static_cast<std::size_t>(n) * lse_row;
      PROTATTN_NCCL_CHECK(api.GroupStart());
      if (me.rank == 0) {
        for (int r = 1; r < P; ++r) {
          const std::size_t hr = hb[r + 1] - hb[r];
          PROTATTN_NCCL_CHECK(api.Recv(static_cast<std::uint8_t*>(g_out.get()) + hb[r] * head_bytes, hr * head_bytes,
                                       ncclUint8, r, comm.get(), stream));
          PROTATTN_NCCL_CHECK(api.Recv(static_cast<std::uint8_t*>(g_lse.get()) + hb[r] * head_lse, hr * head_lse,
                                       ncclUint8, r, comm.get(), stream));
        }
      } else {
        PROTATTN_NCCL_CHECK(api.Send(out.get(), local_bytes, ncclUint8, 0, comm.get(), stream));
        PROTATTN_NCCL_CHECK(api.Send(lse.get(), local_lse_bytes, ncclUint8, 0, comm.get(), stream));
      }
      PROTATTN_NCCL_CHECK(api.GroupEnd());
      if (me.rank == 0 && local_bytes) {
        PROTATTN_CUDA_CHECK(cudaMemcpyAsync(g_out.get(), out.get(), local_bytes, cudaMemcpyDeviceToDevice, stream));
        PROTATTN_CUDA_CHECK(cudaMemcpyAsync(g_lse.get(), lse.get(), local_lse_bytes, cudaMemcpyDeviceToDevice, stream));
      }
      return;
    }
    const RankPlan& mp = sp.rank[me.rank];
    if (me.rank > 0) {
      copy_rows(my_o.get(), mp.owned_atoms, 0, out.get(), local_n, mp.local_atom_begin, mp.owned_atoms, row_bytes);
      copy_rows(my_lse.get(), mp.owned_atoms, 0, lse.get(), local_n, mp.local_atom_begin, mp.owned_atoms, lse_row);
    }
    PROTATTN_NCCL_CHECK(api.GroupStart());
    if (me.rank == 0) {
      for (int r = 1; r < P; ++r) {
        const RankPlan& rp = sp.rank[r];
        if (rp.owned_atoms == 0) continue;
        // Rank r's rows land in the staging buffers at [heads, owned] starting where its atoms start.
        PROTATTN_NCCL_CHECK(api.Recv(static_cast<std::uint8_t*>(stage_o.get()) + heads * rp.atom_begin * row_bytes,
                                     heads * rp.owned_atoms * row_bytes, ncclUint8, r, comm.get(), stream));
        PROTATTN_NCCL_CHECK(api.Recv(static_cast<std::uint8_t*>(stage_lse.get()) + heads * rp.atom_begin * lse_row,
                                     heads * rp.owned_atoms * lse_row, ncclUint8, r, comm.get(), stream));
      }
    } else if (mp.owned_atoms > 0) {
      PROTATTN_NCCL_CHECK(api.Send(my_o.get(), my_o.bytes(), ncclUint8, 0, comm.get(), stream));
      PROTATTN_NCCL_CHECK(api.Send(my_lse.get(), my_lse.bytes(), ncclUint8, 0, comm.get(), stream));
    }
    PROTATTN_NCCL_CHECK(api.GroupEnd());
    if (me.rank == 0) {
      copy_rows(g_out.get(), n, mp.atom_begin, out.get(), local_n, mp.local_atom_begin, mp.owned_atoms, row_bytes);
      copy_rows(g_lse.get(), n, mp.atom_begin, lse.get(), local_n, mp.local_atom_begin, mp.owned_atoms, lse_row);
      for (int r = 1; r < P; ++r) {
        const RankPlan& rp = sp.rank[r];
        copy_rows(g_out.get(), n, rp.atom_begin,
                  static_cast<std::uint8_t*>(stage_o.get()) + heads * rp.atom_begin * row_bytes, rp.owned_atoms, 0,
                  rp.owned_atoms, row_bytes);
        copy_rows(g_lse.get(), n, rp.atom_begin,
                  static_cast<std::uint8_t*>(stage_lse.get()) + heads * rp.atom_begin * lse_row, rp.owned_atoms, 0,
                  rp.owned_atoms, lse_row);
      }
    }
  };
  // Pack, one grouped round of messages, unpack, on stream st; `after_pack`, when given, is
  // recorded once the pack is issued.
  const auto exchange = [&](cudaStream_t st, cudaEvent_t after_pack) {
    if (!xp) return;
    pack->launch(k.get(), v.get(), send_buf.get(), send_buf.get(), row_bytes, heads, st);
    if (after_pack) PROTATTN_CUDA_CHECK(cudaEventRecord(after_pack, st));
    PROTATTN_NCCL_CHECK(api.GroupStart());
    for (const Message& m : xp->sends)
      PROTATTN_NCCL_CHECK(api.Send(static_cast<std::uint8_t*>(send_buf.get()) + m.offset * row_bytes, m.rows * row_bytes,
                                   ncclUint8, m.peer, comm.get(), st));
    for (const Message& m : xp->recvs)
      PROTATTN_NCCL_CHECK(api.Recv(static_cast<std::uint8_t*>(recv_buf.get()) + m.offset * row_bytes, m.rows * row_bytes,
                                   ncclUint8, m.peer, comm.get(), st));
    PROTATTN_NCCL_CHECK(api.GroupEnd());
    unpack->launch(recv_buf.get(), recv_buf.get(), k.get(), v.get(), row_bytes, heads, st);
  };
  const RunArgs args{q.get(), k.get(), v.get(), out.get(), static_cast<float*>(lse.get()), stream};
  const RunArgs args_b{q.get(), k.get(), v.get(), out_b.get(), static_cast<float*>(lse_b.get()), stream};

  // The steps: events 0..4 per iteration: start, exchanged, computed, gathered, and with overlap
  // the interior rows computed.
  const int total = o.warmup + o.iters;
  Events ev(5 * static_cast<std::size_t>(o.iters));
  std::vector<double> t_x, t_c, t_s, t_g;
  for (int it = 0; it < total; ++it) {
    barrier();  // every rank starts the step together: the slowest rank's step is the step
    const bool timed = it >= o.warmup;
    const std::size_t e0 = 5 * static_cast<std::size_t>(it - o.warmup);
    if (timed) PROTATTN_CUDA_CHECK(cudaEventRecord(ev.ev[e0], stream));
    if (overlap) {
      // The exchange starts with the step, on its own stream; the interior rows once the pack has
      // run, so that the message kernels are resident ahead of the attention's blocks (the two
      // touch different rows: the interior rows read no halo row, which the unpack writes).
      PROTATTN_CUDA_CHECK(cudaEventRecord(go, stream));
      PROTATTN_CUDA_CHECK(cudaStreamWaitEvent(xstream, go, 0));
      exchange(xstream, packed);
      if (timed) PROTATTN_CUDA_CHECK(cudaEventRecord(ev.ev[e0 + 1], xstream));
      PROTATTN_CUDA_CHECK(cudaEventRecord(exchanged, xstream));
      if (xp) PROTATTN_CUDA_CHECK(cudaStreamWaitEvent(stream, packed, 0));
      engine->run(*plan_interior, args);
      if (timed) PROTATTN_CUDA_CHECK(cudaEventRecord(ev.ev[e0 + 4], stream));
      PROTATTN_CUDA_CHECK(cudaStreamWaitEvent(stream, exchanged, 0));
      if (plan_boundary) {
        engine->run(*plan_boundary, args_b);
        merge->launch<int4>(out_b.get(), out_b.get(), out.get(), out.get(), row_bytes, heads, stream);
        merge->launch<float>(lse_b.get(), lse_b.get(), lse.get(), lse.get(), lse_row, heads, stream);
      }
    } else {
      exchange(stream, nullptr);
      if (timed) PROTATTN_CUDA_CHECK(cudaEventRecord(ev.ev[e0 + 1], stream));
      if (plan) engine->run(*plan, args);
    }
    if (timed) PROTATTN_CUDA_CHECK(cudaEventRecord(ev.ev[e0 + 2], stream));
    if (o.gather) gather();
    if (timed) PROTATTN_CUDA_CHECK(cudaEventRecord(ev.ev[e0 + 3], stream));
    PROTATTN_CUDA_CHECK(cudaStreamSynchronize(stream));
    if (timed) {
      const double x = ev.ms(e0, e0 + 1), step = ev.ms(e0, e0 + 2);
      t_x.push_back(x);
      if (overlap) {
        // Attention time: the interior rows', and the rest of the step past the later of the
        // interior rows and the exchange (the wait for the messages left out).
        const double interior = ev.ms(e0, e0 + 4);
        t_c.push_back(interior + step - std::max(interior, x));
      } else {
        t_c.push_back(ev.ms(e0 + 1, e0 + 2));
      }
      t_s.push_back(step);
      t_g.push_back(ev.ms(e0 + 2, e0 + 3));
    }
  }
  mine.exchange_ms = median(t_x);
  mine.compute_ms = median(t_c);
  mine.step_ms = median(t_s);
  mine.gather_ms = median(t_g);

  // Every rank's per-iteration step times and its summary, to rank 0 (one all-gather of doubles:
  // exact for byte counts below 2^53).
  constexpr int kSummary = 8;
  const int per_rank = o.iters + kSummary;
  std::vector<double> row(static_cast<std::size_t>(per_rank));
  std::copy(t_s.begin(), t_s.end(), row.begin());
  const double summary[kSummary] = {mine.exchange_ms,
                                    mine.compute_ms,
                                    mine.step_ms,
                                    mine.gather_ms,
                                    static_cast<double>(mine.bytes_sent),
                                    static_cast<double>(mine.bytes_received),
                                    static_cast<double>(mine.fused_splits),
                                    static_cast<double>(mine.local_atoms)};
  std::copy(summary, summary + kSummary, row.begin() + o.iters);
  cuda::DeviceBuffer d_row(row.size() * sizeof(double)), d_all(row.size() * sizeof(double) * P);
  PROTATTN_CUDA_CHECK(cudaMemcpy(d_row.get(), row.data(), d_row.bytes(), cudaMemcpyHostToDevice));
  PROTATTN_NCCL_CHECK(api.AllGather(d_row.get(), d_all.get(), row.size(), ncclFloat64, comm.get(), stream));
  PROTATTN_CUDA_CHECK(cudaStreamSynchronize(stream));
  std::vector<double> all(row.size() * P);
  PROTATTN_CUDA_CHECK(cudaMemcpy(all.data(), d_all.get(), d_all.bytes(), cudaMemcpyDeviceToHost));

  if (me.rank != 0) {
    rep.ranks.push_back(mine);
    barrier();  // wait while rank 0 runs the one-GPU reference
    return rep;
  }
  std::vector<double> slowest(static_cast<std::size_t>(o.iters), 0.0);
  for (int r = 0; r < P; ++r) {
    const double* a = all.data() + static_cast<std::size_t>(r) * per_rank;
    for (int i = 0; i < o.iters; ++i) slowest[i] = std::max(slowest[i], a[i]);
    GpuRankStats s = r == 0 ? mine : GpuRankStats{};
    if (r != 0) {
      const double* m = a + o.iters;
      s.rank = r;
      s.device = -1;  // another process's; not reported through NCCL
      s.exchange_ms = m[0];
      s.compute_ms = m[1];
      s.step_ms = m[2];
      s.gather_ms = m[3];
      s.bytes_sent = static_cast<std::int64_t>(m[4]);
      s.bytes_received = static_cast<std::int64_t>(m[5]);
      s.fused_splits = static_cast<int>(m[6]);
      s.local_atoms = static_cast<std::int64_t>(m[7]);
      s.heads = o.mode == Mode::heads ? hb[r + 1] - hb[r] : heads;
      s.tiles = o.mode == Mode::heads ? l.n_tiles : sp.rank[r].tile_end - sp.rank[r].tile_begin;
    }
    rep.ranks.push_back(s);
  }
  rep.step_ms = median(slowest);

  if (keep_global) {
    // The one-GPU run: the same fused engine over the whole layout and all heads.
    auto ref_plan = engine->plan({&l}, shape);
    rep.single_splits = fused::summarize(*ref_plan).combines;
    cuda::DeviceBuffer ref_o(global_bytes), ref_lse(static_cast<std::size_t>(heads) * n * lse_row);
    const RunArgs ra{gq->get(), gk->get(), gv->get(), ref_o.get(), ref_lse.as<float>(), stream};
    if (o.baseline) {
      const auto ms = cuda::time_device(
          [&](void* s) {
            RunArgs a = ra;
            a.stream = s;
            engine->run(*ref_plan, a);
          },
          o.warmup, o.iters, false);
      std::vector<double> d(ms.begin(), ms.end());
      rep.single_ms = median(d);
    }
    engine->run(*ref_plan, ra);
    PROTATTN_CUDA_CHECK(cudaStreamSynchronize(stream));
    if (o.check) compare(rep, g_out, g_lse, ref_o, ref_lse, shape.dtype);
  }
  barrier();
  return rep;
}

}  // namespace protattn::dist
