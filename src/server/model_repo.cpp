// protattn server: reading model folders and their config.json into ModelSpecs.
#include "model_repo.hpp"

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <sstream>

#include <nlohmann/json.hpp>

#include "protattn/error.hpp"

namespace protattn::server {

namespace fs = std::filesystem;
using nlohmann::json;

const TensorSpec* ModelSpec::input(const std::string& n) const {
  for (const auto& t : inputs)
    if (t.name == n) return &t;
  return nullptr;
}

const TensorSpec* ModelSpec::output(const std::string& n) const {
  for (const auto& t : outputs)
    if (t.name == n) return &t;
  return nullptr;
}

namespace {

// Parameters are given the protocol's way ({"cutoff": {"string_value": "8"}}) or plainly.
std::string param_string(const json& params, const std::string& key, const std::string& where) {
  const json& v = params.at(key);
  if (v.is_object() && v.contains("string_value") && v["string_value"].is_string())
    return v["string_value"].get<std::string>();
  if (v.is_string()) return v.get<std::string>();
  if (v.is_number()) return v.dump();
  throw Error(where + ": parameter '" + key + "' must be a string or {\"string_value\": ...}");
}

double param_number(const std::string& text, const std::string& key, const std::string& where) {
  std::size_t used = 0;
  double v = 0;
  try {
    v = std::stod(text, &used);
  } catch (const std::exception&) {
    used = 0;
  }
  if (used != text.size() || text.empty())
    throw Error(where + ": parameter '" + key + "' is not a number: '" + text + "'");
  return v;
}

}  // namespace

void load_encoder_weights(ModelSpec& m, const std::string& where) {
  std::error_code ec;
  if (!fs::is_regular_file(m.weights_path, ec))
    throw Error(where + ": model '" + m.name + "': weights file '" + m.weights_path +
                "' is missing (write one with `protattn init-model " + m.weights_path +
                "`, an untrained model, or copy trained weights there)");
  Model model = load_model(m.weights_path);  // throws Error naming the file and the tensor
  m.layout = layout_options(model.config);
  m.layout.count_pairs = false;
  m.outputs[0].shape = {-1, model.config.channels};
  m.encoder = std::make_shared<const Model>(std::move(model));
}

ModelSpec parse_model_config(const std::string& name, const std::string& text,
                             const std::string& where, const std::string& folder) {
  json cfg = json::parse(text, nullptr, false);
  if (cfg.is_discarded() || !cfg.is_object()) throw Error(where + ": not a JSON object");
  ModelSpec m;
  m.name = name;
  if (cfg.contains("name") && cfg["name"] != name)
    throw Error(where + ": name '" + cfg["name"].dump() + "' differs from the folder name '" +
                name + "'");
  if (cfg.contains("backend") && cfg["backend"] != "protattn")
    throw Error(where + ": backend must be \"protattn\"");
  if (cfg.contains("type")) m.type = cfg["type"].get<std::string>();
  if (m.type != "attention" && m.type != "atom_encoder")
    throw Error(where + ": unknown model type '" + m.type + "' (known: attention, atom_encoder)");
  m.layout.count_pairs = false;
  if (m.is_encoder()) {
    std::string weights = "model.safetensors";
    if (cfg.contains("parameters")) {
      const json& p = cfg["parameters"];
      if (!p.is_object()) throw Error(where + ": parameters must be an object");
      for (auto it = p.begin(); it != p.end(); ++it) {
        if (it.key() != "weights")
          throw Error(where + ": unknown parameter '" + it.key() +
                      "' of an atom_encoder (known: weights; cutoff, order, mask and tile come "
                      "from the weights file)");
        weights = param_string(p, it.key(), where);
      }
    }
    m.weights_path = fs::path(weights).is_absolute() ? weights : (fs::path(folder) / weights).string();
    m.inputs = {{"COORDS", "FP32", {-1, 3}, false}, {"ELEMENTS", "INT32", {-1}, false}};
    m.outputs = {{"EMBEDDING", "FP16", {-1, -1}, false}};
    return m;
  }
  if (cfg.contains("parameters")) {
    const json& p = cfg["parameters"];
    if (!p.is_object()) throw Error(where + ": parameters must be an object");
    for (auto it = p.begin(); it != p.end(); ++it) {
      const std::string key = it.key();
      const std::string v = param_string(p, key, where);
      if (key == "cutoff") {
        const double c = param_number(v, key, where);
        if (!(c > 0 && c <= 1000)) throw Error(where + ": cutoff must be in (0, 1000] Angstrom");
        m.layout.cutoff = static_cast<float>(c);
      } else if (key == "mask") {
        m.layout.mask = parse_mask(v);
      } else if (key == "order") {
        m.layout.order = parse_order(v);
      } else if (key == "tile") {
        const double t = param_number(v, key, where);
        if (t != static_cast<int>(t) || t < 16 || t > 1024)
          throw Error(where + ": tile must be an integer in [16, 1024]");
        m.layout.tile = static_cast<int>(t);
      } else {
        throw Error(where + ": unknown parameter '" + key +
                    "' (known: cutoff, mask, order, tile)");
      }
    }
  }
  m.inputs = {{"COORDS", "FP32", {-1, 3}, false},
              {"Q", "FP16", {-1, -1, -1}, false},
              {"K", "FP16", {-1, -1, -1}, false},
              {"V", "FP16", {-1, -1, -1}, false}};
  m.outputs = {{"O", "FP16", {-1, -1, -1}, false}, {"LSE", "FP32", {-1, -1}, true}};
  return m;
}

std::vector<ModelSpec> load_repository(const std::string& dir) {
  std::error_code ec;
  if (!fs::is_directory(dir, ec)) throw Error("model repository '" + dir + "' is not a folder");
  std::vector<fs::path> folders;
  for (const auto& e : fs::directory_iterator(dir, ec))
    if (e.is_directory()) folders.push_back(e.path());
  std::sort(folders.begin(), folders.end());
  std::vector<ModelSpec> models;
  for (const auto& f : folders) {
    const fs::path cfg = f / "config.json";
    if (!fs::exists(cfg)) continue;
    std::ifstream in(cfg, std::ios::binary);
    if (!in) throw Error(cfg.string() + ": cannot be read");
    std::ostringstream ss;
    ss << in.rdbuf();
    models.push_back(parse_model_config(f.filename().string(), ss.str(), cfg.string(), f.string()));
    if (models.back().is_encoder()) load_encoder_weights(models.back(), cfg.string());
  }
  if (models.empty())
    throw Error("model repository '" + dir + "' holds no model (no <name>/config.json)");
  return models;
}

}  // namespace protattn::server
