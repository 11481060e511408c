// protattn server: one accepted inference request on its way through the batcher.
#pragma once
#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "common.hpp"
#include "model_repo.hpp"
#include "protattn/layout.hpp"

namespace protattn::server {

// Made by a network thread (inputs permuted into the layout's order), run by the inference
// thread as part of a batch, read back by the network thread. The network thread and the
// inference thread touch the buffers in turn: never at once (complete() hands them over).
struct Job {
  std::string id;
  const ModelSpec* model = nullptr;
  std::int32_t n = 0;                   // atoms
  // attention: Q/K/V permuted by the network thread, O (and LSE) from the inference thread.
  int heads = 0, dim = 0;
  BlockLayout layout;                   // built from COORDS; perm maps new position -> request row
  std::vector<std::uint16_t> q, k, v;   // (heads, n, dim) fp16, layout order
  std::vector<std::uint16_t> o;         // (heads, n, dim) fp16, layout order
  std::vector<float> lse;               // (heads, n), layout order; empty unless asked for
  bool want_lse = false;
  // atom_encoder: checked inputs in request order; the AtomEncoder builds the layout itself.
  std::vector<float> coords;            // (n, 3)
  std::vector<std::int32_t> elements;   // (n)
  std::vector<std::uint16_t> embedding; // (n, channels) fp16, request order
  // atom_encoder whose one output is in a CUDA-registered shared-memory span: the inference
  // thread has the embedding copied there from the device (out_written) instead of into
  // `embedding`. out_mapping keeps the region mapped until then. out_claim: 0 nobody yet, 1 the
  // inference thread copies, 2 the network thread gave the request up first (no copy then).
  std::uint8_t* out_dest = nullptr;
  std::shared_ptr<void> out_mapping;
  std::atomic<int> out_claim{0};
  bool out_written = false;
  Clock::time_point enqueued{};
  Clock::time_point deadline = Clock::time_point::max();
  std::atomic<bool> abandoned{false};   // the client left or the deadline passed: skip it

  // Filled by the inference thread before complete().
  Status status;
  double queue_seconds = 0, compute_seconds = 0;
  int batch_requests = 0;

  void complete(Status s);
  bool wait_until(Clock::time_point t);  // true once complete
  bool done() const;

 private:
  mutable std::mutex m_;
  std::condition_variable cv_;
  bool done_ = false;
};

}  // namespace protattn::server
