// Whole-file reading with transparent gzip decompression (private to the library).
#pragma once
#include <cstddef>
#include <string>

namespace protattn::io {

// Largest decompressed size accepted (a guard against gzip bombs): 4 GiB.
inline constexpr std::size_t kMaxFileBytes = std::size_t{4} << 30;

// Returns the bytes of `path`, decompressed when they start with the gzip magic (several
// concatenated gzip members are allowed). Throws Error naming the file on a missing or
// unreadable file, a truncated or corrupt gzip stream, or more than `max_bytes` bytes.
std::string read_file_bytes(const std::string& path, std::size_t max_bytes = kMaxFileBytes);

// Whether `path` names a folder: an ifstream opens one and then fails or reads it as huge, so the
// readers check first and say so ("X: is a folder, not a file").
bool is_folder(const std::string& path);

}  // namespace protattn::io
