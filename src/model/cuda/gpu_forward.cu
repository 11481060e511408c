// The atom_encoder forward on the GPU: fp16 weights, cuBLASLt projections with fp32 accumulation
// (bias and activation in the matmul's epilogue where the output is fp16), fp32 residual stream,
// attention through the device engine over the whole ragged batch; one stream.
#include <cublasLt.h>
#include <cuda_fp16.h>

#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <map>
#include <mutex>
#include <string>
#include <tuple>

#include "common/parallel.hpp"
#include "cuda/common/cuda_check.hpp"
#include "cuda/common/device_buffer.hpp"
#include "cuda/common/host_staging.hpp"
#include "cuda/common/stream_wait.hpp"
#include "model/backend.hpp"
#include "model/cuda/model_kernels.cuh"
#include "protattn/error.hpp"
#include "protattn/half.hpp"

namespace protattn::model {
namespace {

using cuda::DeviceBuffer;

// cuBLAS workspace per plan (set explicitly so that run() allocates nothing and can be captured).
constexpr std::size_t kCublasWorkspaceBytes = std::size_t{32} << 20;
// Bytes of embeddings per thread that copies them out in fetch().
constexpr std::size_t kFetchBytesPerThread = std::size_t{4} << 20;
// Most blocks an element-wise kernel launches (it strides over the rest).
constexpr std::int64_t kMaxGridBlocks = std::int64_t{1} << 16;

void check_cublas(cublasStatus_t s, const char* stmt, const char* file, int line) {
  if (s != CUBLAS_STATUS_SUCCESS)
    throw Error(std::string("cuBLAS error '") + cublasLtGetStatusString(s) + "' from `" + stmt + "` at " + file + ":" + std::to_string(line));
}
#define PROTATTN_CUBLAS_CHECK(stmt) check_cublas((stmt), #stmt, __FILE__, __LINE__)

// What a projection's matmul does after the product: nothing (fp32 out), or add the bias (fp16
// out), or add the bias and apply GELU (tanh form, as the model defines it; fp16 out).
enum class Epilogue { none, bias, gelu_bias };

// Row-major Y_g [rows, out] = X [rows, in] . W_g^T for g < batch (W_g = w + g w_stride, fp16
// [out, in]; X fp16, the same for every g; Y_g = y + g y_stride), fp32 accumulation.
struct ProjShape {
  int out = 0, in = 0;
  std::int64_t rows = 0;
  int batch = 1;
  std::int64_t w_stride = 0, y_stride = 0;
  Epilogue epilogue = Epilogue::none;
  auto key() const { return std::tuple(out, in, rows, batch, w_stride, y_stride, static_cast<int>(epilogue)); }
};

// The algorithms cuBLASLt's heuristic picked, per shape: a server plans every batch, mostly of
// sizes it has seen. Bounded (cleared when full); shared by the plans of one backend.
class AlgoCache {
 public:
  bool find(const ProjShape& s, cublasLtMatmulAlgo_t& algo) {
    std::lock_guard<std::mutex> lock(mu_);
    const auto it = algos_.find(s.key());
    if (it == algos_.end()) return false;
    algo = it->second;
    return true;
  }
  void put(const ProjShape& s, const cublasLtMatmulAlgo_t& algo) {
    std::lock_guard<std::mutex> lock(mu_);
    if (algos_.size() >= kMaxEntries) algos_.clear();
    algos_[s.key()] = algo;
  }

