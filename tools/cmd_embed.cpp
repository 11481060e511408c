// protattn embed: structure files in, atom_encoder embeddings (fp16 .npy, file atom order) out.
#include <algorithm>
#include <chrono>
#include <filesystem>
#include <memory>
#include <string>
#include <vector>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "cli_common.hpp"
#include "commands.hpp"
#include "protattn/error.hpp"
#include "protattn/model.hpp"
#include "protattn/npy.hpp"
#include "protattn/structure.hpp"

namespace protattn::cli {
namespace {

struct EmbedOptions {
  std::vector<std::string> files;
  std::string model, engine = "cpu", out, out_dir, save_inputs, export_layout;
  bool hydrogens = false, waters = false;
  int threads = 0, device = 0;
  int copies = 1;   // each structure this many times in the batch (offline batched timing)
  int repeat = 0;   // timed rounds after the first (plan + run + fetch each, as a server batch)
  std::string json; // timing as JSON
};

void run_embed(const EmbedOptions& o) {
  const bool single = o.files.size() == 1;
  if (single && o.out.empty()) throw Error("embed: give --out FILE.npy");
  if (!single && o.out_dir.empty()) throw Error("embed: several structures need --out-dir DIR (one <name>.npy each)");
  if (!single && (!o.save_inputs.empty() || !o.export_layout.empty()))
    throw Error("embed: --save-inputs and --export-layout take a single structure");
  if (o.copies < 1) throw Error("embed: --copies must be >= 1");

  Model m = load_model(o.model);
  const bool trained = m.config.trained;
  EngineOptions eo;
  eo.threads = o.threads;
  eo.device = o.device;
  AtomEncoder enc(std::move(m), o.engine, eo);
  const ModelConfig& c = enc.config();
  if (!trained) fmt::print(stderr, "note: {} is an UNTRAINED model (seeded random weights): the embeddings mean nothing\n", o.model);

  ReadOptions ro;
  ro.hydrogens = o.hydrogens;
  ro.waters = o.waters;
  std::vector<Structure> structures;
  std::vector<std::vector<std::int32_t>> elements;
  std::vector<AtomInput> batch;
  for (const std::string& f : o.files) {
    structures.push_back(read_structure(f, ro));
    elements.emplace_back(structures.back().element.begin(), structures.back().element.end());
  }
  for (int copy = 0; copy < o.copies; ++copy)
    for (std::size_t b = 0; b < structures.size(); ++b) batch.push_back({structures[b].xyz, elements[b]});

  const auto t0 = Clock::now();
  auto plan = enc.plan(batch);
  const double plan_ms = ms_since(t0);
  const auto t1 = Clock::now();
  enc.run(*plan);
  const std::vector<Embedding> out = enc.fetch(*plan);
  const double run_ms = ms_since(t1);
  // Timed rounds: what a server does for each batch (plan: layouts, attention plan, buffers;
  // run; fetch), the first call's warm-up left out.
  std::vector<double> round_ms, round_plan_ms, round_layouts_ms, round_forward_ms, round_fetch_ms;
  for (int r = 0; r < o.repeat; ++r) {
    const auto r0 = Clock::now();
    auto p = enc.plan(batch);
    round_plan_ms.push_back(ms_since(r0));
    round_layouts_ms.push_back(p->layouts_ms);
    const auto r1 = Clock::now();
    enc.run(*p);
    enc.wait();
    round_forward_ms.push_back(ms_since(r1));
    const auto r2 = Clock::now();
    const std::vector<Embedding> again = enc.fetch(*p);
    round_fetch_ms.push_back(ms_since(r2));
    round_ms.push_back(ms_since(r0));
    if (again != out) throw Error("embed: round " + std::to_string(r + 1) + " gave other embeddings than the first");
  }

  if (!o.out_dir.empty()) std::filesystem::create_directories(o.out_dir);
  // The embeddings written are those of the first copy of each structure.
  for (std::size_t b = 0; b < structures.size(); ++b) {
    const std::int64_t n = static_cast<std::int64_t>(structures[b].size());
    const std::string path = single ? o.out : (std::filesystem::path(o.out_dir) / (std::filesystem::path(o.files[b]).stem().string() + ".npy")).string();
    write_npy(path, "<f2", {n, c.channels}, out[b].data());
    const BlockLayout& l = plan->layouts[b];
    fmt::print("{}: {} atoms -> {} [{}, {}] fp16 ({} tiles, {} kept tile pairs)\n", o.files[b], n, path, n, c.channels, l.n_tiles, l.nnz());
  }
  fmt::print("engine {}: plan {:.2f} ms (layouts, attention plan, buffers), forward {:.2f} ms for {} structure(s), {} atoms\n",
             enc.engine_name(), plan_ms, run_ms, out.size(), plan->total_n());
  const double med = median(round_ms), plan_med = median(round_plan_ms);
  const double forward_med = median(round_forward_ms), fetch_med = median(round_fetch_ms);
  const double layouts_med = median(round_layouts_ms);
  const double per_s = med > 0 ? 1e3 * static_cast<double>(out.size()) / med : 0.0;
  if (o.repeat > 0)
    fmt::print("{} more rounds (plan + forward + fetch): median {:.3f} ms (plan {:.3f} of which layouts {:.3f}, forward {:.3f}, "
               "fetch {:.3f}): {:.1f} structures/s\n",
               o.repeat, med, plan_med, layouts_med, forward_med, fetch_med, per_s);
  if (!o.json.empty()) {
    nlohmann::json j = {{"engine", enc.engine_name()}, {"model", o.model}, {"files", o.files},
                        {"copies", o.copies}, {"structures", out.size()}, {"atoms", plan->total_n()},
                        {"layers", c.layers}, {"heads", c.heads}, {"dim", c.head_dim}, {"channels", c.channels},
                        {"first_plan_ms", plan_ms}, {"first_forward_ms", run_ms}, {"rounds", o.repeat},
                        {"round_ms_median", med}, {"round_plan_ms_median", plan_med}, {"round_layouts_ms_median", layouts_med},
                        {"round_forward_ms_median", forward_med}, {"round_fetch_ms_median", fetch_med},
                        {"round_ms", round_ms},
                        {"structures_per_s", per_s}};
    write_json(o.json, j, "embed");
  }
  if (!o.save_inputs.empty()) {
    std::filesystem::create_directories(o.save_inputs);
    const std::int64_t n = static_cast<std::int64_t>(structures[0].size());
    write_npy((std::filesystem::path(o.save_inputs) / "coords.npy").string(), "<f4", {n, 3}, structures[0].xyz.data());
    write_npy((std::filesystem::path(o.save_inputs) / "elements.npy").string(), "<i4", {n}, elements[0].data());
  }
  if (!o.export_layout.empty()) export_layout(plan->layouts[0], o.export_layout);
}

}  // namespace

void add_embed_command(CLI::App& app) {
  auto o = std::make_shared<EmbedOptions>();
  CLI::App* cmd = app.add_subcommand("embed",
                                     "Run the atom_encoder model on structure files (one ragged batch) and write the\n"
                                     "embeddings [atoms, channels] as fp16 .npy in the file's atom order.");
  cmd->add_option("files", o->files, "structure files (PDB/mmCIF, gzip ok)")->required();
  cmd->add_option("--model", o->model, "model .safetensors (protattn init-model writes one)")->required();
  cmd->add_option("--engine", o->engine, "attention engine: cpu (whole forward on the CPU) or fused (whole forward on the GPU)");
  cmd->add_option("--out", o->out, "output .npy (one structure)");
  cmd->add_option("--out-dir", o->out_dir, "output folder, <name>.npy per structure (several structures)");
  cmd->add_flag("--hydrogens", o->hydrogens, "keep hydrogens");
  cmd->add_flag("--waters", o->waters, "keep waters");
  cmd->add_option("--threads", o->threads, "cpu threads (0: all)")->check(kNonNegative);
  cmd->add_option("--device", o->device, "CUDA device")->check(kNonNegative);
  cmd->add_option("--save-inputs", o->save_inputs, "also write the model inputs coords.npy [N,3] f4 and elements.npy [N] i4 here");
  cmd->add_option("--export-layout", o->export_layout, "also write the attention layout here (export_layout format)");
  cmd->add_option("--copies", o->copies, "put each structure this many times in the batch (offline batched timing)")
      ->check(kPositive);
  cmd->add_option("--repeat", o->repeat,
                  "after the first forward, time this many more rounds of plan + forward + fetch (as a "
                  "server batch) and print the median")
      ->check(kNonNegative);
  cmd->add_option("--json", o->json, "write the timings as JSON here");
  cmd->callback([o] { run_embed(*o); });
}

}  // namespace protattn::cli
