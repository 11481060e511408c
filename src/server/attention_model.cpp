// protattn server: validation, layout and permutation of `attention` requests and their outputs.
#include "attention_model.hpp"

#include <cstring>
#include <string>

#include "protattn/error.hpp"
#include "protattn/structure.hpp"

namespace protattn::server {

namespace {

void check_bytes(const TensorView& t, std::int64_t elements, std::size_t elem) {
  const std::size_t want = static_cast<std::size_t>(elements) * elem;
  if (t.size != want)
    throw invalid("input '" + t.name + "': " + std::to_string(t.size) + " bytes of data for shape " +
                  shape_string(t.shape) + " " + t.datatype + " (expected " + std::to_string(want) +
                  ")");
}

void check_dtype(const TensorView& t, const char* want) {
  if (t.datatype != want)
    throw invalid("input '" + t.name + "': datatype " + t.datatype + ", expected " + want);
}

// Rows of a (heads, n, dim) fp16 tensor gathered into layout order: row p <- request row perm[p].
void gather_rows(const TensorView& t, const std::vector<std::int32_t>& perm, int heads, int dim,
                 std::vector<std::uint16_t>& out) {
  const std::size_t n = perm.size(), row = static_cast<std::size_t>(dim) * 2;
  out.resize(static_cast<std::size_t>(heads) * n * dim);
  auto* dst = reinterpret_cast<std::uint8_t*>(out.data());
  for (int h = 0; h < heads; ++h) {
    const std::uint8_t* src = t.data + static_cast<std::size_t>(h) * n * row;
    std::uint8_t* d = dst + static_cast<std::size_t>(h) * n * row;
    for (std::size_t p = 0; p < n; ++p) std::memcpy(d + p * row, src + perm[p] * row, row);
  }
}

}  // namespace

std::unique_ptr<Job> prepare_attention(const ModelSpec& model, const InferCall& call,
                                       const RequestLimits& limits) {
  for (const auto& t : call.inputs)
    if (!model.input(t.name))
      throw invalid("unknown input '" + t.name + "' (model '" + model.name +
                    "' takes COORDS, Q, K, V)");
  bool want_lse = false;
  for (const auto& o : call.outputs) {
    if (!model.output(o)) throw invalid("unknown output '" + o + "' (model has O, LSE)");
    if (o == "LSE") want_lse = true;
  }

  const TensorView& coords = find_input(call, "COORDS");
  check_dtype(coords, "FP32");
  if (coords.shape.size() != 2 || coords.shape[1] != 3)
    throw invalid("input 'COORDS': shape " + shape_string(coords.shape) + ", expected [N,3]");
  const std::int64_t n = coords.shape[0];
  if (n < 1 || n > limits.max_atoms)
    throw invalid("input 'COORDS': " + std::to_string(n) + " atoms, allowed 1.." +
                  std::to_string(limits.max_atoms));
  check_bytes(coords, n * 3, 4);

  const TensorView* qkv[3] = {&find_input(call, "Q"), &find_input(call, "K"),
                              &find_input(call, "V")};
  for (const TensorView* t : qkv) {
    check_dtype(*t, "FP16");
    if (t->shape.size() != 3 || t->shape[1] != n)
      throw invalid("input '" + t->name + "': shape " + shape_string(t->shape) +
                    ", expected [H," + std::to_string(n) + ",d] (N from COORDS)");
    if (t->shape != qkv[0]->shape)
      throw invalid("input '" + t->name + "': shape " + shape_string(t->shape) +
                    " differs from Q's " + shape_string(qkv[0]->shape));
  }
  const std::int64_t heads = qkv[0]->shape[0], dim = qkv[0]->shape[2];
  if (heads < 1 || heads > limits.max_heads)
    throw invalid("input 'Q': " + std::to_string(heads) + " heads, allowed 1.." +
                  std::to_string(limits.max_heads));
  if (dim < 1 || dim > limits.max_head_dim)
    throw invalid("input 'Q': head dim " + std::to_string(dim) + ", allowed 1.." +
                  std::to_string(limits.max_head_dim));
  for (const TensorView* t : qkv) check_bytes(*t, heads * n * dim, 2);

  std::vector<float> xyz(static_cast<std::size_t>(n) * 3);
  std::memcpy(xyz.data(), coords.data, xyz.size() * sizeof(float));
  auto job = std::make_unique<Job>();
  try {
    validate_coords(xyz.data(), static_cast<std::size_t>(n), "input 'COORDS'");
    job->layout = build_cutoff_layout(xyz.data(), static_cast<std::size_t>(n), model.layout);
  } catch (const Error& e) {
    throw invalid(e.what());
  }
  job->model = &model;
  job->heads = static_cast<int>(heads);
  job->dim = static_cast<int>(dim);
  job->n = static_cast<std::int32_t>(n);
  job->want_lse = want_lse;
  job->deadline = call.deadline;
  gather_rows(*qkv[0], job->layout.perm, job->heads, job->dim, job->q);
  gather_rows(*qkv[1], job->layout.perm, job->heads, job->dim, job->k);
  gather_rows(*qkv[2], job->layout.perm, job->heads, job->dim, job->v);
  return job;
}

std::vector<OutputTensor> finish_attention(const Job& job, const std::vector<std::string>& wanted) {
  const std::size_t n = static_cast<std::size_t>(job.n), dim = static_cast<std::size_t>(job.dim);
  const auto& perm = job.layout.perm;
  auto make_o = [&] {
    OutputTensor o{"O", "FP16", {job.heads, job.n, job.dim}, {}, {}};
    o.data.resize(static_cast<std::size_t>(job.heads) * n * dim * 2);
    const std::size_t row = dim * 2;
    const auto* src = reinterpret_cast<const std::uint8_t*>(job.o.data());
    for (int h = 0; h < job.heads; ++h) {
      const std::size_t base = static_cast<std::size_t>(h) * n * row;
      for (std::size_t p = 0; p < n; ++p)
        std::memcpy(o.data.data() + base + perm[p] * row, src + base + p * row, row);
    }
    return o;
  };
  auto make_lse = [&] {
    OutputTensor o{"LSE", "FP32", {job.heads, job.n}, {}, {}};
    o.data.resize(static_cast<std::size_t>(job.heads) * n * 4);
    auto* dst = reinterpret_cast<float*>(o.data.data());
    for (int h = 0; h < job.heads; ++h)
      for (std::size_t p = 0; p < n; ++p) dst[h * n + perm[p]] = job.lse[h * n + p];
    return o;
  };
  std::vector<OutputTensor> out;
  if (wanted.empty()) {
    out.push_back(make_o());
    return out;
  }
  for (const auto& w : wanted) out.push_back(w == "LSE" ? make_lse() : make_o());
  return out;
}

}  // namespace protattn::server