 private:
  static constexpr std::size_t kMaxEntries = 1024;
  std::mutex mu_;
  std::map<decltype(ProjShape{}.key()), cublasLtMatmulAlgo_t> algos_;
};

// One projection of a plan as a cuBLASLt matmul, its descriptors and algorithm made once (the
// heuristic is asked only for a shape not seen before); run() only enqueues it. In cuBLAS's
// column-major terms: Y^T [out, rows] = op_T(W as [in, out]) . X^T [in, rows].
class Projection {
 public:
  Projection(cublasLtHandle_t lt, const ProjShape& s, std::size_t workspace_bytes, AlgoCache& cache) : s_(s) {
    const cudaDataType_t y_type = s.epilogue == Epilogue::none ? CUDA_R_32F : CUDA_R_16F;
    PROTATTN_CUBLAS_CHECK(cublasLtMatmulDescCreate(&desc_, CUBLAS_COMPUTE_32F, CUDA_R_32F));
    const cublasOperation_t ta = CUBLAS_OP_T, tb = CUBLAS_OP_N;
    PROTATTN_CUBLAS_CHECK(cublasLtMatmulDescSetAttribute(desc_, CUBLASLT_MATMUL_DESC_TRANSA, &ta, sizeof ta));
    PROTATTN_CUBLAS_CHECK(cublasLtMatmulDescSetAttribute(desc_, CUBLASLT_MATMUL_DESC_TRANSB, &tb, sizeof tb));
    const cublasLtEpilogue_t epi = s.epilogue == Epilogue::gelu_bias ? CUBLASLT_EPILOGUE_GELU_BIAS
                                   : s.epilogue == Epilogue::bias   ? CUBLASLT_EPILOGUE_BIAS
                                                                    : CUBLASLT_EPILOGUE_DEFAULT;
    PROTATTN_CUBLAS_CHECK(cublasLtMatmulDescSetAttribute(desc_, CUBLASLT_MATMUL_DESC_EPILOGUE, &epi, sizeof epi));
    if (s.epilogue != Epilogue::none) {
      const std::int64_t bias_stride = s.batch > 1 ? s.out : 0;  // bias_g = bias + g out
      PROTATTN_CUBLAS_CHECK(
          cublasLtMatmulDescSetAttribute(desc_, CUBLASLT_MATMUL_DESC_BIAS_BATCH_STRIDE, &bias_stride, sizeof bias_stride));
    }
    const auto rows = static_cast<std::uint64_t>(s.rows);
    const auto out = static_cast<std::uint64_t>(s.out), in = static_cast<std::uint64_t>(s.in);
    PROTATTN_CUBLAS_CHECK(cublasLtMatrixLayoutCreate(&a_, CUDA_R_16F, in, out, static_cast<std::int64_t>(in)));
    PROTATTN_CUBLAS_CHECK(cublasLtMatrixLayoutCreate(&b_, CUDA_R_16F, in, rows, static_cast<std::int64_t>(in)));
    PROTATTN_CUBLAS_CHECK(cublasLtMatrixLayoutCreate(&y_, y_type, out, rows, static_cast<std::int64_t>(out)));
    if (s.batch > 1) {
      const std::int32_t count = s.batch;
      const std::int64_t zero = 0;
      for (cublasLtMatrixLayout_t l : {a_, b_, y_})
        PROTATTN_CUBLAS_CHECK(cublasLtMatrixLayoutSetAttribute(l, CUBLASLT_MATRIX_LAYOUT_BATCH_COUNT, &count, sizeof count));
      PROTATTN_CUBLAS_CHECK(
          cublasLtMatrixLayoutSetAttribute(a_, CUBLASLT_MATRIX_LAYOUT_STRIDED_BATCH_OFFSET, &s.w_stride, sizeof s.w_stride));
      PROTATTN_CUBLAS_CHECK(cublasLtMatrixLayoutSetAttribute(b_, CUBLASLT_MATRIX_LAYOUT_STRIDED_BATCH_OFFSET, &zero, sizeof zero));
      PROTATTN_CUBLAS_CHECK(
          cublasLtMatrixLayoutSetAttribute(y_, CUBLASLT_MATRIX_LAYOUT_STRIDED_BATCH_OFFSET, &s.y_stride, sizeof s.y_stride));
    }
    if (!cache.find(s, algo_)) {
      cublasLtMatmulPreference_t pref = nullptr;
      PROTATTN_CUBLAS_CHECK(cublasLtMatmulPreferenceCreate(&pref));
      cublasLtMatmulHeuristicResult_t result{};
      int found = 0;
      const cublasStatus_t st =
          cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES, &workspace_bytes, sizeof workspace_bytes);
      const cublasStatus_t hs = st != CUBLAS_STATUS_SUCCESS ? st
                                : cublasLtMatmulAlgoGetHeuristic(lt, desc_, a_, b_, y_, y_, pref, 1, &result, &found);
      cublasLtMatmulPreferenceDestroy(pref);
      PROTATTN_CUBLAS_CHECK(hs);
      if (found == 0)
        throw Error("atom_encoder: cuBLASLt has no algorithm for a projection of " + std::to_string(s.rows) + " x " +
                    std::to_string(s.in) + " -> " + std::to_string(s.out) + " (batch " + std::to_string(s.batch) + ")");
      algo_ = result.algo;
      cache.put(s, algo_);
    }
  }
  ~Projection() {
    for (cublasLtMatrixLayout_t l : {a_, b_, y_})
      if (l) cublasLtMatrixLayoutDestroy(l);
    if (desc_) cublasLtMatmulDescDestroy(desc_);
  }
  Projection(const Projection&) = delete;
  Projection& operator=(const Projection&) = delete;

