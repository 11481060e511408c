// protattn server: the `atom_encoder` model: request tensors in, a Job out, one batched forward.
#pragma once
#include <memory>
#include <vector>

#include "attention_model.hpp"
#include "common.hpp"
#include "job.hpp"
#include "model_repo.hpp"
#include "protattn/model.hpp"

namespace protattn::server {

// Checks names, datatypes, shapes and byte counts before allocating anything, then the values:
// coordinates (NaN, |x| > 1e5) and atomic numbers (0..118), so that a bad request never reaches
// the batch (where it would fail its neighbours). Throws ServeError(invalid_argument).
std::unique_ptr<Job> prepare_encoder(const ModelSpec& model, const InferCall& call,
                                     const RequestLimits& limits);

// Host time of the parts of one encoder batch, in seconds (the batch's debug log line).
struct EncoderBatchTimes {
  double layouts = 0;  // the plan's layouts (none when every job brought its own)
  double plan = 0;     // the rest of the plan: the backend's (attention plan, buffers, uploads)
  double launch = 0;   // run: the forward's launches (the whole forward on the CPU)
  double finish = 0;   // fetch: waiting for the device and copying the answers out
};

// One forward of the whole batch (plan, run, fetch) on the inference thread; fills each job's
// embedding. Throws what AtomEncoder throws.
EncoderBatchTimes run_encoder_batch(AtomEncoder& encoder, std::vector<std::shared_ptr<Job>>& batch, void* stream = nullptr);

// EMBEDDING FP16 [N, C], request atom order; an output with a shared-memory span (`spans`, one
// per wanted output or none) is written there straight from the job, without a copy in between.
std::vector<OutputTensor> finish_encoder(Job& job, const std::vector<std::string>& wanted,
                                         const std::vector<ShmSpan>& spans);

}  // namespace protattn::server
