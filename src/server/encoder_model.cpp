// protattn server: validation of `atom_encoder` requests, the batched forward and its output.
#include "encoder_model.hpp"

#include <algorithm>
#include <cstring>
#include <utility>
#include <string>

#include "protattn/error.hpp"
#include "protattn/layout.hpp"
#include "protattn/structure.hpp"

namespace protattn::server {

namespace {

void check_input(const TensorView& t, const char* datatype, std::int64_t elements, std::size_t elem) {
  if (t.datatype != datatype)
    throw invalid("input '" + t.name + "': datatype " + t.datatype + ", expected " + datatype);
  const std::size_t want = static_cast<std::size_t>(elements) * elem;
  if (t.size != want)
    throw invalid("input '" + t.name + "': " + std::to_string(t.size) + " bytes of data for shape " +
                  shape_string(t.shape) + " " + t.datatype + " (expected " + std::to_string(want) + ")");
}

}  // namespace

std::unique_ptr<Job> prepare_encoder(const ModelSpec& model, const InferCall& call,
                                     const RequestLimits& limits) {
  for (const auto& t : call.inputs)
    if (!model.input(t.name))
      throw invalid("unknown input '" + t.name + "' (model '" + model.name + "' takes COORDS, ELEMENTS)");
  for (const auto& o : call.outputs)
    if (!model.output(o)) throw invalid("unknown output '" + o + "' (model has EMBEDDING)");

  const TensorView& coords = find_input(call, "COORDS");
  if (coords.shape.size() != 2 || coords.shape[1] != 3)
    throw invalid("input 'COORDS': shape " + shape_string(coords.shape) + ", expected [N,3]");
  const std::int64_t n = coords.shape[0];
  if (n < 1 || n > limits.max_atoms)
    throw invalid("input 'COORDS': " + std::to_string(n) + " atoms, allowed 1.." +
                  std::to_string(limits.max_atoms));
  check_input(coords, "FP32", n * 3, 4);
  const TensorView& elements = find_input(call, "ELEMENTS");
  if (elements.shape.size() != 1 || elements.shape[0] != n)
    throw invalid("input 'ELEMENTS': shape " + shape_string(elements.shape) + ", expected [" +
                  std::to_string(n) + "] (N from COORDS)");
  check_input(elements, "INT32", n, 4);

  auto job = std::make_unique<Job>();
  job->coords.resize(static_cast<std::size_t>(n) * 3);
  std::memcpy(job->coords.data(), coords.data, job->coords.size() * sizeof(float));
  job->elements.resize(static_cast<std::size_t>(n));
  std::memcpy(job->elements.data(), elements.data, job->elements.size() * sizeof(std::int32_t));
  for (std::size_t i = 0; i < job->elements.size(); ++i) {
    const std::int32_t z = job->elements[i];
    if (z < 0 || z > kMaxElement)
      throw invalid("input 'ELEMENTS': atom " + std::to_string(i) + " has atomic number " +
                    std::to_string(z) + ", allowed 0.." + std::to_string(kMaxElement) +
                    " (0: unknown element)");
  }
  try {
    validate_coords(job->coords.data(), static_cast<std::size_t>(n), "input 'COORDS'");
  } catch (const Error& e) {
    throw invalid(e.what());
  }
  // The layout is built here, on the network thread, as for the attention model: the
  // inference thread only plans and runs the batch.
  job->layout = build_cutoff_layout(job->coords.data(), static_cast<std::size_t>(n), model.layout);
  job->model = &model;
  job->n = static_cast<std::int32_t>(n);
  job->deadline = call.deadline;
  // One output, in a CUDA-registered shared-memory span it fits in: the device copies it there.
  // (Anything else, a span too small among them, takes the ordinary way, which reports it.)
  const std::size_t bytes = static_cast<std::size_t>(n) * model.encoder->config.channels * sizeof(std::uint16_t);
  if (call.output_spans.size() == 1 && call.output_spans[0].data && call.output_spans[0].pinned &&
      bytes <= call.output_spans[0].size) {
    job->out_dest = call.output_spans[0].data;
    job->out_mapping = call.output_spans[0].mapping;
  }
  return job;
}

EncoderBatchTimes run_encoder_batch(AtomEncoder& encoder, std::vector<std::shared_ptr<Job>>& batch, void* stream) {
  EncoderBatchTimes times;
  const auto t0 = Clock::now();
  std::vector<AtomInput> inputs;
  inputs.reserve(batch.size());
  // Each job's layout moves into the plan (the job does not need it after); its atomic numbers
  // were checked by prepare_encoder().
  for (const auto& j : batch) inputs.push_back({j->coords, j->elements, nullptr, &j->layout, true});
  auto plan = encoder.plan(inputs);
  const auto t1 = Clock::now();
  encoder.run(*plan, stream);
  const auto t2 = Clock::now();
  // Answers bound for registered shared memory go there from the device, unless the network
  // thread gave the request up before (claim 0 -> 1 here, 0 -> 2 there: exactly one wins).
  std::vector<void*> dests(batch.size(), nullptr);
  for (std::size_t b = 0; b < batch.size(); ++b) {
    Job& j = *batch[b];
    int free_claim = 0;
    if (j.out_dest && j.out_claim.compare_exchange_strong(free_claim, 1)) dests[b] = j.out_dest;
  }
  std::vector<Embedding> out = encoder.fetch(*plan, stream, dests);
  for (std::size_t b = 0; b < batch.size(); ++b) {
    if (dests[b])
      batch[b]->out_written = true;
    else
      batch[b]->embedding = std::move(out[b]);
  }
  times.layouts = plan->layouts_ms * 1e-3;
  times.plan = std::max(0.0, seconds(t1 - t0) - times.layouts);
  times.launch = seconds(t2 - t1);
  times.finish = seconds(Clock::now() - t2);
  return times;
}

std::vector<OutputTensor> finish_encoder(Job& job, const std::vector<std::string>& wanted,
                                         const std::vector<ShmSpan>& spans) {
  const int channels = job.model->encoder->config.channels;
  const std::size_t bytes = job.embedding.size() * sizeof(std::uint16_t);
  // Every requested name is EMBEDDING (prepare_encoder refused others).
  std::vector<OutputTensor> out(std::max<std::size_t>(wanted.size(), 1),
                                OutputTensor{"EMBEDDING", "FP16", {job.n, channels}, {}, {}});
  for (std::size_t i = 0; i < out.size(); ++i) {
    if (job.out_written && i == 0) {  // copied into spans[0] from the device already
      out[i].shm = spans[0].ref;
      out[i].shm.byte_size = static_cast<std::int64_t>(static_cast<std::size_t>(job.n) * channels * sizeof(std::uint16_t));
    } else if (i < spans.size() && spans[i].data) {
      write_output_to(out[i], spans[i], job.embedding.data(), bytes);
    } else {
      out[i].data.resize(bytes);
      std::memcpy(out[i].data.data(), job.embedding.data(), bytes);
    }
  }
  return out;
}

}  // namespace protattn::server
