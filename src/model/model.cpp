// atom_encoder: configuration, tensor names, seeded random init, safetensors save/load with checks.
#include <charconv>
#include <cstring>
#include <cmath>
#include <numbers>
#include <set>

#include "model/backend.hpp"
#include "model/safetensors.hpp"
#include "protattn/error.hpp"
#include "protattn/half.hpp"
#include "structure/random.hpp"

namespace protattn {
namespace {

constexpr const char* kFormat = "protattn.atom_encoder";
constexpr const char* kFormatVersion = "1";
// Random init: LayerNorm gains 1 + N(0, kInitNormStd), biases N(0, kInitBiasStd), Linear weights
// N(0, 1/fan_in), element embedding N(0, 1).
constexpr double kInitNormStd = 0.1;
constexpr double kInitBiasStd = 0.1;
// Largest sizes accepted from a file (guards against absurd metadata before allocating).
constexpr int kMaxChannels = 8192;
constexpr int kMaxLayers = 256;
constexpr int kMaxHeads = 256;
constexpr int kMaxHeadDim = 1024;
constexpr int kMaxTile = 4096;
constexpr float kMaxCutoff = 1000.0f;

std::string shape_string(const std::vector<std::int64_t>& shape) {
  std::string s = "[";
  for (std::size_t i = 0; i < shape.size(); ++i) s += (i ? ", " : "") + std::to_string(shape[i]);
  return s + "]";
}

std::string float_string(float v) {
  char buf[64];
  const auto r = std::to_chars(buf, buf + sizeof buf, v);
  return std::string(buf, r.ptr);
}

// Normal(0, 1) by Box-Muller from SplitMix64: portable, unlike std::normal_distribution.
class Gaussian {
 public:
  explicit Gaussian(std::uint64_t seed) : rng_(seed) {}
  double next() {
    const double u1 = 1.0 - rng_.uniform();  // (0, 1]
    const double u2 = rng_.uniform();
    return std::sqrt(-2.0 * std::log(u1)) * std::cos(2.0 * std::numbers::pi * u2);
  }

