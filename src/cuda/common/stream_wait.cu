#include "cuda/common/stream_wait.hpp"

#include <chrono>
#include <thread>

#include "cuda/common/cuda_check.hpp"

namespace protattn::cuda {

namespace {

// One event per thread and device, created on first use and kept (recording and querying an
// event costs about a microsecond; creating one more).
class PollEvent {
 public:
  cudaEvent_t get() {
    int device = 0;
    PROTATTN_CUDA_CHECK(cudaGetDevice(&device));
    if (!event_ || device != device_) {
      release();
      PROTATTN_CUDA_CHECK(cudaEventCreateWithFlags(&event_, cudaEventDisableTiming));
      device_ = device;
    }
    return event_;
  }
  ~PollEvent() { release(); }

 private:
  void release() {
    if (event_) cudaEventDestroy(event_);  // at thread exit: nothing to report to
    event_ = nullptr;
  }
  cudaEvent_t event_ = nullptr;
  int device_ = -1;
};

}  // namespace

void stream_wait(cudaStream_t stream, bool poll) {
  if (!poll) {
    PROTATTN_CUDA_CHECK(cudaStreamSynchronize(stream));
    return;
  }
  thread_local PollEvent ev;
  const cudaEvent_t e = ev.get();
  PROTATTN_CUDA_CHECK(cudaEventRecord(e, stream));
  for (;;) {
    const cudaError_t st = cudaEventQuery(e);
    if (st == cudaSuccess) return;
    if (st != cudaErrorNotReady) PROTATTN_CUDA_CHECK(st);
    std::this_thread::sleep_for(std::chrono::microseconds(kPollMicros));
  }
}

}  // namespace protattn::cuda
