// The atom_encoder forward on the GPU: fp16 weights, cuBLAS GEMMs with fp32 accumulation, fp32
// residual stream, attention through the device engine over the whole ragged batch; one stream.
#include <cublas_v2.h>
#include <cuda_fp16.h>

#include <algorithm>
#include <cstring>
#include <string>

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
    throw Error(std::string("cuBLAS error '") + cublasGetStatusString(s) + "' from `" + stmt + "` at " + file + ":" + std::to_string(line));
}
#define PROTATTN_CUBLAS_CHECK(stmt) check_cublas((stmt), #stmt, __FILE__, __LINE__)

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
};

class GpuPlan final : public ForwardPlan {
 public:
  std::unique_ptr<Plan> attn;
  DeviceBuffer element, dest;  // int32 [T]: element per new position; new position -> output row
  DeviceBuffer x;              // float32 [T, C]: the residual stream, new order
  DeviceBuffer xn;             // fp16 [T, C]: LayerNorm output
  DeviceBuffer tmp;            // float32 [T, max(3 H d, M, C)]: GEMM outputs
  DeviceBuffer qkv;            // fp16 [3, H, T, d]: Q, K, V as the engine wants them
  DeviceBuffer o, cat;         // fp16 [H, T, d] attention output; [T, H d] as rows
  DeviceBuffer hidden;         // fp16 [T, M]
  DeviceBuffer out;            // fp16 [T, C] in input order (structures packed by offsets)
  DeviceBuffer workspace;      // cuBLAS
  bool ran = false;
};