 private:
  detail::SplitMix64 rng_;
};

bool ends_with(const std::string& s, const std::string& tail) {
  return s.size() >= tail.size() && s.compare(s.size() - tail.size(), tail.size(), tail) == 0;
}

int parse_int(const std::string& path, const std::string& key, const std::string& text, int lo, int hi) {
  int v = 0;
  const auto r = std::from_chars(text.data(), text.data() + text.size(), v);
  if (r.ec != std::errc() || r.ptr != text.data() + text.size() || v < lo || v > hi)
    throw Error(path + ": metadata '" + key + "' is '" + text + "', expected an integer in " + std::to_string(lo) + ".." + std::to_string(hi));
  return v;
}

}  // namespace

namespace model {
std::string layer_name(int layer, const char* part) { return "layers." + std::to_string(layer) + "." + part; }
}  // namespace model

void validate_config(const ModelConfig& c) {
  auto need = [](bool ok, const std::string& what) { if (!ok) throw Error("model config: " + what); };
  need(c.channels >= 1 && c.channels <= kMaxChannels, "channels must be in 1.." + std::to_string(kMaxChannels));
  need(c.layers >= 0 && c.layers <= kMaxLayers, "layers must be in 0.." + std::to_string(kMaxLayers));
  need(c.heads >= 1 && c.heads <= kMaxHeads, "heads must be in 1.." + std::to_string(kMaxHeads));
  need(c.head_dim >= 1 && c.head_dim <= kMaxHeadDim, "head_dim must be in 1.." + std::to_string(kMaxHeadDim));
  need(std::isfinite(c.cutoff) && c.cutoff > 0 && c.cutoff <= kMaxCutoff, "cutoff must be in (0, " + float_string(kMaxCutoff) + "] Angstrom");
  need(c.tile >= 1 && c.tile <= kMaxTile, "tile must be in 1.." + std::to_string(kMaxTile));
  need(c.mask != MaskMode::windows, "mask 'windows' does not apply to the cutoff layout (tiles or atoms)");
}

LayoutOptions layout_options(const ModelConfig& c) {
  LayoutOptions o;
  o.order = c.order;
  o.mask = c.mask;
  o.tile = c.tile;
  o.cutoff = c.cutoff;
  o.count_pairs = false;
  return o;
}

const Tensor& Model::at(const std::string& name) const {
  const auto it = tensors.find(name);
  if (it == tensors.end()) throw Error("model: no tensor '" + name + "'");
  return it->second;
}

std::vector<std::pair<std::string, std::vector<std::int64_t>>> expected_tensors(const ModelConfig& c) {
  const std::int64_t C = c.channels, Q = c.qkv_width(), M = c.mlp_width();
  std::vector<std::pair<std::string, std::vector<std::int64_t>>> t;
  t.push_back({"embed.weight", {kElementCount, C}});
  for (int l = 0; l < c.layers; ++l) {
    auto name = [&](const char* part) { return model::layer_name(l, part); };
    t.push_back({name("norm1.weight"), {C}});
    t.push_back({name("norm1.bias"), {C}});
    for (const char* p : {"attn.q", "attn.k", "attn.v"}) {
      t.push_back({name(p) + ".weight", {Q, C}});
      t.push_back({name(p) + ".bias", {Q}});
    }
    t.push_back({name("attn.out.weight"), {C, Q}});
    t.push_back({name("attn.out.bias"), {C}});
    t.push_back({name("norm2.weight"), {C}});
    t.push_back({name("norm2.bias"), {C}});
    t.push_back({name("mlp.fc1.weight"), {M, C}});
    t.push_back({name("mlp.fc1.bias"), {M}});
    t.push_back({name("mlp.fc2.weight"), {C, M}});
    t.push_back({name("mlp.fc2.bias"), {C}});
  }
  t.push_back({"final_norm.weight", {C}});
  t.push_back({"final_norm.bias", {C}});
  return t;
}

Model init_model(const ModelConfig& c, std::uint64_t seed) {
  validate_config(c);
  Model m;
  m.config = c;
  m.config.trained = false;
  m.config.seed = seed;
  Gaussian g(seed);
  for (const auto& [name, shape] : expected_tensors(c)) {
    Tensor t;
    t.shape = shape;
    std::int64_t count = 1;
    for (std::int64_t d : shape) count *= d;
    t.data.resize(static_cast<std::size_t>(count));
    double mean = 0, std = 1;
    if (ends_with(name, "norm1.weight") || ends_with(name, "norm2.weight") || name == "final_norm.weight") {
      mean = 1;
      std = kInitNormStd;
    } else if (ends_with(name, ".bias")) {
      std = kInitBiasStd;
    } else if (name != "embed.weight") {
      std = 1.0 / std::sqrt(static_cast<double>(shape[1]));  // Linear weight [out, in]: 1/sqrt(fan_in)
    }
    for (float& v : t.data) v = static_cast<float>(mean + std * g.next());
    m.tensors.emplace(name, std::move(t));
  }
  return m;
}

void save_model(const Model& m, const std::string& path) {
  validate_config(m.config);
  const ModelConfig& c = m.config;
  st::File f;
  f.metadata = {{"format", kFormat},
                {"format_version", kFormatVersion},
                {"model", "atom_encoder"},
                {"channels", std::to_string(c.channels)},
                {"layers", std::to_string(c.layers)},
                {"heads", std::to_string(c.heads)},
                {"head_dim", std::to_string(c.head_dim)},
                {"cutoff", float_string(c.cutoff)},
                {"order", to_string(c.order)},
                {"mask", to_string(c.mask)},
                {"tile", std::to_string(c.tile)},
                {"trained", c.trained ? "true" : "false"},
                {"seed", std::to_string(c.seed)}};
  if (!c.trained)
    f.metadata["note"] = "UNTRAINED: seeded random weights written by `protattn init-model --seed " + std::to_string(c.seed) +
                         "`; the embeddings carry no learned meaning";
  for (const auto& [name, shape] : expected_tensors(c)) {
    const auto it = m.tensors.find(name);
    if (it == m.tensors.end()) throw Error(path + ": cannot save, the model has no tensor '" + name + "'");
    const Tensor& t = it->second;
    if (t.shape != shape || t.data.size() != static_cast<std::size_t>(
                                 [&] { std::int64_t n = 1; for (auto d : shape) n *= d; return n; }()))
      throw Error(path + ": cannot save, tensor '" + name + "' has shape " + shape_string(t.shape) + ", expected " + shape_string(shape));
    st::RawTensor r;
    r.dtype = "F32";
    r.shape = shape;
    r.data.resize(t.data.size() * sizeof(float));
    std::memcpy(r.data.data(), t.data.data(), r.data.size());
    f.tensors.emplace(name, std::move(r));
  }
  st::write(path, f);
}

Model load_model(const std::string& path) {
  const st::File f = st::read(path);
  auto meta = [&](const std::string& key) -> const std::string& {
    const auto it = f.metadata.find(key);
    if (it == f.metadata.end()) throw Error(path + ": metadata key '" + key + "' missing (not an atom_encoder model file?)");
    return it->second;
  };
  if (meta("format") != kFormat) throw Error(path + ": metadata 'format' is '" + meta("format") + "', expected '" + kFormat + "'");
  if (meta("format_version") != kFormatVersion)
    throw Error(path + ": metadata 'format_version' is '" + meta("format_version") + "', this build reads version " + kFormatVersion);
  Model m;
  ModelConfig& c = m.config;
  c.channels = parse_int(path, "channels", meta("channels"), 1, kMaxChannels);
  c.layers = parse_int(path, "layers", meta("layers"), 0, kMaxLayers);
  c.heads = parse_int(path, "heads", meta("heads"), 1, kMaxHeads);
  c.head_dim = parse_int(path, "head_dim", meta("head_dim"), 1, kMaxHeadDim);
  c.tile = parse_int(path, "tile", meta("tile"), 1, kMaxTile);
  {
    const std::string& s = meta("cutoff");
    const auto r = std::from_chars(s.data(), s.data() + s.size(), c.cutoff);
    if (r.ec != std::errc() || r.ptr != s.data() + s.size()) throw Error(path + ": metadata 'cutoff' is '" + s + "', expected a number");
  }
  try {
    c.order = parse_order(meta("order"));
    c.mask = parse_mask(meta("mask"));
    validate_config(c);
  } catch (const Error& e) {
    throw Error(path + ": " + e.what());
  }
  const std::string& trained = meta("trained");
  if (trained != "true" && trained != "false") throw Error(path + ": metadata 'trained' is '" + trained + "', expected true or false");
  c.trained = trained == "true";
  if (const auto it = f.metadata.find("seed"); it != f.metadata.end()) {
    const auto r = std::from_chars(it->second.data(), it->second.data() + it->second.size(), c.seed);
    if (r.ec != std::errc() || r.ptr != it->second.data() + it->second.size())
      throw Error(path + ": metadata 'seed' is '" + it->second + "', expected an unsigned integer");
  }

  std::set<std::string> expected;
  for (const auto& [name, shape] : expected_tensors(c)) {
    expected.insert(name);
    const auto it = f.tensors.find(name);
    if (it == f.tensors.end())
      throw Error(path + ": tensor '" + name + "' missing (expected F32 " + shape_string(shape) + " for channels " +
                  std::to_string(c.channels) + ", layers " + std::to_string(c.layers) + ", heads " + std::to_string(c.heads) +
                  ", head_dim " + std::to_string(c.head_dim) + ")");
    const st::RawTensor& r = it->second;
    if (r.dtype != "F32" && r.dtype != "F16" && r.dtype != "BF16")
      throw Error(path + ": tensor '" + name + "' has dtype " + r.dtype + ", expected F32 (or F16, BF16)");
    if (r.shape != shape)
      throw Error(path + ": tensor '" + name + "' has shape " + shape_string(r.shape) + ", expected " + shape_string(shape));
    Tensor t;
    t.shape = shape;
    const std::size_t count = r.data.size() / st::dtype_bytes(r.dtype);
    t.data.resize(count);
    for (std::size_t i = 0; i < count; ++i) {
      if (r.dtype == "F32") {
        std::memcpy(&t.data[i], r.data.data() + 4 * i, 4);
      } else {
        std::uint16_t h;
        std::memcpy(&h, r.data.data() + 2 * i, 2);
        t.data[i] = r.dtype == "F16" ? half_to_float(h) : bf16_to_float(h);
      }
      if (!std::isfinite(t.data[i]))
        throw Error(path + ": tensor '" + name + "' holds a non-finite value at element " + std::to_string(i));
    }
    m.tensors.emplace(name, std::move(t));
  }
  for (const auto& [name, r] : f.tensors)
    if (!expected.count(name)) throw Error(path + ": unexpected tensor '" + name + "' (not part of atom_encoder with this config)");
  return m;
}

}  // namespace protattn
