// protattn CUDA: copies between host and device through a page-locked staging buffer.
//
// A copy from or to pageable host memory goes through the driver's own bounce buffer, one
// synchronous piece at a time; copies from page-locked memory are DMA at the link's rate, can be
// asynchronous, and a plan's many small uploads go out together. Each thread that copies gets
// one page-locked buffer, grown to what it needs up to kStagingMaxBytes and reused; larger
// transfers go through it in pieces. (On the lent machines the slow part of the encoder's fetch
// turned out to be first touches of fresh host pages, not the copy: see tools/main.cpp.)
#pragma once
#include <cuda_runtime.h>

#include <cstddef>
#include <cstdint>
#include <functional>
#include <vector>

#include "cuda/common/device_buffer.hpp"

namespace protattn::cuda {

// Most bytes one thread's staging buffer holds by default.
inline constexpr std::size_t kStagingMaxBytes = std::size_t{64} << 20;

// The limit in force: kStagingMaxBytes, or what set_staging_limit() set (0: back to the default).
// Tests set a small one to take the paths that copy in pieces.
std::size_t staging_limit();
void set_staging_limit(std::size_t bytes);

// This thread's page-locked buffer; `got` receives the bytes usable now, at least
// min(bytes, staging_limit()) and never more than the limit. Valid until this thread's next call
// (the caller waits for its copies first); freed when the thread ends.
std::uint8_t* host_staging(std::size_t bytes, std::size_t& got);

// Host-to-device uploads of one plan, staged together: add() sizes each destination buffer (on
// the current device) and records its source, which must stay alive until commit(); commit()
// packs the sources into the staging buffer (in several rounds when they exceed it), issues the
// copies on `stream` and waits for them.
class Uploads {
 public:
  template <typename T>
  void add(DeviceBuffer& dst, const std::vector<T>& host) {
    dst.resize(host.size() * sizeof(T));
    if (dst.bytes()) parts_.push_back({static_cast<std::uint8_t*>(dst.get()), reinterpret_cast<const std::uint8_t*>(host.data()), dst.bytes()});
  }
  // Null stream: this thread's default stream (cudaStreamPerThread).
  void commit(cudaStream_t stream = nullptr);

 private:
  struct Part {
    std::uint8_t* dst;
    const std::uint8_t* src;
    std::size_t bytes;
  };
  std::vector<Part> parts_;
};

// Makes this thread's Uploads::commit() calls, while it lives, issue their copies without waiting
// for them: each packs after the bytes still in flight, and finish() waits once for all (a
// commit on another stream, a full staging buffer or a download() waits first). For a plan made
// in parts, such as the model's and its attention engine's: one wait instead of one per part.
// Until finish() the uploaded buffers must not be read from another stream. Not nested.
class UploadGroup {
 public:
  UploadGroup();
  ~UploadGroup();  // waits too when finish() was not reached (an exception), errors ignored
  UploadGroup(const UploadGroup&) = delete;
  UploadGroup& operator=(const UploadGroup&) = delete;
  void finish();
};

// Device-to-host: `bytes` from `src` (device), after the work already queued on `stream` (null:
// the legacy default stream), through the staging buffer in pieces of at most staging_limit():
// consume(offset, data, n) is called for each piece in order, `data` valid during the call only.
void download(const void* src, std::size_t bytes, cudaStream_t stream,
              const std::function<void(std::size_t offset, const std::uint8_t* data, std::size_t n)>& consume);

}  // namespace protattn::cuda
