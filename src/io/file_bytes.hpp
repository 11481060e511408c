// Whole-file reading with transparent gzip decompression (private to the library).
#pragma once
#include <cstddef>
#include <fstream>
#include <string>

namespace protattn::io {

// Largest decompressed size accepted (a guard against gzip bombs): 4 GiB.
inline constexpr std::size_t kMaxFileBytes = std::size_t{4} << 30;

// Returns the bytes of `path`, decompressed when they start with the gzip magic (several
// concatenated gzip members are allowed). Throws Error naming the file on a missing or
// unreadable file, a truncated or corrupt gzip stream, or more than `max_bytes` bytes.
std::string read_file_bytes(const std::string& path, std::size_t max_bytes = kMaxFileBytes);

// Opens `path` for binary reading into `in`. Returns "" or what is wrong, for the caller's message:
// "is a folder, not a file" (an ifstream opens a folder and then fails or reads it as huge) or
// "cannot open (<the system's reason>)".
std::string open_input(const std::string& path, std::ifstream& in);

}  // namespace protattn::io
