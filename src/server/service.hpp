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

// A request between Service::infer_async and Service::finish_async.
struct AsyncInfer {
  std::shared_ptr<Job> job;
  const ModelSpec* model = nullptr;
  Clock::time_point arrived;
  InferResult result;
};

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
  // The same without a waiting thread, in two calls. infer_async prepares and queues the request
  // on the calling thread and returns: false when it failed before it was queued (a.result holds
  // the answer, already counted and logged), true when it is queued; then `wake` runs once, on
  // the thread that completes the job (an inference thread, or the one that drops it from the
  // queue at its deadline), and should only hand the call over: finish_async (on any thread)
  // makes the answer. `call` and `a` must stay alive until then. A client that goes away is not
  // noticed: its request runs, or waits out its deadline.
  bool infer_async(const InferCall& call, AsyncInfer& a, std::function<void()> wake);
  InferResult finish_async(const InferCall& call, AsyncInfer& a);
  // A request that failed before infer() could run it (parse errors, auth): count and log it.
  void record_failure(const std::string& model, const std::string& protocol, const Status& st,
                      Clock::time_point arrived);
  std::string next_request_id();

 private:
  // The steps of both infer forms. admit: the model's checks and its prepare (layout), on the
  // calling thread, announced to the batcher as an arrival; throws ServeError. queue, right
  // after a successful admit: counts it in flight and hands it to the batcher, which ends the
  // announcement; throws ServeError (queue full, draining). conclude: the outputs of a successful job (when
  // queued), the in-flight count, metrics and the request's log line.
  std::shared_ptr<Job> admit(const InferCall& call, const ModelSpec* model, Clock::time_point arrived,
                             const std::string& request_id);
  void queue(const std::shared_ptr<Job>& job);
  void conclude(const InferCall& call, const ModelSpec* model, Job* job, bool queued, Clock::time_point arrived,
                InferResult& res);

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
