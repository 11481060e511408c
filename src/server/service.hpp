// protattn server: what both fronts call: models, readiness, the infer path, metrics, auth.
#pragma once
#include <atomic>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "attention_model.hpp"
#include "batcher.hpp"
#include "common.hpp"
#include "metrics.hpp"
#include "model_repo.hpp"
#include "server.hpp"

namespace protattn::server {

inline constexpr const char* kServerName = "protattn";
inline constexpr const char* kServerVersion = "0.1.0";

class Service {
 public:
  Service(const Options& opt, std::vector<ModelSpec> models);
  void start();            // starts the inference thread (throws Error)
  void begin_drain();      // not ready any more; new inference calls get UNAVAILABLE
  void stop();             // answers what is queued and joins the inference thread

  bool live() const { return true; }
  bool ready() const { return started_ && !draining_; }
  bool draining() const { return draining_; }
  const ModelSpec* find_model(const std::string& name) const;
  const std::vector<ModelSpec>& models() const { return models_; }
  // Whether `key` opens the non-health endpoints (always when no key is configured).
  bool authorized(const std::string& key) const;
  bool auth_required() const { return !opt_.api_key.empty(); }
  const Options& options() const { return opt_; }
  Metrics& metrics() { return metrics_; }
  // Registered system shared-memory regions (used only with Options::allow_shared_memory).
  ShmRegistry& shm() { return shm_; }
  const ShmRegistry& shm() const { return shm_; }
  std::string engine_name() const { return batcher_.engine_name(); }
  // The protocol extensions the server metadata lists (both fronts).
  std::vector<std::string> extensions() const;

  // Runs one request: prepare, queue, wait (polling `client_gone` and the deadline), permute
  // outputs back. Called on a network thread; never throws. Logs one line per request.
  InferResult infer(const InferCall& call, const std::function<bool()>& client_gone);
  // A request that failed before infer() could run it (parse errors, auth): count and log it.
  void record_failure(const std::string& model, const std::string& protocol, const Status& st,
                      Clock::time_point arrived);
  std::string next_request_id();

 private:
  Options opt_;
  std::vector<ModelSpec> models_;
  Metrics metrics_;
  ShmRegistry shm_;
  Batcher batcher_;
  RequestLimits limits_;
  std::atomic<bool> started_{false}, draining_{false};
  std::atomic<std::uint64_t> next_id_{1};
};

}  // namespace protattn::server
