// protattn server: registered system shared-memory regions (shm_open + mmap).
#include "shm.hpp"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#ifdef PROTATTN_HAVE_CUDA
#include <cuda_runtime_api.h>
#endif

#include "common.hpp"

namespace protattn::server {

namespace {
// Most regions registered at once (each holds a mapping; clients that leak them hit this).
constexpr std::size_t kMaxRegions = 4096;
}  // namespace

void ShmRegistry::add(const std::string& name, const std::string& key, std::uint64_t offset,
                      std::uint64_t byte_size) {
  if (name.empty()) throw invalid("shared memory: the region needs a name");
  if (key.empty()) throw invalid("shared memory region '" + name + "': no key (the shm_open name)");
  if (byte_size == 0) throw invalid("shared memory region '" + name + "': byte_size must be positive");
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (regions_.count(name)) throw invalid("shared memory region '" + name + "' is already registered");
    if (regions_.size() >= kMaxRegions)
      throw invalid("shared memory: " + std::to_string(kMaxRegions) + " regions are registered already; unregister some");
  }
  const int fd = shm_open(key.c_str(), O_RDWR, 0);
  if (fd < 0)
    throw invalid("shared memory region '" + name + "': cannot open key '" + key + "': " + std::strerror(errno));
  struct stat st {};
  const int stat_rc = fstat(fd, &st);
  const std::uint64_t object_size = stat_rc == 0 ? static_cast<std::uint64_t>(st.st_size) : 0;
  if (stat_rc != 0 || offset > object_size || byte_size > object_size - offset) {
    close(fd);
    throw invalid("shared memory region '" + name + "': offset " + std::to_string(offset) + " + byte_size " +
                  std::to_string(byte_size) + " passes the end of key '" + key + "' (" +
                  std::to_string(object_size) + " bytes)");
  }
  // mmap wants a page-aligned offset: map from the page that holds the region's first byte.
  const auto page = static_cast<std::uint64_t>(sysconf(_SC_PAGESIZE));
  const std::uint64_t start = offset / page * page;
  const std::size_t length = static_cast<std::size_t>(offset - start + byte_size);
  void* p = mmap(nullptr, length, PROT_READ | PROT_WRITE, MAP_SHARED, fd, static_cast<off_t>(start));
  const int map_errno = errno;
  close(fd);
  if (p == MAP_FAILED)
    throw invalid("shared memory region '" + name + "': cannot map key '" + key + "': " + std::strerror(map_errno));
  Entry e;
  e.region = {name, key, offset, byte_size};
#ifdef PROTATTN_HAVE_CUDA
  if (pin_) {
    const std::size_t pinned_length = (length + page - 1) / page * page;  // whole pages, as mapped
    e.pinned = cudaHostRegister(p, pinned_length, cudaHostRegisterPortable) == cudaSuccess;
    if (!e.pinned) cudaGetLastError();  // not an error: answers are then copied by the CPU
  }
  if (e.pinned) {
    e.mapping = std::shared_ptr<void>(p, [length](void* q) {
      cudaHostUnregister(q);
      munmap(q, length);
    });
  } else
#endif
  {
    e.mapping = std::shared_ptr<void>(p, [length](void* q) { munmap(q, length); });
  }
  e.base = static_cast<std::uint8_t*>(p) + (offset - start);
  std::lock_guard<std::mutex> lock(mu_);
  if (!regions_.emplace(name, std::move(e)).second)  // registered by another call meanwhile
    throw invalid("shared memory region '" + name + "' is already registered");
}

void ShmRegistry::remove(const std::string& name) {
  std::lock_guard<std::mutex> lock(mu_);
  if (name.empty()) {
    regions_.clear();
    return;
  }
  if (regions_.erase(name) == 0) throw invalid("shared memory region '" + name + "' is not registered");
}

std::vector<ShmRegistry::Region> ShmRegistry::status(const std::string& name) const {
  std::lock_guard<std::mutex> lock(mu_);
  std::vector<Region> out;
  if (!name.empty()) {
    auto it = regions_.find(name);
    if (it == regions_.end()) throw invalid("shared memory region '" + name + "' is not registered");
    out.push_back(it->second.region);
    return out;
  }
  for (const auto& [n, e] : regions_) out.push_back(e.region);
  return out;
}

ShmSpan ShmRegistry::span(const ShmRef& ref, const std::string& what) const {
  std::lock_guard<std::mutex> lock(mu_);
  auto it = regions_.find(ref.region);
  if (it == regions_.end())
    throw invalid(what + ": shared memory region '" + ref.region + "' is not registered");
  const Region& r = it->second.region;
  if (ref.offset < 0 || ref.byte_size < 0 || static_cast<std::uint64_t>(ref.offset) > r.byte_size ||
      static_cast<std::uint64_t>(ref.byte_size) > r.byte_size - static_cast<std::uint64_t>(ref.offset))
    throw invalid(what + ": offset " + std::to_string(ref.offset) + " + byte_size " + std::to_string(ref.byte_size) +
                  " passes the end of shared memory region '" + ref.region + "' (" + std::to_string(r.byte_size) +
                  " bytes)");
  return {it->second.mapping, it->second.base + ref.offset, static_cast<std::size_t>(ref.byte_size), ref,
          it->second.pinned};
}

}  // namespace protattn::server