  // `bias` (fp16, [batch, out]) for the bias epilogues, else ignored.
  void run(cublasLtHandle_t lt, const void* w, const void* x, void* y, const void* bias, void* workspace,
           std::size_t workspace_bytes, cudaStream_t stream) {
    if (s_.epilogue != Epilogue::none)
      PROTATTN_CUBLAS_CHECK(cublasLtMatmulDescSetAttribute(desc_, CUBLASLT_MATMUL_DESC_BIAS_POINTER, &bias, sizeof bias));
    const float alpha = 1.0f, beta = 0.0f;
    PROTATTN_CUBLAS_CHECK(cublasLtMatmul(lt, desc_, &alpha, w, a_, x, b_, &beta, y, y_, y, y_, &algo_, workspace,
                                         workspace_bytes, stream));
  }

 private:
  ProjShape s_;
  cublasLtMatmulDesc_t desc_ = nullptr;
  cublasLtMatrixLayout_t a_ = nullptr, b_ = nullptr, y_ = nullptr;
  cublasLtMatmulAlgo_t algo_{};
};

// Launch shape of a row kernel (model_kernels.cuh): rows of `vecs` vectors, `groups` groups of
// rows (blockIdx.y).
struct RowGrid {
  dim3 grid;
  unsigned threads;
  int tpr;  // threads per row
};
RowGrid row_grid(std::int64_t rows, int vecs, unsigned groups = 1) {
  const int tpr = std::clamp(vecs, 1, gpu::kThreads);
  const int rows_per_block = gpu::kThreads / tpr;
  const std::int64_t cap = std::max<std::int64_t>(1, kMaxGridBlocks / groups);
  const auto blocks = static_cast<unsigned>(std::clamp<std::int64_t>((rows + rows_per_block - 1) / rows_per_block, 1, cap));
  return {dim3(blocks, groups), static_cast<unsigned>(tpr * rows_per_block), tpr};
}

// Launches a row kernel over `groups` blocks of `rows` rows of `width` elements in its widest
// form: `wide` (kVec elements at a time) when the width is a multiple of kVec, else `narrow` (one
// at a time); the kernel's last parameter, the threads per row, is appended to `args`.
template <int kVec, typename... P, typename... A>
void launch_rows(void (*wide)(P...), void (*narrow)(P...), std::int64_t rows, int width, unsigned groups,
                 cudaStream_t stream, A... args) {
  const bool vec = width % kVec == 0;
  const RowGrid g = row_grid(rows, vec ? width / kVec : width, groups);
  (vec ? wide : narrow)<<<g.grid, g.threads, 0, stream>>>(args..., g.tpr);
  PROTATTN_CUDA_CHECK_LAUNCH();
}

DeviceBuffer upload_f32(const std::vector<float>& v) {
  DeviceBuffer b;
  b.upload(v);
  return b;
}

DeviceBuffer upload_f16(const std::vector<float>& v) {
  std::vector<std::uint16_t> h(v.size());
  for (std::size_t i = 0; i < v.size(); ++i) h[i] = float_to_half(v[i]);
  DeviceBuffer b;
  b.upload(h);
  return b;
}

struct NormDev {
  DeviceBuffer g, b;
};

struct LayerDev {
  NormDev norm1, norm2;
  DeviceBuffer wqkv, bqkv;  // fp16 [3 H, d, C] (q rows, then k, then v); fp32 [3 H d]
  DeviceBuffer wo, bo;      // fp16 [C, H d]; fp32 [C]
  DeviceBuffer w1, b1;      // fp16 [M, C]; fp32 [M]
  DeviceBuffer w2, b2;      // fp16 [C, M]; fp32 [C]
  DeviceBuffer bqkv_h, b1_h;  // the biases the epilogues add, fp16 (as the epilogue's output)
};

class GpuPlan final : public ForwardPlan {
 public:
  std::unique_ptr<Plan> attn;
  DeviceBuffer element, dest;  // int32 [T]: element per new position; new position -> output row
  DeviceBuffer x;              // float32 [T, C]: the residual stream, new order
  DeviceBuffer xn;             // fp16 [T, C]: LayerNorm output
  DeviceBuffer tmp;            // float32 [T, C] (without the epilogues [T, max(3 H d, M, C)]): products
  DeviceBuffer qkv;            // fp16 [3, H, T, d]: Q, K, V as the engine wants them
  DeviceBuffer o, cat;         // fp16 [H, T, d] attention output; [T, H d] as rows (H > 1 only)
  DeviceBuffer hidden;         // fp16 [T, M]
  DeviceBuffer out;            // fp16 [T, C] in input order (structures packed by offsets)
  DeviceBuffer workspace;      // cuBLAS
  // The projections for T rows: Q/K/V, the attention output, fc1, fc2.
  std::unique_ptr<Projection> qkv_proj, out_proj, fc1_proj, fc2_proj;
  bool ran = false;
};

class GpuBackend final : public AtomEncoder::Backend {
 public:
  GpuBackend(Model m, std::unique_ptr<Engine> engine, int device, bool poll)
      : engine_(std::move(engine)), device_(device), poll_(poll) {
    config_ = m.config;
    PROTATTN_CUDA_CHECK(cudaSetDevice(device_));
    PROTATTN_CUBLAS_CHECK(cublasLtCreate(&lt_));
    // PROTATTN_MODEL_EPILOGUE=0: the Q/K/V and fc1 projections write fp32 and separate kernels
    // add the bias and apply GELU (the forward before the epilogues), for comparison.
    const char* epi = std::getenv("PROTATTN_MODEL_EPILOGUE");
    epilogues_ = !(epi && epi[0] == '0');
    const ModelConfig& c = config_;
    auto data = [&](const std::string& name) -> const std::vector<float>& { return m.at(name).data; };
    auto norm = [&](const std::string& name) { return NormDev{upload_f32(data(name + ".weight")), upload_f32(data(name + ".bias"))}; };
    for (int l = 0; l < c.layers; ++l) {
      auto n = [&](const char* part) { return layer_name(l, part); };
      LayerDev L;
      L.norm1 = norm(n("norm1"));
      L.norm2 = norm(n("norm2"));
      std::vector<float> w, b;
      for (const char* p : {"attn.q", "attn.k", "attn.v"}) {
        const auto& pw = data(n(p) + ".weight");
        const auto& pb = data(n(p) + ".bias");
        w.insert(w.end(), pw.begin(), pw.end());
        b.insert(b.end(), pb.begin(), pb.end());
      }
      L.wqkv = upload_f16(w);
      L.bqkv = upload_f32(b);
      L.bqkv_h = upload_f16(b);
      L.wo = upload_f16(data(n("attn.out.weight")));
      L.bo = upload_f32(data(n("attn.out.bias")));
      L.w1 = upload_f16(data(n("mlp.fc1.weight")));
      L.b1 = upload_f32(data(n("mlp.fc1.bias")));
      L.b1_h = upload_f16(data(n("mlp.fc1.bias")));
      L.w2 = upload_f16(data(n("mlp.fc2.weight")));
      L.b2 = upload_f32(data(n("mlp.fc2.bias")));
      layers_.push_back(std::move(L));
    }
    final_ = norm("final_norm");
    embed_ = upload_f32(data("embed.weight"));
  }
  ~GpuBackend() override {
    if (lt_) cublasLtDestroy(lt_);
  }

