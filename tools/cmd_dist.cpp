// protattn dist: attention over several ranks: head-parallel or spatial (halo exchange), on GPUs
// through NCCL (one process per GPU, launched here or by mpirun) or simulated on the CPU.
#include <unistd.h>

#include <algorithm>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "cli_common.hpp"
#include "commands.hpp"
#include "protattn/dist.hpp"
#include "protattn/half.hpp"
#ifdef PROTATTN_HAVE_NCCL
#include "dist/nccl_exec.hpp"
#endif

namespace protattn::cli {
namespace {

namespace fs = std::filesystem;
using nlohmann::json;

constexpr double kBytesPerMiB = 1024.0 * 1024.0;

struct DistOptions {
  std::string mode = "heads", workload = "w2", engine, dtype = "fp16", mask = "tiles", json_out, rendezvous;
  int ranks = 0, gpus = 0, heads = 8, dim = 64, iters = 20, warmup = 3, threads = 0;
  float cutoff = 8.0f;
  double timeout_s = 120, partial_weight = 1.0;
  std::uint64_t seed = 1;
  bool check = false, plan_only = false, keep_distributed = false, no_baseline = false, overlap = false;
};

// w2 / 1m: the globules of `protattn bench` (Morton, tile-box cutoff); a folder: an exported
// layout; else a structure file, globule:N or w1 (Hilbert cutoff layout, as `protattn layout`).
BlockLayout load_workload(const DistOptions& o) {
  const MaskMode mask = parse_mask(o.mask);
  if (o.workload == "w2" || o.workload == "1m") {
    const Activity a("building the " + o.workload + " globule layout");
    return globule_layout(o.workload == "w2" ? kW2Atoms : k1MAtoms, o.cutoff, mask);
  }
  std::error_code ec;
  if (fs::is_directory(o.workload, ec)) return load_layout(o.workload);
  SourceOptions so;
  so.spec = o.workload;
  so.seed = o.seed;
  LayoutArgs la;
  la.mask = o.mask;
  la.cutoff = o.cutoff;
  return make_layout(load_source(so), la, false);
}

std::string mib(double bytes) { return fmt::format("{:.2f} MiB", bytes / kBytesPerMiB); }

// The plan, printed and as JSON (no GPU needed).
json describe_plan(const BlockLayout& l, const DistOptions& o, dist::Mode mode, int ranks, DType dtype,
                   const dist::SpatialPlan* sp) {
  json j = {{"mode", dist::to_string(mode)}, {"workload", o.workload}, {"atoms", l.n},      {"tiles", l.n_tiles},
            {"nnz_blocks", l.nnz()},         {"mask", to_string(l.mask)}, {"ranks", ranks}, {"heads", o.heads},
            {"dim", o.dim},                  {"dtype", to_string(dtype)}};
  fmt::print("dist: {} atoms, {} tiles, {} kept blocks, mask {}, {} ranks, {} heads, d={}, {}\n", l.n, l.n_tiles, l.nnz(),
             to_string(l.mask), ranks, o.heads, o.dim, to_string(dtype));
  if (mode == dist::Mode::heads) {
    const std::vector<int> b = dist::split_heads(o.heads, ranks);
    json per = json::array();
    for (int r = 0; r < ranks; ++r) {
      fmt::print("  rank {:>3}: heads [{}, {})\n", r, b[r], b[r + 1]);
      per.push_back({{"rank", r}, {"head_begin", b[r]}, {"head_end", b[r + 1]}});
    }
    j["per_rank"] = per;
    return j;
  }
  const std::size_t elem = dtype_size(dtype);
  json per = json::array();
  fmt::print("  {:>8} {:>15} {:>10} {:>6} {:>10} {:>12} {:>12}{}\n", "rank", "query tiles", "cost", "halo", "halo atoms",
             "recv/step", "sent/step", o.overlap ? "   interior / boundary blocks" : "");
  for (const dist::RankPlan& r : sp->rank) {
    std::int64_t sent = 0;
    for (const dist::PeerTiles& s : r.send) sent += s.atoms;
    const std::int64_t rb = dist::kv_bytes(r.halo_atoms, o.heads, o.dim, elem), sb = dist::kv_bytes(sent, o.heads, o.dim, elem);
    std::string split;
    json row = {{"rank", r.rank},       {"tile_begin", r.tile_begin}, {"tile_end", r.tile_end},
                {"cost", r.cost},       {"halo_tiles", r.halo.size()}, {"halo_atoms", r.halo_atoms},
                {"local_atoms", r.local.n}, {"peers_recv", r.recv.size()}, {"peers_send", r.send.size()},
                {"bytes_received", rb}, {"bytes_sent", sb}};
    if (o.overlap) {
      // The rows that can run while the halo travels, and those that wait for it.
      const dist::OverlapSplit ov = dist::split_for_overlap(r);
      const std::int64_t blocks = ov.interior_blocks + ov.boundary_blocks;
      split = fmt::format("   {} / {} ({:.1f}% interior)", ov.interior_blocks, ov.boundary_blocks,
                          blocks ? 100.0 * ov.interior_blocks / blocks : 0.0);
      row["interior_tiles"] = ov.interior_tiles;
      row["boundary_tiles"] = ov.boundary_tiles;
      row["interior_blocks"] = ov.interior_blocks;
      row["boundary_blocks"] = ov.boundary_blocks;
    }
    fmt::print("  {:>8} {:>15} {:>10.0f} {:>6} {:>10} {:>12} {:>12}{}\n", r.rank,
               fmt::format("[{}, {})", r.tile_begin, r.tile_end), r.cost, r.halo.size(), r.halo_atoms, mib(rb), mib(sb),
               split);
    per.push_back(row);
  }
  const std::int64_t halo = dist::kv_bytes(sp->halo_atoms(), o.heads, o.dim, elem);
  const std::int64_t all = dist::kv_bytes(sp->allgather_atoms(), o.heads, o.dim, elem);
  fmt::print("  cost imbalance (max/mean) {:.4f}; halo K/V per step {} (busiest rank {}) vs all-gather {} ({:.1f}%); "
             "plan {:.1f} ms\n",
             sp->split.imbalance(), mib(halo), mib(dist::kv_bytes(sp->max_halo_atoms(), o.heads, o.dim, elem)), mib(all),
             all ? 100.0 * halo / all : 0.0, sp->plan_ms);
  j["per_rank"] = per;
  j["imbalance"] = sp->split.imbalance();
  j["cost_total"] = sp->split.total;
  j["cost_max_tile"] = sp->split.max_tile;
  j["partial_weight"] = o.partial_weight;
  j["halo_bytes"] = halo;
  j["halo_bytes_max_rank"] = dist::kv_bytes(sp->max_halo_atoms(), o.heads, o.dim, elem);
  j["allgather_bytes"] = all;
  j["plan_ms"] = sp->plan_ms;
  return j;
}

// CPU: P simulated ranks in this process, the same plan and data path as on GPUs.
void run_cpu(const DistOptions& o, dist::Mode mode, int ranks, const BlockLayout& l, const dist::SpatialPlan* sp,
             json& j) {
  const DType dtype = parse_dtype(o.dtype);
  ProblemShape shape;
  shape.heads = o.heads;
  shape.dim = o.dim;
  shape.dtype = dtype;
  const std::size_t count = static_cast<std::size_t>(o.heads) * l.n * o.dim;
  std::mt19937_64 rng(o.seed);
  const auto q = random_tensor(rng, dtype, count), k = random_tensor(rng, dtype, count), v = random_tensor(rng, dtype, count);
  std::vector<std::uint8_t> out(count * dtype_size(dtype));
  std::vector<float> lse(static_cast<std::size_t>(o.heads) * l.n);
  auto engine = make_engine("cpu", EngineOptions{o.threads, 0});
  const RunArgs host{q.data(), k.data(), v.data(), out.data(), lse.data(), nullptr};
  dist::ExecReport rep;
  const auto t0 = Clock::now();
  if (mode == dist::Mode::heads) {
    rep = dist::run_heads_host(*engine, l, shape, ranks, host);
  } else {
    const Activity a("running " + std::to_string(ranks) + " simulated ranks");
    rep = dist::run_spatial_host(*engine, *sp, l, shape, host, o.overlap);
  }
  const double total_ms = ms_since(t0);
  json per = json::array();
  for (const dist::RankReport& r : rep.rank)
    per.push_back({{"rank", r.rank}, {"exchange_ms", r.exchange_ms}, {"compute_ms", r.compute_ms},
                   {"bytes_sent", r.bytes_sent}, {"bytes_received", r.bytes_received}});
  j["engine"] = "cpu";
  j["simulated_ranks"] = per;
  j["bytes_moved"] = rep.bytes_moved;
  j["ms"] = total_ms;
  fmt::print("cpu executor: {} simulated ranks, {:.1f} ms, {} moved between ranks\n", ranks, total_ms,
             mib(static_cast<double>(rep.bytes_moved)));
  if (!o.check) return;
  // The one-engine result on the same inputs: the ranks keep every row's order, so equal bits.
  std::vector<std::uint8_t> ref(out.size());
  std::vector<float> ref_lse(lse.size());
  const auto plan = engine->plan({&l}, shape);
  engine->run(*plan, RunArgs{q.data(), k.data(), v.data(), ref.data(), ref_lse.data(), nullptr});
  double max_abs = 0;
  for (std::size_t i = 0; i < count; ++i)
    max_abs = std::max(max_abs, std::abs(double{element_as_float(out.data(), dtype, i)} - element_as_float(ref.data(), dtype, i)));
  const bool same = out == ref && std::memcmp(lse.data(), ref_lse.data(), lse.size() * sizeof(float)) == 0;
  fmt::print("check against one cpu engine: max |O - O_ref| = {:.3g}, {}\n", max_abs,
             same ? "bit-identical (O and LSE)" : "NOT bit-identical");
  j["check"] = {{"max_abs_o", max_abs}, {"bit_identical", same}};
  if (!same) throw Error("dist: the simulated ranks differ from one cpu engine");
}

#ifdef PROTATTN_HAVE_NCCL
// One rank of the GPU group (run_nccl plans before it waits on NCCL, so a refusal fails every rank).
void run_gpu(const DistOptions& o, dist::Mode mode, const BlockLayout& l, const dist::RankInfo& me, json& j) {
  dist::GpuOptions g;
  g.mode = mode;
  g.shape.heads = o.heads;
  g.shape.dim = o.dim;
  g.shape.dtype = parse_dtype(o.dtype);
  g.warmup = o.warmup;
  g.iters = o.iters;
  g.check = o.check;
  g.baseline = !o.no_baseline;
  g.gather = !o.keep_distributed;
  g.overlap = o.overlap;
  g.timeout_s = o.timeout_s;
  g.cost = dist::CostModel{1.0, o.partial_weight};
  g.seed = o.seed;
  const char* dir_env = std::getenv("PROTATTN_DIST_DIR");
  g.rendezvous = !o.rendezvous.empty() ? o.rendezvous
                 : dir_env            ? std::string(dir_env)
                                      : (fs::temp_directory_path() / ("protattn-dist-" + std::to_string(::getuid()))).string();
  // Ranks of one run agree on the id file's name: the launcher's tag, else the MPI job's.
  for (const char* var : {"PROTATTN_DIST_RUN", "OMPI_MCA_ess_base_jobid", "PMIX_NAMESPACE"})
    if (const char* v = std::getenv(var); v && *v && g.run_tag.empty()) g.run_tag = v;
  const dist::GpuReport rep = dist::run_nccl(l, g, me);
  if (me.rank != 0) return;
  const double bytes_halo = [&] {
    double s = 0;
    for (const auto& r : rep.ranks) s += static_cast<double>(r.bytes_received);
    return s;
  }();
  fmt::print("{} x {} ({}), {}\n", me.world, rep.gpu, dist::to_string(mode), dist::nccl_library_info());
  fmt::print("  {:>4} {:>6} {:>7} {:>10} {:>11} {:>11} {:>10} {:>10} {:>12}\n", "rank", "heads", "tiles", "atoms",
             "exchange_ms", "compute_ms", "step_ms", "gather_ms", "halo recv");
  json per = json::array();
  for (const auto& r : rep.ranks) {
    fmt::print("  {:>4} {:>6} {:>7} {:>10} {:>11.3f} {:>11.3f} {:>10.3f} {:>10.3f} {:>12}\n", r.rank, r.heads, r.tiles,
               r.local_atoms, r.exchange_ms, r.compute_ms, r.step_ms, r.gather_ms, mib(static_cast<double>(r.bytes_received)));
    per.push_back({{"rank", r.rank}, {"heads", r.heads}, {"tiles", r.tiles}, {"local_atoms", r.local_atoms},
                   {"exchange_ms", r.exchange_ms}, {"compute_ms", r.compute_ms}, {"step_ms", r.step_ms},
                   {"gather_ms", r.gather_ms}, {"bytes_sent", r.bytes_sent}, {"bytes_received", r.bytes_received},
                   {"fused_split_tiles", r.fused_splits}});
  }
  j["engine"] = "fused";
  j["gpu"] = rep.gpu;
  j["nccl"] = dist::nccl_library_info();
  j["world"] = me.world;
  j["gpu_ranks"] = per;
  j["step_ms"] = rep.step_ms;
  j["halo_bytes_measured"] = bytes_halo;
  j["gathered"] = !o.keep_distributed;
  j["overlap"] = o.overlap && mode == dist::Mode::spatial;
  fmt::print("step (slowest rank, median of {}) {:.3f} ms", o.iters, rep.step_ms);
  if (rep.single_ms > 0) {
    const double eff = rep.single_ms / (me.world * rep.step_ms);
    fmt::print("; one GPU {:.3f} ms; speed-up {:.2f}x, scaling efficiency {:.1f}%", rep.single_ms,
               rep.single_ms / rep.step_ms, 100.0 * eff);
    j["single_gpu_ms"] = rep.single_ms;
    j["single_gpu_split_tiles"] = rep.single_splits;
    j["speedup"] = rep.single_ms / rep.step_ms;
    j["scaling_efficiency"] = eff;
  }
  fmt::print("\n");
  if (rep.checked) {
    fmt::print("check against one GPU: max |O - O_ref| = {:.3g} ({:.3g} of max |O|), max |LSE - LSE_ref| = {:.3g}, "
               "{} O elements differ, {}\n",
               rep.max_abs_o, rep.max_rel_o, rep.max_abs_lse, rep.differing,
               rep.bit_identical ? "bit-identical" : "not bit-identical");
    j["check"] = {{"max_abs_o", rep.max_abs_o},       {"max_rel_o", rep.max_rel_o},
                  {"max_abs_lse", rep.max_abs_lse},   {"differing_o", rep.differing},
                  {"lse_inf_mismatch", rep.lse_inf_mismatch}, {"bit_identical", rep.bit_identical}};
  }
}

// argv of this process, read back from /proc (the launcher re-runs itself unchanged).
std::vector<std::string> own_argv() {
  std::ifstream f("/proc/self/cmdline", std::ios::binary);
  std::vector<std::string> args;
  std::string a;
  while (std::getline(f, a, '\0')) args.push_back(a);
  if (args.empty()) throw Error("dist: cannot read /proc/self/cmdline to start the ranks");
  args[0] = fs::read_symlink("/proc/self/exe").string();
  return args;
}
#endif

void run_dist(const DistOptions& o) {
  const dist::Mode mode = dist::parse_mode(o.mode);
#ifdef PROTATTN_HAVE_NCCL
  const std::string engine = o.engine.empty() ? "fused" : o.engine;
#else
  const std::string engine = o.engine.empty() ? "cpu" : o.engine;
#endif
  if (engine != "cpu" && engine != "fused") throw UsageError("dist: --engine is fused (GPUs, NCCL) or cpu (simulated ranks)");
  const dist::RankInfo me = dist::rank_from_env();
  if (engine == "cpu" && o.gpus > 0) throw UsageError("dist: --gpus is for --engine fused; the cpu engine takes --ranks");
  if (engine == "fused" && o.ranks > 0 && !o.plan_only)
    throw UsageError("dist: --ranks simulates ranks with --engine cpu; on GPUs give --gpus N (or launch with mpirun)");
#ifdef PROTATTN_HAVE_NCCL
  if (engine == "fused" && !me.from_env && o.gpus > 0 && !o.plan_only) {
    // The launcher: one child per GPU, each a rank of this same command.
    std::vector<std::string> env{"PROTATTN_DIST_RUN=" + std::to_string(::getpid()), "NCCL_NVLS_ENABLE=0"};
    if (o.rendezvous.empty() && !std::getenv("PROTATTN_DIST_DIR")) {
      std::string tmpl = (fs::temp_directory_path() / "protattn-dist-XXXXXX").string();
      if (!::mkdtemp(tmpl.data())) throw Error("dist: cannot create a rendezvous directory under /tmp");
      env.push_back("PROTATTN_DIST_DIR=" + tmpl);
      dist::spawn_ranks(own_argv(), o.gpus, env);
      std::error_code ec;
      fs::remove_all(tmpl, ec);
    } else {
      dist::spawn_ranks(own_argv(), o.gpus, env);
    }
    return;
  }
  if (me.from_env && o.gpus > 0 && o.gpus != me.world)
    throw UsageError("dist: --gpus " + std::to_string(o.gpus) + " but WORLD_SIZE is " + std::to_string(me.world));
#else
  if (engine == "fused")
    throw Error("dist: --engine fused needs a build with CUDA and NCCL (this one has neither); use --engine cpu --ranks P");
#endif
  const int ranks = engine == "cpu" ? (o.ranks > 0 ? o.ranks : 2) : (o.plan_only && o.ranks > 0 ? o.ranks : me.world);
  const DType dtype = parse_dtype(o.dtype);
  if (mode == dist::Mode::heads) dist::split_heads(o.heads, ranks);  // refuse before building anything
  const BlockLayout l = load_workload(o);
  std::unique_ptr<dist::SpatialPlan> sp;  // for the report; the GPU ranks plan inside run_nccl
  const bool reports = engine == "cpu" || me.rank == 0;  // the cpu engine's ranks are all in this process
  if (mode == dist::Mode::spatial && reports) {
    const Activity a("planning " + std::to_string(ranks) + " ranks");
    sp = std::make_unique<dist::SpatialPlan>(dist::plan_spatial(l, ranks, dist::CostModel{1.0, o.partial_weight}));
  }
  json j;
  if (reports) j = describe_plan(l, o, mode, ranks, dtype, sp.get());
  if (!o.plan_only) {
    if (engine == "cpu") run_cpu(o, mode, ranks, l, sp.get(), j);
#ifdef PROTATTN_HAVE_NCCL
    else run_gpu(o, mode, l, me, j);
#endif
  }
  if (reports && !o.json_out.empty()) write_json(o.json_out, j, "dist");
}

}  // namespace

void add_dist_command(CLI::App& app) {
  auto opt = std::make_shared<DistOptions>();
  CLI::App* cmd = app.add_subcommand(
      "dist",
      "Attention over several GPUs through NCCL, one process per GPU: heads split across GPUs (--mode heads) or\n"
      "query tiles split by cost with a halo exchange of the K/V tiles each GPU's rows reference (--mode spatial).\n"
      "`--gpus N` starts N ranks of itself (RANK/WORLD_SIZE/LOCAL_RANK); mpirun works too. With --engine cpu,\n"
      "--ranks P simulates P ranks in this process through the same plan and data path. --check compares with\n"
      "one engine over the whole problem (rank 0).");
  cmd->add_option("--mode", opt->mode, "heads or spatial")->check(CLI::IsMember({"heads", "spatial"}))->capture_default_str();
  cmd->add_option("--workload", opt->workload,
                  "w2 (100,096-atom globule), 1m (1,000,000 atoms), a layout folder, a structure file, globule:N or w1")
      ->capture_default_str();
  cmd->add_option("--engine", opt->engine, "fused (GPUs; the default when built with CUDA and NCCL) or cpu");
  cmd->add_option("--gpus", opt->gpus, "GPU ranks to start here (when RANK is not set)")->check(kPositive);
  cmd->add_option("--ranks", opt->ranks, "simulated ranks (--engine cpu; with --plan-only, ranks to plan for)")
      ->check(kPositive);
  cmd->add_option("--heads", opt->heads, "attention heads")->check(kPositive)->capture_default_str();
  cmd->add_option("--dim", opt->dim, "head dim")->check(kPositive)->capture_default_str();
  cmd->add_option("--dtype", opt->dtype, "fp16 or bf16 (fp32 too with --engine cpu)")->capture_default_str();
  cmd->add_option("--mask", opt->mask, "mask of the cutoff layouts: tiles or atoms")
      ->check(CLI::IsMember({"tiles", "atoms"}))
      ->capture_default_str();
  cmd->add_option("--cutoff", opt->cutoff, "cutoff in Angstrom")->check(kPositive)->capture_default_str();
  cmd->add_option("--partial-weight", opt->partial_weight, "cost of a PARTIAL block against a FULL one (spatial split)")
      ->check(kNonNegative)
      ->capture_default_str();
  cmd->add_option("--iters", opt->iters, "timed steps")->check(kPositive)->capture_default_str();
  cmd->add_option("--warmup", opt->warmup, "untimed steps first")->check(kNonNegative)->capture_default_str();
  cmd->add_option("--threads", opt->threads, "cpu engine threads (0: all)");
  cmd->add_option("--seed", opt->seed, "seed of the random Q, K, V (and of globule:N)")->capture_default_str();
  cmd->add_flag("--check", opt->check, "compare with one engine over the whole problem and report the largest error");
  cmd->add_flag("--plan-only", opt->plan_only, "print the plan (split, halo, bytes) and stop: no GPU needed");
  cmd->add_flag("--keep-distributed", opt->keep_distributed, "leave O and LSE on their ranks (no gather to rank 0)");
  cmd->add_flag("--no-baseline", opt->no_baseline, "do not time the one-GPU run on rank 0");
  cmd->add_flag("--overlap", opt->overlap,
                "spatial: run the rows that reference no halo tile while the halo is exchanged, the rest after it "
                "(same results)");
  cmd->add_option("--rendezvous", opt->rendezvous,
                  "directory shared by the ranks for the NCCL id file (default $PROTATTN_DIST_DIR, else a folder in /tmp)");
  cmd->add_option("--timeout", opt->timeout_s, "seconds a rank waits for rank 0's id file")
      ->check(kPositive)
      ->capture_default_str();
  cmd->add_option("--json", opt->json_out, "write the plan and results as JSON here (rank 0)");
  cmd->callback([opt] { run_dist(*opt); });
}

}  // namespace protattn::cli
