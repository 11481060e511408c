// protattn info: what a structure holds (atoms, residues, chains, bounding box).
#include <memory>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "cli_common.hpp"
#include "commands.hpp"

namespace protattn::cli {
namespace {

constexpr int kJsonIndent = 2;

struct InfoOptions {
  SourceOptions source;
  bool json = false;
};

void run_info(const InfoOptions& o) {
  if (o.source.spec == "w1") throw UsageError("info: w1 is a layout pattern, not a structure (try: protattn layout w1)");
  const Source s = load_source(o.source);
  const StructureInfo info = describe(s.structure);
  if (o.json) {
    const nlohmann::json j = {{"source", s.structure.source},
                              {"atoms", info.atoms},
                              {"residues", info.residues},
                              {"chains", info.chains},
                              {"hydrogens", o.source.hydrogens},
                              {"waters", o.source.waters},
                              {"box", {{"lo", {info.lo[0], info.lo[1], info.lo[2]}},
                                       {"hi", {info.hi[0], info.hi[1], info.hi[2]}}}}};
    fmt::print("{}\n", j.dump(kJsonIndent));
    return;
  }
  fmt::print("source    {}\n", s.structure.source);
  fmt::print("atoms     {}{}{}\n", info.atoms, o.source.hydrogens ? " (with hydrogens)" : "",
             o.source.waters ? " (with waters)" : "");
  fmt::print("residues  {}\n", info.residues);
  fmt::print("chains    {}\n", info.chains);
  fmt::print("box       x [{:.3f}, {:.3f}]  y [{:.3f}, {:.3f}]  z [{:.3f}, {:.3f}] A\n", info.lo[0], info.hi[0],
             info.lo[1], info.hi[1], info.lo[2], info.hi[2]);
  fmt::print("size      {:.3f} x {:.3f} x {:.3f} A\n", info.hi[0] - info.lo[0], info.hi[1] - info.lo[1],
             info.hi[2] - info.lo[2]);
}

}  // namespace

void add_info_command(CLI::App& app) {
  auto o = std::make_shared<InfoOptions>();
  CLI::App* cmd = app.add_subcommand("info", "Describe a structure: atoms, residues, chains, bounding box");
  add_source_options(*cmd, o->source);
  cmd->add_flag("--json", o->json, "print JSON instead of text");
  cmd->callback([o] { run_info(*o); });
}

}  // namespace protattn::cli
