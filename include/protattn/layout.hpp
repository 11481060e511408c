// protattn: spatial orderings and block-sparse (BSR) layouts over tiles of atoms.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

namespace protattn {

enum class Order { file, morton, hilbert };
// tiles:   every atom pair of a kept tile pair attends (the original design's semantics).
// atoms:   exactly the pairs within the cutoff, plus each atom with itself.
// windows: AlphaFold3-style sequence-local windows (32 queries x 128 keys centred on them).
// Padding (positions >= n) never attends in any mode.
enum class MaskMode { tiles, atoms, windows };
enum class BlockKind : std::uint8_t { full = 0, partial = 1 };

const char* to_string(Order);
const char* to_string(MaskMode);
Order parse_order(const std::string&);       // throws Error listing the valid names
MaskMode parse_mask(const std::string&);

struct LayoutStats {
  std::int64_t atoms = 0, tiles = 0, nnz = 0;  // nnz = kept tile pairs
  double density = 0;          // nnz / tiles^2
  std::int64_t pairs_within = -1;  // atom pairs (i,j), i!=j counted both ways, within cutoff (-1: not counted)
  std::int64_t pairs_computed = 0;  // real (non-padding) atom pairs in kept tiles
  double useful = -1;          // (pairs_within + atoms) / pairs_computed, -1 when not counted
  double order_ms = 0, build_ms = 0;
};

// Block-sparse layout over square tiles, in the new (spatial) order.
// Position p of the new order holds atom perm[p] of the file order.
struct BlockLayout {
  std::int32_t n = 0;          // atoms
  std::int32_t tile = 128;     // atoms per tile
  std::int32_t n_tiles = 0;    // ceil(n / tile)
  std::vector<std::int32_t> row_ptr;  // [n_tiles + 1]
  std::vector<std::int32_t> col_idx;  // [nnz], sorted within each row
  std::vector<BlockKind> kind;        // [nnz]
  std::vector<std::int32_t> perm;     // [n] new position -> file index
  std::vector<float> coords;          // [n, 3] in the new order (used by mask mode atoms)
  float cutoff = 0;                   // Angstrom (0 when the builder has none)
  MaskMode mask = MaskMode::tiles;
  Order order = Order::file;
  std::string builder;                // "cutoff", "knn", "windows", "dense", "edges", "w1"
  // Optional, [nnz] or empty: bit w of entry e set when query rows kRowGroup w .. kRowGroup w + 15
  // of the tile reach no key of tile col_idx[e] (mark_rows_out). Engines that skip such rows (the
  // fused one) compute it themselves when it is absent; a builder fills it on request
  // (LayoutOptions::mark_rows_out), so that a server does it on the thread of the request.
  std::vector<std::uint8_t> rows_out;
  LayoutStats stats;
  std::int64_t nnz() const { return static_cast<std::int64_t>(col_idx.size()); }
};

// Permutation (new position -> file index) that puts near atoms next to each other. `threads`
// (0: all cores) changes only the time: the permutation is the same for any count.
std::vector<std::int32_t> spatial_order(const float* xyz, std::size_t n, Order order, int threads = 1);

struct LayoutOptions {
  Order order = Order::hilbert;
  MaskMode mask = MaskMode::tiles;
  int tile = 128;
  float cutoff = 8.0f;     // cutoff builder
  int k = 32;              // knn builder
  bool count_pairs = true; // fill stats.pairs_within / useful (O(N) with cell lists)
  int threads = 1;         // order and cutoff builder threads (0: all cores); same layout for any count
  bool mark_rows_out = false;  // fill BlockLayout::rows_out (mask atoms with tiles of 128 only)
};

// Tile pairs whose bounding boxes come within the cutoff. Complete: every atom pair within
// the cutoff lands in a kept pair. O(N) in atoms. mask atoms marks pairs PARTIAL unless
// every atom pair of the tiles is within the cutoff.
BlockLayout build_cutoff_layout(const float* xyz, std::size_t n, const LayoutOptions& opt);
// Tile pairs holding an atom and one of its k nearest neighbours (always with itself).
BlockLayout build_knn_layout(const float* xyz, std::size_t n, const LayoutOptions& opt);
// Sequence-local windows in file (residue) order: query block of 32 attends the 128 keys
// centred on it; mask windows, tiles of opt.tile (must be a multiple of 32).
BlockLayout build_window_layout(const float* xyz, std::size_t n, const LayoutOptions& opt);
BlockLayout build_dense_layout(const float* xyz, std::size_t n, const LayoutOptions& opt);
// User-given tile pairs (row, col) in tiles of the new order; duplicates removed.
BlockLayout build_edges_layout(const float* xyz, std::size_t n,
                               const std::vector<std::pair<std::int32_t, std::int32_t>>& pairs,
                               const LayoutOptions& opt);

// The W1 seed pattern of DESIGN.md: n_tiles x n_tiles tiles of `tile`, band |i-j| <= band,
// then seeded random fill up to nnz kept tiles; identity order, mask tiles, coords synthetic.
BlockLayout make_w1_layout(int n_tiles = 32, int nnz = 800, int band = 12, std::uint64_t seed = 1,
                           int tile = 128);

// Query rows a bit of BlockLayout::rows_out.
inline constexpr int kRowGroup = 16;

// The rows_out bits of `l` into out[nnz]: for mask atoms with tiles of 8 x kRowGroup rows, bit w
// of out[e] is set when rows kRowGroup w .. kRowGroup w + 15 of the query tile lie wholly past the
// structure's end, or their box is farther than the cutoff from the key tile's box (with the
// cutoff builder's relative slack on cutoff^2, far above the rounding of the mask rule's float
// arithmetic: a marked group never holds a pair the rule allows). Any other layout gets 0s.
void rows_out_of_reach(const BlockLayout& l, std::uint8_t* out);
// Fills l.rows_out with them (left empty for layouts that get 0s).
void mark_rows_out(BlockLayout& l);

// Checks the invariants (sizes, sorted unique columns, perm is a permutation); throws Error.
void validate_layout(const BlockLayout& l);

// Writes row_ptr.npy, col_idx.npy (int32), perm.npy (int32), coords.npy ([n,3] float32, file
// order), kind.npy (uint8) and meta.json (n, tile, cutoff, order, mask, nnz, density, ...).
void export_layout(const BlockLayout& l, const std::string& dir);
// Reads a folder written by export_layout (kind.npy/perm.npy/coords.npy optional: defaults
// full / identity / zeros). Throws Error naming the file and the problem.
BlockLayout load_layout(const std::string& dir);

}  // namespace protattn
