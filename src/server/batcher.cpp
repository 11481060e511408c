// protattn server: the inference thread: gathering ragged batches, packing, one engine run each.
#include "batcher.hpp"

#include <cstring>
#include <future>
#include <map>
#include <tuple>
#ifdef __linux__
#include <sys/prctl.h>
#endif

#include "common.hpp"
#include "common/parallel.hpp"
#include "encoder_model.hpp"
#include "log.hpp"
#include "protattn/engine.hpp"
#include "protattn/error.hpp"

#ifdef PROTATTN_HAVE_CUDA
#include <cuda_runtime_api.h>
#endif

namespace protattn::server {

struct Batcher::EngineState {
  int worker = 0, device = 0;
  std::unique_ptr<Engine> engine;
  std::map<const ModelSpec*, std::unique_ptr<AtomEncoder>> encoders;  // one per atom_encoder model
  // The worker's own CUDA stream (non-blocking) for atom_encoder batches, so that workers sharing a
  // GPU overlap one's host plan and copies with another's kernels; null on the CPU.
  void* stream = nullptr;
  Clock::time_point next_memory_poll{};  // when /metrics' device memory is asked next
  ~EngineState() {
#ifdef PROTATTN_HAVE_CUDA
    if (stream) cudaStreamDestroy(static_cast<cudaStream_t>(stream));
#endif
  }
  // Packed buffers, grown as needed and kept between batches.
  std::vector<std::uint16_t> q, k, v, o;
  std::vector<float> lse;
};

namespace {

// Jobs batch together when their keys are equal. attention: (no model, heads, dim, tile), so
// attention models of one tile size share engine runs; atom_encoder: (its model, 0, 0, 0).
using BatchKey = std::tuple<const ModelSpec*, int, int, int>;
BatchKey key_of(const Job& j) {
  if (j.model->is_encoder()) return {j.model, 0, 0, 0};
  return {nullptr, j.heads, j.dim, j.layout.tile};
}

// Copies the per-head row blocks of one job into (or out of) the packed (heads, total, dim).
template <class T>
void pack(std::vector<T>& packed, const std::vector<T>& src, int heads, std::int64_t total,
          std::int64_t offset, std::int64_t n, std::size_t width) {
  for (int h = 0; h < heads; ++h)
    std::memcpy(packed.data() + (h * total + offset) * width, src.data() + h * n * width,
                static_cast<std::size_t>(n) * width * sizeof(T));
}
template <class T>
void unpack(const std::vector<T>& packed, std::vector<T>& dst, int heads, std::int64_t total,
            std::int64_t offset, std::int64_t n, std::size_t width) {
  for (int h = 0; h < heads; ++h)
    std::memcpy(dst.data() + h * n * width, packed.data() + (h * total + offset) * width,
                static_cast<std::size_t>(n) * width * sizeof(T));
}

#ifdef PROTATTN_HAVE_CUDA
// How the calling inference thread waits for `device` (--gpu-wait): auto keeps CUDA's heuristic
// (spin while the process has fewer contexts than cores), poll keeps it too (the encoder's fetch
// polls, EngineOptions::gpu_wait_poll) and makes this thread's short sleeps short (Linux timer
// slack 1 us instead of 50), the others set the schedule flag.
void set_gpu_wait(int device, const std::string& how) {
  if (how == "poll") {
#ifdef __linux__
    prctl(PR_SET_TIMERSLACK, 1000UL, 0UL, 0UL, 0UL);  // best effort: a longer sleep is only slower
#endif
    return;
  }
  if (how == "auto") return;
  const unsigned flag = how == "spin"    ? cudaDeviceScheduleSpin
                        : how == "yield" ? cudaDeviceScheduleYield
                                         : cudaDeviceScheduleBlockingSync;
  if (cudaSetDevice(device) != cudaSuccess || cudaSetDeviceFlags(flag) != cudaSuccess)
    throw Error("serve: cannot set --gpu-wait " + how + " on device " + std::to_string(device));
}
#endif

}  // namespace

Batcher::Batcher(BatchOptions opt, Metrics& metrics) : opt_(std::move(opt)), metrics_(metrics) {
  if (opt_.devices.empty()) throw Error("batcher: no inference device");
}

Batcher::~Batcher() { stop(); }

void Batcher::start(const std::vector<ModelSpec>& models) {
  std::vector<std::promise<std::string>> ready(opt_.devices.size());
  std::vector<std::future<std::string>> started;
  for (auto& r : ready) started.push_back(r.get_future());
  metrics_.set_workers(static_cast<int>(opt_.devices.size()));  // before any batch can run
  for (std::size_t w = 0; w < opt_.devices.size(); ++w) {
    states_.push_back(std::make_unique<EngineState>());
    states_.back()->worker = static_cast<int>(w);
    states_.back()->device = opt_.devices[w];
  }
  for (std::size_t w = 0; w < opt_.devices.size(); ++w) {
    threads_.emplace_back([this, &ready, &models, w] {
      EngineState& st = *states_[w];
      detail::name_this_thread("protattn-infer");
      try {
#ifdef PROTATTN_HAVE_CUDA
        if (opt_.engine != "cpu") set_gpu_wait(st.device, opt_.gpu_wait);
#endif
        EngineOptions eo;
        eo.threads = opt_.engine_threads;
        eo.device = st.device;
        eo.gpu_wait_poll = opt_.gpu_wait == "poll";
        st.engine = make_engine(opt_.engine, eo);
        for (const ModelSpec& m : models)
          if (m.is_encoder())
            st.encoders[&m] = std::make_unique<AtomEncoder>(Model(*m.encoder), opt_.engine, eo);
#ifdef PROTATTN_HAVE_CUDA
        if (st.engine->on_device()) {
          cudaStream_t stream = nullptr;
          if (cudaSetDevice(st.device) != cudaSuccess ||
              cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking) != cudaSuccess)
            throw Error("serve: cannot create a CUDA stream on device " + std::to_string(st.device));
          st.stream = stream;
        }
#endif
        ready[w].set_value(st.engine->name());
      } catch (...) {
        ready[w].set_exception(std::current_exception());
        return;
      }
      loop(st);
    });
  }
  // Every thread reports once; the first failure stops the others and is rethrown.
  std::exception_ptr failure;
  std::string name;
  for (auto& f : started) {
    try {
      name = f.get();
    } catch (...) {
      if (!failure) failure = std::current_exception();
    }
  }
  if (failure) {
    stop();
    std::rethrow_exception(failure);
  }
  {
    std::lock_guard<std::mutex> lock(m_);
    engine_name_ = name;
  }
  metrics_.set_engine(engine_name());
}

