// protattn loop: a hypothesis loop against a served atom_encoder (perturb, query, score, keep or reject).
//
// Client side of the KServe v2 HTTP protocol with the binary tensor extension (cpp-httplib, one
// keep-alive connection per loop): the request is a JSON header plus COORDS FP32 [N,3] and
// ELEMENTS INT32 [N] as raw little-endian bytes (Inference-Header-Content-Length), the answer's
// EMBEDDING FP16 [N,C] comes back as binary too. With --shared-memory (a server on this machine
// started with --allow-shared-memory) each loop registers one POSIX shared-memory object and the
// tensors go through it: the messages carry only JSON. Only HTTP: gRPC clients exist elsewhere
// (tritonclient, perf_analyzer).
#ifdef PROTATTN_HAVE_SERVER

// The flags `pkg-config --cflags cpp-httplib` gives: the compiled libcpp-httplib was built
// with them, so every translation unit including httplib.h must see the same declarations.
#define CPPHTTPLIB_OPENSSL_SUPPORT
#define CPPHTTPLIB_ZLIB_SUPPORT
#define CPPHTTPLIB_BROTLI_SUPPORT
#include <httplib.h>

#include <fcntl.h>
#include <sys/mman.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cmath>
#include <cstring>
#include <memory>
#include <mutex>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "commands.hpp"
#include "model/half_rows.hpp"
#include "protattn/error.hpp"
#include "protattn/structure.hpp"

