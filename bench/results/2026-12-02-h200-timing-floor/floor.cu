// The timing method's floor: an empty kernel timed as protattn bench times the engines (a 256 MB
// cudaMemsetAsync to flush the L2, an event, the launch, an event; median of 200), with and
// without dynamic shared memory, with and without the flush, one kernel or two (the second a
// programmatic dependent launch, as the split combine is).
#include <cuda_runtime.h>
#include <algorithm>
#include <cstdio>
#include <vector>

__global__ void empty_kernel(int* p) {
  extern __shared__ int sm[];
  if (p && threadIdx.x == 1023) sm[0] = p[0];  // never taken (p is null)
}
__global__ void empty_dependent(int* p) {
  asm volatile("griddepcontrol.wait;\n" ::: "memory");
  if (p) p[0] = 1;
}
__global__ void empty_primary(int* p) {
  extern __shared__ int sm[];
  asm volatile("griddepcontrol.launch_dependents;\n" ::: "memory");
  if (p && threadIdx.x == 1023) sm[0] = p[0];
}

#define CK(x) do { cudaError_t err_ = (x); if (err_ != cudaSuccess) { std::printf("%s: %s\n", #x, cudaGetErrorString(err_)); return 1; } } while (0)

int main() {
  cudaStream_t s;
  CK(cudaStreamCreateWithFlags(&s, cudaStreamNonBlocking));
  void* flush;
  CK(cudaMalloc(&flush, 256u << 20));
  CK(cudaFuncSetAttribute(empty_kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, 227 * 1024));
  CK(cudaFuncSetAttribute(empty_primary, cudaFuncAttributeMaxDynamicSharedMemorySize, 227 * 1024));
  const int iters = 200;
  std::vector<cudaEvent_t> ev(2 * iters);
  for (auto& e : ev) CK(cudaEventCreate(&e));
  struct Case { const char* name; int smem; bool flush; int grid; bool two; };
  const Case cases[] = {
      {"empty, 0 B smem, flush, 132 blocks", 0, true, 132, false},
      {"empty, 200 KB smem, flush, 132 blocks", 200 * 1024, true, 132, false},
      {"empty, 100 KB smem, flush, 264 blocks", 100 * 1024, true, 264, false},
      {"empty, 0 B smem, no flush, 132 blocks", 0, false, 132, false},
      {"empty, 200 KB smem, no flush, 132 blocks", 200 * 1024, false, 132, false},
      {"two (PDL), 100 KB smem, flush, 264 + 256 blocks", 100 * 1024, true, 264, true},
  };
  for (int rep = 0; rep < 2; ++rep)
    for (const Case& c : cases) {
      auto launch = [&] {
        if (!c.two) {
          empty_kernel<<<c.grid, 256, c.smem, s>>>(nullptr);
          return;
        }
        empty_primary<<<c.grid, 256, c.smem, s>>>(nullptr);
        cudaLaunchConfig_t cfg = {};
        cfg.gridDim = dim3(256);
        cfg.blockDim = dim3(256);
        cfg.stream = s;
        cudaLaunchAttribute at[1];
        at[0].id = cudaLaunchAttributeProgrammaticStreamSerialization;
        at[0].val.programmaticStreamSerializationAllowed = 1;
        cfg.attrs = at;
        cfg.numAttrs = 1;
        cudaLaunchKernelEx(&cfg, empty_dependent, (int*)nullptr);
      };
      for (int i = 0; i < 20; ++i) launch();
      for (int i = 0; i < iters; ++i) {
        if (c.flush) cudaMemsetAsync(flush, i & 0xff, 256u << 20, s);
        cudaEventRecord(ev[2 * i], s);
        launch();
        cudaEventRecord(ev[2 * i + 1], s);
      }
      CK(cudaStreamSynchronize(s));
      CK(cudaGetLastError());
      std::vector<float> ms(iters);
      for (int i = 0; i < iters; ++i) cudaEventElapsedTime(&ms[i], ev[2 * i], ev[2 * i + 1]);
      std::sort(ms.begin(), ms.end());
      std::printf("%-50s median %6.2f us  p10 %6.2f  p90 %6.2f\n", c.name, 1e3 * ms[iters / 2], 1e3 * ms[iters / 10],
                  1e3 * ms[9 * iters / 10]);
    }
  return 0;
}
