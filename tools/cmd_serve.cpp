// protattn serve: the KServe v2 inference server (HTTP and gRPC) over a model repository.
#include <cstdlib>
#include <string>

#include <fmt/format.h>

#include "commands.hpp"
#include "protattn/engine.hpp"
#include "protattn/error.hpp"
#include "server.hpp"

namespace protattn::cli {

void add_serve_command(CLI::App& app) {
  auto opt = std::make_shared<server::Options>();
  auto body_mb = std::make_shared<double>(static_cast<double>(opt->max_body_bytes) / (1 << 20));
  std::string engines;
  for (const auto& e : engine_names()) engines += (engines.empty() ? "" : ", ") + e;
  CLI::App* cmd = app.add_subcommand(
      "serve",
      "Serve the models of a repository over the Open Inference Protocol (KServe v2): HTTP/REST "
      "(JSON and binary tensors) and gRPC (GRPCInferenceService). Endpoints: /v2/health/{live,ready}, "
      "/v2, /v2/models/NAME[/ready|/config|/stats], POST /v2/models/NAME/infer, /metrics "
      "(Prometheus). Each inference thread owns an engine (the cpu engine: --replicas, one by "
      "default; a GPU engine: --device-threads or --devices, four on --device by default); concurrent "
      "requests are batched and the threads take batches from one queue. "
      "SIGTERM or SIGINT drains: stop accepting, answer what was accepted, exit 0.");
  cmd->add_option("--model-repository,--models", opt->model_repository,
                  "folder with one sub-folder per model holding its config.json")
      ->required()->check(CLI::ExistingDirectory);
  cmd->add_option("--host", opt->host, "address to bind (both protocols)")->capture_default_str();
  cmd->add_option("--http-port", opt->http_port, "HTTP port (0: any free port, -1: no HTTP)")
      ->capture_default_str();
  cmd->add_option("--grpc-port", opt->grpc_port, "gRPC port (0: any free port, -1: no gRPC)")
      ->capture_default_str();
  cmd->add_option("--http-threads", opt->http_threads,
                  "HTTP connections served at once (a thread each, started on demand; further "
                  "connections wait to be accepted)")
      ->check(kPositive)->capture_default_str();
  cmd->add_option("--grpc-threads", opt->grpc_threads,
                  "gRPC calls served at once (0: max-queue + max-batch-requests + 16, so that the "
                  "queue bound, not the thread pool, answers UNAVAILABLE under load)")
      ->check(kNonNegative)->capture_default_str();
  cmd->add_option("--engine", opt->engine, "engine of the inference thread: " + engines)->capture_default_str();
  cmd->add_option("--threads", opt->engine_threads, "cpu engine worker threads (0: all cores)")
      ->check(kNonNegative)->capture_default_str();
  cmd->add_option("--device", opt->device, "CUDA device of the GPU engines")
      ->check(kNonNegative)->capture_default_str();
  cmd->add_option("--device-threads", opt->device_threads,
                  "GPU engines: inference threads on --device, each with its own CUDA stream, so that one "
                  "batch's host-side plan overlaps another's kernels (0: " + std::to_string(server::kDeviceThreads) +
                  "; --devices instead lists a device per thread)")
      ->check(CLI::Range(0, 64))->capture_default_str();
  cmd->add_option("--devices", opt->devices,
                  "GPU engines on several GPUs: one inference thread per listed device (e.g. 0,1,2,3), "
                  "all taking batches from the one queue; a device listed twice (0,0) gets two threads, "
                  "so that one batch's host-side plan overlaps another's kernels")
      ->delimiter(',');
  cmd->add_option("--replicas", opt->replicas,
                  "cpu engine: inference threads taking batches from the one queue, each with "
                  "--threads workers")
      ->check(kPositive)->capture_default_str();
  cmd->add_option("--max-batch-atoms", opt->max_batch_atoms,
                  "atoms of one batch (one engine run); a larger single request runs alone")
      ->check(kPositive)->capture_default_str();
  cmd->add_option("--max-batch-requests", opt->max_batch_requests, "requests of one batch")
      ->check(kPositive)->capture_default_str();
  cmd->add_option("--max-queue-delay-ms", opt->max_queue_delay_ms,
                  "how long the oldest queued request waits for others to batch with at most (--batch-wait "
                  "says whether it stops early when no other request is being received). 0 never waits: an "
                  "idle inference thread takes what is queued at once, and batches still form while every "
                  "thread is busy; on an H200 that served atom_encoder fastest within a 5 ms p99 "
                  "(bench/results/2026-11-30-h200-8f5ab24-delay)")
      ->check(kNonNegative)->capture_default_str();
  cmd->add_flag("--allow-shared-memory", opt->allow_shared_memory,
               "let clients on this machine register system shared-memory regions (POSIX shm_open "
               "names) and pass inputs and outputs through them instead of the message (the "
               "protocol's system_shared_memory extension; off by default: a client could then make "
               "the server read and write any shared-memory object it may open)");
  cmd->add_option("--gpu-wait", opt->gpu_wait,
                  "GPU engines: how an inference thread waits for its GPU: spin (lowest latency, a core "
                  "busy meanwhile), yield, block (sleeps until the GPU wakes it; frees the core for the "
                  "other threads), poll (atom_encoder models: queries the GPU every ~20 us and sleeps "
                  "between; others wait as auto), or auto (CUDA's choice: spin while the process has fewer "
                  "GPU contexts than cores)")
      ->check(CLI::IsMember({"auto", "spin", "yield", "block", "poll"}))->capture_default_str();
  cmd->add_option("--batch-wait", opt->batch_wait,
                  "arrivals: the oldest request waits for company only while others are being "
                  "received and prepared; full: it always waits --max-queue-delay-ms (as Triton does); "
                  "auto: arrivals, which served as fast as full or faster on the cpu engine and on an H200 "
                  "(bench/results/2026-11-30-h200-ebddb29)")
      ->check(CLI::IsMember({"auto", "arrivals", "full"}))->capture_default_str();
  cmd->add_option("--max-queue", opt->max_queue,
                  "requests waiting for the engine; more are refused at once (HTTP 503, gRPC UNAVAILABLE)")
      ->check(kPositive)->capture_default_str();
  cmd->add_option("--max-request-atoms", opt->max_request_atoms, "atoms of one request (COORDS rows)")
      ->check(kPositive)->capture_default_str();
  cmd->add_option("--max-heads", opt->max_heads, "heads of one request")
      ->check(kPositive)->capture_default_str();
  cmd->add_option("--max-head-dim", opt->max_head_dim, "head dimension of one request")
      ->check(kPositive)->capture_default_str();
  cmd->add_option("--max-body-mb", *body_mb, "largest request body (HTTP) or message (gRPC), MiB")
      ->check(kPositive)->capture_default_str();
  cmd->add_option("--timeout-ms", opt->default_timeout_ms,
                  "deadline of requests that give none (0: none). Requests set theirs with the "
                  "'timeout' parameter (microseconds), the HTTP header Request-Timeout-Ms or a gRPC deadline")
      ->check(kNonNegative)->capture_default_str();
  cmd->add_option("--api-key", opt->api_key,
                  "require this key (Authorization: Bearer KEY, X-API-Key, or gRPC metadata) on every "
                  "endpoint but /v2/health/* and gRPC ServerLive/ServerReady; default: env PROTATTN_API_KEY");
  cmd->add_option("--log-level", opt->log_level, "debug, info, warn, error, off (JSON lines on stderr)")
      ->capture_default_str();
  cmd->callback([opt, body_mb] {
    if (opt->api_key.empty())
      if (const char* k = std::getenv("PROTATTN_API_KEY")) opt->api_key = k;
    opt->max_body_bytes = static_cast<std::size_t>(*body_mb * (1 << 20));
    const int rc = server::run(*opt);
    if (rc != 0) throw Error(fmt::format("server stopped with status {}", rc));
  });
}

}  // namespace protattn::cli