namespace protattn::cli {
namespace {

using Clock = std::chrono::steady_clock;
using nlohmann::json;

// What went wrong with a request that got no answer, in words (httplib's own names are terse:
// "Connection", "Read").
std::string http_failure(httplib::Error e) {
  switch (e) {
    case httplib::Error::Connection: return "could not connect (no server listening there, or the host is unreachable)";
    case httplib::Error::ConnectionTimeout: return "timed out connecting";
    case httplib::Error::Read: return "the connection closed or timed out before the answer (--timeout-s)";
    case httplib::Error::Write: return "the connection closed while sending the request";
    default: return httplib::to_string(e);
  }
}

constexpr const char* kHeaderLength = "Inference-Header-Content-Length";
constexpr int kFloatsPerAtom = 3;

struct LoopOptions {
  std::string server, structure = "tests/data/2hhb.pdb", model = "atom_encoder", api_key;
  int iterations = 1000;
  int concurrency = 1;
  std::uint64_t seed = 1;
  float step = 0.5f;          // Angstrom: each coordinate of the residue's shift is in [-step, step]
  double temperature = 1e-5;  // Metropolis temperature, in score units
  int timeout_s = 60;
  bool shared_memory = false;  // tensors through a registered shared-memory region
};

// Atom ranges [first, last) of the residues, in file order (a residue: consecutive atoms of one
// chain with one residue number).
std::vector<std::pair<std::size_t, std::size_t>> residue_ranges(const Structure& s) {
  std::vector<std::pair<std::size_t, std::size_t>> out;
  std::size_t first = 0;
  for (std::size_t i = 1; i <= s.size(); ++i)
    if (i == s.size() || s.res_seq[i] != s.res_seq[first] || s.chain[i] != s.chain[first]) {
      out.emplace_back(first, i);
      first = i;
    }
  return out;
}

// A POSIX shared-memory object this process creates, maps and removes (shm_unlink) when done.
class SharedObject {
 public:
  SharedObject(std::string key, std::size_t bytes) : key_(std::move(key)), bytes_(bytes) {
    const int fd = shm_open(key_.c_str(), O_RDWR | O_CREAT | O_EXCL, 0600);
    if (fd < 0) throw Error("loop: shm_open " + key_ + ": " + std::strerror(errno));
    if (ftruncate(fd, static_cast<off_t>(bytes_)) != 0) {
      const int e = errno;
      close(fd);
      shm_unlink(key_.c_str());
      throw Error("loop: sizing " + key_ + ": " + std::strerror(e));
    }
    void* p = mmap(nullptr, bytes_, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    const int e = errno;
    close(fd);
    if (p == MAP_FAILED) {
      shm_unlink(key_.c_str());
      throw Error("loop: mapping " + key_ + ": " + std::strerror(e));
    }
    data_ = static_cast<std::uint8_t*>(p);
  }
  SharedObject(const SharedObject&) = delete;
  SharedObject& operator=(const SharedObject&) = delete;
  ~SharedObject() {
    munmap(data_, bytes_);
    shm_unlink(key_.c_str());
  }
  std::uint8_t* data() const { return data_; }
  const std::string& key() const { return key_; }

 private:
  std::string key_;
  std::size_t bytes_;
  std::uint8_t* data_ = nullptr;
};

// One keep-alive connection to the server and the fixed parts of the request.
class Client {
 public:
  Client(const LoopOptions& o, const std::vector<std::int32_t>& elements, std::int64_t channels, int index)
      : http_(o.server), path_("/v2/models/" + o.model + "/infer"), elements_(elements) {
    http_.set_keep_alive(true);
    http_.set_tcp_nodelay(true);
    http_.set_read_timeout(o.timeout_s, 0);
    http_.set_write_timeout(o.timeout_s, 0);
    if (!o.api_key.empty()) headers_.emplace("Authorization", "Bearer " + o.api_key);
    const auto n = static_cast<std::int64_t>(elements.size());
    const std::int64_t coords_bytes = n * kFloatsPerAtom * 4, elements_bytes = n * 4;
    if (o.shared_memory) {
      // One region per loop: COORDS, then ELEMENTS (written once), then the EMBEDDING.
      if (channels <= 0) throw Error("loop: the model's metadata gives no EMBEDDING width for --shared-memory");
      embedding_offset_ = static_cast<std::size_t>(coords_bytes + elements_bytes);
      region_channels_ = channels;
      const std::size_t bytes = embedding_offset_ + static_cast<std::size_t>(n * channels * 2);
      region_ = fmt::format("protattn-loop-{}-{}", getpid(), index);
      shared_ = std::make_unique<SharedObject>("/" + region_, bytes);
      std::memcpy(shared_->data() + coords_bytes, elements.data(), static_cast<std::size_t>(elements_bytes));
      post_json("/v2/systemsharedmemory/region/" + region_ + "/register",
                json{{"key", shared_->key()}, {"offset", 0}, {"byte_size", bytes}}.dump(), "registering shared memory");
      registered_ = true;
    }
    // Where each tensor goes: at its place in the region, or as binary data after the JSON header.
    auto where = [&](std::int64_t offset, std::int64_t size, bool output) {
      if (shared_)
        return json{{"shared_memory_region", region_}, {"shared_memory_offset", offset}, {"shared_memory_byte_size", size}};
      return output ? json{{"binary_data", true}} : json{{"binary_data_size", size}};
    };
    head_ = json{{"inputs",
                  {{{"name", "COORDS"}, {"datatype", "FP32"}, {"shape", {n, kFloatsPerAtom}}, {"parameters", where(0, coords_bytes, false)}},
                   {{"name", "ELEMENTS"}, {"datatype", "INT32"}, {"shape", {n}},
                    {"parameters", where(coords_bytes, elements_bytes, false)}}}},
                 {"outputs", {{{"name", "EMBEDDING"},
                               {"parameters", where(static_cast<std::int64_t>(embedding_offset_), n * channels * 2, true)}}}}}
                .dump();
    if (!shared_) headers_.emplace(kHeaderLength, std::to_string(head_.size()));
  }
  Client(const Client&) = delete;
  Client& operator=(const Client&) = delete;
  ~Client() {
    if (registered_) {
      try {
        http_.Post(("/v2/systemsharedmemory/region/" + region_ + "/unregister").c_str(), headers_, "", "application/json");
      } catch (...) {
      }
    }
  }

