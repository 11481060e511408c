// Layout invariants, and the layout folder (npy arrays + meta.json) that peer tools read.
#include <nlohmann/json.hpp>

#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <numeric>
#include <utility>

#include "layout/detail.hpp"
#include "protattn/error.hpp"
#include "protattn/layout.hpp"
#include "protattn/npy.hpp"
#include "protattn/structure.hpp"

namespace protattn {
namespace {

namespace fs = std::filesystem;
constexpr int kMetaIndent = 2;

[[noreturn]] void invalid(const std::string& what) { throw Error("invalid layout: " + what); }

// Elements of a 1-D (or [n,3]) npy array as T: floats from f4 or f8; integers from any width
// numpy writes (i1-i8, u1-u8, and bool as 0 / 1), each value checked to fit T.
template <typename T>
std::vector<T> as_vector(const NpyArray& a, const std::string& file, std::vector<std::int64_t> shape) {
  if (a.shape != shape) {
    std::string want = "(", got = "(";
    for (auto d : shape) want += std::to_string(d) + ",";
    for (auto d : a.shape) got += std::to_string(d) + ",";
    throw Error("load_layout: " + file + ": shape " + got + ") where " + want + ") is expected");
  }
  const auto count = static_cast<std::size_t>(a.count());
  std::vector<T> out(count);
  const std::string d = a.descr.substr(1);
  auto copy = [&](auto tag) {
    using S = decltype(tag);
    for (std::size_t i = 0; i < count; ++i) {
      S v;
      std::memcpy(&v, a.data.data() + i * sizeof(S), sizeof(S));
      if constexpr (std::is_integral_v<T> && std::is_integral_v<S>) {
        if (!std::in_range<T>(v))
          throw Error("load_layout: " + file + ": value " + std::to_string(v) + " at index " + std::to_string(i) +
                      " does not fit " + (sizeof(T) == 4 ? "int32" : "the index type"));
      }
      out[i] = static_cast<T>(v);
    }
  };
  if constexpr (std::is_floating_point_v<T>) {
    if (d == "f4") copy(float{});
    else if (d == "f8") copy(double{});
    else throw Error("load_layout: " + file + ": dtype " + a.descr + " where float32 or float64 is expected");
  } else {
    if (d == "i1") copy(std::int8_t{});
    else if (d == "i2") copy(std::int16_t{});
    else if (d == "i4") copy(std::int32_t{});
    else if (d == "i8") copy(std::int64_t{});
    else if (d == "u1" || d == "b1") copy(std::uint8_t{});
    else if (d == "u2") copy(std::uint16_t{});
    else if (d == "u4") copy(std::uint32_t{});
    else if (d == "u8") copy(std::uint64_t{});
    else
      throw Error("load_layout: " + file + ": dtype " + a.descr +
                  " where an integer type is expected (int8-64, uint8-64 or bool)");
  }
  return out;
}

}  // namespace

void detail::fill_basic_stats(BlockLayout& l) {
  LayoutStats& s = l.stats;
  s.atoms = l.n;
  s.tiles = l.n_tiles;
  s.nnz = l.nnz();
  s.density = s.tiles > 0 ? static_cast<double>(s.nnz) / (static_cast<double>(s.tiles) * static_cast<double>(s.tiles)) : 0;
  const std::int64_t n = l.n;
  auto real = [&](std::int64_t t) { return std::min<std::int64_t>(l.tile, n - t * l.tile); };
  s.pairs_computed = 0;
  for (std::int64_t r = 0; r < l.n_tiles; ++r)
    for (auto k = l.row_ptr[static_cast<std::size_t>(r)]; k < l.row_ptr[static_cast<std::size_t>(r) + 1]; ++k)
      s.pairs_computed += real(r) * real(l.col_idx[static_cast<std::size_t>(k)]);
}

void validate_layout(const BlockLayout& l) {
  if (l.n < 0) invalid("n = " + std::to_string(l.n) + " is negative");
  if (static_cast<std::size_t>(l.n) > kMaxAtoms) invalid("n = " + std::to_string(l.n) + " is above the atom limit");
  if (l.tile <= 0) invalid("tile = " + std::to_string(l.tile) + " is not positive");
  const std::int64_t tiles = (static_cast<std::int64_t>(l.n) + l.tile - 1) / l.tile;
  if (l.n_tiles != tiles)
    invalid("n_tiles = " + std::to_string(l.n_tiles) + ", ceil(n / tile) = " + std::to_string(tiles));
  if (l.row_ptr.size() != static_cast<std::size_t>(tiles) + 1)
    invalid("row_ptr has " + std::to_string(l.row_ptr.size()) + " entries, n_tiles + 1 = " + std::to_string(tiles + 1));
  if (l.row_ptr.front() != 0) invalid("row_ptr[0] = " + std::to_string(l.row_ptr.front()) + ", not 0");
  if (static_cast<std::size_t>(l.row_ptr.back()) != l.col_idx.size())
    invalid("row_ptr[n_tiles] = " + std::to_string(l.row_ptr.back()) + " but col_idx has " +
            std::to_string(l.col_idx.size()) + " entries");
  for (std::int64_t r = 0; r < tiles; ++r) {
    const auto b = l.row_ptr[static_cast<std::size_t>(r)], e = l.row_ptr[static_cast<std::size_t>(r) + 1];
    if (e < b) invalid("row_ptr decreases at row " + std::to_string(r));
    for (auto k = b; k < e; ++k) {
      const auto c = l.col_idx[static_cast<std::size_t>(k)];
      if (c < 0 || c >= tiles)
        invalid("col_idx[" + std::to_string(k) + "] = " + std::to_string(c) + " outside [0, " + std::to_string(tiles) + ")");
      if (k > b && c <= l.col_idx[static_cast<std::size_t>(k) - 1])
        invalid("columns of row " + std::to_string(r) + " are not sorted and unique");
    }
  }
  if (l.kind.size() != l.col_idx.size())
    invalid("kind has " + std::to_string(l.kind.size()) + " entries, nnz = " + std::to_string(l.col_idx.size()));
  for (std::size_t k = 0; k < l.kind.size(); ++k)
    if (l.kind[k] != BlockKind::full && l.kind[k] != BlockKind::partial)
      invalid("kind[" + std::to_string(k) + "] = " + std::to_string(static_cast<int>(l.kind[k])) + " is neither 0 nor 1");
  if (l.perm.size() != static_cast<std::size_t>(l.n))
    invalid("perm has " + std::to_string(l.perm.size()) + " entries, n = " + std::to_string(l.n));
  std::vector<bool> hit(static_cast<std::size_t>(l.n), false);
  for (std::size_t p = 0; p < l.perm.size(); ++p) {
    const auto f = l.perm[p];
    if (f < 0 || f >= l.n || hit[static_cast<std::size_t>(f)])
      invalid("perm is not a permutation of 0..n-1 (position " + std::to_string(p) + " holds " + std::to_string(f) + ")");
    hit[static_cast<std::size_t>(f)] = true;
  }
  if (l.coords.size() != 3 * static_cast<std::size_t>(l.n))
    invalid("coords has " + std::to_string(l.coords.size()) + " floats, 3 n = " + std::to_string(3 * std::int64_t{l.n}));
  if (!std::isfinite(l.cutoff) || l.cutoff < 0) invalid("cutoff " + std::to_string(l.cutoff) + " is not a distance");
  if (l.mask == MaskMode::atoms && !(l.cutoff > 0)) invalid("mask atoms needs a positive cutoff");
  if (l.mask == MaskMode::windows && l.tile % 32 != 0)
    invalid("mask windows needs a tile that is a multiple of 32, got " + std::to_string(l.tile));
}

void export_layout(const BlockLayout& l, const std::string& dir) {
  validate_layout(l);
  std::error_code ec;
  fs::create_directories(dir, ec);
  if (ec) throw Error("export_layout: cannot create " + dir + ": " + ec.message());
  const auto n = static_cast<std::size_t>(l.n);
  std::vector<float> file_coords(3 * n);
  for (std::size_t p = 0; p < n; ++p)
    for (int c = 0; c < 3; ++c) file_coords[3 * static_cast<std::size_t>(l.perm[p]) + c] = l.coords[3 * p + c];
  const auto path = [&](const char* name) { return (fs::path(dir) / name).string(); };
  write_npy(path("row_ptr.npy"), "<i4", {static_cast<std::int64_t>(l.row_ptr.size())}, l.row_ptr.data());
  write_npy(path("col_idx.npy"), "<i4", {l.nnz()}, l.col_idx.data());
  write_npy(path("kind.npy"), "|u1", {l.nnz()}, l.kind.data());
  write_npy(path("perm.npy"), "<i4", {static_cast<std::int64_t>(n)}, l.perm.data());
  write_npy(path("coords.npy"), "<f4", {static_cast<std::int64_t>(n), 3}, file_coords.data());
  const double density = l.n_tiles > 0 ? static_cast<double>(l.nnz()) / (double{1} * l.n_tiles * l.n_tiles) : 0;
  const nlohmann::json meta = {
      {"n", l.n},           {"tile", l.tile},          {"n_tiles", l.n_tiles},
      {"nnz", l.nnz()},     {"density", density},      {"cutoff", l.cutoff},
      {"order", to_string(l.order)}, {"mask", to_string(l.mask)}, {"builder", l.builder}};
  std::ofstream out(path("meta.json"));
  out << meta.dump(kMetaIndent) << '\n';
  out.close();
  if (!out) throw Error("export_layout: cannot write " + path("meta.json"));
}

BlockLayout load_layout(const std::string& dir) {
  const auto path = [&](const char* name) { return (fs::path(dir) / name).string(); };
  if (!fs::is_directory(dir)) throw Error("load_layout: " + dir + " is not a folder");
  const std::string meta_path = path("meta.json");
  std::ifstream in(meta_path);
  if (!in) throw Error("load_layout: cannot open " + meta_path);
  nlohmann::json meta;
  BlockLayout l;
  try {
    in >> meta;
    l.n = meta.at("n").get<std::int32_t>();
    l.tile = meta.value("tile", 128);
    l.cutoff = meta.value("cutoff", 0.0f);
    l.order = parse_order(meta.value("order", std::string("file")));
    l.mask = parse_mask(meta.value("mask", std::string("tiles")));
    l.builder = meta.value("builder", std::string());
  } catch (const nlohmann::json::exception& e) {
    throw Error("load_layout: " + meta_path + ": " + e.what());
  } catch (const Error& e) {
    throw Error("load_layout: " + meta_path + ": " + e.what());
  }
  if (l.n < 0 || l.tile <= 0) throw Error("load_layout: " + meta_path + ": n must be >= 0 and tile > 0");
  l.n_tiles = static_cast<std::int32_t>((static_cast<std::int64_t>(l.n) + l.tile - 1) / l.tile);
  const auto n = static_cast<std::int64_t>(l.n);
  l.row_ptr = as_vector<std::int32_t>(read_npy(path("row_ptr.npy")), path("row_ptr.npy"), {l.n_tiles + std::int64_t{1}});
  const NpyArray cols = read_npy(path("col_idx.npy"));
  const std::int64_t nnz = cols.shape.size() == 1 ? cols.shape[0] : -1;
  l.col_idx = as_vector<std::int32_t>(cols, path("col_idx.npy"), {nnz});
  if (l.row_ptr.back() != nnz)
    throw Error("load_layout: " + path("row_ptr.npy") + ": last entry " + std::to_string(l.row_ptr.back()) +
                " but col_idx.npy holds " + std::to_string(nnz));
  if (meta.contains("nnz") && meta["nnz"] != nnz)
    throw Error("load_layout: " + meta_path + ": nnz " + meta["nnz"].dump() + " but col_idx.npy holds " + std::to_string(nnz));
  if (fs::exists(path("kind.npy"))) {
    const auto k = as_vector<std::int32_t>(read_npy(path("kind.npy")), path("kind.npy"), {nnz});
    l.kind.resize(k.size());
    for (std::size_t i = 0; i < k.size(); ++i) {
      if (k[i] != 0 && k[i] != 1) throw Error("load_layout: " + path("kind.npy") + ": value " + std::to_string(k[i]) + " is neither 0 (full) nor 1 (partial)");
      l.kind[i] = static_cast<BlockKind>(k[i]);
    }
  } else {
    l.kind.assign(static_cast<std::size_t>(nnz), BlockKind::full);
  }
  if (fs::exists(path("perm.npy"))) {
    l.perm = as_vector<std::int32_t>(read_npy(path("perm.npy")), path("perm.npy"), {n});
  } else {
    l.perm.resize(static_cast<std::size_t>(n));
    std::iota(l.perm.begin(), l.perm.end(), 0);
  }
  l.coords.assign(3 * static_cast<std::size_t>(n), 0.0f);
  if (fs::exists(path("coords.npy"))) {
    const auto fc = as_vector<float>(read_npy(path("coords.npy")), path("coords.npy"), {n, 3});
    validate_coords(fc.data(), static_cast<std::size_t>(n), "load_layout: " + path("coords.npy"));
    for (std::size_t p = 0; p < static_cast<std::size_t>(n); ++p) {
      const auto f = static_cast<std::size_t>(l.perm[p]);
      if (f >= static_cast<std::size_t>(n)) break;  // validate_layout names the bad perm below
      for (int c = 0; c < 3; ++c) l.coords[3 * p + c] = fc[3 * f + c];
    }
  }
  try {
    validate_layout(l);
  } catch (const Error& e) {
    throw Error("load_layout: " + dir + ": " + e.what());
  }
  detail::fill_basic_stats(l);
  return l;
}

}  // namespace protattn