  const ModelConfig& config() const override { return config_; }
  Engine& engine() override { return *engine_; }

  std::unique_ptr<ForwardPlan> make_plan(std::vector<BlockLayout> layouts, std::vector<std::int64_t> offsets,
                                         const std::vector<AtomInput>& batch) override {
    PROTATTN_CUDA_CHECK(cudaSetDevice(device_));
    const ModelConfig& c = config_;
    auto p = std::make_unique<GpuPlan>();
    p->layouts = std::move(layouts);
    p->offsets = std::move(offsets);
    std::vector<const BlockLayout*> ptrs;
    for (const BlockLayout& l : p->layouts) ptrs.push_back(&l);
    ProblemShape shape;
    shape.heads = c.heads;
    shape.dim = c.head_dim;
    shape.dtype = DType::f16;
    cuda::UploadGroup uploads;  // the attention plan's uploads and the model's below, waited for once
    p->attn = engine_->plan(ptrs, shape);
    const std::int64_t T = p->total_n();
    std::vector<std::int32_t> element(static_cast<std::size_t>(T)), dest(static_cast<std::size_t>(T));
    for (std::size_t b = 0; b < batch.size(); ++b) {
      const BlockLayout& l = p->layouts[b];
      const auto base = static_cast<std::size_t>(p->offsets[b]);
      for (std::size_t i = 0; i < static_cast<std::size_t>(l.n); ++i) {
        element[base + i] = batch[b].elements[static_cast<std::size_t>(l.perm[i])];
        dest[base + i] = static_cast<std::int32_t>(base) + l.perm[i];
      }
    }
    cuda::Uploads up;
    up.add(p->element, element);
    up.add(p->dest, dest);
    up.commit();
    uploads.finish();
    const auto t = static_cast<std::size_t>(T);
    const std::size_t C = c.channels, Q = c.qkv_width(), M = c.mlp_width();
    const std::size_t half = sizeof(__half);
    p->x.resize(t * C * sizeof(float));
    p->xn.resize(t * C * half);
    // fp32 products: the output projection's and fc2's, and without the epilogues Q/K/V's and fc1's.
    p->tmp.resize(t * (epilogues_ ? C : std::max({3 * Q, M, C})) * sizeof(float));
    p->qkv.resize(3 * t * Q * half);
    p->o.resize(t * Q * half);
    if (c.heads > 1) p->cat.resize(t * Q * half);  // one head: O [1, T, d] is already [T, d]
    p->hidden.resize(t * M * half);
    p->out.resize(t * C * half);
    p->workspace.resize(kCublasWorkspaceBytes);
    const int d = c.head_dim;
    const Epilogue qkv_epi = epilogues_ ? Epilogue::bias : Epilogue::none;
    const Epilogue fc1_epi = epilogues_ ? Epilogue::gelu_bias : Epilogue::none;
    // Q, K, V: one batched matmul over the 3 H head slices, each [T, d] = xn [T, C] . W_g^T.
    p->qkv_proj = std::make_unique<Projection>(
        lt_, ProjShape{d, c.channels, T, 3 * c.heads, static_cast<std::int64_t>(d) * c.channels, T * d, qkv_epi},
        kCublasWorkspaceBytes, algos_);
    p->out_proj = std::make_unique<Projection>(lt_, ProjShape{c.channels, c.qkv_width(), T}, kCublasWorkspaceBytes, algos_);
    p->fc1_proj = std::make_unique<Projection>(lt_, ProjShape{c.mlp_width(), c.channels, T, 1, 0, 0, fc1_epi},
                                               kCublasWorkspaceBytes, algos_);
    p->fc2_proj = std::make_unique<Projection>(lt_, ProjShape{c.channels, c.mlp_width(), T}, kCublasWorkspaceBytes, algos_);
    return p;
  }

