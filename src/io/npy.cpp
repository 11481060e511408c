// NumPy .npy reader and writer: header dictionary parsing, dtype checks, raw C-order data.
#include "protattn/npy.hpp"

#include <cctype>
#include <cerrno>
#include <cstring>
#include <fstream>
#include <limits>
#include <string_view>

#include "io/file_bytes.hpp"
#include "protattn/error.hpp"

namespace protattn {
namespace {

constexpr char kMagic[] = "\x93NUMPY";
constexpr std::size_t kMagicLen = 6;
constexpr std::size_t kHeaderAlign = 64;      // numpy >= 1.16 pads headers to 64 bytes
constexpr std::size_t kMaxHeaderLen = 1 << 20; // a sane bound on the header dictionary

[[noreturn]] void fail(const std::string& path, const std::string& what) {
  throw Error("npy file " + path + ": " + what);
}

// Minimal cursor over the header dictionary, e.g.
// {'descr': '<f4', 'fortran_order': False, 'shape': (3, 4), }
class DictParser {
 public:
  DictParser(std::string_view s, const std::string& path) : s_(s), path_(path) {}

  void skip_ws() {
    while (pos_ < s_.size() && std::isspace(static_cast<unsigned char>(s_[pos_]))) ++pos_;
  }
  bool accept(char c) {
    skip_ws();
    if (pos_ < s_.size() && s_[pos_] == c) {
      ++pos_;
      return true;
    }
    return false;
  }
  void expect(char c) {
    if (!accept(c)) bad(std::string("expected '") + c + "'");
  }
  std::string quoted() {
    skip_ws();
    if (pos_ >= s_.size() || (s_[pos_] != '\'' && s_[pos_] != '"')) bad("expected a quoted string");
    const char q = s_[pos_++];
    const std::size_t end = s_.find(q, pos_);
    if (end == std::string_view::npos) bad("unterminated string");
    std::string out(s_.substr(pos_, end - pos_));
    pos_ = end + 1;
    return out;
  }
  bool boolean() {
    skip_ws();
    if (s_.substr(pos_, 4) == "True") {
      pos_ += 4;
      return true;
    }
    if (s_.substr(pos_, 5) == "False") {
      pos_ += 5;
      return false;
    }
    bad("expected True or False");
  }
  std::vector<std::int64_t> tuple() {
    std::vector<std::int64_t> out;
    expect('(');
    while (!accept(')')) {
      skip_ws();
      std::int64_t v = 0;
      std::size_t digits = 0;
      while (pos_ < s_.size() && std::isdigit(static_cast<unsigned char>(s_[pos_]))) {
        if (v > (std::numeric_limits<std::int64_t>::max() - 9) / 10) bad("dimension too large");
        v = v * 10 + (s_[pos_++] - '0');
        ++digits;
      }
      if (digits == 0) bad("expected a non-negative integer in shape");
      out.push_back(v);
      if (!accept(',')) {
        expect(')');
        break;
      }
    }
    return out;
  }
  [[noreturn]] void bad(const std::string& what) const {
    fail(path_, "bad header (" + what + " at offset " + std::to_string(pos_) + "): " +
                    std::string(s_));
  }

