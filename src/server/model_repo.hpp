// protattn server: the model repository (one folder per model, each with a config.json).
#pragma once
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "protattn/layout.hpp"
#include "protattn/model.hpp"

namespace protattn::server {

struct TensorSpec {
  std::string name;
  std::string datatype;               // KServe name
  std::vector<std::int64_t> shape;    // -1: any size
  bool optional = false;              // outputs: returned only when asked for
};

// A served model, of one of two types:
//  - "attention": inputs COORDS FP32 [N,3] and Q, K, V FP16 [H,N,d]; outputs O FP16 [H,N,d]
//    and, when asked for, LSE FP32 [H,N]. The layout parameters come from config.json.
//  - "atom_encoder": inputs COORDS FP32 [N,3] and ELEMENTS INT32 [N]; output EMBEDDING FP16
//    [N,C]. Weights and hyper-parameters (layout included) come from the safetensors file that
//    config.json's `weights` names (default model.safetensors, next to config.json).
struct ModelSpec {
  std::string name;                   // the folder name
  std::string type = "attention";
  std::string version = "1";
  LayoutOptions layout;               // cutoff, mask, order, tile of the model's layouts
  std::vector<TensorSpec> inputs, outputs;
  // atom_encoder only: the loaded weights (the inference thread builds its AtomEncoder from a
  // copy) and the file they came from.
  std::shared_ptr<const Model> encoder;
  std::string weights_path;
  bool is_encoder() const { return type == "atom_encoder"; }
  const TensorSpec* input(const std::string& name) const;
  const TensorSpec* output(const std::string& name) const;
};

// Reads every <dir>/<name>/config.json (and an atom_encoder's weights). Throws Error naming the
// file and the problem (unknown type, bad parameter, missing or bad weights, no model at all).
std::vector<ModelSpec> load_repository(const std::string& dir);
// `folder` resolves an atom_encoder's relative weights path; the weights are not read here.
ModelSpec parse_model_config(const std::string& name, const std::string& json_text,
                             const std::string& where, const std::string& folder = ".");
// Reads an atom_encoder's weights file into `m` (layout and output width from its config).
// Throws Error naming `where`, the model and the file when it is missing or malformed.
void load_encoder_weights(ModelSpec& m, const std::string& where);

}  // namespace protattn::server
