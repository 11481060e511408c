// protattn CUDA: how a host thread waits for the work on a stream.
#pragma once
#include <cuda_runtime.h>

namespace protattn::cuda {

// Microseconds between two queries of the polling wait.
inline constexpr int kPollMicros = 20;

// Returns once the work issued on `stream` so far has completed. poll false: cudaStreamSynchronize
// (it spins, yields or blocks as the device's schedule flag says). poll true: an event recorded on
// the stream is queried, the thread sleeping about kPollMicros between queries: a spin's latency
// to within a few tens of microseconds at a small part of its CPU, which matters when several
// inference threads wait on one GPU while others need the cores. The sleep is only that short
// when the thread's timer slack is (Linux: prctl PR_SET_TIMERSLACK; the server sets it).
// Throws Error on a CUDA error.
void stream_wait(cudaStream_t stream, bool poll);

}  // namespace protattn::cuda
