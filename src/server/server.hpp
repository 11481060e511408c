// protattn server: the options of `protattn serve` and the entry point that serves until SIGTERM.
#pragma once
#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

namespace protattn::server {

struct Options {
  std::string model_repository;      // folder: one sub-folder per model with its config.json
  std::string host = "127.0.0.1";    // address both protocols bind to
  int http_port = 8000;              // -1: no HTTP
  int grpc_port = 8001;              // -1: no gRPC
  // Each open HTTP connection and each gRPC call in flight holds a network thread while it
  // waits for the engine, so these bound connections and calls, not work: the bounded queue
  // (max_queue) is what answers 503/UNAVAILABLE under load.
  int http_threads = 512;            // HTTP connections served at once; threads start on demand
  int grpc_threads = 0;              // gRPC calls at once (0: max_queue + max_batch_requests + 16)
  std::string engine = "cpu";        // engine of the inference thread
  int engine_threads = 0;            // cpu engine workers (0: all cores)
  int device = 0;                    // CUDA device of device engines
  int device_threads = 0;            // device engines without `devices`: inference threads on `device` (0: kDeviceThreads)
  std::vector<int> devices;          // device engines: one inference thread per device (overrides device)
  int replicas = 1;                  // cpu engine: inference threads, each with engine_threads workers
  std::int64_t max_batch_atoms = 65536;   // atoms of one ragged batch (one engine run)
  int max_batch_requests = 64;            // requests of one batch
  double max_queue_delay_ms = 0.0;        // the oldest request waits at most this for company (0: never)
  std::string batch_wait = "auto";        // arrivals: wait only while requests are being prepared;
                                          // full: always; auto: arrivals (measured best on CPU and GPU)
  int max_queue = 64;                     // requests waiting for the engine; past it: 503
  std::string gpu_wait = "auto";          // GPU engines: how an inference thread waits for its GPU
  std::int64_t max_request_atoms = 100000;
  int max_heads = 64;
  int max_head_dim = 256;
  std::size_t max_body_bytes = std::size_t{512} << 20;
  double default_timeout_ms = 0;     // deadline of requests that give none (0: none)
  std::string api_key;               // empty: no key; else required but for health endpoints
  bool allow_shared_memory = false;  // clients may register system shared-memory regions
  std::string log_level = "info";    // debug, info, warn, error, off
};

// Loads the repository, starts the inference thread and the listeners, serves until SIGTERM or
// SIGINT, then drains: stops accepting, answers what was accepted, stops. Returns the exit code
// (0 after a clean drain); never calls exit(). Throws protattn::Error on a bad configuration.
int run(const Options& opt);

// Inference threads a GPU engine runs on --device when neither --devices nor --device-threads
// says: while one thread plans a batch on the host, another's kernels run. On an H200 serving
// encoder_w1 on 4,096 atoms: two threads 2,801 infer/s against 1,536 for one (an older build,
// bench/results/2026-11-30-h200-d27d765); four and six within a few percent of each other at
// 99734a9 (19,764 and 20,363 infer/s at 48 in flight, same run, -99734a9-serve).
inline constexpr int kDeviceThreads = 4;

// The device of each inference thread `opt` asks for: --devices as given; else one per cpu
// replica (numbered 0..N-1, which the cpu engine ignores), or --device-threads (kDeviceThreads)
// threads on the one --device of a GPU engine.
std::vector<int> inference_devices(const Options& opt);

// The gRPC thread budget `opt` asks for: grpc_threads, or when 0 enough for every call the
// batcher can hold (max_queue waiting + max_batch_requests running) plus health and metadata.
int grpc_thread_budget(const Options& opt);

}  // namespace protattn::server
