// protattn run: attention over a structure's layout on Q/K/V from npy files or seeded random ones.
#include <cstring>
#include <filesystem>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include <fmt/format.h>

#include "cli_common.hpp"
#include "commands.hpp"
#include "protattn/half.hpp"

namespace protattn::cli {
namespace {

namespace fs = std::filesystem;

constexpr double kFlopsPerGflop = 1e9;
constexpr double kMsPerSecond = 1e3;

struct RunOptions {
  SourceOptions source;
  LayoutArgs layout;
  std::string engine = "cpu", dtype = "fp16", q, k, v, out;
  int heads = 1, dim = 64, threads = 0, device = 0;
  float scale = 0;
};


// Moves the rows of a [heads, n, row_bytes] tensor between file order and layout order:
// layout position p holds file atom perm[p].
enum class Direction { to_layout, to_file };
std::vector<std::uint8_t> permute_rows(const std::vector<std::uint8_t>& src, const std::vector<std::int32_t>& perm,
                                       int heads, std::size_t row_bytes, Direction dir) {
  std::vector<std::uint8_t> dst(src.size());
  const std::size_t n = perm.size();
  for (int h = 0; h < heads; ++h)
    for (std::size_t p = 0; p < n; ++p) {
      const std::size_t layout_row = h * n + p, file_row = h * n + static_cast<std::size_t>(perm[p]);
      const std::size_t from = dir == Direction::to_layout ? file_row : layout_row;
      const std::size_t to = dir == Direction::to_layout ? layout_row : file_row;
      std::memcpy(dst.data() + to * row_bytes, src.data() + from * row_bytes, row_bytes);
    }
  return dst;
}

std::vector<std::uint8_t> as_bytes(const std::vector<float>& v) {
  std::vector<std::uint8_t> b(v.size() * sizeof(float));
  std::memcpy(b.data(), v.data(), b.size());
  return b;
}

void run_run(const RunOptions& o) {
  const DType dtype = parse_dtype(o.dtype);
  const int given = !o.q.empty() + !o.k.empty() + !o.v.empty();
  if (given != 0 && given != 3) throw UsageError("run: give all three of --q, --k, --v, or none (random inputs)");
  const Source s = load_source(o.source);
  const BlockLayout l = make_layout(s, o.layout, false);
  const std::int64_t n = l.n;
  const std::vector<std::int64_t> shape{o.heads, n, o.dim};
  const std::size_t count = static_cast<std::size_t>(o.heads) * n * o.dim;
  const std::size_t row_bytes = static_cast<std::size_t>(o.dim) * dtype_size(dtype);

  std::vector<std::uint8_t> q, k, v;  // file order
  if (given) {
    const Activity a("reading Q, K, V");
    q = read_tensor(o.q, dtype, shape).data;
    k = read_tensor(o.k, dtype, shape).data;
    v = read_tensor(o.v, dtype, shape).data;
  } else {
    const Activity a("drawing random Q, K, V");
    std::mt19937_64 rng(o.source.seed);
    q = random_tensor(rng, dtype, count);
    k = random_tensor(rng, dtype, count);
    v = random_tensor(rng, dtype, count);
  }

  auto engine = make_engine(o.engine, EngineOptions{o.threads, o.device});
  ProblemShape ps;
  ps.heads = o.heads;
  ps.dim = o.dim;
  ps.dtype = dtype;
  ps.scale = o.scale;
  const auto plan = engine->plan({&l}, ps);

  std::vector<std::uint8_t> out_l(count * dtype_size(dtype));
  std::vector<float> lse_l(static_cast<std::size_t>(o.heads) * n);
  double run_ms = 0;
  {
    const std::vector<std::uint8_t> ql = permute_rows(q, l.perm, o.heads, row_bytes, Direction::to_layout);
    const std::vector<std::uint8_t> kl = permute_rows(k, l.perm, o.heads, row_bytes, Direction::to_layout);
    const std::vector<std::uint8_t> vl = permute_rows(v, l.perm, o.heads, row_bytes, Direction::to_layout);
    const Activity a(std::string("running the ") + engine->name() + " engine");
    const auto t0 = Clock::now();
    run_host(*engine, *plan, RunArgs{ql.data(), kl.data(), vl.data(), out_l.data(), lse_l.data(), nullptr});
    run_ms = ms_since(t0);
  }
  const std::vector<std::uint8_t> out_f = permute_rows(out_l, l.perm, o.heads, row_bytes, Direction::to_file);
  const std::vector<std::uint8_t> lse_f = permute_rows(as_bytes(lse_l), l.perm, o.heads, sizeof(float), Direction::to_file);

  const Activity a("writing " + o.out);
  std::error_code ec;
  fs::create_directories(o.out, ec);
  if (ec) throw Error("run: cannot create " + o.out + ": " + ec.message());
  const auto path = [&](const char* name) { return (fs::path(o.out) / name).string(); };
  write_npy(path("o.npy"), npy_descr(dtype), shape, out_f.data());
  write_npy(path("lse.npy"), "<f4", {o.heads, n}, lse_f.data());
  if (!given) {
    write_npy(path("q.npy"), npy_descr(dtype), shape, q.data());
    write_npy(path("k.npy"), npy_descr(dtype), shape, k.data());
    write_npy(path("v.npy"), npy_descr(dtype), shape, v.data());
  }
  export_layout(l, path("layout"));

  const double gflops = run_ms > 0 ? plan->flops() / kFlopsPerGflop / (run_ms / kMsPerSecond) : 0;
  fmt::print("source    {}\n", s.spec);
  fmt::print("problem   {} atoms, {} heads, dim {}, {}, {} of {} tiles kept (tile {})\n", n, o.heads, o.dim,
             to_string(dtype), l.nnz(), std::int64_t{l.n_tiles} * l.n_tiles, l.tile);
  fmt::print("engine    {}\n", engine->name());
  fmt::print("time      {:.3f} ms{}\n", run_ms, engine->on_device() ? " (host to host, copies included)" : "");
  fmt::print("GFLOPS    {:.2f} (computed blocks only: {:.3g} FLOP)\n", gflops, plan->flops());
  fmt::print("wrote     {} (o.npy, lse.npy{}, layout/)\n", o.out, given ? "" : ", q.npy, k.npy, v.npy");
}

}  // namespace

void add_run_command(CLI::App& app) {
  auto o = std::make_shared<RunOptions>();
  CLI::App* cmd = app.add_subcommand(
      "run",
      "Run attention over a structure's layout. Inputs and outputs are in FILE atom order: Q, K, V and O "
      "[heads, atoms, dim], LSE [heads, atoms] float32 (natural log); rows with no key give O = 0, LSE = -inf");
  add_source_options(*cmd, o->source);
  add_layout_options(*cmd, o->layout, false);
  std::string engines;
  for (const std::string& e : engine_names()) engines += (engines.empty() ? "" : ", ") + e;
  cmd->add_option("--engine", o->engine, "engine: " + engines)->capture_default_str();
  cmd->add_option("--heads", o->heads, "attention heads")->check(kPositive)->capture_default_str();
  cmd->add_option("--dim", o->dim, "head dimension (fused: 32, 64 or 128 as compiled; grouped: 64 or 128)")
      ->check(kPositive)
      ->capture_default_str();
  cmd->add_option("--dtype", o->dtype, "dtype of Q, K, V and O: fp32, fp16, bf16 (bf16 npy files hold raw uint16 bits)")
      ->check(CLI::IsMember({"fp32", "fp16", "bf16"}))
      ->capture_default_str();
  cmd->add_option("--scale", o->scale, "softmax scale (default 1/sqrt(dim))");
  cmd->add_option("--q", o->q, "queries .npy [heads, atoms, dim] (with --k, --v; default: seeded random, written to DIR)");
  cmd->add_option("--k", o->k, "keys .npy [heads, atoms, dim]");
  cmd->add_option("--v", o->v, "values .npy [heads, atoms, dim]");
  cmd->add_option("--threads", o->threads, "cpu engine worker threads (0: all cores)")
      ->check(kNonNegative)
      ->capture_default_str();
  cmd->add_option("--device", o->device, "CUDA device of the GPU engines")->check(kNonNegative);
  cmd->add_option("--out", o->out, "output folder: o.npy, lse.npy, q/k/v.npy (random inputs) and layout/")->required();
  cmd->callback([o] { run_run(*o); });
}

}  // namespace protattn::cli