  // The embedding FP16 [n, C] (its bits), in the request's atom order: in this loop's shared
  // memory or a buffer of the client, valid until the next call. Throws Error on any failure.
  const std::uint16_t* embed(const std::vector<float>& xyz, std::int64_t& channels) {
    if (shared_) {
      std::memcpy(shared_->data(), xyz.data(), xyz.size() * sizeof(float));
      const json h = post_json(path_, head_, "request");
      const json* o = h.contains("outputs") && h["outputs"].is_array() && !h["outputs"].empty() ? &h["outputs"][0] : nullptr;
      if (!o || !o->contains("shape") || !o->contains("parameters") ||
          (*o)["parameters"].value("shared_memory_region", "") != region_)
        throw Error("loop: answer without EMBEDDING in shared memory: " + h.dump());
      channels = embedding_channels(*o);
      if (channels != region_channels_)  // the region was sized for the model's width
        throw Error("loop: EMBEDDING has " + std::to_string(channels) + " channels, the model said " +
                    std::to_string(region_channels_));
      // Read in place: the region is mapped memory, the offset a multiple of 4.
      return reinterpret_cast<const std::uint16_t*>(shared_->data() + embedding_offset_);
    }
    body_.assign(head_);
    body_.append(reinterpret_cast<const char*>(xyz.data()), xyz.size() * sizeof(float));
    body_.append(reinterpret_cast<const char*>(elements_.data()), elements_.size() * sizeof(std::int32_t));
    // The answer is received straight into its places: the JSON header into answer_head_, the
    // EMBEDDING bytes into halves_ (no body string to grow and copy out of).
    httplib::Request req;
    req.method = "POST";
    req.path = path_;
    req.headers = headers_;
    req.set_header("Content-Type", "application/octet-stream");
    req.body = std::move(body_);
    int status = 0;
    std::size_t hl = 0, received = 0;
    answer_head_.clear();
    error_body_.clear();
    req.response_handler = [&](const httplib::Response& r) {
      status = r.status;
      const std::string v = r.get_header_value(kHeaderLength);
      hl = v.empty() ? 0 : std::stoull(v);
      return true;
    };
    req.content_receiver = [&](const char* data, std::size_t n, std::uint64_t offset, std::uint64_t total) {
      if (status != 200 || hl == 0) {
        error_body_.append(data, n);
        return error_body_.size() <= (std::size_t{1} << 20);
      }
      if (offset == 0) halves_.resize((static_cast<std::size_t>(total) - std::min<std::size_t>(hl, total) + 1) / 2);
      received += n;
      for (std::size_t at = 0; at < n;) {
        const std::size_t pos = static_cast<std::size_t>(offset) + at;
        if (pos < hl) {
          const std::size_t k = std::min(n - at, hl - pos);
          answer_head_.append(data + at, k);
          at += k;
        } else {
          const std::size_t k = std::min(n - at, halves_.size() * 2 - (pos - hl));
          std::memcpy(reinterpret_cast<char*>(halves_.data()) + (pos - hl), data + at, k);
          at += k;
          if (k == 0) return false;  // more than the length said
        }
      }
      return true;
    };
    const auto res = http_.send(req);
    body_ = std::move(req.body);
    if (!res) throw Error("loop: request failed: " + http_failure(res.error()));
    if (status != 200 || hl == 0) {
      if (status != 200) throw Error(answer_error(status, error_body_));
      throw Error("loop: answer without a binary EMBEDDING output");
    }
    const json h = json::parse(answer_head_, nullptr, false);
    if (answer_head_.size() != hl || h.is_discarded() || !h.contains("outputs") || h["outputs"].empty())
      throw Error("loop: answer without a binary EMBEDDING output");
    const json& o = h["outputs"][0];
    channels = embedding_channels(o);
    const std::size_t bytes = o["parameters"]["binary_data_size"].get<std::size_t>();
    if (bytes != elements_.size() * static_cast<std::size_t>(channels) * 2 || bytes != halves_.size() * 2 || hl + bytes != received)
      throw Error("loop: unexpected EMBEDDING " + o.dump());
    return halves_.data();
  }

 private:
  // EMBEDDING as an answer describes it: FP16 [atoms, C]; returns C (throws on anything else).
  std::int64_t embedding_channels(const json& o) const {
    const auto shape = o["shape"].get<std::vector<std::int64_t>>();
    if (o["datatype"] != "FP16" || shape.size() != 2 || shape[0] != static_cast<std::int64_t>(elements_.size()))
      throw Error("loop: unexpected EMBEDDING " + o.dump());
    return shape[1];
  }
  static std::string answer_error(int status, const std::string& body) {
    const json e = json::parse(body, nullptr, false);
    return fmt::format("loop: server answered {}: {}", status,
                       e.is_object() && e.contains("error") && e["error"].is_string() ? e["error"].get<std::string>() : body);
  }
  // POSTs a JSON body, returns the JSON answer; throws Error (naming `what`) on any failure.
  json post_json(const std::string& path, const std::string& body, const char* what) {
    auto res = http_.Post(path.c_str(), headers_, body, "application/json");
    if (!res) throw Error(std::string("loop: ") + what + " failed: " + http_failure(res.error()));
    if (res->status != 200) throw Error(answer_error(res->status, res->body));
    json j = json::parse(res->body, nullptr, false);
    if (j.is_discarded()) throw Error(std::string("loop: ") + what + ": the answer is not JSON");
    return j;
  }