std::string Batcher::engine_name() const {
  std::lock_guard<std::mutex> lock(m_);
  return engine_name_;
}

void Batcher::arriving(int delta) {
  {
    std::lock_guard<std::mutex> lock(m_);
    arriving_ += delta;
  }
  if (delta < 0) cv_collect_.notify_one();
}

void Batcher::wake_one() {
  if (collecting_) cv_collect_.notify_one();
  else cv_idle_.notify_one();
}

void Batcher::wake_all() {
  cv_collect_.notify_all();
  cv_idle_.notify_all();
}

bool Batcher::submit(std::shared_ptr<Job> job, bool was_arriving) {
  {
    std::lock_guard<std::mutex> lock(m_);
    if (was_arriving) --arriving_;
    if (draining_ || stopping_ || static_cast<int>(queue_.size()) >= opt_.max_queue) {
      if (was_arriving) cv_collect_.notify_one();
      return false;
    }
    job->enqueued = Clock::now();
    queue_.push_back(std::move(job));
    metrics_.set_queue_depth(static_cast<std::int64_t>(queue_.size()));
    wake_one();
  }
  return true;
}

void Batcher::begin_drain() {
  {
    std::lock_guard<std::mutex> lock(m_);
    draining_ = true;
  }
  wake_all();
}

void Batcher::stop() {
  {
    std::lock_guard<std::mutex> lock(m_);
    draining_ = true;
    stopping_ = true;
  }
  wake_all();
  for (auto& t : threads_)
    if (t.joinable()) t.join();
}

