// The 16-row groups of kept tiles that no key can reach under mask atoms (BlockLayout::rows_out,
// which the fused engine's kernels skip): every group marked holds no allowed pair, many are
// marked on a protein, and a builder asked for them gives the same bits.
#include <gtest/gtest.h>

#include <cstdint>
#include <string>
#include <vector>

#include "protattn/engine.hpp"
#include "protattn/layout.hpp"
#include "protattn/structure.hpp"

namespace protattn {
namespace {

struct Marked {
  std::int64_t groups = 0, out = 0;
};

// Marks the row groups of `l` and checks each marked one against mask_allows() pair by pair.
Marked check_marks(const BlockLayout& l, const std::string& what) {
  std::vector<std::uint8_t> reach(l.col_idx.size(), 0xAA);  // poisoned: every byte is written
  rows_out_of_reach(l, reach.data());
  Marked m;
  for (int r = 0; r < l.n_tiles; ++r)
    for (std::int32_t e = l.row_ptr[r]; e < l.row_ptr[r + 1]; ++e)
      for (int w = 0; w < 8; ++w) {
        ++m.groups;
        if (!(reach[static_cast<std::size_t>(e)] & (1u << w))) continue;
        ++m.out;
        const std::int32_t c = l.col_idx[static_cast<std::size_t>(e)];
        for (std::int32_t i = r * l.tile + w * kRowGroup; i < r * l.tile + (w + 1) * kRowGroup; ++i)
          for (std::int32_t j = c * l.tile; j < (c + 1) * l.tile; ++j)
            if (mask_allows(l, i, j)) {
              ADD_FAILURE() << what << ": tile (" << r << ", " << c << ") rows of group " << w
                            << " marked, but pair (" << i << ", " << j << ") is allowed";
              return m;
            }
      }
  return m;
}

LayoutOptions atoms_options(float cutoff) {
  LayoutOptions o;
  o.mask = MaskMode::atoms;
  o.cutoff = cutoff;
  return o;
}

TEST(RowsOut, MarkedRowsHoldNoAllowedPairOnAProtein) {
  const Structure s = read_structure(std::string(PROTATTN_TEST_DATA) + "/2hhb.pdb");
  const std::size_t n = s.xyz.size() / 3;
  const BlockLayout l = build_cutoff_layout(s.xyz.data(), n, atoms_options(8.0f));
  const Marked m = check_marks(l, "2hhb");
  // 2HHB (4,558 atoms, 36 tiles) keeps 754 tile pairs at 8 A; about half of their 16-row groups
  // are out of reach by the boxes (0.47 when this test was written).
  EXPECT_GT(m.out, m.groups * 4 / 10) << m.out << " of " << m.groups;
  EXPECT_LT(m.out, m.groups * 6 / 10) << m.out << " of " << m.groups;
}

TEST(RowsOut, MarkedRowsHoldNoAllowedPairOnGlobules) {
  for (const std::size_t n : {std::size_t{1}, std::size_t{63}, std::size_t{64}, std::size_t{65}, std::size_t{130},
                              std::size_t{1000}, std::size_t{4096 + 17}})
    for (const float cutoff : {2.0f, 5.0f, 8.0f}) {
      const Structure s = make_globule(n, 0.058, 7 + n);
      const BlockLayout l = build_cutoff_layout(s.xyz.data(), n, atoms_options(cutoff));
      check_marks(l, "globule " + std::to_string(n) + " cutoff " + std::to_string(cutoff));
    }
}

TEST(RowsOut, BuildersFillThemOnRequest) {
  const Structure s = read_structure(std::string(PROTATTN_TEST_DATA) + "/2hhb.pdb");
  const std::size_t n = s.xyz.size() / 3;
  LayoutOptions o = atoms_options(8.0f);
  const BlockLayout plain = build_cutoff_layout(s.xyz.data(), n, o);
  EXPECT_TRUE(plain.rows_out.empty());
  o.mark_rows_out = true;
  const BlockLayout marked = build_cutoff_layout(s.xyz.data(), n, o);
  std::vector<std::uint8_t> want(plain.col_idx.size(), 0xAA);
  rows_out_of_reach(plain, want.data());
  EXPECT_EQ(marked.col_idx, plain.col_idx);
  EXPECT_EQ(marked.rows_out, want);
  // Other masks have none to mark: left empty.
  o.mask = MaskMode::tiles;
  EXPECT_TRUE(build_cutoff_layout(s.xyz.data(), n, o).rows_out.empty());
}

TEST(RowsOut, PaddingRowsAreMarkedAndOtherMasksLeftAlone) {
  // 130 atoms, a cutoff that every pair is within: the second tile holds rows 128 and 129 only,
  // so its groups 1..7 lie past the end; nothing else is out of reach.
  const Structure s = make_globule(130, 0.058, 3);
  const BlockLayout l = build_cutoff_layout(s.xyz.data(), 130, atoms_options(100.0f));
  std::vector<std::uint8_t> reach(l.col_idx.size(), 0xAA);
  rows_out_of_reach(l, reach.data());
  for (int r = 0; r < l.n_tiles; ++r)
    for (std::int32_t e = l.row_ptr[r]; e < l.row_ptr[r + 1]; ++e)
      EXPECT_EQ(reach[static_cast<std::size_t>(e)], r == 1 ? 0xFE : 0) << "tile " << r << ", key tile " << l.col_idx[e];
  LayoutOptions tiles = atoms_options(2.0f);
  tiles.mask = MaskMode::tiles;
  const BlockLayout t = build_cutoff_layout(s.xyz.data(), 130, tiles);
  std::vector<std::uint8_t> none(t.col_idx.size(), 0xAA);
  rows_out_of_reach(t, none.data());
  for (std::uint8_t k : none) EXPECT_EQ(k, 0);
}

}  // namespace
}  // namespace protattn
