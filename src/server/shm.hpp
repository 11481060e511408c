// protattn server: the system shared-memory extension of the inference protocol. A client on
// the same machine creates a POSIX shared-memory object, registers a region of it by name, and
// then names the region in an input's or a requested output's parameters instead of sending the
// bytes in the message: inputs are read from it and outputs written to it in place.
#pragma once
#include <cstddef>
#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

namespace protattn::server {

// Where a tensor lives when its parameters name a region: shared_memory_region,
// shared_memory_offset (optional, default 0) and shared_memory_byte_size.
struct ShmRef {
  std::string region;
  std::int64_t offset = 0;
  std::int64_t byte_size = 0;
};

// A mapped byte range of a registered region; the mapping stays valid while any span of it
// lives, even if the region is unregistered meanwhile.
struct ShmSpan {
  std::shared_ptr<void> mapping;
  std::uint8_t* data = nullptr;
  std::size_t size = 0;
  ShmRef ref;           // what named it
  bool pinned = false;  // the region is registered with CUDA: the GPU can copy into it directly
};

class ShmRegistry {
 public:
  struct Region {
    std::string name, key;
    std::uint64_t offset = 0, byte_size = 0;
  };

  // Maps [offset, offset + byte_size) of the shared-memory object `key` (shm_open) as `name`.
  // Throws ServeError (invalid_argument) when the name is taken or empty, the object cannot be
  // opened or is smaller than the range.
  void add(const std::string& name, const std::string& key, std::uint64_t offset, std::uint64_t byte_size);
  // Unregisters `name` (every region when empty); an unknown name is an error.
  void remove(const std::string& name);
  // The regions registered (one when `name` is given; unknown: an error), sorted by name.
  std::vector<Region> status(const std::string& name) const;
  // The bytes `ref` names, checked against its region (unknown region, range outside it: errors
  // that name `what`, the tensor).
  ShmSpan span(const ShmRef& ref, const std::string& what) const;
  // Regions added from now on are also registered with CUDA (page-locked, for every device), so
  // that a GPU engine copies answers into them directly; a region CUDA refuses is used as is.
  void pin_for_gpu(bool on) { pin_ = on; }

 private:
  struct Entry {
    Region region;
    std::shared_ptr<void> mapping;  // munmap'd when the last holder lets go
    std::uint8_t* base = nullptr;   // the region's first byte
    bool pinned = false;
  };
  bool pin_ = false;
  mutable std::mutex mu_;
  std::map<std::string, Entry> regions_;
};

}  // namespace protattn::server
