// protattn server: Prometheus metrics and per-model statistics, rendered from a locked snapshot.
#pragma once
#include <cstdint>
#include <map>
#include <mutex>
#include <string>
#include <utility>
#include <vector>

#include "common.hpp"

namespace protattn::server {

struct Histogram {
  std::vector<double> bounds;          // upper bounds, increasing; +Inf is implicit
  std::vector<std::uint64_t> counts;   // per bucket (not cumulative), bounds.size() + 1
  double sum = 0;
  std::uint64_t count = 0;
  explicit Histogram(std::vector<double> b = {});
  void observe(double v);
};

// The statistics extension's cumulative durations of one model (nanoseconds).
struct ModelStats {
  std::uint64_t success_count = 0, success_ns = 0, fail_count = 0, fail_ns = 0;
  std::uint64_t queue_count = 0, queue_ns = 0;
  std::uint64_t compute_count = 0, compute_ns = 0;
  std::uint64_t inference_count = 0, execution_count = 0;
  std::uint64_t last_inference_ms = 0;  // since the epoch
};

class Metrics {
 public:
  Metrics();
  // Network threads: a request answered (any outcome) after `seconds` in the server.
  void request_done(const std::string& model, Code outcome, double seconds);
  void inflight_add(int delta);
  // Inference thread: one engine run of `requests` requests holding `atoms` atoms.
  // The inference thread `worker` ran a batch.
  void batch_done(const std::string& model, int requests, std::int64_t atoms, double compute_s,
                  const std::vector<double>& queue_s, int worker = 0);
  void set_workers(int n);  // inference threads (one per GPU or cpu replica)
  void set_queue_depth(std::int64_t depth);
  void set_device_memory(int device, std::int64_t used_bytes);
  void set_engine(const std::string& name);

  std::string render() const;  // Prometheus text exposition format 0.0.4
  ModelStats model_stats(const std::string& model) const;
  std::int64_t inflight() const;

 private:
  mutable std::mutex m_;
  std::string engine_;
  std::map<std::pair<std::string, std::string>, std::uint64_t> requests_;  // (model, outcome)
  std::map<std::string, Histogram> latency_;       // by model
  Histogram queue_time_, batch_requests_, batch_atoms_, compute_time_;
  std::uint64_t batches_ = 0;
  double compute_total_ = 0;
  std::int64_t queue_depth_ = 0, inflight_ = 0;
  std::map<int, std::int64_t> device_memory_;       // by CUDA device
  std::vector<std::uint64_t> worker_batches_{0};    // by inference thread
  std::map<std::string, ModelStats> stats_;
};

}  // namespace protattn::server