  httplib::Client http_;
  std::string path_, head_, body_;
  std::vector<std::uint16_t> halves_;  // a message answer's EMBEDDING bits
  std::string answer_head_, error_body_;  // a message answer's JSON header; an error's body
  httplib::Headers headers_;
  const std::vector<std::int32_t>& elements_;
  std::unique_ptr<SharedObject> shared_;  // --shared-memory: this loop's region
  std::string region_;
  std::size_t embedding_offset_ = 0;
  std::int64_t region_channels_ = 0;  // the EMBEDDING width the region holds
  bool registered_ = false;
};

// The score of a hypothesis: the mean L2 norm of the atoms' embeddings, read from the fp16
// answer. Deterministic and cheap; with an untrained model it means nothing beyond exercising
// the loop.
double score(const std::uint16_t* embedding, std::size_t atoms, std::int64_t channels) {
  return model::mean_row_norm(embedding, atoms, static_cast<std::size_t>(channels));
}

struct LoopResult {
  std::vector<double> latency_ms;  // one per iteration
  int accepted = 0;
  double first_score = 0, final_score = 0;
};

// One independent Metropolis loop: its own connection, RNG (seed + index) and coordinates.
void run_one(const LoopOptions& o, const Structure& s, const std::vector<std::int32_t>& elements, std::int64_t model_channels,
             const std::vector<std::pair<std::size_t, std::size_t>>& residues, int index,
             LoopResult& r, std::atomic<bool>& stop) {
  Client client(o, elements, model_channels, index);
  std::mt19937_64 rng(o.seed + static_cast<std::uint64_t>(index));
  std::uniform_int_distribution<std::size_t> pick(0, residues.size() - 1);
  std::uniform_real_distribution<float> shift(-o.step, o.step);
  std::uniform_real_distribution<double> unit(0.0, 1.0);
  std::vector<float> current = s.xyz, trial;
  std::int64_t channels = 0;
  const std::uint16_t* start = client.embed(current, channels);  // the starting hypothesis (not timed)
  double cur = score(start, elements.size(), channels);
  r.first_score = cur;
  r.latency_ms.reserve(static_cast<std::size_t>(o.iterations));
  for (int it = 0; it < o.iterations && !stop; ++it) {
    trial = current;
    const auto [first, last] = residues[pick(rng)];
    const float d[kFloatsPerAtom] = {shift(rng), shift(rng), shift(rng)};
    for (std::size_t a = first; a < last; ++a)
      for (int k = 0; k < kFloatsPerAtom; ++k) trial[a * kFloatsPerAtom + k] += d[k];
    const auto t0 = Clock::now();
    const std::uint16_t* emb = client.embed(trial, channels);
    r.latency_ms.push_back(std::chrono::duration<double, std::milli>(Clock::now() - t0).count());
    const double next = score(emb, elements.size(), channels);
    // Metropolis on the energy -score: always keep a better hypothesis, a worse one with
    // probability exp(-(cur - next) / T). The draw happens every iteration (reproducible stream).
    const double u = unit(rng);
    if (next >= cur || u < std::exp((next - cur) / o.temperature)) {
      current.swap(trial);
      cur = next;
      ++r.accepted;
    }
  }
  r.final_score = cur;
}

double percentile(const std::vector<double>& sorted, double p) {
  if (sorted.empty()) return 0;
  const double pos = p / 100.0 * static_cast<double>(sorted.size() - 1);
  const auto lo = static_cast<std::size_t>(pos);
  const std::size_t hi = std::min(lo + 1, sorted.size() - 1);
  return sorted[lo] + (sorted[hi] - sorted[lo]) * (pos - static_cast<double>(lo));
}

void run_loop(const LoopOptions& o) {
  if (o.server.empty()) throw Error("loop: give --server URL (e.g. http://127.0.0.1:8000)");
  if (o.server.rfind("http://", 0) != 0 && o.server.rfind("https://", 0) != 0)
    throw Error("loop: --server must be a URL like http://HOST:PORT, got '" + o.server + "'");
  const Structure s = read_structure(o.structure);
  const std::vector<std::int32_t> elements(s.element.begin(), s.element.end());
  const auto residues = residue_ranges(s);

  // What the server says about the model (fails early on a wrong URL, model or key).
  std::int64_t channels = 0;
  {
    httplib::Client meta(o.server);
    meta.set_read_timeout(o.timeout_s, 0);
    httplib::Headers h;
    if (!o.api_key.empty()) h.emplace("Authorization", "Bearer " + o.api_key);
    auto res = meta.Get(("/v2/models/" + o.model).c_str(), h);
    if (!res) throw Error("loop: cannot reach " + o.server + ": " + http_failure(res.error()));
    const json m = json::parse(res->body, nullptr, false);
    if (res->status != 200)
      throw Error(fmt::format("loop: model '{}' at {}: {} {}", o.model, o.server, res->status,
                              m.is_object() && m.contains("error") ? m["error"].get<std::string>() : res->body));
    const bool untrained = m.contains("parameters") && m["parameters"].value("trained", true) == false;
    // EMBEDDING [-1, C]: C sizes the shared-memory region.
    if (m.contains("outputs") && m["outputs"].is_array())
      for (const json& t : m["outputs"])
        if (t.value("name", "") == "EMBEDDING" && t.contains("shape") && t["shape"].is_array() && t["shape"].size() == 2 &&
            t["shape"][1].is_number_integer())
          channels = t["shape"][1].get<std::int64_t>();
    fmt::print("loop: {} ({} atoms, {} residues) -> model {}{} at {}; {} loop(s) x {} iterations, seed {}\n",
               o.structure, s.size(), residues.size(), o.model, untrained ? " (UNTRAINED)" : "", o.server,
               o.concurrency, o.iterations, o.seed);
  }

  std::vector<LoopResult> results(static_cast<std::size_t>(o.concurrency));
  std::vector<std::thread> threads;
  std::atomic<bool> stop{false};
  std::mutex err_m;
  std::string first_error;
  const auto t0 = Clock::now();
  for (int i = 0; i < o.concurrency; ++i)
    threads.emplace_back([&, i] {
      try {
        run_one(o, s, elements, channels, residues, i, results[static_cast<std::size_t>(i)], stop);
      } catch (const std::exception& e) {
        std::lock_guard<std::mutex> lock(err_m);
        if (first_error.empty()) first_error = e.what();
        stop = true;
      }
    });
  for (auto& t : threads) t.join();
  const double wall = std::chrono::duration<double>(Clock::now() - t0).count();
  if (!first_error.empty()) throw Error(first_error);

  std::vector<double> all;
  for (std::size_t i = 0; i < results.size(); ++i) {
    const LoopResult& r = results[i];
    all.insert(all.end(), r.latency_ms.begin(), r.latency_ms.end());
    fmt::print("loop {}: accepted {}/{}, score {:.6f} -> {:.6f}\n", i, r.accepted, r.latency_ms.size(),
               r.first_score, r.final_score);
  }
  std::sort(all.begin(), all.end());
  fmt::print("{} iterations in {:.3f} s{}: {:.1f} iterations/s\n", all.size(), wall, o.shared_memory ? " (shared memory)" : "",
             static_cast<double>(all.size()) / wall);
  fmt::print("latency ms: p50 {:.2f}  p90 {:.2f}  p99 {:.2f}  max {:.2f}\n", percentile(all, 50),
             percentile(all, 90), percentile(all, 99), all.empty() ? 0.0 : all.back());
}

}  // namespace

void add_loop_command(CLI::App& app) {
  auto o = std::make_shared<LoopOptions>();
  CLI::App* cmd = app.add_subcommand(
      "loop",
      "Hypothesis loop against a served atom_encoder (KServe v2 over HTTP, binary tensors): move\n"
      "a random residue by a small random shift, query, score (mean embedding norm), keep or\n"
      "reject (Metropolis, seeded); prints iterations/s and latency percentiles.");
  cmd->add_option("--server", o->server, "server URL, e.g. http://127.0.0.1:8000")->required();
  cmd->add_option("--iterations", o->iterations, "iterations of each loop")->check(kPositive);
  cmd->add_option("--concurrency", o->concurrency, "independent loops, one thread and connection each")
      ->check(CLI::Range(1, 1024));
  cmd->add_option("--structure", o->structure, "structure file (PDB/mmCIF, gzip ok)");
  cmd->add_option("--model", o->model, "served model name");
  cmd->add_option("--seed", o->seed, "RNG seed (loop i uses seed + i)");
  cmd->add_option("--step", o->step, "largest shift per coordinate (Angstrom)")->check(kPositive);
  cmd->add_option("--temperature", o->temperature, "Metropolis temperature (score units)")->check(kPositive);
  cmd->add_option("--api-key", o->api_key, "sent as Authorization: Bearer KEY");
  cmd->add_option("--timeout-s", o->timeout_s, "per-request read/write timeout")->check(kPositive);
  cmd->add_flag("--shared-memory", o->shared_memory,
                "pass the tensors through a POSIX shared-memory region registered with the server (same "
                "machine; the server needs --allow-shared-memory): the messages carry only JSON");
  cmd->callback([o] { run_loop(*o); });
}

}  // namespace protattn::cli

#endif  // PROTATTN_HAVE_SERVER
