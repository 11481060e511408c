// protattn layout: build the block-sparse layout of a structure, print its statistics, export it.
#include <memory>
#include <string>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "cli_common.hpp"
#include "commands.hpp"

namespace protattn::cli {
namespace {

constexpr int kJsonIndent = 2;

struct LayoutCommandOptions {
  SourceOptions source;
  LayoutArgs layout;
  std::string export_dir;
  bool json = false, no_count = false;
};

void run_layout(const LayoutCommandOptions& o) {
  const auto t0 = Clock::now();
  const Source s = load_source(o.source);
  const double read_ms = ms_since(t0);
  const BlockLayout l = make_layout(s, o.layout, !o.no_count);
  const LayoutStats& st = l.stats;
  const double density = l.n_tiles > 0 ? static_cast<double>(l.nnz()) / (double{1} * l.n_tiles * l.n_tiles) : 0;
  if (!o.export_dir.empty()) {
    const Activity a("writing " + o.export_dir);
    export_layout(l, o.export_dir);
  }
  if (o.json) {
    nlohmann::json j = {{"source", s.spec},         {"atoms", l.n},
                        {"tile", l.tile},           {"tiles", l.n_tiles},
                        {"nnz", l.nnz()},           {"density", density},
                        {"builder", l.builder},     {"order", to_string(l.order)},
                        {"mask", to_string(l.mask)}, {"cutoff", l.cutoff},
                        {"pairs_computed", st.pairs_computed}, {"read_ms", read_ms},
                        {"order_ms", st.order_ms},  {"build_ms", st.build_ms}};
    if (st.useful >= 0) {
      j["pairs_within"] = st.pairs_within;
      j["useful"] = st.useful;
    }
    if (!o.export_dir.empty()) j["export"] = o.export_dir;
    fmt::print("{}\n", j.dump(kJsonIndent));
    return;
  }
  fmt::print("source          {}\n", s.spec);
  fmt::print("atoms           {}\n", l.n);
  fmt::print("tiles           {} of {} atoms\n", l.n_tiles, l.tile);
  fmt::print("kept tiles      {} of {} (density {:.4f})\n", l.nnz(), std::int64_t{l.n_tiles} * l.n_tiles, density);
  fmt::print("layout          builder {}, order {}, mask {}", l.builder, to_string(l.order), to_string(l.mask));
  if (l.cutoff > 0) fmt::print(", cutoff {} A", l.cutoff);
  fmt::print("\n");
  fmt::print("computed pairs  {}\n", st.pairs_computed);
  if (st.useful >= 0) {
    fmt::print("pairs within    {} (i != j, both ways)\n", st.pairs_within);
    fmt::print("useful fraction {:.4f} ((pairs within + atoms) / computed pairs)\n", st.useful);
  } else {
    fmt::print("useful fraction not counted\n");
  }
  fmt::print("time            read {:.2f} ms, order {:.2f} ms, build {:.2f} ms\n", read_ms, st.order_ms, st.build_ms);
  if (!o.export_dir.empty()) fmt::print("exported        {}\n", o.export_dir);
}

}  // namespace

void add_layout_command(CLI::App& app) {
  auto o = std::make_shared<LayoutCommandOptions>();
  CLI::App* cmd = app.add_subcommand("layout", "Build the block-sparse layout of a structure; print statistics, export it");
  add_source_options(*cmd, o->source);
  add_layout_options(*cmd, o->layout, true);
  cmd->add_option("--export", o->export_dir,
                  "write the layout to this folder (row_ptr.npy, col_idx.npy, kind.npy, perm.npy, coords.npy, meta.json)");
  cmd->add_flag("--no-count", o->no_count, "skip counting the atom pairs within the cutoff (useful fraction)");
  cmd->add_flag("--json", o->json, "print JSON instead of text");
  cmd->callback([o] { run_layout(*o); });
}

}  // namespace protattn::cli
