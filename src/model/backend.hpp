// The two implementations behind AtomEncoder: the CPU forward and the GPU forward (private).
#pragma once
#include <memory>
#include <vector>

#include "protattn/engine.hpp"
#include "protattn/model.hpp"

namespace protattn {

struct AtomEncoder::Backend {
  virtual ~Backend() = default;
  virtual const ModelConfig& config() const = 0;
  virtual Engine& engine() = 0;
  // Layouts and offsets are filled by AtomEncoder::plan before this is called.
  virtual std::unique_ptr<ForwardPlan> make_plan(std::vector<BlockLayout> layouts, std::vector<std::int64_t> offsets,
                                                 const std::vector<AtomInput>& batch) = 0;
  virtual void run(ForwardPlan& plan, void* stream) = 0;
  virtual void wait(void* stream) = 0;
  // dests: empty, or one per structure; a non-null one receives that structure's embedding
  // (n x channels fp16, input order) and its returned Embedding stays empty.
  virtual std::vector<Embedding> fetch(ForwardPlan& plan, void* stream, const std::vector<void*>& dests) = 0;
};

namespace model {

std::unique_ptr<AtomEncoder::Backend> make_cpu_backend(Model m, std::unique_ptr<Engine> engine, int threads);
#ifdef PROTATTN_MODEL_GPU
// poll: wait for the device by polling (EngineOptions::gpu_wait_poll).
std::unique_ptr<AtomEncoder::Backend> make_gpu_backend(Model m, std::unique_ptr<Engine> engine, int device, bool poll);
#endif

// Tensor names (docs/model.md lists them all).
std::string layer_name(int layer, const char* part);

}  // namespace model
}  // namespace protattn
