// protattn program: sources, layout options, npy tensors and the progress line.
#include "cli_common.hpp"
#include "commands.hpp"

#include <unistd.h>

#include <cstdio>
#include <cstring>
#include <fstream>
#include <utility>

#include <fmt/format.h>

#include "protattn/half.hpp"

namespace protattn::cli {
namespace {

constexpr const char* kGlobulePrefix = "globule:";
constexpr const char* kW1Name = "w1";
constexpr double kGlobuleDensity = 0.058;  // atoms per cubic Angstrom (DESIGN.md W2)
// W1 of DESIGN.md: 32 x 32 tiles, 800 kept, band |i-j| <= 12, fill seed 1 (as protattn bench).
constexpr int kW1Tiles = 32, kW1Nnz = 800, kW1Band = 12;
constexpr std::uint64_t kW1Seed = 1;
constexpr auto kProgressDelay = std::chrono::seconds(1);
constexpr auto kProgressPeriod = std::chrono::milliseconds(200);

std::string shape_str(const std::vector<std::int64_t>& shape) {
  std::string s = "[";
  for (std::size_t i = 0; i < shape.size(); ++i) s += (i ? ", " : "") + std::to_string(shape[i]);
  return s + "]";
}

// A validator over the option's text read as a number: `ok` decides, `what` says what it must be.
CLI::Validator number_check(const char* name, bool (*ok)(double), const char* what) {
  return CLI::Validator(
      [ok, what](std::string& text) -> std::string {
        double v = 0;
        if (!CLI::detail::lexical_cast(text, v)) return "expected a number, got '" + text + "'";
        return ok(v) ? std::string() : std::string("must be ") + what + ", got " + text;
      },
      name);
}
}  // namespace

const CLI::Validator kPositive = number_check("POSITIVE", [](double v) { return v > 0; }, "greater than 0");
const CLI::Validator kNonNegative = number_check("NONNEGATIVE", [](double v) { return v >= 0; }, "0 or more");

double ms_since(Clock::time_point t0) { return std::chrono::duration<double, std::milli>(Clock::now() - t0).count(); }

void add_source_options(CLI::App& cmd, SourceOptions& o) {
  cmd.add_option("FILE", o.spec, "structure file (PDB/mmCIF, .gz too), globule:N (synthetic globule of N atoms) or w1")
      ->required();
  cmd.add_flag("--hydrogens", o.hydrogens, "keep hydrogen atoms");
  cmd.add_flag("--waters", o.waters, "keep water molecules");
  cmd.add_option("--seed", o.seed, "seed of the synthetic globule and of random inputs")->capture_default_str();
}

Source load_source(const SourceOptions& o) {
  Source s;
  s.spec = o.spec;
  if (o.spec == kW1Name) {
    s.is_w1 = true;
    return s;
  }
  const std::string prefix = kGlobulePrefix;
  if (o.spec.rfind(prefix, 0) == 0) {
    const std::string count = o.spec.substr(prefix.size());
    std::size_t used = 0;
    long long n = 0;
    try {
      n = std::stoll(count, &used);
    } catch (const std::exception&) {
      used = 0;
    }
    if (used != count.size() || count.empty() || n < 1 || static_cast<std::size_t>(n) > kMaxAtoms)
      throw Error("'" + o.spec + "': globule:N needs a whole number of atoms N in 1.." + std::to_string(kMaxAtoms));
    const Activity a("building a globule of " + count + " atoms");
    s.structure = make_globule(static_cast<std::size_t>(n), kGlobuleDensity, o.seed);
    return s;
  }
  ReadOptions ro;
  ro.hydrogens = o.hydrogens;
  ro.waters = o.waters;
  const Activity a("reading " + o.spec);
  s.structure = read_structure(o.spec, ro);
  return s;
}

void add_layout_options(CLI::App& cmd, LayoutArgs& a, bool knn_short) {
  cmd.add_option("--builder", a.builder, "which tile pairs are kept: cutoff, knn, windows, dense")
      ->check(CLI::IsMember({"cutoff", "knn", "windows", "dense"}))
      ->capture_default_str();
  cmd.add_option("--order", a.order, "spatial order of the atoms: file, morton, hilbert")
      ->check(CLI::IsMember({"file", "morton", "hilbert"}))
      ->capture_default_str();
  cmd.add_option("--mask", a.mask,
                 "pairs that attend inside kept tiles: tiles (all), atoms (within the cutoff), windows "
                 "(default: windows for the windows builder, else tiles)")
      ->check(CLI::IsMember({"tiles", "atoms", "windows"}));
  cmd.add_option("--cutoff", a.cutoff, "distance cutoff in Angstrom (cutoff builder, mask atoms)")
      ->check(kPositive)
      ->capture_default_str();
  cmd.add_option(knn_short ? "--k,--neighbours" : "--neighbours", a.k, "neighbours per atom (knn builder)")->check(kNonNegative)->capture_default_str();
  cmd.add_option("--tile", a.tile, "atoms per tile")->check(kPositive)->capture_default_str();
  cmd.add_option("--layout-threads", a.threads,
                 "threads that order the atoms and find the cutoff tile pairs (0: all cores; the layout "
                 "is the same for any count)")
      ->check(kNonNegative)->capture_default_str();
}

BlockLayout make_layout(const Source& s, const LayoutArgs& a, bool count_pairs) {
  if (s.is_w1) {
    if (!a.mask.empty() && a.mask != "tiles") throw UsageError("w1 is a tile pattern: only --mask tiles applies");
    const Activity act("building the w1 layout");
    return make_w1_layout(kW1Tiles, kW1Nnz, kW1Band, kW1Seed, a.tile);
  }
  LayoutOptions opt;
  opt.order = parse_order(a.order);
  opt.mask = parse_mask(a.mask.empty() ? (a.builder == "windows" ? "windows" : "tiles") : a.mask);
  opt.tile = a.tile;
  opt.cutoff = a.cutoff;
  opt.k = a.k;
  opt.count_pairs = count_pairs;
  opt.threads = a.threads;
  const Structure& st = s.structure;
  const Activity act("building the " + a.builder + " layout of " + std::to_string(st.size()) + " atoms");
  if (a.builder == "cutoff") return build_cutoff_layout(st.xyz.data(), st.size(), opt);
  if (a.builder == "knn") return build_knn_layout(st.xyz.data(), st.size(), opt);
  if (a.builder == "windows") {
    if (opt.mask != MaskMode::windows) throw UsageError("the windows builder takes only --mask windows");
    return build_window_layout(st.xyz.data(), st.size(), opt);
  }
  if (a.builder == "dense") return build_dense_layout(st.xyz.data(), st.size(), opt);
  throw UsageError("unknown builder '" + a.builder + "' (cutoff, knn, windows, dense)");
}

const char* npy_descr(DType t) {
  switch (t) {
    case DType::f32: return "<f4";
    case DType::f16: return "<f2";
    case DType::bf16: return "<u2";
  }
  return "";
}

NpyArray read_tensor(const std::string& path, DType t, const std::vector<std::int64_t>& shape) {
  NpyArray a = read_npy(path);
  if (a.descr != npy_descr(t))
    throw Error(path + ": dtype " + a.descr + ", expected " + npy_descr(t) + " (" + to_string(t) +
                (t == DType::bf16 ? ", raw bfloat16 bits as uint16" : "") + ")");
  if (a.shape != shape)
    throw Error(path + ": shape " + shape_str(a.shape) + ", expected " + shape_str(shape) + " [heads, atoms, dim]");
  return a;
}

Activity::Activity(std::string what) : what_(std::move(what)) {
  if (!isatty(fileno(stderr))) return;
  thread_ = std::thread([this] {
    const auto t0 = Clock::now();
    std::unique_lock<std::mutex> lock(mutex_);
    if (cv_.wait_for(lock, kProgressDelay, [this] { return done_; })) return;
    do {
      fmt::print(stderr, "\r{} ... {:.1f} s", what_, ms_since(t0) / 1000.0);
      std::fflush(stderr);
    } while (!cv_.wait_for(lock, kProgressPeriod, [this] { return done_; }));
    fmt::print(stderr, "\r\033[K");
    std::fflush(stderr);
  });
}

Activity::~Activity() {
  if (!thread_.joinable()) return;
  {
    const std::lock_guard<std::mutex> lock(mutex_);
    done_ = true;
  }
  cv_.notify_all();
  thread_.join();
}

std::vector<std::uint8_t> random_tensor(std::mt19937_64& rng, DType t, std::size_t count) {
  std::normal_distribution<float> nd(0.0f, 1.0f);
  std::vector<std::uint8_t> raw(count * dtype_size(t));
  for (std::size_t i = 0; i < count; ++i) {
    const float x = nd(rng);
    if (t == DType::f32) {
      std::memcpy(raw.data() + 4 * i, &x, sizeof x);
    } else {
      const std::uint16_t h = t == DType::f16 ? float_to_half(x) : float_to_bf16(x);
      std::memcpy(raw.data() + 2 * i, &h, sizeof h);
    }
  }
  return raw;
}

BlockLayout globule_layout(std::size_t n, float cutoff, MaskMode mask, std::uint64_t seed) {
  const Structure s = make_globule(n, kGlobuleDensity, seed);
  LayoutOptions opt;
  opt.order = Order::morton;
  opt.cutoff = cutoff;
  opt.mask = mask;
  opt.count_pairs = false;
  opt.threads = 0;
  return build_cutoff_layout(s.xyz.data(), s.size(), opt);
}

void write_json(const std::string& path, const nlohmann::json& j, const std::string& what) {
  std::ofstream f(path);
  if (!(f << j.dump(2) << "\n")) throw Error(what + ": cannot write " + path);
}

}  // namespace protattn::cli
