// libFuzzer target: read_npy on arbitrary bytes (written to a file, as the reader takes a path).
// Every input must either parse or throw protattn::Error; a crash, a sanitizer report or an
// allocation past -rss_limit_mb is a finding. Built and run by scripts/fuzz.sh.
#include <unistd.h>

#include <cstdint>
#include <cstdio>
#include <string>

#include "protattn/error.hpp"
#include "protattn/npy.hpp"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  static const std::string path = "/tmp/protattn-fuzz-npy-" + std::to_string(getpid()) + ".npy";
  if (std::FILE* f = std::fopen(path.c_str(), "wb")) {
    if (size) std::fwrite(data, 1, size, f);
    std::fclose(f);
  } else {
    return 0;
  }
  try {
    const protattn::NpyArray a = protattn::read_npy(path);
    // What parsed must be consistent: as many bytes as the shape and dtype say.
    if (a.data.size() != static_cast<std::size_t>(a.count()) * a.item_size()) __builtin_trap();
  } catch (const protattn::Error&) {
  }
  return 0;
}
