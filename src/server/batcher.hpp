// protattn server: the dynamic batcher and the one inference thread that owns the engine.
#pragma once
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "job.hpp"
#include "metrics.hpp"
#include "model_repo.hpp"

namespace protattn::server {

struct BatchOptions {
  std::string engine = "cpu";
  int engine_threads = 0;
  std::vector<int> devices{0};  // one inference thread (and engine) per entry; at least one
  std::int64_t max_batch_atoms = 65536;
  int max_batch_requests = 64;
  double max_queue_delay_ms = 0.0;
  bool wait_full_delay = false;  // true: wait the whole delay even when no request is arriving
  int max_queue = 64;
  std::string gpu_wait = "auto";  // GPU engines: how an inference thread waits (auto, spin, yield, block)
};

// Jobs wait in a bounded FIFO shared by the inference threads (one per device, or per cpu
// replica): an idle one takes the oldest job, waits up to the queue delay (counted from that
// job's arrival, and only while other requests are being prepared) for jobs of the same batch key (attention:
// heads, dim, tile; atom_encoder: the model), packs up to max_batch_atoms / max_batch_requests
// of them along the atom axis and runs once for all: the attention engine on packed Q/K/V, or
// the model's AtomEncoder forward on the ragged batch of structures. Abandoned and expired
// jobs are dropped before they run.
class Batcher {
 public:
  Batcher(BatchOptions opt, Metrics& metrics);
  ~Batcher();
  // Starts one inference thread per device, each creating its engine and one AtomEncoder per
  // atom_encoder model (from a copy of its weights) on itself; throws Error when any cannot
  // (the others are stopped). `models` outlives the batcher.
  void start(const std::vector<ModelSpec>& models);
  // false: the queue is full or the batcher drains (the caller answers 503 / UNAVAILABLE).
  // `was_arriving`: the job was announced with arriving(+1); submit ends that in the same step.
  bool submit(std::shared_ptr<Job> job, bool was_arriving = false);
  // A request is being prepared on a network thread (+1) or is done preparing without being
  // submitted (-1). The oldest queued job waits for company only while some request is
  // arriving: when none is, nothing could join its batch within the delay, so it runs at once.
  void arriving(int delta);
  // Stops waiting for company: queued jobs run at once. New jobs are refused.
  void begin_drain();
  // Runs what is queued, then joins the inference thread.
  void stop();
  std::string engine_name() const;

 private:
  struct EngineState;
  void loop(EngineState& state);
  void wake_one();  // a job was queued (m_ held): the collector, or an idle thread
  void wake_all();  // drain or stop
  void run_batch(EngineState& state, std::vector<std::shared_ptr<Job>>& batch);
  void run_attention(EngineState& state, std::vector<std::shared_ptr<Job>>& batch);

  BatchOptions opt_;
  Metrics& metrics_;
  mutable std::mutex m_;
  // One inference thread at a time collects a batch (waits for company on the oldest job); the
  // others wait to take its place. A new job or an arrival ending wakes the collector only, or
  // one idle thread when nobody collects: not every inference thread, each scanning the queue.
  std::condition_variable cv_idle_, cv_collect_;
  bool collecting_ = false;
  std::deque<std::shared_ptr<Job>> queue_;
  bool draining_ = false, stopping_ = false;
  int arriving_ = 0;  // requests being prepared (guarded by m_)
  std::vector<std::thread> threads_;
  std::string engine_name_;
  std::vector<std::unique_ptr<EngineState>> states_;  // [i] touched by inference thread i only
};

}  // namespace protattn::server
