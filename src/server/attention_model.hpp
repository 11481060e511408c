// protattn server: the `attention` model: request tensors in, a Job out, and back to tensors.
#pragma once
#include <memory>
#include <vector>

#include "common.hpp"
#include "job.hpp"
#include "model_repo.hpp"

namespace protattn::server {

struct RequestLimits {
  std::int64_t max_atoms = 100000;
  int max_heads = 64;
  int max_head_dim = 256;
};

// Checks names, datatypes, shapes and byte counts before allocating anything, checks the
// coordinates, builds the layout from COORDS and permutes Q, K, V into its order. Throws
// ServeError(invalid_argument) with a message naming the input and the problem.
std::unique_ptr<Job> prepare_attention(const ModelSpec& model, const InferCall& call,
                                       const RequestLimits& limits);

// Outputs of a finished job in the request's atom order: O, and LSE when asked for.
std::vector<OutputTensor> finish_attention(const Job& job, const std::vector<std::string>& wanted);

}  // namespace protattn::server
