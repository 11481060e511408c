// protattn: reading and writing NumPy .npy files (version 1.0/2.0, little-endian, C order).
#pragma once
#include <cstdint>
#include <string>
#include <vector>

namespace protattn {

struct NpyArray {
  std::string descr;                // numpy dtype descr: "<f4", "<f2", "<f8", "<i4", "<i8", "|u1", "<u2" ...
  std::vector<std::int64_t> shape;
  std::vector<std::uint8_t> data;   // raw little-endian elements, C order
  std::int64_t count() const;       // product of shape (1 for a 0-d array)
  std::size_t item_size() const;
};

// Throws Error naming the file and the problem (missing, truncated, bad header, Fortran order,
// big-endian, size mismatch).
NpyArray read_npy(const std::string& path);
void write_npy(const std::string& path, const std::string& descr,
               const std::vector<std::int64_t>& shape, const void* data);

}  // namespace protattn
