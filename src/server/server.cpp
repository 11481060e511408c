// protattn server: start-up, the wait for SIGTERM/SIGINT and the drain, in that order.
#include "server.hpp"

#include <pthread.h>
#include <signal.h>

#include <thread>

#include "grpc_front.hpp"
#include "http_front.hpp"
#include "log.hpp"
#include "protattn/error.hpp"
#include "service.hpp"

namespace protattn::server {

namespace {

void check_options(const Options& o) {
  auto port_ok = [](int p) { return p >= -1 && p <= 65535; };
  if (!port_ok(o.http_port) || !port_ok(o.grpc_port)) throw Error("ports must be in 0..65535, or -1 (off)");
  if (o.http_port < 0 && o.grpc_port < 0) throw Error("both HTTP and gRPC are off: nothing to serve");
  if (o.http_threads < 1) throw Error("--http-threads must be >= 1");
  if (o.grpc_threads < 0) throw Error("--grpc-threads must be >= 0 (0: sized from the queue bounds)");
  if (o.max_batch_atoms < 1 || o.max_batch_requests < 1) throw Error("batch limits must be >= 1");
  if (o.max_queue < 1) throw Error("--max-queue must be >= 1");
  if (o.replicas < 1) throw Error("--replicas must be >= 1");
  if (o.batch_wait != "auto" && o.batch_wait != "arrivals" && o.batch_wait != "full")
    throw Error("--batch-wait must be 'auto', 'arrivals' or 'full', got '" + o.batch_wait + "'");
  if (o.replicas > 1 && o.engine != "cpu")
    throw Error("--replicas is for the cpu engine; a GPU engine takes --device-threads (threads on --device) or --devices (a device per thread)");
  if (!o.devices.empty() && o.engine == "cpu")
    throw Error("--devices is for the GPU engines; the cpu engine takes --replicas");
  if (o.gpu_wait != "auto" && o.gpu_wait != "spin" && o.gpu_wait != "yield" && o.gpu_wait != "block" &&
      o.gpu_wait != "poll")
    throw Error("--gpu-wait: auto, spin, yield, block or poll, not '" + o.gpu_wait + "'");
  if (o.gpu_wait != "auto" && o.engine == "cpu") throw Error("--gpu-wait is for the GPU engines");
  // A device may be listed more than once: its inference threads then overlap one batch's
  // host-side work (plan, layouts, uploads) with another's kernels.
  for (int d : o.devices)
    if (d < 0) throw Error("--devices: device ordinals are >= 0");
  if (o.devices.size() > 64) throw Error("--devices: at most 64 inference threads");
  if (o.device_threads < 0 || o.device_threads > 64) throw Error("--device-threads must be in 0..64 (0: the default, " + std::to_string(kDeviceThreads) + ")");
  if (o.device_threads > 0 && o.engine == "cpu") throw Error("--device-threads is for the GPU engines; the cpu engine takes --replicas");
  if (o.device_threads > 0 && !o.devices.empty())
    throw Error("--device-threads and --devices both set the inference threads: give one (list a device twice in --devices for two threads on it)");
  if (!(o.max_queue_delay_ms >= 0)) throw Error("--max-queue-delay-ms must be >= 0");
  if (o.max_request_atoms < 1 || o.max_heads < 1 || o.max_head_dim < 1)
    throw Error("request limits must be >= 1");
  if (o.max_body_bytes < 1024) throw Error("--max-body-mb is too small");
  if (o.default_timeout_ms < 0) throw Error("--timeout-ms must be >= 0");
}

// Keeps SIGTERM and SIGINT blocked in every thread the server starts; the main thread takes
// them with sigwait. Restores the caller's mask on the way out.
class SignalMask {
 public:
  SignalMask() {
    sigemptyset(&set_);
    sigaddset(&set_, SIGTERM);
    sigaddset(&set_, SIGINT);
    pthread_sigmask(SIG_BLOCK, &set_, &old_);
    old_pipe_ = signal(SIGPIPE, SIG_IGN);
  }
  ~SignalMask() {
    signal(SIGPIPE, old_pipe_);
    pthread_sigmask(SIG_SETMASK, &old_, nullptr);
  }
  int wait() const {
    int sig = 0;
    sigwait(&set_, &sig);
    return sig;
  }

 private:
  sigset_t set_{}, old_{};
  void (*old_pipe_)(int) = SIG_DFL;
};

}  // namespace

std::vector<int> inference_devices(const Options& opt) {
  if (!opt.devices.empty()) return opt.devices;
  if (opt.engine != "cpu")
    return std::vector<int>(static_cast<std::size_t>(opt.device_threads > 0 ? opt.device_threads : kDeviceThreads), opt.device);
  std::vector<int> replicas(static_cast<std::size_t>(opt.replicas));
  for (int r = 0; r < opt.replicas; ++r) replicas[static_cast<std::size_t>(r)] = r;
  return replicas;
}

int grpc_thread_budget(const Options& opt) {
  if (opt.grpc_threads > 0) return opt.grpc_threads;
  return opt.max_queue + opt.max_batch_requests + 16;
}

int run(const Options& opt) {
  check_options(opt);
  set_log_level(parse_log_level(opt.log_level));
  std::vector<ModelSpec> models = load_repository(opt.model_repository);
  SignalMask signals;

  Service svc(opt, std::move(models));
  svc.start();
  HttpFront http(svc);
  GrpcFront grpc(svc);
  std::thread http_thread;
  int http_port = -1, grpc_port = -1;
  try {
    if (opt.http_port >= 0) {
      http_port = http.bind(opt.host, opt.http_port);
      http_thread = std::thread([&http] { http.serve(); });
      while (!http.running()) std::this_thread::sleep_for(std::chrono::milliseconds(1));
    }
    if (opt.grpc_port >= 0) grpc_port = grpc.start(opt.host, opt.grpc_port);
  } catch (...) {
    if (http_thread.joinable()) {
      while (!http.running()) std::this_thread::sleep_for(std::chrono::milliseconds(1));
      http.stop();
      http_thread.join();
    }
    svc.stop();
    throw;
  }
  nlohmann::json names = nlohmann::json::array();
  for (const auto& m : svc.models()) names.push_back(m.name);
  log_event(LogLevel::info, "ready",
            {{"host", opt.host}, {"http_port", http_port}, {"grpc_port", grpc_port},
             {"engine", svc.engine_name()}, {"models", names},
             {"inference_threads", inference_devices(opt).size()},
             {"devices", opt.engine == "cpu" ? nlohmann::json::array() : nlohmann::json(inference_devices(opt))},
             {"max_batch_atoms", opt.max_batch_atoms}, {"max_queue_delay_ms", opt.max_queue_delay_ms},
             {"max_queue", opt.max_queue}, {"api_key", !opt.api_key.empty()},
             {"batch_wait", opt.batch_wait}, {"shared_memory", opt.allow_shared_memory}});

  const int sig = signals.wait();
  log_event(LogLevel::info, "draining",
            {{"signal", sig == SIGTERM ? "SIGTERM" : "SIGINT"}, {"inflight", svc.metrics().inflight()}});
  svc.begin_drain();
  if (http_thread.joinable()) {
    http.stop();
    http_thread.join();  // every HTTP handler has answered
  }
  grpc.shutdown();       // every RPC has answered
  svc.stop();            // the inference thread has finished what was queued
  log_event(LogLevel::info, "stopped", {{"inflight", svc.metrics().inflight()}});
  return 0;
}

}  // namespace protattn::server
