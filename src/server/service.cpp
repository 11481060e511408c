// protattn server: the protocol-neutral infer path (prepare, queue, wait, answer) and its logs.
#include "service.hpp"

#include <algorithm>
#include <cstring>

#include "encoder_model.hpp"
#include "log.hpp"
#include "protattn/engine.hpp"
#include "protattn/error.hpp"

namespace protattn::server {

namespace {

BatchOptions batch_options(const Options& o) {
  BatchOptions b;
  b.engine = o.engine;
  b.engine_threads = o.engine_threads;
  b.devices = inference_devices(o);
  b.max_batch_atoms = o.max_batch_atoms;
  b.max_batch_requests = o.max_batch_requests;
  b.max_queue_delay_ms = o.max_queue_delay_ms;
  // auto is arrivals on every engine. The cpu engine does the same work batched or not; on an
  // H200 (bench/results/2026-11-30-h200-ebddb29) arrivals served atom_encoder as fast as full at
  // 16 and 64 requests in flight and 1.4-2.4x faster at 1 and 4, where a lone request otherwise
  // waits out the whole delay.
  b.wait_full_delay = o.batch_wait == "full";
  b.max_queue = o.max_queue;
  b.gpu_wait = o.gpu_wait;
  return b;
}

// How long a network thread waits before it looks at the client and the deadline again.
constexpr auto kPollSlice = std::chrono::milliseconds(20);

}  // namespace

Service::Service(const Options& opt, std::vector<ModelSpec> models)
    : opt_(opt), models_(std::move(models)), batcher_(batch_options(opt), metrics_) {
  limits_.max_atoms = opt.max_request_atoms;
  limits_.max_heads = opt.max_heads;
  limits_.max_head_dim = opt.max_head_dim;
  // With a GPU engine, shared-memory regions are registered with CUDA as they are added, so
  // that atom_encoder answers are copied into them from the device directly.
  shm_.pin_for_gpu(opt.allow_shared_memory && opt.engine != "cpu");
  // Rows out of reach are marked by each request's network thread with its layout, so that the
  // inference thread's plan need not.
  for (ModelSpec& m : models_) m.layout.mark_rows_out = engine_reads_rows_out(opt.engine);
}

std::vector<std::string> Service::extensions() const {
  std::vector<std::string> e = {"binary_tensor_data", "model_configuration", "statistics"};
  if (opt_.allow_shared_memory) e.push_back("system_shared_memory");
  return e;
}

void Service::start() {
  batcher_.start(models_);
  started_ = true;
}

void Service::begin_drain() {
  draining_ = true;
  batcher_.begin_drain();
}

void Service::stop() { batcher_.stop(); }

const ModelSpec* Service::find_model(const std::string& name) const {
  for (const auto& m : models_)
    if (m.name == name) return &m;
  return nullptr;
}

bool Service::authorized(const std::string& key) const {
  if (opt_.api_key.empty()) return true;
  if (key.size() != opt_.api_key.size()) return false;
  unsigned char diff = 0;  // same time whatever the first differing byte
  for (std::size_t i = 0; i < key.size(); ++i)
    diff |= static_cast<unsigned char>(key[i] ^ opt_.api_key[i]);
  return diff == 0;
}

std::string Service::next_request_id() { return "req-" + std::to_string(next_id_++); }

void Service::record_failure(const std::string& model, const std::string& protocol,
                             const Status& st, Clock::time_point arrived) {
  const double secs = seconds(Clock::now() - arrived);
  // Names of models that do not exist never become label values: clients choose them.
  metrics_.request_done(find_model(model) ? model : "unknown", st.code, secs);
  log_event(LogLevel::warn, "request",
            {{"request_id", next_request_id()}, {"protocol", protocol}, {"model", model},
             {"outcome", outcome_label(st.code)}, {"error", st.message}});
}

namespace {

// Outputs requested in shared memory are copied into their regions (unless the model's finish
// wrote them there already); the response then carries only their name, type, shape and where
// they went. (Outputs come in the order requested.)
void place_in_shared_memory(const InferCall& call, std::vector<OutputTensor>& outputs) {
  for (std::size_t i = 0; i < outputs.size() && i < call.output_spans.size(); ++i) {
    OutputTensor& t = outputs[i];
    if (call.output_spans[i].data && t.shm.region.empty())
      write_output_to(t, call.output_spans[i], t.data.data(), t.data.size());
  }
}

}  // namespace

InferResult Service::infer(const InferCall& call, const std::function<bool()>& client_gone) {
  const auto arrived = Clock::now();
  InferResult res;
  res.request_id = call.id.empty() ? next_request_id() : call.id;
  std::shared_ptr<Job> job;
  bool counted_inflight = false;
  const ModelSpec* model = find_model(call.model);
  try {
    if (!model) throw ServeError(Code::not_found, "unknown model '" + call.model + "'");
    if (draining_) throw ServeError(Code::unavailable, "server is shutting down");
    // Announced while it is prepared (decoded, checked, its layout built), so that a queued
    // job waits for it to join its batch; submit() or the guard below ends the announcement.
    batcher_.arriving(+1);
    struct Arrival {
      Batcher& b;
      bool open = true;
      ~Arrival() {
        if (open) b.arriving(-1);
      }
    } arrival{batcher_};
    job = model->is_encoder() ? prepare_encoder(*model, call, limits_)
                              : prepare_attention(*model, call, limits_);
    job->id = res.request_id;
    if (job->deadline == Clock::time_point::max() && opt_.default_timeout_ms > 0)
      job->deadline = arrived + std::chrono::microseconds(static_cast<std::int64_t>(opt_.default_timeout_ms * 1e3));
    metrics_.inflight_add(1);
    counted_inflight = true;
    arrival.open = false;
    if (!batcher_.submit(job, true))
      throw ServeError(Code::unavailable,
                       draining_ ? "server is shutting down"
                                 : "queue full (" + std::to_string(opt_.max_queue) +
                                       " requests waiting); retry later");
    // Giving a request up: the inference thread skips it; if it is already copying the answer
    // into the client's shared memory, that copy is waited for (it is short), so that nothing is
    // written there after the client was told the request failed.
    const auto give_up = [&job] {
      job->abandoned = true;
      int free_claim = 0;
      if (job->out_dest && !job->out_claim.compare_exchange_strong(free_claim, 2))
        while (!job->wait_until(Clock::now() + std::chrono::seconds(1))) {
        }
    };
    for (;;) {
      const auto slice = std::min(Clock::now() + kPollSlice, job->deadline);
      if (job->wait_until(slice)) break;
      if (Clock::now() >= job->deadline) {
        give_up();
        throw ServeError(Code::deadline_exceeded, "deadline passed before the result was ready");
      }
      if (client_gone && client_gone()) {
        give_up();
        throw ServeError(Code::cancelled, "client went away");
      }
    }
    res.status = job->status;
    if (res.status.ok()) {
      res.outputs = model->is_encoder() ? finish_encoder(*job, call.outputs, call.output_spans)
                                        : finish_attention(*job, call.outputs);
      place_in_shared_memory(call, res.outputs);
    }
  } catch (const ServeError& e) {
    res.status = {e.code, e.what()};
  } catch (const std::exception& e) {
    res.status = {Code::internal, e.what()};
  }
  if (counted_inflight) metrics_.inflight_add(-1);
  const double secs = seconds(Clock::now() - arrived);
  metrics_.request_done(model ? model->name : "unknown", res.status.code, secs);
  const LogLevel level = res.status.ok() ? LogLevel::info : LogLevel::warn;
  if (!log_enabled(level)) return res;  // the line is not built when it would be dropped
  nlohmann::json fields = {{"request_id", res.request_id}, {"protocol", call.protocol},
                           {"model", call.model}, {"outcome", outcome_label(res.status.code)},
                           {"ms", secs * 1e3}};
  if (job) {
    fields["atoms"] = job->n;
    if (!model->is_encoder()) {
      fields["heads"] = job->heads;
      fields["dim"] = job->dim;
    }
    if (res.status.ok()) {
      fields["queue_ms"] = job->queue_seconds * 1e3;
      fields["compute_ms"] = job->compute_seconds * 1e3;
      fields["batch"] = job->batch_requests;
    }
  }
  if (!res.status.ok()) fields["error"] = res.status.message;
  log_event(level, "request", std::move(fields));
  return res;
}

}  // namespace protattn::server