class GpuBackend final : public AtomEncoder::Backend {
 public:
  GpuBackend(Model m, std::unique_ptr<Engine> engine, int device, bool poll)
      : engine_(std::move(engine)), device_(device), poll_(poll) {
    config_ = m.config;
    PROTATTN_CUDA_CHECK(cudaSetDevice(device_));
    PROTATTN_CUBLAS_CHECK(cublasCreate(&handle_));
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
      L.wo = upload_f16(data(n("attn.out.weight")));
      L.bo = upload_f32(data(n("attn.out.bias")));
      L.w1 = upload_f16(data(n("mlp.fc1.weight")));
      L.b1 = upload_f32(data(n("mlp.fc1.bias")));
      L.w2 = upload_f16(data(n("mlp.fc2.weight")));
      L.b2 = upload_f32(data(n("mlp.fc2.bias")));
      layers_.push_back(std::move(L));
    }
    final_ = norm("final_norm");
    embed_ = upload_f32(data("embed.weight"));
  }
  ~GpuBackend() override {
    if (handle_) cublasDestroy(handle_);
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
    const auto t = static_cast<std::size_t>(T);
    const std::size_t C = c.channels, Q = c.qkv_width(), M = c.mlp_width();
    const std::size_t half = sizeof(__half);
    p->x.resize(t * C * sizeof(float));
    p->xn.resize(t * C * half);
    p->tmp.resize(t * std::max({3 * Q, M, C}) * sizeof(float));
    p->qkv.resize(3 * t * Q * half);
    p->o.resize(t * Q * half);
    p->cat.resize(t * Q * half);
    p->hidden.resize(t * M * half);
    p->out.resize(t * C * half);
    p->workspace.resize(kCublasWorkspaceBytes);
    return p;
  }

  void run(ForwardPlan& plan, void* stream_ptr) override {
    GpuPlan& p = as_gpu(plan);
    PROTATTN_CUDA_CHECK(cudaSetDevice(device_));
    auto stream = static_cast<cudaStream_t>(stream_ptr);
    PROTATTN_CUBLAS_CHECK(cublasSetStream(handle_, stream));
    PROTATTN_CUBLAS_CHECK(cublasSetWorkspace(handle_, p.workspace.get(), p.workspace.bytes()));
    const ModelConfig& c = config_;
    const std::int64_t T = p.total_n();
    const int C = c.channels, H = c.heads, d = c.head_dim, Q = c.qkv_width(), M = c.mlp_width();
    const unsigned row_blocks = static_cast<unsigned>((T + gpu::kRowsPerBlock - 1) / gpu::kRowsPerBlock);
    const unsigned row_threads = gpu::kRowsPerBlock * gpu::kWarp;
    auto* x = p.x.as<float>();
    auto* tmp = p.tmp.as<float>();
    auto* xn = p.xn.as<__half>();
    auto* qkv = p.qkv.as<__half>();
    const std::int64_t head_block = static_cast<std::int64_t>(H) * T * d;

    if (C % 4 == 0) {
      const RowGrid g = row_grid(T, C / 4);
      gpu::embed_rows<4><<<g.grid, g.threads, 0, stream>>>(x, embed_.as<float>(), p.element.as<std::int32_t>(), T, C, g.tpr);
    } else {
      const RowGrid g = row_grid(T, C);
      gpu::embed_rows<1><<<g.grid, g.threads, 0, stream>>>(x, embed_.as<float>(), p.element.as<std::int32_t>(), T, C, g.tpr);
    }
    PROTATTN_CUDA_CHECK_LAUNCH();
    const float* pending = nullptr;  // fc2 output of the previous block, added with pending_bias
    const float* pending_bias = nullptr;
    for (const LayerDev& L : layers_) {
      gpu::residual_layernorm<<<row_blocks, row_threads, 0, stream>>>(x, pending, pending_bias, L.norm1.g.as<float>(),
                                                                      L.norm1.b.as<float>(), xn, nullptr, T, C, kLayerNormEps);
      PROTATTN_CUDA_CHECK_LAUNCH();
      // Q, K, V: one batched GEMM over the 3 H head slices, each [T, d] = xn [T, C] . W_g^T.
      gemm(L.wqkv.get(), xn, tmp, d, T, C, static_cast<std::int64_t>(d) * C, T * d, 3 * H);
      bias_act<false>(tmp, L.bqkv.as<float>(), qkv, 3 * H, T, d, stream);
      RunArgs args{qkv, qkv + head_block, qkv + 2 * head_block, p.o.get(), nullptr, stream};
      engine_->run(*p.attn, args);
      if (d % 8 == 0) {
        const RowGrid g = row_grid(T, d / 8, static_cast<unsigned>(H));
        gpu::heads_to_rows<8><<<g.grid, g.threads, 0, stream>>>(p.o.as<__half>(), p.cat.as<__half>(), H, T, d, g.tpr);
      } else {
        const RowGrid g = row_grid(T, d, static_cast<unsigned>(H));
        gpu::heads_to_rows<1><<<g.grid, g.threads, 0, stream>>>(p.o.as<__half>(), p.cat.as<__half>(), H, T, d, g.tpr);
      }
      PROTATTN_CUDA_CHECK_LAUNCH();
      gemm(L.wo.get(), p.cat.get(), tmp, C, T, Q, 0, 0, 1);
      gpu::residual_layernorm<<<row_blocks, row_threads, 0, stream>>>(x, tmp, L.bo.as<float>(), L.norm2.g.as<float>(),
                                                                      L.norm2.b.as<float>(), xn, nullptr, T, C, kLayerNormEps);
      PROTATTN_CUDA_CHECK_LAUNCH();
      gemm(L.w1.get(), xn, tmp, M, T, C, 0, 0, 1);
      bias_act<true>(tmp, L.b1.as<float>(), p.hidden.as<__half>(), 1, T, M, stream);
      gemm(L.w2.get(), p.hidden.get(), tmp, C, T, M, 0, 0, 1);
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
    if (width % 4 == 0) {
      const RowGrid g = row_grid(rows, width / 4, static_cast<unsigned>(groups));
      gpu::bias_act_half<kGelu, 4><<<g.grid, g.threads, 0, stream>>>(in, bias, out, rows, width, g.tpr);
    } else {
      const RowGrid g = row_grid(rows, width, static_cast<unsigned>(groups));
      gpu::bias_act_half<kGelu, 1><<<g.grid, g.threads, 0, stream>>>(in, bias, out, rows, width, g.tpr);
    }
    PROTATTN_CUDA_CHECK_LAUNCH();
  }

  // Row-major Y_g [rows, out] (fp32) = X [rows, in] (fp16) . W_g^T (W_g fp16 [out, in]) for g < batch,
  // W_g = w + g * w_stride, Y_g = y + g * y_stride; fp32 accumulation. In cuBLAS's column-major
  // terms: Y^T [out, rows] = op_T(W as [in, out]) . X^T [in, rows].
  void gemm(const void* w, const void* xin, float* y, int out, std::int64_t rows, int in, std::int64_t w_stride,
            std::int64_t y_stride, int batch) {
    const float alpha = 1.0f, beta = 0.0f;
    const int n = static_cast<int>(rows);
    PROTATTN_CUBLAS_CHECK(cublasGemmStridedBatchedEx(handle_, CUBLAS_OP_T, CUBLAS_OP_N, out, n, in, &alpha, w, CUDA_R_16F, in, w_stride,
                                                     xin, CUDA_R_16F, in, 0, &beta, y, CUDA_R_32F, out, y_stride, batch,
                                                     CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT));
  }

  ModelConfig config_;
  std::unique_ptr<Engine> engine_;
  int device_ = 0;
  bool poll_ = false;  // EngineOptions::gpu_wait_poll
  cublasHandle_t handle_ = nullptr;
  std::vector<LayerDev> layers_;
  NormDev final_;
  DeviceBuffer embed_;
};

}  // namespace

std::unique_ptr<AtomEncoder::Backend> make_gpu_backend(Model m, std::unique_ptr<Engine> engine, int device, bool poll) {
  return std::make_unique<GpuBackend>(std::move(m), std::move(engine), device, poll);
}

}  // namespace protattn::model
