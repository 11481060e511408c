// protattn engine interface: dtypes, problem shapes, plan sizes, the engine registry and run_host.
#include "protattn/engine.hpp"

#include <cmath>

#include "cpu/cpu_engine.hpp"
#include "engine/factories.hpp"
#include "protattn/error.hpp"

namespace protattn {

std::size_t dtype_size(DType t) {
  switch (t) {
    case DType::f32: return 4;
    case DType::f16: return 2;
    case DType::bf16: return 2;
  }
  throw Error("dtype_size: invalid dtype");
}

const char* to_string(DType t) {
  switch (t) {
    case DType::f32: return "fp32";
    case DType::f16: return "fp16";
    case DType::bf16: return "bf16";
  }
  return "invalid";
}

DType parse_dtype(const std::string& s) {
  if (s == "fp32" || s == "f32" || s == "float32") return DType::f32;
  if (s == "fp16" || s == "f16" || s == "float16") return DType::f16;
  if (s == "bf16" || s == "bfloat16") return DType::bf16;
  throw Error("unknown dtype '" + s + "' (valid: fp32, fp16, bf16)");
}

float ProblemShape::effective_scale() const {
  if (scale != 0) return scale;
  return static_cast<float>(1.0 / std::sqrt(static_cast<double>(dim)));
}

std::int64_t Plan::nnz_blocks() const {
  std::int64_t nnz = 0;
  for (const BlockLayout* l : layouts) nnz += l->nnz();
  return nnz;
}

double Plan::flops() const {
  // Two GEMMs (Q K^T and P V) of 2 * tile * tile * dim FLOPs each per kept block and head.
  constexpr double kFlopsPerMac = 2.0, kGemmsPerBlock = 2.0;
  double total = 0;
  for (const BlockLayout* l : layouts)
    total += static_cast<double>(l->nnz()) * l->tile * l->tile;
  return kFlopsPerMac * kGemmsPerBlock * total * shape.dim * shape.heads;
}

std::vector<std::string> engine_names() {
  std::vector<std::string> names{"cpu"};
#ifdef PROTATTN_HAVE_FUSED
  names.emplace_back("fused");
#endif
#ifdef PROTATTN_HAVE_GROUPED
  names.emplace_back("grouped");
#endif
  return names;
}

bool engine_reads_rows_out(const std::string& name) { return name == "fused"; }

std::unique_ptr<Engine> make_engine(const std::string& name, const EngineOptions& opt) {
  if (name == "cpu") return make_cpu_engine(opt);
#ifdef PROTATTN_HAVE_FUSED
  if (name == "fused") return make_fused_engine(opt);
#endif
#ifdef PROTATTN_HAVE_GROUPED
  if (name == "grouped") return make_grouped_engine(opt);
#endif
  std::string list;
  for (const std::string& n : engine_names()) list += (list.empty() ? "" : ", ") + n;
  const bool known = name == "fused" || name == "grouped";
  throw Error("engine '" + name + "' " + (known ? "is not compiled into this build" : "is unknown") +
              " (available: " + list + ")");
}

void run_host(Engine& engine, const Plan& plan, const RunArgs& host) {
  if (!engine.on_device()) {
    engine.run(plan, host);
    return;
  }
#ifdef PROTATTN_HAVE_CUDA
  run_host_on_device(engine, plan, host);
#else
  throw Error(std::string("engine '") + engine.name() + "' runs on a device, but this build has no CUDA");
#endif
}

}  // namespace protattn