  void run(ForwardPlan& plan, void* stream_ptr) override {
    GpuPlan& p = as_gpu(plan);
    PROTATTN_CUDA_CHECK(cudaSetDevice(device_));
    auto stream = static_cast<cudaStream_t>(stream_ptr);
    const ModelConfig& c = config_;
    const std::int64_t T = p.total_n();
    const int C = c.channels, H = c.heads, d = c.head_dim, M = c.mlp_width();
    const unsigned row_blocks = static_cast<unsigned>((T + gpu::kRowsPerBlock - 1) / gpu::kRowsPerBlock);
    const unsigned row_threads = gpu::kRowsPerBlock * gpu::kWarp;
    auto* x = p.x.as<float>();
    auto* tmp = p.tmp.as<float>();
    auto* xn = p.xn.as<__half>();
    auto* qkv = p.qkv.as<__half>();
    const std::int64_t head_block = static_cast<std::int64_t>(H) * T * d;

    launch_rows<4>(gpu::embed_rows<4>, gpu::embed_rows<1>, T, C, 1, stream, x, embed_.as<float>(),
                   p.element.as<std::int32_t>(), T, C);
    const float* pending = nullptr;  // fc2 output of the previous block, added with pending_bias
    const float* pending_bias = nullptr;
    for (const LayerDev& L : layers_) {
      gpu::residual_layernorm<<<row_blocks, row_threads, 0, stream>>>(x, pending, pending_bias, L.norm1.g.as<float>(),
                                                                      L.norm1.b.as<float>(), xn, nullptr, T, C, kLayerNormEps);
      PROTATTN_CUDA_CHECK_LAUNCH();
      if (epilogues_) {
        project(*p.qkv_proj, p, L.wqkv.get(), xn, qkv, L.bqkv_h.get(), stream);
      } else {
        project(*p.qkv_proj, p, L.wqkv.get(), xn, tmp, nullptr, stream);
        bias_act<false>(tmp, L.bqkv.as<float>(), qkv, 3 * H, T, d, stream);
      }
      RunArgs args{qkv, qkv + head_block, qkv + 2 * head_block, p.o.get(), nullptr, stream};
      engine_->run(*p.attn, args);
      const void* cat = p.o.get();
      if (H > 1) {
        launch_rows<8>(gpu::heads_to_rows<8>, gpu::heads_to_rows<1>, T, d, static_cast<unsigned>(H), stream,
                       p.o.as<__half>(), p.cat.as<__half>(), H, T, d);
        cat = p.cat.get();
      }
      project(*p.out_proj, p, L.wo.get(), cat, tmp, nullptr, stream);
      gpu::residual_layernorm<<<row_blocks, row_threads, 0, stream>>>(x, tmp, L.bo.as<float>(), L.norm2.g.as<float>(),
                                                                      L.norm2.b.as<float>(), xn, nullptr, T, C, kLayerNormEps);
      PROTATTN_CUDA_CHECK_LAUNCH();
      if (epilogues_) {
        project(*p.fc1_proj, p, L.w1.get(), xn, p.hidden.get(), L.b1_h.get(), stream);
      } else {
        project(*p.fc1_proj, p, L.w1.get(), xn, tmp, nullptr, stream);
        bias_act<true>(tmp, L.b1.as<float>(), p.hidden.as<__half>(), 1, T, M, stream);
      }
      project(*p.fc2_proj, p, L.w2.get(), p.hidden.get(), tmp, nullptr, stream);
      pending = tmp;
      pending_bias = L.b2.as<float>();
    }
    gpu::residual_layernorm<<<row_blocks, row_threads, 0, stream>>>(x, pending, pending_bias, final_.g.as<float>(), final_.b.as<float>(),
                                                                    p.out.as<__half>(), p.dest.as<std::int32_t>(), T, C, kLayerNormEps);
    PROTATTN_CUDA_CHECK_LAUNCH();
    p.ran = true;
  }