void Batcher::loop(EngineState& state) {
  const auto delay = std::chrono::duration_cast<Clock::duration>(
      std::chrono::duration<double, std::milli>(opt_.max_queue_delay_ms));
  for (;;) {
    std::vector<std::shared_ptr<Job>> batch;
    {
      std::unique_lock<std::mutex> lock(m_);
      // Become the collector: when nobody else is and there is work (or stop, once empty).
      cv_idle_.wait(lock, [&] { return (!collecting_ && !queue_.empty()) || (stopping_ && queue_.empty()); });
      if (queue_.empty()) return;  // stopping and nothing left
      collecting_ = true;
      // Whatever way this thread stops collecting, another may take over.
      struct Handover {
        Batcher& b;
        ~Handover() {
          b.collecting_ = false;
          if (!b.queue_.empty()) b.cv_idle_.notify_one();
          if (b.stopping_) b.cv_idle_.notify_all();  // the others exit once the queue is empty
        }
      } handover{*this};
      // Drop what nobody waits for any more, before it costs engine time.
      const auto now = Clock::now();
      for (auto it = queue_.begin(); it != queue_.end();) {
        Job& j = **it;
        if (j.abandoned || now >= j.deadline) {
          j.complete(j.abandoned ? Status{Code::cancelled, "request abandoned by the client"}
                                 : Status{Code::deadline_exceeded,
                                          "deadline passed while queued"});
          it = queue_.erase(it);
        } else {
          ++it;
        }
      }
      metrics_.set_queue_depth(static_cast<std::int64_t>(queue_.size()));
      if (queue_.empty()) continue;
      // Wait for company: until the oldest job has waited the delay, the batch is full, or drain.
      const BatchKey key = key_of(*queue_.front());
      const auto window_end = queue_.front()->enqueued + delay;
      auto ready_atoms = [&] {
        std::int64_t atoms = 0;
        int count = 0;
        for (const auto& j : queue_)
          if (key_of(*j) == key) atoms += j->n, ++count;
        return atoms >= opt_.max_batch_atoms || count >= opt_.max_batch_requests;
      };
      cv_collect_.wait_until(lock, window_end, [&] {
        return draining_ || stopping_ || (!opt_.wait_full_delay && arriving_ == 0) || ready_atoms();
      });
      if (queue_.empty()) continue;
      // Take, in arrival order, the jobs of the oldest job's shape that fit.
      const BatchKey take_key = key_of(*queue_.front());
      std::int64_t atoms = 0;
      for (auto it = queue_.begin(); it != queue_.end();) {
        Job& j = **it;
        const bool fits = batch.empty() || (atoms + j.n <= opt_.max_batch_atoms &&
                                            static_cast<int>(batch.size()) < opt_.max_batch_requests);
        if (key_of(j) == take_key && !j.abandoned && fits) {
          atoms += j.n;
          batch.push_back(std::move(*it));
          it = queue_.erase(it);
        } else {
          ++it;
        }
      }
      metrics_.set_queue_depth(static_cast<std::int64_t>(queue_.size()));
    }
    if (!batch.empty()) run_batch(state, batch);
  }
}

