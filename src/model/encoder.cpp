// AtomEncoder: input checks, one cutoff layout per structure, then the CPU or GPU backend.
#include <chrono>
#include <limits>
#include <string>

#include "common/parallel.hpp"
#include "model/backend.hpp"
#include "protattn/engine.hpp"
#include "protattn/error.hpp"
#include "protattn/structure.hpp"

namespace protattn {
namespace {
// Atoms per thread below which building a batch's layouts on more threads does not pay.
constexpr std::size_t kAtomsPerLayoutThread = 16384;
}  // namespace

AtomEncoder::AtomEncoder(Model model, const std::string& engine, const EngineOptions& opt) : layout_threads_(opt.threads) {
  validate_config(model.config);
  for (const auto& [name, shape] : expected_tensors(model.config)) {
    const Tensor& t = model.at(name);
    if (t.shape != shape) throw Error("AtomEncoder: tensor '" + name + "' has the wrong shape for the config");
  }
  std::unique_ptr<Engine> e = make_engine(engine, opt);
  if (e->on_device()) {
#ifdef PROTATTN_MODEL_GPU
    backend_ = model::make_gpu_backend(std::move(model), std::move(e), opt.device, opt.gpu_wait_poll);
#else
    throw Error("AtomEncoder: engine '" + engine + "' runs on a device but this build has no GPU forward of the model");
#endif
  } else {
    backend_ = model::make_cpu_backend(std::move(model), std::move(e), opt.threads);
  }
}

AtomEncoder::~AtomEncoder() = default;

const ModelConfig& AtomEncoder::config() const { return backend_->config(); }
const char* AtomEncoder::engine_name() const { return backend_->engine().name(); }
bool AtomEncoder::on_device() const { return backend_->engine().on_device(); }

std::unique_ptr<ForwardPlan> AtomEncoder::plan(const std::vector<AtomInput>& batch) {
  if (batch.empty()) throw Error("atom_encoder: empty batch");
  LayoutOptions opt = layout_options(config());
  // Rows out of reach are marked with each layout, on the threads that build them, instead of one
  // layout after another in the attention plan.
  opt.mark_rows_out = engine_reads_rows_out(engine_name());
  std::vector<std::int64_t> offsets{0};
  for (std::size_t b = 0; b < batch.size(); ++b) {
    const AtomInput& in = batch[b];
    const std::string what = "atom_encoder: structure " + std::to_string(b);
    const std::size_t n = in.elements.size();
    if (n == 0) throw Error(what + " has no atoms");
    if (n > kMaxAtoms) throw Error(what + " has " + std::to_string(n) + " atoms (most accepted: " + std::to_string(kMaxAtoms) + ")");
    if (in.coords.size() != 3 * n)
      throw Error(what + ": " + std::to_string(in.coords.size()) + " coordinates for " + std::to_string(n) + " elements (expected [n, 3])");
    for (std::size_t i = 0; i < n && !in.elements_checked; ++i)
      if (in.elements[i] < 0 || in.elements[i] > kMaxElement)
        throw Error(what + ": atom " + std::to_string(i) + " has atomic number " + std::to_string(in.elements[i]) +
                    " (valid: 0.." + std::to_string(kMaxElement) + ")");
    // The coordinates enter the forward only through the layout: a given one was built (and the
    // coordinates checked) by its maker, so they are checked here only when plan() builds it.
    if (!in.layout && !in.layout_to_take) validate_coords(in.coords.data(), n, what);
    if (in.layout && in.layout_to_take) throw Error(what + ": give its layout as layout or layout_to_take, not both");
    if (const BlockLayout* given = in.layout_to_take ? in.layout_to_take : in.layout) {
      const BlockLayout& l = *given;
      if (static_cast<std::size_t>(l.n) != n || l.tile != opt.tile || l.cutoff != opt.cutoff || l.mask != opt.mask ||
          l.order != opt.order || l.builder != "cutoff")
        throw Error(what + ": the layout given was not built by layout_options(config) for its " + std::to_string(n) +
                    " atoms (n " + std::to_string(l.n) + ", tile " + std::to_string(l.tile) + ", builder " + l.builder + ")");
    }
    offsets.push_back(offsets.back() + static_cast<std::int64_t>(n));
  }
  if (offsets.back() > std::numeric_limits<std::int32_t>::max())
    throw Error("atom_encoder: the batch holds " + std::to_string(offsets.back()) + " atoms (most: " +
                std::to_string(std::numeric_limits<std::int32_t>::max()) + "); split it");
  // The layouts the caller did not give, built on several threads (each alone: the same layouts
  // whatever the count), structures shared out by atoms; given ones are copied or taken.
  const auto t0 = std::chrono::steady_clock::now();
  std::vector<BlockLayout> layouts(batch.size());
  std::int64_t atoms_to_build = 0;
  for (std::size_t b = 0; b < batch.size(); ++b) {
    const AtomInput& in = batch[b];
    if (in.layout_to_take) {
      layouts[b] = std::move(*in.layout_to_take);
      *in.layout_to_take = BlockLayout{};
    } else if (!in.layout) {
      atoms_to_build += offsets[b + 1] - offsets[b];
    }
  }
  const int parts = atoms_to_build == 0 ? 1
                    : detail::resolve_threads(layout_threads_, static_cast<std::size_t>(atoms_to_build), kAtomsPerLayoutThread);
  const std::vector<std::size_t> first = detail::weighted_ranges(offsets.data(), batch.size(), parts);
  std::vector<std::exception_ptr> errors(static_cast<std::size_t>(parts));
  detail::parallel_ranges(first, [&](int part, std::size_t begin, std::size_t end) {
    try {
      for (std::size_t b = begin; b < end; ++b) {
        const AtomInput& in = batch[b];
        if (in.layout_to_take) continue;  // taken above
        layouts[b] = in.layout ? *in.layout : build_cutoff_layout(in.coords.data(), in.elements.size(), opt);
      }
    } catch (...) {
      errors[static_cast<std::size_t>(part)] = std::current_exception();
    }
  });
  for (const auto& e : errors)
    if (e) std::rethrow_exception(e);
  const double layouts_ms = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
  auto p = backend_->make_plan(std::move(layouts), std::move(offsets), batch);
  p->layouts_ms = layouts_ms;
  return p;
}

void AtomEncoder::run(ForwardPlan& plan, void* stream) { backend_->run(plan, stream); }

void AtomEncoder::wait(void* stream) { backend_->wait(stream); }

std::vector<Embedding> AtomEncoder::fetch(ForwardPlan& plan, void* stream, const std::vector<void*>& dests) {
  if (!dests.empty() && dests.size() != plan.layouts.size())
    throw Error("atom_encoder: fetch got " + std::to_string(dests.size()) + " destinations for " +
                std::to_string(plan.layouts.size()) + " structures");
  return backend_->fetch(plan, stream, dests);
}

std::vector<Embedding> AtomEncoder::forward(const std::vector<AtomInput>& batch) {
  auto p = plan(batch);
  run(*p, nullptr);
  return fetch(*p, nullptr);
}

}  // namespace protattn