  void wait(void* stream_ptr) override {
    PROTATTN_CUDA_CHECK(cudaSetDevice(device_));
    cuda::stream_wait(static_cast<cudaStream_t>(stream_ptr), poll_);
  }

  std::vector<Embedding> fetch(ForwardPlan& plan, void* stream_ptr, const std::vector<void*>& dests) override {
    GpuPlan& p = as_gpu(plan);
    if (!p.ran) throw Error("atom_encoder: fetch before run");
    PROTATTN_CUDA_CHECK(cudaSetDevice(device_));
    const std::size_t row_bytes = static_cast<std::size_t>(config_.channels) * sizeof(__half);
    const std::size_t nb = p.layouts.size();
    const auto total = static_cast<std::size_t>(p.total_n()) * row_bytes;
    const auto stream = static_cast<cudaStream_t>(stream_ptr);
    std::vector<Embedding> out(nb);
    // Structures with a destination: one copy each from the device (a direct one when the
    // destination is pinned or registered, as a server's shared-memory regions are).
    bool staged = dests.empty();
    for (std::size_t b = 0; b < nb && !dests.empty(); ++b) {
      if (!dests[b]) {
        staged = true;
        continue;
      }
      const std::size_t sb = static_cast<std::size_t>(p.offsets[b]) * row_bytes;
      const std::size_t se = static_cast<std::size_t>(p.offsets[b + 1]) * row_bytes;
      PROTATTN_CUDA_CHECK(cudaMemcpyAsync(dests[b], p.out.as<std::uint8_t>() + sb, se - sb, cudaMemcpyDeviceToHost, stream));
    }
    if (!staged) {
      cuda::stream_wait(stream, poll_);
      return out;
    }
    // The structures' rows are consecutive in p.out: staged copies of all of it, each piece
    // copied out by several threads (one thread writes fresh memory at a few GB/s), the
    // structures shared out by atoms.
    const int parts = detail::resolve_threads(0, total, kFetchBytesPerThread);
    const std::vector<std::size_t> first = detail::weighted_ranges(p.offsets.data(), nb, parts);
    cuda::download(p.out.get(), total, stream,
                   [&](std::size_t off, const std::uint8_t* data, std::size_t n) {
                     detail::parallel_ranges(first, [&](int, std::size_t begin, std::size_t end) {
                       for (std::size_t b = begin; b < end; ++b) {
                         if (!dests.empty() && dests[b]) continue;  // copied above
                         const std::size_t sb = static_cast<std::size_t>(p.offsets[b]) * row_bytes;
                         const std::size_t se = static_cast<std::size_t>(p.offsets[b + 1]) * row_bytes;
                         const std::size_t lo = std::max(sb, off), hi = std::min(se, off + n);
                         if (lo >= hi) continue;
                         const auto* from = reinterpret_cast<const std::uint16_t*>(data + (lo - off));
                         if (lo == sb && hi == se) {
                           out[b].assign(from, from + (se - sb) / 2);  // whole: no zero-fill first
                         } else {
                           out[b].resize((se - sb) / 2);
                           std::memcpy(reinterpret_cast<std::uint8_t*>(out[b].data()) + (lo - sb), from, hi - lo);
                         }
                       }
                     });
                   });
    return out;
  }

