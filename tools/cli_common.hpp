// protattn program: helpers shared by the subcommands (sources, layouts, tensors, progress).
#pragma once
#include <algorithm>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <mutex>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include <CLI/CLI.hpp>
#include <nlohmann/json.hpp>

#include "protattn/engine.hpp"
#include "protattn/error.hpp"
#include "protattn/layout.hpp"
#include "protattn/npy.hpp"
#include "protattn/structure.hpp"

namespace protattn::cli {

using Clock = std::chrono::steady_clock;
double ms_since(Clock::time_point t0);

// A wrong combination of options, found after parsing: reported like a parse error (exit 2).
class UsageError : public Error {
 public:
  using Error::Error;
};

// The FILE argument of info/layout/run: a structure file (PDB/mmCIF, maybe gzipped),
// "globule:N" (the synthetic W2 globule of N atoms) or "w1" (the W1 seed layout pattern).
struct SourceOptions {
  std::string spec;
  bool hydrogens = false, waters = false;
  std::uint64_t seed = 1;  // globule atoms (and, for run, random inputs)
};
void add_source_options(CLI::App& cmd, SourceOptions& o);

struct Source {
  std::string spec;
  bool is_w1 = false;   // no structure: the layout is the W1 pattern
  Structure structure;  // empty for w1
};
Source load_source(const SourceOptions& o);

struct LayoutArgs {
  std::string builder = "cutoff", order = "hilbert", mask;  // mask empty: windows for the
  float cutoff = 8.0f;                                      // windows builder, else tiles
  int k = 32, tile = 128;
  int threads = 0;  // ordering and cutoff builder threads (0: all cores); same layout whatever
};
// knn_short: the neighbour count is also --k (layout); run keeps --k for the keys file, so there
// it is only --neighbours.
void add_layout_options(CLI::App& cmd, LayoutArgs& a, bool knn_short);
BlockLayout make_layout(const Source& s, const LayoutArgs& a, bool count_pairs);

// npy descr of a dtype: "<f4", "<f2"; bf16 is written and read as "<u2" (its raw bits:
// numpy has no bfloat16).
const char* npy_descr(DType t);
// Reads an npy file and checks its dtype and shape; errors name the file and what was expected.
NpyArray read_tensor(const std::string& path, DType t, const std::vector<std::int64_t>& shape);

// Shows "<what> ... 3.2 s" on stderr while a long step runs: only when stderr is a terminal,
// only after the first second; the line is cleared when the step ends.
// DESIGN.md's W2 globule and the 1M-atom globule.
inline constexpr std::size_t kW2Atoms = 100096, k1MAtoms = 1000000;
// The cutoff layout of a seeded synthetic globule of n atoms at protein density, in Morton order
// (the globules of bench and dist), built on all cores (the same layout whatever the count).
BlockLayout globule_layout(std::size_t n, float cutoff, MaskMode mask, std::uint64_t seed = 1);

// Writes `j`, indented, to `path`; throws Error "<what>: cannot write <path>" when it cannot.
void write_json(const std::string& path, const nlohmann::json& j, const std::string& what);

// [heads, n, dim]-shaped N(0, 1) values in dtype `t`, `count` of them drawn in order from `rng`
// (the seeded inputs of run and dist).
std::vector<std::uint8_t> random_tensor(std::mt19937_64& rng, DType t, std::size_t count);

// Median of timings (0 for none).
template <class T>
double median(std::vector<T> v) {
  if (v.empty()) return 0;
  std::sort(v.begin(), v.end());
  const std::size_t m = v.size() / 2;
  return v.size() % 2 ? static_cast<double>(v[m]) : 0.5 * (static_cast<double>(v[m - 1]) + static_cast<double>(v[m]));
}

class Activity {
 public:
  explicit Activity(std::string what);
  ~Activity();
  Activity(const Activity&) = delete;
  Activity& operator=(const Activity&) = delete;

 private:
  std::string what_;
  std::mutex mutex_;
  std::condition_variable cv_;
  bool done_ = false;
  std::thread thread_;
};

}  // namespace protattn::cli
