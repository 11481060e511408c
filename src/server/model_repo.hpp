// protattn server: the model repository (one folder per model, each with a config.json).
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include "protattn/layout.hpp"

namespace protattn::server {

struct TensorSpec {
  std::string name;
  std::string datatype;               // KServe name
  std::vector<std::int64_t> shape;    // -1: any size
  bool optional = false;              // outputs: returned only when asked for
};

// A served model. Only the type "attention" exists so far: inputs COORDS FP32 [N,3] and
// Q, K, V FP16 [H,N,d]; outputs O FP16 [H,N,d] and, when asked for, LSE FP32 [H,N].
struct ModelSpec {
  std::string name;                   // the folder name
  std::string type = "attention";
  std::string version = "1";
  LayoutOptions layout;               // cutoff, mask, order, tile of the model's layouts
  std::vector<TensorSpec> inputs, outputs;
  const TensorSpec* input(const std::string& name) const;
  const TensorSpec* output(const std::string& name) const;
};

// Reads every <dir>/<name>/config.json. Throws Error naming the file and the problem (unknown
// type, bad parameter, no model at all).
std::vector<ModelSpec> load_repository(const std::string& dir);
ModelSpec parse_model_config(const std::string& name, const std::string& json_text,
                             const std::string& where);

}  // namespace protattn::server
