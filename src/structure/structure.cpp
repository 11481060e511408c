// Synthetic globules, coordinate checks and summaries of structures.
#include <algorithm>
#include <cmath>
#include <numbers>
#include <numeric>
#include <set>

#include "protattn/error.hpp"
#include "protattn/structure.hpp"
#include "structure/random.hpp"

namespace protattn {
namespace {

constexpr std::size_t kGlobuleResidueAtoms = 8;  // atoms per synthetic residue
constexpr std::uint8_t kCarbon = 6;

}  // namespace

void validate_coords(const float* xyz, std::size_t n, const std::string& what) {
  if (n > kMaxAtoms)
    throw Error(what + ": " + std::to_string(n) + " atoms, more than the limit of " +
                std::to_string(kMaxAtoms));
  if (n > 0 && xyz == nullptr) throw Error(what + ": no coordinates given for " + std::to_string(n) + " atoms");
  // One branch-free pass (NaN fails the comparison as infinities do); the loop below finds the
  // first bad atom for the message only when there is one.
  constexpr float kMax = static_cast<float>(kMaxAbsCoord);
  unsigned bad = 0;
  for (std::size_t i = 0; i < 3 * n; ++i) bad |= !(std::fabs(xyz[i]) <= kMax);
  if (!bad) return;
  for (std::size_t i = 0; i < 3 * n; ++i) {
    const float v = xyz[i];
    if (!std::isfinite(v))
      throw Error(what + ": atom " + std::to_string(i / 3) + " has a non-finite coordinate");
    if (std::fabs(v) > kMaxAbsCoord)
      throw Error(what + ": atom " + std::to_string(i / 3) + " has an absurd coordinate " +
                  std::to_string(v) + " (|x| > 1e5 A)");
  }
}

// Points are drawn uniformly in the sphere (rejection from the cube), then put in a
// "space-filling chain" order: the sphere's bounding cube is cut into cells of about one residue
// (8 atoms) and the cells are walked as a serpentine (x rows alternate direction, so do y rows
// between z slabs); atoms of one cell keep their drawing order. Consecutive atoms are thus near
// each other like a folded chain, yet the file order is not any of the spatial orders the layout
// offers (so ordering still has work to do). Atoms are carbons named C1..C8, residues "UNK"
// numbered from 1, chain "A".
Structure make_globule(std::size_t n, double density, std::uint64_t seed) {
  if (n == 0) throw Error("make_globule: n must be positive");
  if (n > kMaxAtoms)
    throw Error("make_globule: " + std::to_string(n) + " atoms, more than the limit of " +
                std::to_string(kMaxAtoms));
  if (!(density > 0) || !std::isfinite(density))
    throw Error("make_globule: density must be positive (atoms per cubic Angstrom)");
  const double radius = std::cbrt(3.0 * static_cast<double>(n) / (4.0 * std::numbers::pi * density));
  if (radius > kMaxAbsCoord)
    throw Error("make_globule: density " + std::to_string(density) + " gives a sphere too large");

  detail::SplitMix64 rng(seed);
  std::vector<double> p(3 * n);
  for (std::size_t i = 0; i < n; ++i) {
    double x, y, z;
    do {
      x = 2 * rng.uniform() - 1;
      y = 2 * rng.uniform() - 1;
      z = 2 * rng.uniform() - 1;
    } while (x * x + y * y + z * z > 1.0);
    p[3 * i] = x * radius;
    p[3 * i + 1] = y * radius;
    p[3 * i + 2] = z * radius;
  }

  const double cell = std::cbrt(static_cast<double>(kGlobuleResidueAtoms) / density);
  const auto cells = static_cast<std::int64_t>(std::ceil(2 * radius / cell)) + 1;
  auto index = [&](double v) {
    return std::clamp<std::int64_t>(static_cast<std::int64_t>((v + radius) / cell), 0, cells - 1);
  };
  std::vector<std::int64_t> key(n);
  for (std::size_t i = 0; i < n; ++i) {
    const std::int64_t cz = index(p[3 * i + 2]);
    std::int64_t cy = index(p[3 * i + 1]);
    std::int64_t cx = index(p[3 * i]);
    if (cz % 2 == 1) cy = cells - 1 - cy;
    if ((cz * cells + cy) % 2 == 1) cx = cells - 1 - cx;
    key[i] = (cz * cells + cy) * cells + cx;
  }
  std::vector<std::size_t> order(n);
  std::iota(order.begin(), order.end(), std::size_t{0});
  std::stable_sort(order.begin(), order.end(), [&](std::size_t a, std::size_t b) { return key[a] < key[b]; });

  Structure s;
  s.source = "globule(n=" + std::to_string(n) + ", density=" + std::to_string(density) +
             ", seed=" + std::to_string(seed) + ")";
  s.xyz.resize(3 * n);
  s.element.assign(n, kCarbon);
  s.atom_name.resize(n);
  s.res_name.assign(n, "UNK");
  s.res_seq.resize(n);
  s.chain.assign(n, "A");
  for (std::size_t i = 0; i < n; ++i) {
    for (int c = 0; c < 3; ++c) s.xyz[3 * i + c] = static_cast<float>(p[3 * order[i] + c]);
    s.atom_name[i] = std::string(1, 'C').append(std::to_string(i % kGlobuleResidueAtoms + 1));
    s.res_seq[i] = static_cast<std::int32_t>(i / kGlobuleResidueAtoms + 1);
  }
  return s;
}

// Residues are runs of consecutive atoms sharing chain, residue number and residue name;
// chains are distinct chain names.
StructureInfo describe(const Structure& s) {
  StructureInfo info;
  info.atoms = s.size();
  if (s.size() == 0) return info;
  std::set<std::string> chains;
  for (std::size_t i = 0; i < s.size(); ++i) {
    if (i == 0 || s.chain[i] != s.chain[i - 1] || s.res_seq[i] != s.res_seq[i - 1] ||
        s.res_name[i] != s.res_name[i - 1])
      ++info.residues;
    if (i == 0 || s.chain[i] != s.chain[i - 1]) chains.insert(s.chain[i]);
    for (int c = 0; c < 3; ++c) {
      const float v = s.xyz[3 * i + c];
      info.lo[c] = i == 0 ? v : std::min(info.lo[c], v);
      info.hi[c] = i == 0 ? v : std::max(info.hi[c], v);
    }
  }
  info.chains = chains.size();
  return info;
}

}  // namespace protattn
