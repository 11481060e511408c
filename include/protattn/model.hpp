// protattn: the atom_encoder model (element embedding + pre-norm block-sparse transformer), its file and forward.
#pragma once
#include <cstdint>
#include <map>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include "protattn/engine.hpp"
#include "protattn/layout.hpp"

namespace protattn {

// Atomic numbers 0..118 index the element embedding (0: unknown element).
inline constexpr int kMaxElement = 118;
inline constexpr int kElementCount = kMaxElement + 1;
// Hidden width of the MLP, in multiples of the channels.
inline constexpr int kMlpRatio = 4;
// LayerNorm epsilon (added to the variance).
inline constexpr float kLayerNormEps = 1e-5f;

// Hyper-parameters of atom_encoder; stored as strings in the safetensors `__metadata__`.
struct ModelConfig {
  int channels = 128;  // C: width of the embedding and of the residual stream
  int layers = 2;      // L: transformer blocks
  int heads = 4;       // H
  int head_dim = 64;   // d
  float cutoff = 8.0f;              // Angstrom, of the attention layout
  Order order = Order::hilbert;     // spatial order of the layout
  MaskMode mask = MaskMode::atoms;  // atoms: exactly the pairs within the cutoff (+ self)
  int tile = 128;
  bool trained = false;  // false: seeded random weights from `protattn init-model` (untrained)
  std::uint64_t seed = 0;  // of the random weights (meaningful when untrained)
  int qkv_width() const { return heads * head_dim; }
  int mlp_width() const { return kMlpRatio * channels; }
};

// Checks ranges (positive sizes, 0 < cutoff <= 1000, mask tiles or atoms); throws Error.
void validate_config(const ModelConfig& c);
// The layout options the model builds its attention layout with.
LayoutOptions layout_options(const ModelConfig& c);

// A float32 tensor, row-major. Linear layers follow PyTorch: weight [out, in], bias [out].
struct Tensor {
  std::vector<std::int64_t> shape;
  std::vector<float> data;
};

// Configuration plus every named tensor (see docs/model.md for the list).
struct Model {
  ModelConfig config;
  std::map<std::string, Tensor> tensors;
  const Tensor& at(const std::string& name) const;  // throws Error naming a missing tensor
};

// Name and shape of every tensor a model of this configuration holds, in a fixed order.
std::vector<std::pair<std::string, std::vector<std::int64_t>>> expected_tensors(const ModelConfig& c);

// Seeded random weights (untrained): same config and seed, same bits on every platform.
Model init_model(const ModelConfig& c, std::uint64_t seed);
// One safetensors file: tensors as F32, the config as `__metadata__` strings.
void save_model(const Model& m, const std::string& path);
// Reads and checks a safetensors model. Throws Error naming the file, the tensor and what was
// expected and found (missing / unexpected tensor, wrong shape or dtype, bad metadata, truncated
// file). Tensors stored as F32, F16 or BF16 are accepted (converted to float32).
Model load_model(const std::string& path);

// One structure of a batch: coordinates [n, 3] (Angstrom) and atomic numbers [n], file order.
// `layout`, when given, is this structure's layout built by the caller with
// layout_options(config) from these coordinates (a server builds it on the thread that received
// the request, so the inference thread does not); plan() checks that it fits and copies it
// (the coordinates are then not checked again: the layout's maker did, and the forward reads
// them only through the layout).
// `layout_to_take` is the same, but plan() moves it into the plan (the caller gives it up; it is
// left empty). `elements_checked`: the caller has checked every atomic number (a server does
// when the request arrives), so plan() does not again.
struct AtomInput {
  std::span<const float> coords;
  std::span<const std::int32_t> elements;
  const BlockLayout* layout = nullptr;
  BlockLayout* layout_to_take = nullptr;
  bool elements_checked = false;
};

// Embedding of one structure: fp16 bits, [n, channels] row-major, in INPUT atom order.
using Embedding = std::vector<std::uint16_t>;

// Everything one batch needs, made by AtomEncoder::plan: layouts, the attention plan, buffers.
class ForwardPlan {
 public:
  virtual ~ForwardPlan() = default;
  std::vector<BlockLayout> layouts;   // one per structure, in the model's spatial order
  std::vector<std::int64_t> offsets;  // [batch + 1], atoms
  double layouts_ms = 0;              // host time plan() took for the layouts (the rest: the backend's plan)
  std::int64_t total_n() const { return offsets.empty() ? 0 : offsets.back(); }
};

// The model bound to an attention engine. The engine decides where the forward runs: a host
// engine ("cpu") runs it on the CPU in float32; a device engine ("fused") runs all of it on the
// GPU (fp16 operands, fp32 accumulation and residual stream). One AtomEncoder is not thread-safe.
class AtomEncoder {
 public:
  AtomEncoder(Model model, const std::string& engine = "cpu", const EngineOptions& opt = {});
  ~AtomEncoder();
  AtomEncoder(const AtomEncoder&) = delete;
  AtomEncoder& operator=(const AtomEncoder&) = delete;

  const ModelConfig& config() const;
  const char* engine_name() const;
  bool on_device() const;

  // plan + run + fetch. Throws Error on an empty structure, mismatched sizes, an atomic number
  // outside 0..118 or bad coordinates (naming the structure and the atom).
  std::vector<Embedding> forward(const std::vector<AtomInput>& batch);

  // The same in three steps, for serving and CUDA graphs. plan() validates the inputs, builds the
  // layouts and the attention plan and allocates (and, on the GPU, uploads) everything; run()
  // only launches work: on the GPU it is asynchronous on `stream` (a cudaStream_t, null: the
  // default stream), allocates nothing and may be captured in a CUDA graph; on the CPU it is
  // synchronous. fetch() waits for the stream and returns the embeddings of the last run;
  // wait() only waits for the stream (to time the forward apart from the copy out).
  std::unique_ptr<ForwardPlan> plan(const std::vector<AtomInput>& batch);
  void run(ForwardPlan& plan, void* stream = nullptr);
  void wait(void* stream = nullptr);
  // `dests`, when given (one entry per structure): a structure whose entry is not null has its
  // embedding written there instead (n x channels fp16, input order; on the GPU straight from the
  // device, a direct copy when the memory is pinned or registered with CUDA) and an empty
  // Embedding returned.
  std::vector<Embedding> fetch(ForwardPlan& plan, void* stream = nullptr, const std::vector<void*>& dests = {});

  struct Backend;  // CPU or GPU implementation (private)

 private:
  std::unique_ptr<Backend> backend_;
  int layout_threads_ = 0;  // threads that build a batch's layouts in plan() (EngineOptions::threads)
};

}  // namespace protattn