 private:
  static GpuPlan& as_gpu(ForwardPlan& plan) {
    auto* p = dynamic_cast<GpuPlan*>(&plan);
    if (!p) throw Error("atom_encoder: the plan was made by another backend");
    return *p;
  }

  // out = fp16(act(in + bias)) over `groups` blocks of [rows, width] (bias [groups, width]).
  template <bool kGelu>
  static void bias_act(const float* in, const float* bias, __half* out, int groups, std::int64_t rows, int width,
                       cudaStream_t stream) {
    launch_rows<4>(gpu::bias_act_half<kGelu, 4>, gpu::bias_act_half<kGelu, 1>, rows, width, static_cast<unsigned>(groups),
                   stream, in, bias, out, rows, width);
  }

  void project(Projection& proj, GpuPlan& p, const void* w, const void* x, void* y, const void* bias, cudaStream_t stream) {
    proj.run(lt_, w, x, y, bias, p.workspace.get(), p.workspace.bytes(), stream);
  }

  ModelConfig config_;
  std::unique_ptr<Engine> engine_;
  int device_ = 0;
  bool poll_ = false;  // EngineOptions::gpu_wait_poll
  cublasLtHandle_t lt_ = nullptr;
  AlgoCache algos_;
  bool epilogues_ = true;  // PROTATTN_MODEL_EPILOGUE
  std::vector<LayerDev> layers_;
  NormDev final_;
  DeviceBuffer embed_;
};

}  // namespace

std::unique_ptr<AtomEncoder::Backend> make_gpu_backend(Model m, std::unique_ptr<Engine> engine, int device, bool poll) {
  return std::make_unique<GpuBackend>(std::move(m), std::move(engine), device, poll);
}

}  // namespace protattn::model
