// protattn init-model: writes a seeded random (untrained) atom_encoder model as one safetensors file.
#include <memory>
#include <string>

#include <fmt/format.h>

#include "commands.hpp"
#include "protattn/model.hpp"

namespace protattn::cli {
namespace {

struct InitOptions {
  std::string out;
  ModelConfig config;
  std::string order = "hilbert", mask = "atoms";
  std::uint64_t seed = 1;
};

void run_init_model(InitOptions& o) {
  o.config.order = parse_order(o.order);
  o.config.mask = parse_mask(o.mask);
  const Model m = init_model(o.config, o.seed);
  save_model(m, o.out);
  std::int64_t params = 0;
  for (const auto& [name, t] : m.tensors) params += static_cast<std::int64_t>(t.data.size());
  const ModelConfig& c = m.config;
  fmt::print("wrote {}: atom_encoder, UNTRAINED (seeded random weights, seed {})\n", o.out, o.seed);
  fmt::print("  channels {}, layers {}, heads {} x dim {}, cutoff {} A, order {}, mask {}, tile {}; {} parameters (F32)\n",
             c.channels, c.layers, c.heads, c.head_dim, c.cutoff, to_string(c.order), to_string(c.mask), c.tile, params);
}

}  // namespace

void add_init_model_command(CLI::App& app) {
  auto o = std::make_shared<InitOptions>();
  CLI::App* cmd = app.add_subcommand("init-model",
                                     "Write an atom_encoder model with seeded random weights (UNTRAINED: for tests,\n"
                                     "benchmarks and serving demos; the embeddings mean nothing). See docs/model.md.");
  cmd->add_option("out", o->out, "output .safetensors file")->required();
  cmd->add_option("--channels", o->config.channels, "embedding width C")->check(kPositive);
  cmd->add_option("--layers", o->config.layers, "transformer blocks L")->check(kNonNegative);
  cmd->add_option("--heads", o->config.heads, "attention heads H")->check(kPositive);
  cmd->add_option("--dim", o->config.head_dim, "head dim d (the fused engine supports the compiled dims, 32, 64 and 128 by default)")
      ->check(kPositive);
  cmd->add_option("--cutoff", o->config.cutoff, "attention cutoff (Angstrom)");
  cmd->add_option("--order", o->order, "spatial order: file, morton, hilbert");
  cmd->add_option("--mask", o->mask, "atoms (exact pairs within the cutoff) or tiles (whole kept tile pairs)");
  cmd->add_option("--tile", o->config.tile, "atoms per tile (the fused engine needs 128)")->check(kPositive);
  cmd->add_option("--seed", o->seed, "random seed");
  cmd->callback([o] { run_init_model(*o); });
}

}  // namespace protattn::cli
