// protattn server: metric updates and the Prometheus text rendering of a snapshot.
#include "metrics.hpp"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>

namespace protattn::server {

namespace {

std::vector<double> latency_buckets() {
  return {0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30};
}

std::string num(double v) {
  if (std::isinf(v)) return v > 0 ? "+Inf" : "-Inf";
  char buf[64];
  std::snprintf(buf, sizeof buf, "%.9g", v);
  return buf;
}

std::string escape_label(const std::string& s) {
  std::string r;
  for (char c : s) {
    if (c == '\\' || c == '"') r += '\\';
    if (c == '\n') {
      r += "\\n";
      continue;
    }
    r += c;
  }
  return r;
}

void header(std::string& out, const char* name, const char* type, const char* help) {
  out += "# HELP ";
  out += name;
  out += ' ';
  out += help;
  out += "\n# TYPE ";
  out += name;
  out += ' ';
  out += type;
  out += '\n';
}

void histogram(std::string& out, const std::string& name, const std::string& labels,
               const Histogram& h) {
  std::uint64_t cum = 0;
  const std::string sep = labels.empty() ? "" : labels + ",";
  for (std::size_t i = 0; i < h.bounds.size(); ++i) {
    cum += h.counts[i];
    out += name + "_bucket{" + sep + "le=\"" + num(h.bounds[i]) + "\"} " + std::to_string(cum) + "\n";
  }
  cum += h.counts.back();
  out += name + "_bucket{" + sep + "le=\"+Inf\"} " + std::to_string(cum) + "\n";
  const std::string lb = labels.empty() ? "" : "{" + labels + "}";
  out += name + "_sum" + lb + " " + num(h.sum) + "\n";
  out += name + "_count" + lb + " " + std::to_string(h.count) + "\n";
}

std::uint64_t to_ns(double s) { return static_cast<std::uint64_t>(std::max(0.0, s) * 1e9); }

}  // namespace

Histogram::Histogram(std::vector<double> b) : bounds(std::move(b)), counts(bounds.size() + 1, 0) {}

void Histogram::observe(double v) {
  const auto it = std::lower_bound(bounds.begin(), bounds.end(), v);
  ++counts[static_cast<std::size_t>(it - bounds.begin())];
  sum += v;
  ++count;
}

Metrics::Metrics()
    : queue_time_(latency_buckets()),
      batch_requests_({1, 2, 4, 8, 16, 32, 64, 128}),
      batch_atoms_({1000, 2000, 5000, 10000, 20000, 50000, 100000, 200000, 500000}),
      compute_time_(latency_buckets()) {}

void Metrics::request_done(const std::string& model, Code outcome, double seconds) {
  std::lock_guard<std::mutex> lock(m_);
  ++requests_[{model, outcome_label(outcome)}];
  auto it = latency_.find(model);
  if (it == latency_.end()) it = latency_.emplace(model, Histogram(latency_buckets())).first;
  it->second.observe(seconds);
  if (outcome == Code::unauthenticated || outcome == Code::not_found) return;
  ModelStats& s = stats_[model];
  if (outcome == Code::ok) {
    ++s.success_count;
    s.success_ns += to_ns(seconds);
    ++s.inference_count;
    s.last_inference_ms = static_cast<std::uint64_t>(
        std::chrono::duration_cast<std::chrono::milliseconds>(
            std::chrono::system_clock::now().time_since_epoch()).count());
  } else {
    ++s.fail_count;
    s.fail_ns += to_ns(seconds);
  }
}

void Metrics::inflight_add(int delta) {
  std::lock_guard<std::mutex> lock(m_);
  inflight_ += delta;
}

std::int64_t Metrics::inflight() const {
  std::lock_guard<std::mutex> lock(m_);
  return inflight_;
}

void Metrics::batch_done(const std::string& model, int requests, std::int64_t atoms,
                         double compute_s, const std::vector<double>& queue_s, int worker) {
  std::lock_guard<std::mutex> lock(m_);
  ++batches_;
  if (worker >= 0 && static_cast<std::size_t>(worker) < worker_batches_.size())
    ++worker_batches_[static_cast<std::size_t>(worker)];
  compute_total_ += compute_s;
  batch_requests_.observe(requests);
  batch_atoms_.observe(static_cast<double>(atoms));
  compute_time_.observe(compute_s);
  ModelStats& s = stats_[model];
  ++s.execution_count;
  for (double q : queue_s) {
    queue_time_.observe(q);
    ++s.queue_count;
    s.queue_ns += to_ns(q);
    ++s.compute_count;
    s.compute_ns += to_ns(compute_s);
  }
}

void Metrics::set_queue_depth(std::int64_t d) {
  std::lock_guard<std::mutex> lock(m_);
  queue_depth_ = d;
}

void Metrics::set_device_memory(int device, std::int64_t b) {
  std::lock_guard<std::mutex> lock(m_);
  device_memory_[device] = b;
}

void Metrics::set_workers(int n) {
  std::lock_guard<std::mutex> lock(m_);
  worker_batches_.assign(static_cast<std::size_t>(std::max(n, 1)), 0);
}

void Metrics::set_engine(const std::string& name) {
  std::lock_guard<std::mutex> lock(m_);
  engine_ = name;
}

ModelStats Metrics::model_stats(const std::string& model) const {
  std::lock_guard<std::mutex> lock(m_);
  const auto it = stats_.find(model);
  return it == stats_.end() ? ModelStats{} : it->second;
}

std::string Metrics::render() const {
  std::unique_lock<std::mutex> lock(m_);
  const auto requests = requests_;
  const auto latency = latency_;
  const Histogram queue_time = queue_time_, batch_requests = batch_requests_,
                  batch_atoms = batch_atoms_, compute_time = compute_time_;
  const std::uint64_t batches = batches_;
  const double compute_total = compute_total_;
  const std::int64_t depth = queue_depth_, inflight = inflight_;
  const auto device_memory = device_memory_;
  const auto worker_batches = worker_batches_;
  const std::string engine = engine_;
  lock.unlock();

  std::string out;
  out.reserve(8192);
  header(out, "protattn_info", "gauge", "Server build and engine.");
  out += "protattn_info{engine=\"" + escape_label(engine) + "\"} 1\n";
  header(out, "protattn_requests_total", "counter",
         "Inference requests answered, by model and outcome (success, invalid, rejected, "
         "timeout, cancelled, unauthenticated, error).");
  for (const auto& [key, n] : requests)
    out += "protattn_requests_total{model=\"" + escape_label(key.first) + "\",outcome=\"" +
           key.second + "\"} " + std::to_string(n) + "\n";
  header(out, "protattn_request_duration_seconds", "histogram",
         "Time from a request's arrival to its answer, by model.");
  for (const auto& [model, h] : latency)
    histogram(out, "protattn_request_duration_seconds", "model=\"" + escape_label(model) + "\"", h);
  header(out, "protattn_queue_duration_seconds", "histogram",
         "Time requests waited for the engine (queued until their batch started).");
  histogram(out, "protattn_queue_duration_seconds", "", queue_time);
  header(out, "protattn_batch_requests", "histogram", "Requests per engine run.");
  histogram(out, "protattn_batch_requests", "", batch_requests);
  header(out, "protattn_batch_atoms", "histogram", "Atoms per engine run (ragged batch).");
  histogram(out, "protattn_batch_atoms", "", batch_atoms);
  header(out, "protattn_engine_compute_seconds", "histogram",
         "Engine time per batch: packing, plan and run.");
  histogram(out, "protattn_engine_compute_seconds", "", compute_time);
  header(out, "protattn_batches_total", "counter", "Engine runs.");
  out += "protattn_batches_total " + std::to_string(batches) + "\n";
  header(out, "protattn_worker_batches_total", "counter",
         "Engine runs by inference thread (one per GPU, or per cpu replica).");
  for (std::size_t w = 0; w < worker_batches.size(); ++w)
    out += "protattn_worker_batches_total{worker=\"" + std::to_string(w) + "\"} " +
           std::to_string(worker_batches[w]) + "\n";
  header(out, "protattn_engine_compute_seconds_total", "counter", "Engine time, all batches.");
  out += "protattn_engine_compute_seconds_total " + num(compute_total) + "\n";
  header(out, "protattn_queue_depth", "gauge", "Requests waiting for the engine now.");
  out += "protattn_queue_depth " + std::to_string(depth) + "\n";
  header(out, "protattn_requests_inflight", "gauge",
         "Requests accepted and not yet answered (queued or running).");
  out += "protattn_requests_inflight " + std::to_string(inflight) + "\n";
  if (!device_memory.empty()) {
    header(out, "protattn_gpu_memory_used_bytes", "gauge",
           "Memory in use on each engine GPU (all processes), asked after a batch, at most every 100 ms.");
    for (const auto& [dev, bytes] : device_memory)
      out += "protattn_gpu_memory_used_bytes{device=\"" + std::to_string(dev) + "\"} " + std::to_string(bytes) + "\n";
  }
  return out;
}

}  // namespace protattn::server
