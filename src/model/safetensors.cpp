// safetensors reader and writer: the header is JSON {name: {dtype, shape, data_offsets}, __metadata__}.
#include "model/safetensors.hpp"

#include <algorithm>
#include <cstring>
#include <fstream>
#include <iterator>
#include <limits>

#include <nlohmann/json.hpp>

#include "io/file_bytes.hpp"
#include "protattn/error.hpp"

namespace protattn::st {
namespace {

constexpr std::size_t kLengthBytes = 8;
constexpr std::size_t kHeaderAlign = 8;
constexpr const char* kMetadataKey = "__metadata__";

[[noreturn]] void fail(const std::string& path, const std::string& what) {
  throw Error(path + ": " + what);
}

std::string shape_string(const std::vector<std::int64_t>& shape) {
  std::string s = "[";
  for (std::size_t i = 0; i < shape.size(); ++i) s += (i ? ", " : "") + std::to_string(shape[i]);
  return s + "]";
}

}  // namespace

std::size_t dtype_bytes(const std::string& dtype) {
  static const std::map<std::string, std::size_t> sizes = {
      {"F64", 8}, {"F32", 4}, {"F16", 2}, {"BF16", 2}, {"I64", 8}, {"I32", 4}, {"I16", 2},
      {"I8", 1},  {"U64", 8}, {"U32", 4}, {"U16", 2},  {"U8", 1},  {"BOOL", 1}};
  const auto it = sizes.find(dtype);
  return it == sizes.end() ? 0 : it->second;
}

File read(const std::string& path) {
  std::ifstream in;
  if (const std::string why = io::open_input(path, in); !why.empty()) fail(path, why);
  const std::string bytes((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  if (in.bad()) fail(path, "read error");
  if (bytes.size() < kLengthBytes)
    fail(path, "truncated: " + std::to_string(bytes.size()) + " bytes, fewer than the 8-byte header length");
  std::uint64_t header_len = 0;
  for (std::size_t i = 0; i < kLengthBytes; ++i)
    header_len |= static_cast<std::uint64_t>(static_cast<unsigned char>(bytes[i])) << (8 * i);
  if (header_len > kMaxHeaderBytes) fail(path, "header length " + std::to_string(header_len) + " is implausible (not a safetensors file?)");
  if (header_len > bytes.size() - kLengthBytes)
    fail(path, "truncated: header length " + std::to_string(header_len) + " but only " +
                   std::to_string(bytes.size() - kLengthBytes) + " bytes follow");
  nlohmann::json header;
  try {
    header = nlohmann::json::parse(bytes.begin() + kLengthBytes, bytes.begin() + kLengthBytes + static_cast<std::ptrdiff_t>(header_len));
  } catch (const nlohmann::json::exception& e) {
    fail(path, std::string("header is not valid JSON: ") + e.what());
  }
  if (!header.is_object()) fail(path, "header is not a JSON object");
  const std::size_t data_begin = kLengthBytes + header_len;
  const std::uint64_t data_size = bytes.size() - data_begin;

  File f;
  struct Span { std::uint64_t begin, end; std::string name; };
  std::vector<Span> spans;
  for (const auto& [name, entry] : header.items()) {
    if (name == kMetadataKey) {
      if (!entry.is_object()) fail(path, "__metadata__ is not an object");
      for (const auto& [key, value] : entry.items()) {
        if (!value.is_string()) fail(path, "__metadata__ value of '" + key + "' is not a string");
        f.metadata[key] = value.get<std::string>();
      }
      continue;
    }
    const std::string where = "tensor '" + name + "'";
    if (!entry.is_object() || !entry.contains("dtype") || !entry.contains("shape") || !entry.contains("data_offsets"))
      fail(path, where + ": header entry needs dtype, shape and data_offsets");
    const auto& dt = entry["dtype"];
    const auto& sh = entry["shape"];
    const auto& off = entry["data_offsets"];
    if (!dt.is_string()) fail(path, where + ": dtype is not a string");
    RawTensor t;
    t.dtype = dt.get<std::string>();
    const std::size_t item = dtype_bytes(t.dtype);
    if (item == 0) fail(path, where + ": unknown dtype '" + t.dtype + "'");
    if (!sh.is_array()) fail(path, where + ": shape is not an array");
    std::uint64_t count = 1;
    for (const auto& d : sh) {
      if (!d.is_number_unsigned()) fail(path, where + ": shape holds a value that is not a non-negative integer");
      const std::uint64_t v = d.get<std::uint64_t>();
      if (v != 0 && count > std::numeric_limits<std::uint64_t>::max() / v / item) fail(path, where + ": shape too large");
      count *= v;
      t.shape.push_back(static_cast<std::int64_t>(v));
    }
    if (!off.is_array() || off.size() != 2 || !off[0].is_number_unsigned() || !off[1].is_number_unsigned())
      fail(path, where + ": data_offsets must be two non-negative integers");
    const std::uint64_t b = off[0].get<std::uint64_t>(), e = off[1].get<std::uint64_t>();
    if (b > e) fail(path, where + ": data_offsets [" + std::to_string(b) + ", " + std::to_string(e) + "] are reversed");
    if (e > data_size)
      fail(path, "truncated: " + where + " ends at byte " + std::to_string(e) + " of the data but the data holds " +
                     std::to_string(data_size) + " bytes");
    if (e - b != count * item)
      fail(path, where + ": " + std::to_string(e - b) + " bytes for " + t.dtype + " " + shape_string(t.shape) +
                     " (needs " + std::to_string(count * item) + ")");
    t.data.resize(e - b);
    if (e > b) std::memcpy(t.data.data(), bytes.data() + data_begin + b, e - b);
    spans.push_back({b, e, name});
    f.tensors.emplace(name, std::move(t));
  }
  std::sort(spans.begin(), spans.end(), [](const Span& a, const Span& c) { return a.begin < c.begin; });
  std::uint64_t at = 0;
  for (const Span& s : spans) {
    if (s.begin < at) fail(path, "tensor '" + s.name + "' overlaps the tensor before it in the data");
    if (s.begin > at) fail(path, "hole in the data before tensor '" + s.name + "'");
    at = s.end;
  }
  if (at != data_size)
    fail(path, std::to_string(data_size - at) + " bytes after the last tensor (the header does not describe them)");
  return f;
}

void write(const std::string& path, const File& f) {
  nlohmann::json header = nlohmann::json::object();
  if (!f.metadata.empty()) header[kMetadataKey] = f.metadata;
  std::uint64_t at = 0;
  for (const auto& [name, t] : f.tensors) {
    if (name == kMetadataKey) throw Error(path + ": a tensor may not be named " + kMetadataKey);
    const std::size_t item = dtype_bytes(t.dtype);
    if (item == 0) throw Error(path + ": tensor '" + name + "' has unknown dtype '" + t.dtype + "'");
    std::uint64_t count = 1;
    for (std::int64_t d : t.shape) {
      if (d < 0) throw Error(path + ": tensor '" + name + "' has a negative dimension");
      count *= static_cast<std::uint64_t>(d);
    }
    if (count * item != t.data.size())
      throw Error(path + ": tensor '" + name + "' holds " + std::to_string(t.data.size()) + " bytes, " + t.dtype + " " +
                  shape_string(t.shape) + " needs " + std::to_string(count * item));
    header[name] = {{"dtype", t.dtype}, {"shape", t.shape}, {"data_offsets", {at, at + t.data.size()}}};
    at += t.data.size();
  }
  std::string text = header.dump();
  text.append((kHeaderAlign - text.size() % kHeaderAlign) % kHeaderAlign, ' ');
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  if (!out) throw Error(path + ": cannot open for writing");
  unsigned char len[kLengthBytes];
  for (std::size_t i = 0; i < kLengthBytes; ++i) len[i] = static_cast<unsigned char>(static_cast<std::uint64_t>(text.size()) >> (8 * i));
  out.write(reinterpret_cast<const char*>(len), kLengthBytes);
  out.write(text.data(), static_cast<std::streamsize>(text.size()));
  for (const auto& [name, t] : f.tensors)
    out.write(reinterpret_cast<const char*>(t.data.data()), static_cast<std::streamsize>(t.data.size()));
  out.close();
  if (!out) throw Error(path + ": write failed");
}

}  // namespace protattn::st
