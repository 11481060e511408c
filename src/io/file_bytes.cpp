// Whole-file reading with transparent gzip decompression through zlib's inflate.
#include "io/file_bytes.hpp"

#include <zlib.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <filesystem>
#include <fstream>

#include "protattn/error.hpp"

namespace protattn::io {
namespace {

constexpr unsigned char kGzipMagic[2] = {0x1f, 0x8b};
constexpr int kGzipWindowBits = 16 + MAX_WBITS;  // zlib: expect a gzip wrapper
constexpr std::size_t kInflateChunk = std::size_t{1} << 20;

[[noreturn]] void fail(const std::string& path, const std::string& what) {
  throw Error(path + ": " + what);
}

std::string inflate_gzip(const std::string& packed, const std::string& path, std::size_t max_bytes) {
  z_stream zs{};
  if (inflateInit2(&zs, kGzipWindowBits) != Z_OK) fail(path, "cannot initialise zlib");
  std::string out;
  out.reserve(std::min(max_bytes, packed.size() * 4));
  zs.next_in = reinterpret_cast<Bytef*>(const_cast<char*>(packed.data()));
  std::size_t consumed = 0;
  int rc = Z_OK;
  // zlib counts in 32-bit units: feed the input in pieces.
  auto feed = [&] {
    const std::size_t piece = std::min<std::size_t>(packed.size() - consumed, 1u << 30);
    zs.next_in = reinterpret_cast<Bytef*>(const_cast<char*>(packed.data() + consumed));
    zs.avail_in = static_cast<uInt>(piece);
  };
  feed();
  while (true) {
    const std::size_t old = out.size();
    if (old >= max_bytes) {
      inflateEnd(&zs);
      fail(path, "decompressed data larger than " + std::to_string(max_bytes) + " bytes");
    }
    const std::size_t grow = std::min(kInflateChunk, max_bytes - old);
    out.resize(old + grow);
    zs.next_out = reinterpret_cast<Bytef*>(out.data() + old);
    zs.avail_out = static_cast<uInt>(grow);
    const uInt before_in = zs.avail_in;
    rc = inflate(&zs, Z_NO_FLUSH);
    consumed += before_in - zs.avail_in;
    out.resize(old + grow - zs.avail_out);
    if (rc == Z_STREAM_END) {
      if (consumed == packed.size()) break;
      // Another gzip member follows (as `cat a.gz b.gz` makes).
      if (inflateReset(&zs) != Z_OK) break;
      feed();
      continue;
    }
    if (rc == Z_NEED_DICT || rc == Z_DATA_ERROR || rc == Z_MEM_ERROR) {
      const std::string msg = zs.msg ? zs.msg : "error " + std::to_string(rc);
      inflateEnd(&zs);
      fail(path, "corrupt gzip data (" + msg + ")");
    }
    if (zs.avail_in == 0) {
      if (consumed < packed.size()) {
        feed();
      } else if (zs.avail_out != 0 || rc == Z_BUF_ERROR) {
        inflateEnd(&zs);
        fail(path, "truncated gzip stream (compressed data ends before the end of the stream)");
      }
    }
  }
  inflateEnd(&zs);
  return out;
}

}  // namespace

std::string open_input(const std::string& path, std::ifstream& in) {
  std::error_code ec;
  if (std::filesystem::is_directory(path, ec)) return "is a folder, not a file";
  in.open(path, std::ios::binary);
  if (!in) return "cannot open (" + std::string(std::strerror(errno)) + ")";
  return {};
}

std::string read_file_bytes(const std::string& path, std::size_t max_bytes) {
  std::ifstream in;
  if (const std::string why = open_input(path, in); !why.empty()) fail(path, why);
  in.seekg(0, std::ios::end);
  const std::streamoff size = in.tellg();
  if (size < 0) fail(path, "cannot determine the file size");
  if (static_cast<std::uint64_t>(size) > max_bytes)
    fail(path, "file larger than " + std::to_string(max_bytes) + " bytes");
  in.seekg(0);
  std::string bytes(static_cast<std::size_t>(size), '\0');
  if (size > 0 && !in.read(bytes.data(), size)) fail(path, "read error");
  const bool gz = bytes.size() >= 2 && static_cast<unsigned char>(bytes[0]) == kGzipMagic[0] &&
                  static_cast<unsigned char>(bytes[1]) == kGzipMagic[1];
  return gz ? inflate_gzip(bytes, path, max_bytes) : bytes;
}

}  // namespace protattn::io
