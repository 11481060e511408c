// Reading and writing safetensors files (8-byte header length, JSON header, raw data); private.
#pragma once
#include <cstdint>
#include <map>
#include <string>
#include <vector>

namespace protattn::st {

// Largest JSON header accepted (the format's own reference reader caps it at 100 MB).
inline constexpr std::uint64_t kMaxHeaderBytes = 100'000'000;

struct RawTensor {
  std::string dtype;                // "F32", "F16", "BF16", "F64", "I32", ...
  std::vector<std::int64_t> shape;
  std::vector<std::uint8_t> data;   // little-endian elements, C order
};

struct File {
  std::map<std::string, std::string> metadata;  // `__metadata__`
  std::map<std::string, RawTensor> tensors;
};

// Bytes per element of a safetensors dtype name; 0 when unknown.
std::size_t dtype_bytes(const std::string& dtype);

// Throws Error naming the file and the problem: missing, shorter than its header says, header
// not JSON or not the expected structure, unknown dtype, data offsets that overlap, leave holes,
// run past the end or disagree with dtype x shape.
File read(const std::string& path);
// Tensors written in name order, data contiguous, header padded with spaces to 8 bytes.
void write(const std::string& path, const File& f);

}  // namespace protattn::st
