// protattn mask rule: whether query position i attends key position j, per mask mode.
#include "protattn/engine.hpp"

#include <limits>
#include <string>

#include "protattn/error.hpp"

namespace protattn {
namespace {

// Windows mode (AlphaFold3-style): a block of 32 queries attends the 128 keys centred on it.
constexpr std::int32_t kWindowQueries = 32;
constexpr std::int32_t kWindowHalfKeys = 64;

}  // namespace

// The atoms rule is written so that every engine can replicate it bit for bit: in float,
//   dx = xi - xj, dy = yi - yj, dz = zi - zj, d2 = dx*dx + dy*dy + dz*dz  (left to right),
//   allowed iff i == j or d2 <= cutoff * cutoff,
// each operation rounded to float (round to nearest), no fused multiply-add. GPU kernels use
// __fsub_rn / __fmul_rn / __fadd_rn for the same result. Both host entry points below share
// within_cutoff and are compiled without contraction.
#if defined(__GNUC__) && !defined(__clang__)
#define PROTATTN_NO_FP_CONTRACT __attribute__((optimize("fp-contract=off")))
#else
#define PROTATTN_NO_FP_CONTRACT
#endif

namespace {

PROTATTN_NO_FP_CONTRACT inline bool within_cutoff(const float* a, const float* b, float cutoff2) {
#if defined(__clang__)
#pragma clang fp contract(off)
#endif
  const float dx = a[0] - b[0];
  const float dy = a[1] - b[1];
  const float dz = a[2] - b[2];
  const float d2 = dx * dx + dy * dy + dz * dz;
  return d2 <= cutoff2;
}

void require_coords(const BlockLayout& l, const char* who) {
  if (l.coords.size() < 3 * static_cast<std::size_t>(l.n))
    throw Error(std::string(who) + ": mask atoms needs coords for all " + std::to_string(l.n) + " atoms");
}

}  // namespace

PROTATTN_NO_FP_CONTRACT bool mask_allows(const BlockLayout& l, std::int32_t i, std::int32_t j) {
  if (i < 0 || j < 0 || i >= l.n || j >= l.n) return false;  // padding never attends
  switch (l.mask) {
    case MaskMode::tiles:
      return true;
    case MaskMode::windows: {
      const std::int32_t centre = (i / kWindowQueries) * kWindowQueries + kWindowQueries / 2;
      return j >= centre - kWindowHalfKeys && j < centre + kWindowHalfKeys;
    }
    case MaskMode::atoms: {
      if (i == j) return true;
      require_coords(l, "mask_allows");
      return within_cutoff(&l.coords[3 * static_cast<std::size_t>(i)], &l.coords[3 * static_cast<std::size_t>(j)],
                           l.cutoff * l.cutoff);
    }
  }
  return false;
}

PROTATTN_NO_FP_CONTRACT void mask_atoms_row(const BlockLayout& l, std::int32_t i, std::int32_t j0, int cols, double* s) {
  require_coords(l, "mask_atoms_row");
  const float cutoff2 = l.cutoff * l.cutoff;
  const float* a = &l.coords[3 * static_cast<std::size_t>(i)];
  const float* b = &l.coords[3 * static_cast<std::size_t>(j0)];
  for (int j = 0; j < cols; ++j)
    if (i != j0 + j && !within_cutoff(a, b + 3 * j, cutoff2)) s[j] = -std::numeric_limits<double>::infinity();
}

}  // namespace protattn
