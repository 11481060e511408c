// protattn CUDA: run a device engine on host buffers (copy in, run, wait, copy out).
#include <cuda_runtime.h>

#include "cuda/common/cuda_check.hpp"
#include "cuda/common/device_buffer.hpp"
#include "engine/factories.hpp"

namespace protattn {

void run_host_on_device(Engine& engine, const Plan& plan, const RunArgs& host) {
  const std::size_t elems = static_cast<std::size_t>(plan.shape.heads) * plan.total_n() * plan.shape.dim;
  const std::size_t bytes = elems * dtype_size(plan.shape.dtype);
  const std::size_t lse_bytes = static_cast<std::size_t>(plan.shape.heads) * plan.total_n() * sizeof(float);
  cuda::DeviceBuffer q(bytes), k(bytes), v(bytes), o(bytes), lse(lse_bytes);
  PROTATTN_CUDA_CHECK(cudaMemcpy(q.get(), host.q, bytes, cudaMemcpyHostToDevice));
  PROTATTN_CUDA_CHECK(cudaMemcpy(k.get(), host.k, bytes, cudaMemcpyHostToDevice));
  PROTATTN_CUDA_CHECK(cudaMemcpy(v.get(), host.v, bytes, cudaMemcpyHostToDevice));
  RunArgs dev{q.get(), k.get(), v.get(), o.get(), host.lse ? lse.as<float>() : nullptr, nullptr};
  engine.run(plan, dev);
  PROTATTN_CUDA_CHECK(cudaDeviceSynchronize());
  PROTATTN_CUDA_CHECK(cudaMemcpy(host.o, o.get(), bytes, cudaMemcpyDeviceToHost));
  if (host.lse) PROTATTN_CUDA_CHECK(cudaMemcpy(host.lse, lse.get(), lse_bytes, cudaMemcpyDeviceToHost));
}

}  // namespace protattn