// Plans all layouts at once, packs Q/K/V along the atom axis at the plan's offsets (a batch of
// one runs on the job's own buffers), runs the engine once and unpacks O (and LSE).
void Batcher::run_attention(EngineState& s, std::vector<std::shared_ptr<Job>>& batch) {
  Job& first = *batch.front();
  const int heads = first.heads, dim = first.dim;
  std::vector<const BlockLayout*> layouts;
  bool want_lse = false;
  for (const auto& j : batch) {
    layouts.push_back(&j->layout);
    want_lse = want_lse || j->want_lse;
  }
  ProblemShape shape;
  shape.heads = heads;
  shape.dim = dim;
  shape.dtype = DType::f16;
  auto plan = s.engine->plan(layouts, shape);
  const std::int64_t total = plan->total_n();
  const std::size_t elems = static_cast<std::size_t>(heads) * total * dim;
  RunArgs args;
  if (batch.size() == 1) {
    first.o.resize(elems);
    if (first.want_lse) first.lse.resize(static_cast<std::size_t>(heads) * total);
    args.q = first.q.data();
    args.k = first.k.data();
    args.v = first.v.data();
    args.o = first.o.data();
    args.lse = first.want_lse ? first.lse.data() : nullptr;
    run_host(*s.engine, *plan, args);
  } else {
    for (auto* buf : {&s.q, &s.k, &s.v, &s.o}) buf->resize(elems);
    if (want_lse) s.lse.resize(static_cast<std::size_t>(heads) * total);
    for (std::size_t b = 0; b < batch.size(); ++b) {
      const Job& j = *batch[b];
      const std::int64_t off = plan->offsets[b];
      pack(s.q, j.q, heads, total, off, j.n, static_cast<std::size_t>(dim));
      pack(s.k, j.k, heads, total, off, j.n, static_cast<std::size_t>(dim));
      pack(s.v, j.v, heads, total, off, j.n, static_cast<std::size_t>(dim));
    }
    args.q = s.q.data();
    args.k = s.k.data();
    args.v = s.v.data();
    args.o = s.o.data();
    args.lse = want_lse ? s.lse.data() : nullptr;
    run_host(*s.engine, *plan, args);
    for (std::size_t b = 0; b < batch.size(); ++b) {
      Job& j = *batch[b];
      const std::int64_t off = plan->offsets[b];
      j.o.resize(static_cast<std::size_t>(heads) * j.n * dim);
      unpack(s.o, j.o, heads, total, off, j.n, static_cast<std::size_t>(dim));
      if (j.want_lse) {
        j.lse.resize(static_cast<std::size_t>(heads) * j.n);
        unpack(s.lse, j.lse, heads, total, off, j.n, 1);
      }
    }
  }
}

void Batcher::run_batch(EngineState& state, std::vector<std::shared_ptr<Job>>& batch) {
  const auto start = Clock::now();
  Job& first = *batch.front();
  std::vector<double> queue_s;
  std::int64_t atoms = 0;
  for (const auto& j : batch) {
    queue_s.push_back(seconds(start - j->enqueued));
    atoms += j->n;
  }
  Status status;
  EncoderBatchTimes parts;
  try {
    if (first.model->is_encoder())
      parts = run_encoder_batch(*state.encoders.at(first.model), batch, state.stream);
    else
      run_attention(state, batch);
  } catch (const Error& e) {
    status = {Code::invalid_argument, std::string("engine ") + state.engine->name() + ": " + e.what()};
  } catch (const std::exception& e) {
    status = {Code::internal, std::string("engine ") + state.engine->name() + ": " + e.what()};
  }
  const double compute = seconds(Clock::now() - start);
  metrics_.batch_done(first.model->name, static_cast<int>(batch.size()), atoms, compute, queue_s, state.worker);
  if (log_enabled(LogLevel::debug)) {
    nlohmann::json fields = {{"model", first.model->name}, {"worker", state.worker}, {"device", state.device},
                             {"requests", batch.size()}, {"atoms", atoms},
                             {"heads", first.heads}, {"dim", first.dim},
                             {"compute_ms", compute * 1e3}, {"ok", status.ok()}};
    if (first.model->is_encoder() && status.ok()) {
      fields["layouts_ms"] = parts.layouts * 1e3;
      fields["plan_ms"] = parts.plan * 1e3;
      fields["launch_ms"] = parts.launch * 1e3;
      fields["finish_ms"] = parts.finish * 1e3;
    }
    log_event(LogLevel::debug, "batch", std::move(fields));
  }
  for (std::size_t b = 0; b < batch.size(); ++b) {
    Job& j = *batch[b];
    j.queue_seconds = queue_s[b];
    j.compute_seconds = compute;
    j.batch_requests = static_cast<int>(batch.size());
    j.complete(status);
  }
#ifdef PROTATTN_HAVE_CUDA
  // The device's memory in use for /metrics: asked after the answers are out (the driver call is
  // not free) and at most every 100 ms per inference thread.
  if (state.engine->on_device() && Clock::now() >= state.next_memory_poll) {
    state.next_memory_poll = Clock::now() + std::chrono::milliseconds(100);
    std::size_t free_b = 0, total_b = 0;
    if (cudaMemGetInfo(&free_b, &total_b) == cudaSuccess)
      metrics_.set_device_memory(state.device, static_cast<std::int64_t>(total_b - free_b));
  }
#endif
}

}  // namespace protattn::server