 private:
  std::string_view s_;
  const std::string& path_;
  std::size_t pos_ = 0;
};

// Bytes per element of a descr such as "<f4" / "|u1"; throws on what this reader refuses.
std::size_t descr_item_size(const std::string& descr, const std::string& path) {
  if (descr.size() < 3) fail(path, "unsupported dtype '" + descr + "'");
  const char endian = descr[0];
  const char kind = descr[1];
  std::size_t size = 0;
  for (std::size_t i = 2; i < descr.size(); ++i) {
    if (!std::isdigit(static_cast<unsigned char>(descr[i])))
      fail(path, "unsupported dtype '" + descr + "'");
    size = size * 10 + static_cast<std::size_t>(descr[i] - '0');
    if (size > 16) fail(path, "unsupported dtype '" + descr + "'");
  }
  if (std::strchr("fiubc", kind) == nullptr || size == 0)
    fail(path, "unsupported dtype '" + descr + "' (numeric types only)");
  if (endian == '>' && size > 1) fail(path, "big-endian dtype '" + descr + "' is not supported");
  if (endian != '<' && endian != '|' && endian != '=' && endian != '>')
    fail(path, "unsupported dtype '" + descr + "'");
  return size;
}

std::int64_t checked_count(const std::vector<std::int64_t>& shape, const std::string& path) {
  std::int64_t count = 1;
  for (std::int64_t d : shape) {
    if (d < 0) fail(path, "negative dimension");
    if (d != 0 && count > std::numeric_limits<std::int64_t>::max() / d)
      fail(path, "shape overflows");
    count *= d;
  }
  return count;
}

}  // namespace

std::int64_t NpyArray::count() const {
  std::int64_t c = 1;
  for (std::int64_t d : shape) c *= d;
  return c;
}

std::size_t NpyArray::item_size() const { return descr_item_size(descr, "(in memory)"); }

NpyArray read_npy(const std::string& path) {
  std::ifstream in;
  if (const std::string why = io::open_input(path, in); !why.empty()) fail(path, why);
  in.seekg(0, std::ios::end);
  const auto file_size = static_cast<std::uint64_t>(in.tellg());
  in.seekg(0);

  char pre[kMagicLen + 2] = {};
  if (!in.read(pre, sizeof pre)) fail(path, "truncated (no complete header)");
  if (std::memcmp(pre, kMagic, kMagicLen) != 0) fail(path, "not a .npy file (bad magic)");
  const int major = static_cast<unsigned char>(pre[kMagicLen]);
  std::uint64_t header_len = 0;
  std::uint64_t prefix = 0;
  if (major == 1) {
    unsigned char b[2];
    if (!in.read(reinterpret_cast<char*>(b), 2)) fail(path, "truncated header");
    header_len = b[0] | (b[1] << 8);
    prefix = kMagicLen + 4;
  } else if (major == 2 || major == 3) {
    unsigned char b[4];
    if (!in.read(reinterpret_cast<char*>(b), 4)) fail(path, "truncated header");
    header_len = b[0] | (b[1] << 8) | (std::uint64_t{b[2]} << 16) | (std::uint64_t{b[3]} << 24);
    prefix = kMagicLen + 6;
  } else {
    fail(path, "unsupported format version " + std::to_string(major));
  }
  if (header_len > kMaxHeaderLen || prefix + header_len > file_size)
    fail(path, "truncated header (header length " + std::to_string(header_len) + ")");
  std::string header(header_len, '\0');
  if (!in.read(header.data(), static_cast<std::streamsize>(header_len)))
    fail(path, "truncated header");

  NpyArray arr;
  bool have_descr = false, have_order = false, have_shape = false, fortran = false;
  DictParser p(header, path);
  p.expect('{');
  while (!p.accept('}')) {
    const std::string key = p.quoted();
    p.expect(':');
    if (key == "descr") {
      arr.descr = p.quoted();
      have_descr = true;
    } else if (key == "fortran_order") {
      fortran = p.boolean();
      have_order = true;
    } else if (key == "shape") {
      arr.shape = p.tuple();
      have_shape = true;
    } else {
      p.bad("unknown key '" + key + "'");
    }
    if (!p.accept(',')) {
      p.expect('}');
      break;
    }
  }
  if (!have_descr || !have_order || !have_shape)
    fail(path, "header lacks descr, fortran_order or shape: " + header);
  if (fortran) fail(path, "Fortran-order arrays are not supported (save with C order)");
  const std::size_t item = descr_item_size(arr.descr, path);
  const std::int64_t count = checked_count(arr.shape, path);
  const std::uint64_t data_size = static_cast<std::uint64_t>(count) * item;
  const std::uint64_t have = file_size - prefix - header_len;
  if (have != data_size)
    fail(path, "size mismatch: shape and dtype need " + std::to_string(data_size) +
                   " bytes of data, the file holds " + std::to_string(have));
  arr.data.resize(data_size);
  if (data_size > 0 && !in.read(reinterpret_cast<char*>(arr.data.data()),
                                static_cast<std::streamsize>(data_size)))
    fail(path, "truncated data");
  return arr;
}

void write_npy(const std::string& path, const std::string& descr,
               const std::vector<std::int64_t>& shape, const void* data) {
  const std::size_t item = descr_item_size(descr, path);
  const std::int64_t count = checked_count(shape, path);
  std::string dict = "{'descr': '" + descr + "', 'fortran_order': False, 'shape': (";
  for (std::size_t i = 0; i < shape.size(); ++i) {
    if (i > 0) dict += ", ";
    dict += std::to_string(shape[i]);
  }
  if (shape.size() == 1) dict += ",";
  dict += "), }";
  // Pad with spaces so that magic + version + length + dict + '\n' is a multiple of 64.
  const std::size_t fixed = kMagicLen + 4;
  const std::size_t total = (fixed + dict.size() + 1 + kHeaderAlign - 1) / kHeaderAlign * kHeaderAlign;
  dict.append(total - fixed - dict.size() - 1, ' ');
  dict += '\n';
  if (dict.size() > 0xffff) fail(path, "header too long for format 1.0");

  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  if (!out) fail(path, "cannot create (" + std::string(std::strerror(errno)) + ")");
  const char version[2] = {1, 0};
  const unsigned char len[2] = {static_cast<unsigned char>(dict.size() & 0xff),
                                static_cast<unsigned char>(dict.size() >> 8)};
  out.write(kMagic, kMagicLen);
  out.write(version, 2);
  out.write(reinterpret_cast<const char*>(len), 2);
  out.write(dict.data(), static_cast<std::streamsize>(dict.size()));
  const std::uint64_t bytes = static_cast<std::uint64_t>(count) * item;
  if (bytes > 0) {
    if (data == nullptr) fail(path, "no data given for a non-empty array");
    out.write(static_cast<const char*>(data), static_cast<std::streamsize>(bytes));
  }
  out.close();
  if (!out) fail(path, "write failed");
}

}  // namespace protattn
