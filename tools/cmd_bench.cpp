// protattn bench: times engines on the reference workloads, structures or exported layouts.
#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <ctime>
#include <filesystem>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "cli_common.hpp"
#include "commands.hpp"
#include "protattn/engine.hpp"
#include "protattn/error.hpp"
#include "protattn/layout.hpp"
#include "protattn/structure.hpp"
#ifdef PROTATTN_HAVE_CUDA
#include <cuda_runtime.h>

#include "cuda/common/bench_support.hpp"
#endif
#ifdef PROTATTN_HAVE_FUSED
#include "cuda/fused/fused_engine.hpp"
#endif
#ifdef PROTATTN_HAVE_GROUPED
#include "cuda/grouped/grouped_engine.hpp"
#endif

namespace protattn::cli {
namespace {

struct Workload {
  std::string name;
  std::vector<BlockLayout> layouts;  // one per structure of the batch
  int heads = 1, dim = 64;
  std::string note;
  double layout_ms = 0;      // synthetic workloads: making the atoms (or tile pattern) and the layout
  double order_tile_ms = 0;  // the layout alone: spatial order + tile pairs (layout stats), first layout
  double order_tile_warm_ms = 0;  // the same, built again in this process (time_layouts)
};

// W4 of DESIGN.md, the serving mix: this many globules of kW4MinAtoms..kW4MaxAtoms atoms (sizes
// seeded), one ragged batch.
constexpr int kW4Structures = 32;
constexpr int kW4MinAtoms = 1000, kW4MaxAtoms = 20000;

// One layout holding a ragged batch block-diagonally, each structure padded to whole tiles (the
// padding rows repeat the structure's last atom): the same kept blocks as the batch, for peers
// that take one sequence. Only for export; protattn times the batch itself.
BlockLayout block_diagonal(const std::vector<BlockLayout>& batch) {
  const int tile = batch.front().tile;
  std::vector<float> xyz;
  std::vector<std::pair<std::int32_t, std::int32_t>> pairs;
  std::int32_t t0 = 0;
  for (const BlockLayout& l : batch) {
    if (l.tile != tile) throw Error("bench: a ragged batch with different tiles cannot be exported as one layout");
    xyz.insert(xyz.end(), l.coords.begin(), l.coords.end());
    for (std::int64_t p = l.n; p < static_cast<std::int64_t>(l.n_tiles) * tile; ++p)
      xyz.insert(xyz.end(), l.coords.end() - 3, l.coords.end());
    for (std::int32_t r = 0; r < l.n_tiles; ++r)
      for (auto e = l.row_ptr[r]; e < l.row_ptr[r + 1]; ++e) pairs.emplace_back(t0 + r, t0 + l.col_idx[e]);
    t0 += l.n_tiles;
  }
  LayoutOptions opt;
  opt.order = Order::file;
  opt.mask = MaskMode::tiles;
  opt.tile = tile;
  opt.count_pairs = false;
  return build_edges_layout(xyz.data(), xyz.size() / 3, pairs, opt);
}

// Whether a batch holds copies of one layout (W1b, --batch): timed as it is, but built and
// exported once.
bool copies_of_one(const std::vector<BlockLayout>& batch) {
  for (const BlockLayout& l : batch)
    if (l.n != batch.front().n || l.col_idx != batch.front().col_idx) return false;
  return true;
}

// The layouts' spatial order + tile pairs: order_tile_ms from their stats (the first build), and
// order_tile_warm_ms from building the cutoff builder's ones again from their own coordinates
// with the same options in this process, whose memory the first build already touched: what a
// long-running process pays per layout, without the first touches of fresh pages (a fifth of a
// cold 1M-atom build on the 2-core build machine, a twentieth on a lent H200 host's 16 cores).
// A batch of copies of one layout counts it once.
void time_layouts(Workload& w) {
  const bool copies = copies_of_one(w.layouts);
  for (const BlockLayout& l : w.layouts) {
    w.order_tile_ms += l.stats.order_ms + l.stats.build_ms;
    if (l.builder == "cutoff") {
      LayoutOptions opt;
      opt.order = l.order;
      opt.mask = l.mask;
      opt.tile = l.tile;
      opt.cutoff = l.cutoff;
      opt.count_pairs = false;
      opt.threads = 0;
      const BlockLayout again = build_cutoff_layout(l.coords.data(), static_cast<std::size_t>(l.n), opt);
      w.order_tile_warm_ms += again.stats.order_ms + again.stats.build_ms;
    }
    if (copies) break;
  }
}

// The workloads of DESIGN.md by name.
Workload make_workload(const std::string& name, MaskMode mask) {
  Workload w;
  w.name = name;
  const auto t0 = Clock::now();
  if (name == "w1") {
    w.layouts.push_back(make_w1_layout(32, 800, 12, 1));
    w.note = "4096 atoms, 32x32 tiles, 800 kept (band 12 + seeded fill), 1 head, d=64";
  } else if (name == "w1alt") {
    w.layouts.push_back(make_w1_layout(63, 800, 6, 1));
    w.note = "8064 atoms, 63x63 tiles, 800 kept (band 6 + seeded fill), 1 head, d=64";
  } else if (name == "w1b") {
    const BlockLayout l = make_w1_layout(32, 800, 12, 1);
    w.layouts.assign(64, l);
    w.note = "64 structures of the W1 pattern in one ragged batch, 1 head, d=64";
  } else if (name == "w2" || name == "w2d128" || name == "w2d32") {
    w.layouts.push_back(globule_layout(kW2Atoms, 8.0f, mask));
    w.heads = 8;
    w.dim = name == "w2" ? 64 : name == "w2d128" ? 128 : 32;
    w.note = "100,096-atom globule, Morton, tile-box cutoff 8 A, 8 heads";
  } else if (name == "w4") {
    std::mt19937_64 rng(4);
    std::uniform_int_distribution<int> size(kW4MinAtoms, kW4MaxAtoms);
    for (int b = 0; b < kW4Structures; ++b) {
      const auto n = static_cast<std::size_t>(size(rng));
      w.layouts.push_back(globule_layout(n, 8.0f, mask, 100 + static_cast<std::uint64_t>(b)));
    }
    w.heads = 8;
    w.note = "serving mix: 32 globules of 1k-20k atoms (seeded sizes), Morton, 8 A, one ragged batch, 8 heads, d=64";
  } else if (name == "1m") {
    w.layouts.push_back(globule_layout(k1MAtoms, 8.0f, mask));
    w.heads = 8;
    w.note = "1,000,000-atom globule, Morton, tile-box cutoff 8 A, 8 heads, d=64";
  } else {
    throw Error("bench: unknown workload '" + name + "' (w1, w1alt, w1b, w2, w2d128, w2d32, w4, 1m)");
  }
  w.layout_ms = ms_since(t0);
  time_layouts(w);
  return w;
}

double percentile(std::vector<float> v, double q) {
  if (v.empty()) return 0;
  std::sort(v.begin(), v.end());
  return v[static_cast<std::size_t>(std::min<double>(v.size() - 1, std::floor(q * (v.size() - 1) + 0.5)))];
}

struct Options {
  std::vector<std::string> engines{"fused"};
  std::vector<std::string> workloads{"w1", "w1alt", "w1b", "w2", "w2d128"};
  std::vector<std::string> structures, layout_dirs;
  std::string dtype = "fp16", mask = "tiles", json_out, export_dir;
  int heads = 8, dim = 64, warmup = 10, iters = 100, threads = 0, batch = 1;
  bool flush_l2 = true;
};

nlohmann::json bench_one(Engine& engine, const Workload& w, const Options& o) {
  ProblemShape shape;
  shape.heads = w.heads;
  shape.dim = w.dim;
  shape.dtype = parse_dtype(o.dtype);
  std::vector<const BlockLayout*> ptrs;
  std::int64_t atoms = 0, tiles2 = 0;
  for (const BlockLayout& l : w.layouts) {
    ptrs.push_back(&l);
    atoms += l.n;
    tiles2 += static_cast<std::int64_t>(l.n_tiles) * l.n_tiles;
  }
  const auto t0 = Clock::now();
  auto plan = engine.plan(ptrs, shape);
  const double plan_ms = ms_since(t0);
  // The plan made again with the caches warm, as a server makes one per batch: the median of up
  // to 20 (1 s at most), each destroyed before the next.
  std::vector<double> replans;
  for (const auto r0 = Clock::now(); replans.size() < 20 && ms_since(r0) < 1000.0;) {
    const auto t = Clock::now();
    auto again = engine.plan(ptrs, shape);
    replans.push_back(ms_since(t));
  }
  const std::size_t elems = static_cast<std::size_t>(shape.heads) * plan->total_n() * shape.dim;
  const std::size_t bytes = elems * dtype_size(shape.dtype);
  const std::size_t lse_bytes = static_cast<std::size_t>(shape.heads) * plan->total_n() * sizeof(float);
  std::vector<float> samples;
  nlohmann::json extra = nlohmann::json::object();
  if (engine.on_device()) {
#ifdef PROTATTN_HAVE_CUDA
    cuda::DeviceArray q(bytes), k(bytes), v(bytes), out(bytes), lse(lse_bytes);
    q.fill_random(shape.dtype, elems, 1);
    k.fill_random(shape.dtype, elems, 2);
    v.fill_random(shape.dtype, elems, 3);
    RunArgs a{q.get(), k.get(), v.get(), out.get(), static_cast<float*>(lse.get()), nullptr};
    samples = cuda::time_device(
        [&](void* stream) {
          a.stream = stream;
          engine.run(*plan, a);
        },
        o.warmup, o.iters, o.flush_l2);
    extra["device_memory_used_bytes"] = cuda::device_memory_used();
#ifdef PROTATTN_HAVE_GROUPED
    if (std::string(engine.name()) == "grouped") {
      // One more call with events between the stages (kept out of the timed calls).
      grouped::enable_stage_timing(engine, true);
      a.stream = nullptr;
      engine.run(*plan, a);
      const auto st = grouped::stage_times(engine);
      grouped::enable_stage_timing(engine, false);
      extra["stage_ms"] = {{"qk", st.qk}, {"softmax", st.softmax}, {"pv", st.pv}};
    }
#endif
#else
    throw Error("bench: engine " + std::string(engine.name()) + " needs CUDA, not built in");
#endif
  } else {
    std::vector<std::uint8_t> q(bytes, 0x3c), k(bytes, 0x3c), v(bytes, 0x3c), out(bytes);
    std::vector<float> lse(lse_bytes / sizeof(float));
    RunArgs a{q.data(), k.data(), v.data(), out.data(), lse.data(), nullptr};
    for (int i = 0; i < std::min(o.warmup, 1); ++i) engine.run(*plan, a);
    for (int i = 0; i < o.iters; ++i) {
      const auto t = Clock::now();
      engine.run(*plan, a);
      samples.push_back(static_cast<float>(ms_since(t)));
    }
  }
#ifdef PROTATTN_HAVE_FUSED
  if (std::string(engine.name()) == "fused") {
    const auto s = fused::summarize(*plan);
    extra["items"] = s.items;
    extra["split_tiles"] = s.combines;
    extra["blocks_per_sm"] = s.blocks_per_sm;
    extra["blocks"] = s.blocks;
    extra["kernel"] = s.kernel;
    extra["plan_device_bytes"] = s.device_bytes;
  }
#endif
  const double ms = median(samples);
  const double moved = 4.0 * static_cast<double>(bytes) + static_cast<double>(lse_bytes);
  nlohmann::json r = {{"engine", engine.name()},
                      {"workload", w.name},
                      {"note", w.note},
                      {"structures", w.layouts.size()},
                      {"atoms", atoms},
                      {"nnz_blocks", plan->nnz_blocks()},
                      {"density", tiles2 ? static_cast<double>(plan->nnz_blocks()) / tiles2 : 0.0},
                      {"heads", shape.heads},
                      {"dim", shape.dim},
                      {"dtype", to_string(shape.dtype)},
                      {"mask", to_string(w.layouts.front().mask)},
                      {"iters", o.iters},
                      {"ms", ms},
                      {"ms_p10", percentile(samples, 0.1)},
                      {"ms_p90", percentile(samples, 0.9)},
                      {"tflops", plan->flops() / (ms * 1e-3) / 1e12},
                      {"bytes_moved", moved},
                      {"gbps", moved / (ms * 1e-3) / 1e9},
                      {"layout_ms", w.layout_ms},
                      {"order_tile_ms", w.order_tile_ms},
                      {"order_tile_warm_ms", w.order_tile_warm_ms},
                      {"plan_ms", plan_ms},
                      {"plan_warm_ms", median(replans)}};
  r.update(extra);
  return r;
}

void run_bench(const Options& o) {
  std::vector<Workload> work;
  const MaskMode mask = parse_mask(o.mask);
  for (const std::string& name : o.workloads) work.push_back(make_workload(name, mask));
  for (const std::string& path : o.structures) {
    Workload w;
    const auto t0 = Clock::now();
    const Structure s = read_structure(path);
    LayoutOptions opt;
    opt.order = Order::hilbert;
    opt.mask = mask;
    opt.count_pairs = false;
    opt.threads = 0;
    w.layouts.assign(static_cast<std::size_t>(o.batch), build_cutoff_layout(s.xyz.data(), s.size(), opt));
    w.layout_ms = ms_since(t0);
    time_layouts(w);
    w.name = std::filesystem::path(path).stem().string() + (o.batch > 1 ? "x" + std::to_string(o.batch) : "");
    w.heads = o.heads;
    w.dim = o.dim;
    w.note = path + ", Hilbert, tile-box cutoff 8 A (read + order + tile: " + fmt::format("{:.1f}", w.layout_ms) +
             " ms)" + (o.batch > 1 ? fmt::format(", {} copies in one batch", o.batch) : "");
    work.push_back(std::move(w));
  }
  for (const std::string& dir : o.layout_dirs) {
    Workload w;
    w.layouts.assign(static_cast<std::size_t>(o.batch), load_layout(dir));
    w.name = std::filesystem::path(dir).filename().string() + (o.batch > 1 ? "x" + std::to_string(o.batch) : "");
    w.heads = o.heads;
    w.dim = o.dim;
    w.note = "exported layout " + dir;
    work.push_back(std::move(w));
  }
  if (!o.export_dir.empty()) {
    for (const Workload& w : work) {
      const std::string dir = (std::filesystem::path(o.export_dir) / w.name).string();
      // Copies of one layout export once with their count; a ragged batch as one block-diagonal layout.
      const bool copies = copies_of_one(w.layouts);
      export_layout(copies ? w.layouts.front() : block_diagonal(w.layouts), dir);
      nlohmann::json run = {{"heads", w.heads}, {"dim", w.dim}, {"batch", copies ? w.layouts.size() : 1}, {"dtype", o.dtype}};
      write_json((std::filesystem::path(dir) / "bench.json").string(), run, "bench");
    }
  }

  nlohmann::json results = nlohmann::json::array();
  nlohmann::json env = {{"date", [] {
                           char buf[32];
                           const std::time_t t = std::time(nullptr);
                           std::strftime(buf, sizeof buf, "%Y-%m-%dT%H:%M:%SZ", std::gmtime(&t));
                           return std::string(buf);
                         }()}};
#ifdef PROTATTN_HAVE_CUDA
  int devices = 0;
  if (cudaGetDeviceCount(&devices) == cudaSuccess && devices > 0) {
    const auto info = cuda::device_info(0);
    env["gpu"] = info.name;
    env["cuda_driver"] = info.driver;
    env["sms"] = info.sms;
    env["sm_clock_mhz"] = info.sm_clock_mhz;
    env["mem_clock_mhz"] = info.mem_clock_mhz;
  }
#endif
  std::printf("%-10s %-8s %9s %7s %5s %4s %10s %9s %9s\n", "workload", "engine", "atoms", "nnz", "heads", "d", "time(us)",
              "TFLOPS", "GB/s");
  for (const std::string& ename : o.engines) {
    EngineOptions eo;
    eo.threads = o.threads;
    auto engine = make_engine(ename, eo);
    for (const Workload& w : work) {
      nlohmann::json r;
      try {
        r = bench_one(*engine, w, o);
      } catch (const Error& e) {  // one engine refusing one workload (e.g. workspace) ends nothing
        std::printf("%-10s %-8s %s\n", w.name.c_str(), ename.c_str(), e.what());
        results.push_back({{"engine", ename}, {"workload", w.name}, {"error", e.what()}});
        continue;
      }
      std::printf("%-10s %-8s %9lld %7lld %5d %4d %10.1f %9.1f %9.0f\n", w.name.c_str(), ename.c_str(),
                  static_cast<long long>(r["atoms"].get<std::int64_t>()),
                  static_cast<long long>(r["nnz_blocks"].get<std::int64_t>()), w.heads, w.dim,
                  r["ms"].get<double>() * 1e3, r["tflops"].get<double>(), r["gbps"].get<double>());
      if (r.contains("stage_ms"))
        std::printf("%-10s %-8s stages: QK^T %.1f us, softmax %.1f us, PV + reduction %.1f us\n", w.name.c_str(),
                    ename.c_str(), r["stage_ms"]["qk"].get<double>() * 1e3, r["stage_ms"]["softmax"].get<double>() * 1e3,
                    r["stage_ms"]["pv"].get<double>() * 1e3);
      std::fflush(stdout);
      results.push_back(std::move(r));
    }
  }
  if (!o.json_out.empty()) write_json(o.json_out, nlohmann::json{{"env", env}, {"results", results}}, "bench");
}

}  // namespace

void add_bench_command(CLI::App& app) {
  auto opt = std::make_shared<Options>();
  CLI::App* cmd = app.add_subcommand("bench",
                                     "Time engines on the reference workloads (W1, W1-alt, W1b, W2 at d=64, 128 and 32, the\n"
                                     "W4 serving mix, 1M atoms), on structures or on exported layouts. Device engines are\n"
                                     "timed with CUDA events after warm-up, the L2 flushed before each call; the median is\n"
                                     "reported. TFLOPS count the computed (kept) blocks only: 4 * nnz * 128 * 128 * d *\n"
                                     "heads / time.");
  cmd->add_option("--engine", opt->engines, "engines to time (cpu, fused, grouped)")->delimiter(',');
  cmd->add_option("--workload", opt->workloads, "workloads: w1 w1alt w1b w2 w2d128 w2d32 w4 1m (none: only --structure/--layout)")
      ->delimiter(',');
  cmd->add_option("--structure", opt->structures, "structure files (PDB/mmCIF) to time, cutoff 8 A, Hilbert");
  cmd->add_option("--layout", opt->layout_dirs, "exported layout folders to time");
  cmd->add_option("--heads", opt->heads, "heads for --structure/--layout")->check(kPositive);
  cmd->add_option("--dim", opt->dim, "head dim for --structure/--layout (fused: 32, 64 or 128 as compiled; grouped: 64 or 128)")
      ->check(kPositive);
  cmd->add_option("--batch", opt->batch, "copies of each --structure/--layout run as one ragged batch")
      ->check(kPositive);
  cmd->add_option("--dtype", opt->dtype, "fp16 or bf16 (fp32 on cpu)");
  cmd->add_option("--mask", opt->mask, "mask mode of the cutoff layouts: tiles or atoms");
  cmd->add_option("--warmup", opt->warmup, "untimed calls first")->check(kNonNegative);
  cmd->add_option("--iters", opt->iters, "timed calls")->check(kPositive);
  cmd->add_option("--threads", opt->threads, "cpu engine threads (0: all)");
  cmd->add_flag("!--no-flush", opt->flush_l2, "do not flush the L2 before each timed call");
  cmd->add_option("--json", opt->json_out, "write the results as JSON here");
  cmd->add_option("--export-layouts", opt->export_dir, "write each workload's layout to DIR/<name> (for the peers)");
  cmd->callback([opt, cmd] {
    // Structures or layouts alone: the reference workloads only when asked for.
    if ((!opt->structures.empty() || !opt->layout_dirs.empty()) && cmd->count("--workload") == 0) opt->workloads.clear();
    run_bench(*opt);
  });
}

}  // namespace protattn::cli
