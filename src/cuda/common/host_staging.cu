// protattn CUDA: the per-thread page-locked staging buffer and the copies through it.
#include "cuda/common/host_staging.hpp"

#include <algorithm>
#include <atomic>
#include <cstring>

#include "common/parallel.hpp"
#include "cuda/common/cuda_check.hpp"
#include "protattn/error.hpp"

namespace protattn::cuda {
namespace {

struct Staging {
  std::uint8_t* ptr = nullptr;
  std::size_t bytes = 0;
  ~Staging() {
    if (ptr) cudaFreeHost(ptr);  // at process exit the runtime may already be gone: ignore errors
  }
};

thread_local Staging t_staging;
std::atomic<std::size_t> g_limit{0};  // 0: kStagingMaxBytes

// This thread's UploadGroup: open, and the staged bytes whose copies on `stream` may be in flight.
struct Group {
  bool open = false;
  std::size_t used = 0;
  cudaStream_t stream = nullptr;
};
thread_local Group t_group;

cudaStream_t or_per_thread(cudaStream_t s) { return s ? s : cudaStreamPerThread; }

// memcpy, a large one (a plan's 1M-atom layout stages 7.6 MB) in parts on the worker pool.
void copy_bytes(std::uint8_t* dst, const std::uint8_t* src, std::size_t n) {
  constexpr std::size_t kBytesPerThread = 1 << 20;
  detail::parallel_chunks(n, detail::resolve_threads(0, n, kBytesPerThread),
                          [&](int, std::size_t a, std::size_t z) { std::memcpy(dst + a, src + a, z - a); });
}

// Waits for the group's copies in flight, if any (the staging buffer is then free).
void settle_group() {
  Group& g = t_group;
  if (g.used == 0) return;
  g.used = 0;
  PROTATTN_CUDA_CHECK(cudaStreamSynchronize(g.stream));
}

}  // namespace

std::size_t staging_limit() {
  const std::size_t v = g_limit.load(std::memory_order_relaxed);
  return v ? v : kStagingMaxBytes;
}

void set_staging_limit(std::size_t bytes) { g_limit.store(bytes, std::memory_order_relaxed); }

std::uint8_t* host_staging(std::size_t bytes, std::size_t& got) {
  const std::size_t limit = staging_limit();
  const std::size_t want = std::clamp<std::size_t>(bytes, 1, limit);
  Staging& s = t_staging;
  if (s.bytes < want) {
    // Grow to at least twice the old size, so that a rising load reallocates a few times only.
    const std::size_t grown = std::min(limit, std::max(want, 2 * s.bytes));
    if (s.ptr) PROTATTN_CUDA_CHECK(cudaFreeHost(s.ptr));
    s.ptr = nullptr;
    s.bytes = 0;
    void* p = nullptr;
    PROTATTN_CUDA_CHECK(cudaHostAlloc(&p, grown, cudaHostAllocPortable));
    s.ptr = static_cast<std::uint8_t*>(p);
    s.bytes = grown;
  }
  got = std::min(s.bytes, limit);
  return s.ptr;
}

void Uploads::commit(cudaStream_t stream_in) {
  const cudaStream_t stream = or_per_thread(stream_in);
  std::size_t total = 0;
  for (const Part& p : parts_) total += p.bytes;
  if (total == 0) return;
  Group& g = t_group;
  // In a group, pack after the copies still in flight when they are on this stream and the
  // buffer holds both (growing it would free memory they read); else wait for them first.
  if (g.used > 0 && (g.stream != stream || g.used + total > std::min(t_staging.bytes, staging_limit()))) settle_group();
  std::size_t cap = 0;
  std::uint8_t* stage = host_staging(g.used + total, cap);
  std::size_t used = g.used;
  for (const Part& p : parts_) {
    for (std::size_t done = 0; done < p.bytes;) {
      if (used == cap) {  // full: wait for its copies before packing it again
        PROTATTN_CUDA_CHECK(cudaStreamSynchronize(stream));
        used = 0;
      }
      const std::size_t k = std::min(p.bytes - done, cap - used);
      copy_bytes(stage + used, p.src + done, k);
      PROTATTN_CUDA_CHECK(cudaMemcpyAsync(p.dst + done, stage + used, k, cudaMemcpyHostToDevice, stream));
      used += k;
      done += k;
    }
  }
  parts_.clear();
  if (g.open) {
    g.used = used;
    g.stream = stream;
    return;
  }
  PROTATTN_CUDA_CHECK(cudaStreamSynchronize(stream));
}

UploadGroup::UploadGroup() {
  if (t_group.open) throw Error("UploadGroup: one is already open on this thread");
  t_group = Group{true, 0, nullptr};
}

UploadGroup::~UploadGroup() {
  Group& g = t_group;
  if (g.used > 0) cudaStreamSynchronize(g.stream);  // only after an exception: finish() waited otherwise
  g = Group{};
}

void UploadGroup::finish() {
  settle_group();
  t_group.open = false;
}

void download(const void* src_v, std::size_t bytes, cudaStream_t stream,
              const std::function<void(std::size_t, const std::uint8_t*, std::size_t)>& consume) {
  settle_group();  // the staging buffer is reused from its start
  if (bytes == 0) {
    PROTATTN_CUDA_CHECK(cudaStreamSynchronize(stream));
    return;
  }
  std::size_t cap = 0;
  std::uint8_t* stage = host_staging(bytes, cap);
  const auto* src = static_cast<const std::uint8_t*>(src_v);
  for (std::size_t off = 0; off < bytes;) {
    const std::size_t k = std::min(cap, bytes - off);
    PROTATTN_CUDA_CHECK(cudaMemcpyAsync(stage, src + off, k, cudaMemcpyDeviceToHost, stream));
    PROTATTN_CUDA_CHECK(cudaStreamSynchronize(stream));
    consume(off, stage, k);
    off += k;
  }
}

}  // namespace protattn::cuda
