// protattn dist: head and spatial plans, the halo sets, the sub-layouts and the per-step copies.
#include <algorithm>
#include <cmath>
#include <string>
#include <vector>

#include "common/timing.hpp"
#include "protattn/dist.hpp"
#include "protattn/error.hpp"

namespace protattn::dist {
namespace {

// Rows of global tile t (the last tile of a layout may be short).
std::int64_t tile_rows(std::int32_t n, std::int32_t tile, std::int32_t t) {
  return std::min<std::int64_t>(tile, static_cast<std::int64_t>(n) - static_cast<std::int64_t>(t) * tile);
}

// Rank that owns global tile t under `bounds` (ranks owning no tile are skipped by upper_bound).
int owner_of(const std::vector<std::int32_t>& bounds, std::int32_t t) {
  return static_cast<int>(std::upper_bound(bounds.begin(), bounds.end(), t) - bounds.begin()) - 1;
}

// Index of global tile t in a rank's ascending local_tiles (t must be there).
std::int32_t local_index(const RankPlan& r, std::int32_t t) {
  const auto it = std::lower_bound(r.local_tiles.begin(), r.local_tiles.end(), t);
  if (it == r.local_tiles.end() || *it != t)
    throw Error("dist: tile " + std::to_string(t) + " is not in rank " + std::to_string(r.rank) + "'s local buffer");
  return static_cast<std::int32_t>(it - r.local_tiles.begin());
}

// The square sub-layout of one rank over its local buffer (see RankPlan in dist.hpp).
BlockLayout make_local_layout(const BlockLayout& l, const RankPlan& r) {
  BlockLayout s;
  s.tile = l.tile;
  s.n_tiles = static_cast<std::int32_t>(r.local_tiles.size());
  std::int64_t n = 0;
  for (std::int32_t t : r.local_tiles) n += tile_rows(l.n, l.tile, t);
  s.n = static_cast<std::int32_t>(n);
  s.cutoff = l.cutoff;
  s.mask = l.mask;
  s.order = l.order;
  s.builder = l.builder;
  s.row_ptr.assign(1, 0);
  for (std::int32_t i = 0; i < s.n_tiles; ++i) {
    const std::int32_t g = r.local_tiles[static_cast<std::size_t>(i)];
    if (g >= r.tile_begin && g < r.tile_end) {
      for (std::int32_t e = l.row_ptr[g]; e < l.row_ptr[g + 1]; ++e) {
        // local_tiles is ascending, so the map is monotone: columns stay sorted, order unchanged.
        s.col_idx.push_back(local_index(r, l.col_idx[e]));
        s.kind.push_back(l.kind[e]);
      }
    }
    s.row_ptr.push_back(static_cast<std::int32_t>(s.col_idx.size()));
  }
  s.perm.resize(static_cast<std::size_t>(s.n));
  for (std::int32_t p = 0; p < s.n; ++p) s.perm[static_cast<std::size_t>(p)] = p;
  s.coords.resize(3 * static_cast<std::size_t>(s.n));
  std::size_t dst = 0;
  for (std::int32_t t : r.local_tiles) {
    const std::size_t first = 3 * static_cast<std::size_t>(t) * l.tile;
    const std::size_t count = 3 * static_cast<std::size_t>(tile_rows(l.n, l.tile, t));
    std::copy(l.coords.begin() + first, l.coords.begin() + first + count, s.coords.begin() + dst);
    dst += count;
  }
  s.stats.atoms = s.n;
  s.stats.tiles = s.n_tiles;
  s.stats.nnz = s.nnz();
  s.stats.density = s.n_tiles ? static_cast<double>(s.nnz()) / (static_cast<double>(s.n_tiles) * s.n_tiles) : 0;
  if (l.mask == MaskMode::windows && s.n_tiles > 0 &&
      r.local_tiles.back() - r.local_tiles.front() + 1 != s.n_tiles)
    throw Error("dist: mask windows needs each rank's tiles to be one contiguous range (the window rule reads "
                "absolute positions); rank " + std::to_string(r.rank) + "'s are not: use --mode heads");
  return s;
}

}  // namespace

const char* to_string(Mode m) { return m == Mode::heads ? "heads" : "spatial"; }

Mode parse_mode(const std::string& s) {
  if (s == "heads") return Mode::heads;
  if (s == "spatial") return Mode::spatial;
  throw Error("unknown parallel mode '" + s + "' (heads, spatial)");
}

std::vector<int> split_heads(int heads, int ranks) {
  if (ranks < 1) throw Error("dist: ranks must be >= 1, got " + std::to_string(ranks));
  if (heads < 1) throw Error("dist: heads must be >= 1, got " + std::to_string(heads));
  if (ranks > heads)
    throw Error("dist: head-parallel needs at least one head per rank: " + std::to_string(heads) + " heads over " +
                std::to_string(ranks) + " ranks (use --mode spatial, or fewer ranks)");
  std::vector<int> b(static_cast<std::size_t>(ranks) + 1, 0);
  const int base = heads / ranks, extra = heads % ranks;
  for (int r = 0; r < ranks; ++r) b[r + 1] = b[r] + base + (r < extra ? 1 : 0);
  return b;
}

std::vector<double> tile_costs(const BlockLayout& l, const CostModel& cm) {
  if (!(cm.full >= 0) || !(cm.partial >= 0) || !std::isfinite(cm.full) || !std::isfinite(cm.partial))
    throw Error("dist: block cost weights must be finite and >= 0");
  std::vector<double> c(static_cast<std::size_t>(l.n_tiles), 0.0);
  for (std::int32_t t = 0; t < l.n_tiles; ++t) {
    std::int64_t full = 0, partial = 0;
    for (std::int32_t e = l.row_ptr[t]; e < l.row_ptr[t + 1]; ++e)
      (l.kind[static_cast<std::size_t>(e)] == BlockKind::partial ? partial : full) += 1;
    c[static_cast<std::size_t>(t)] = cm.full * static_cast<double>(full) + cm.partial * static_cast<double>(partial);
  }
  return c;
}

TileSplit split_tiles(const BlockLayout& l, int ranks, const CostModel& cm) {
  if (ranks < 1) throw Error("dist: ranks must be >= 1, got " + std::to_string(ranks));
  std::vector<double> c = tile_costs(l, cm);
  double total = 0;
  for (double x : c) total += x;
  if (!(total > 0)) std::fill(c.begin(), c.end(), 1.0);  // nothing kept: balance tile counts
  // prefix[t] = cost of tiles [0, t).
  std::vector<double> prefix(c.size() + 1, 0.0);
  for (std::size_t t = 0; t < c.size(); ++t) prefix[t + 1] = prefix[t] + c[t];
  total = prefix.back();

  TileSplit s;
  s.bounds.assign(static_cast<std::size_t>(ranks) + 1, 0);
  s.bounds.back() = l.n_tiles;
  for (int k = 1; k < ranks; ++k) {
    const double target = total * k / ranks;
    auto t = static_cast<std::int32_t>(std::lower_bound(prefix.begin(), prefix.end(), target) - prefix.begin());
    t = std::min(t, l.n_tiles);
    // The nearer of the two prefixes around the target: off by at most half a tile's cost.
    if (t > 0 && target - prefix[t - 1] < prefix[t] - target) --t;
    s.bounds[k] = std::max(t, s.bounds[k - 1]);
  }
  s.cost.assign(static_cast<std::size_t>(ranks), 0.0);
  for (int r = 0; r < ranks; ++r) s.cost[r] = prefix[s.bounds[r + 1]] - prefix[s.bounds[r]];
  s.total = total;
  s.mean = total / ranks;
  s.max = *std::max_element(s.cost.begin(), s.cost.end());
  s.max_tile = c.empty() ? 0 : *std::max_element(c.begin(), c.end());
  return s;
}

std::int64_t SpatialPlan::halo_atoms() const {
  std::int64_t s = 0;
  for (const RankPlan& r : rank) s += r.halo_atoms;
  return s;
}
std::int64_t SpatialPlan::max_halo_atoms() const {
  std::int64_t m = 0;
  for (const RankPlan& r : rank) m = std::max(m, r.halo_atoms);
  return m;
}
std::int64_t SpatialPlan::allgather_atoms() const {
  std::int64_t s = 0;
  for (const RankPlan& r : rank) s += static_cast<std::int64_t>(n) - r.owned_atoms;
  return s;
}

SpatialPlan plan_spatial(const BlockLayout& l, int ranks, const CostModel& cm) {
  const auto t0 = detail::Clock::now();
  validate_layout(l);
  SpatialPlan p;
  p.ranks = ranks;
  p.n = l.n;
  p.tile = l.tile;
  p.n_tiles = l.n_tiles;
  p.cost_model = cm;
  p.split = split_tiles(l, ranks, cm);
  p.rank.resize(static_cast<std::size_t>(ranks));

  // Marks of the key tiles referenced by one rank's rows: stamp = rank + 1, reset-free.
  std::vector<int> stamp(static_cast<std::size_t>(l.n_tiles), 0);
  for (int r = 0; r < ranks; ++r) {
    RankPlan& rp = p.rank[r];
    rp.rank = r;
    rp.tile_begin = p.split.bounds[r];
    rp.tile_end = p.split.bounds[r + 1];
    rp.cost = p.split.cost[r];
    // Clipped at n: a rank past the last tile owns nothing and starts at n.
    rp.atom_begin = std::min<std::int64_t>(l.n, static_cast<std::int64_t>(rp.tile_begin) * l.tile);
    rp.owned_atoms = std::min<std::int64_t>(l.n, static_cast<std::int64_t>(rp.tile_end) * l.tile) - rp.atom_begin;
    for (std::int32_t e = l.row_ptr[rp.tile_begin]; e < l.row_ptr[rp.tile_end]; ++e) {
      const std::int32_t c = l.col_idx[e];
      if (c < rp.tile_begin || c >= rp.tile_end) stamp[c] = r + 1;
    }
    for (std::int32_t t = 0; t < l.n_tiles; ++t)
      if (stamp[t] == r + 1) rp.halo.push_back(t);
    // owned U halo, ascending: [halo below][owned][halo above].
    const auto split_at = std::lower_bound(rp.halo.begin(), rp.halo.end(), rp.tile_begin);
    rp.local_tiles.assign(rp.halo.begin(), split_at);
    rp.local_tile_begin = static_cast<std::int32_t>(rp.local_tiles.size());
    for (std::int32_t t = rp.tile_begin; t < rp.tile_end; ++t) rp.local_tiles.push_back(t);
    rp.local_tiles.insert(rp.local_tiles.end(), split_at, rp.halo.end());
    rp.local_atom_begin = static_cast<std::int64_t>(rp.local_tile_begin) * l.tile;
    // Receive lists: the halo grouped by owner (each owner's tiles are one contiguous stretch).
    for (std::int32_t t : rp.halo) {
      const int owner = owner_of(p.split.bounds, t);
      if (rp.recv.empty() || rp.recv.back().peer != owner) rp.recv.push_back({owner, {}, 0});
      rp.recv.back().tiles.push_back(t);
      rp.recv.back().atoms += tile_rows(l.n, l.tile, t);
      rp.halo_atoms += tile_rows(l.n, l.tile, t);
    }
    rp.local = make_local_layout(l, rp);
  }
  // Send lists mirror the receive lists: what peer q receives from r, r sends to q (peers ascending).
  for (int q = 0; q < ranks; ++q)
    for (const PeerTiles& pt : p.rank[q].recv) p.rank[pt.peer].send.push_back({q, pt.tiles, pt.atoms});
  p.plan_ms = detail::ms_since(t0);
  return p;
}

std::int64_t kv_bytes(std::int64_t atoms, int heads, int dim, std::size_t elem_bytes) {
  return atoms * heads * dim * static_cast<std::int64_t>(elem_bytes) * 2;
}

ExchangePlan exchange_plan(const SpatialPlan& plan, int rank, int heads) {
  if (rank < 0 || rank >= plan.ranks)
    throw Error("dist: rank " + std::to_string(rank) + " outside [0, " + std::to_string(plan.ranks) + ")");
  const RankPlan& r = plan.rank[rank];
  const std::int64_t local_n = r.local.n;
  ExchangePlan x;
  for (const PeerTiles& s : r.send) {
    const Message m{s.peer, x.send_rows, 2 * heads * s.atoms};
    // Runs of consecutive tiles are consecutive rows in the local buffer and in the message.
    std::int64_t pos = 0;  // row of the run within one head's part of the message
    for (std::size_t i = 0; i < s.tiles.size();) {
      std::size_t j = i + 1;
      while (j < s.tiles.size() && s.tiles[j] == s.tiles[j - 1] + 1) ++j;
      std::int64_t rows = 0;
      for (std::size_t k = i; k < j; ++k) rows += tile_rows(plan.n, plan.tile, s.tiles[k]);
      const std::int64_t src = r.local_atom_begin + static_cast<std::int64_t>(s.tiles[i] - r.tile_begin) * plan.tile;
      for (int tensor = 0; tensor < 2; ++tensor)
        x.pack.push_back({src, m.offset + tensor * heads * s.atoms + pos, rows, local_n, s.atoms, tensor});
      pos += rows;
      i = j;
    }
    x.sends.push_back(m);
    x.send_rows += m.rows;
  }
  for (const PeerTiles& v : r.recv) {
    const Message m{v.peer, x.recv_rows, 2 * heads * v.atoms};
    const std::int64_t dst = static_cast<std::int64_t>(local_index(r, v.tiles.front())) * plan.tile;
    for (int tensor = 0; tensor < 2; ++tensor)
      x.unpack.push_back({m.offset + tensor * heads * v.atoms, dst, v.atoms, v.atoms, local_n, tensor});
    x.recvs.push_back(m);
    x.recv_rows += m.rows;
  }
  return x;
}

OverlapSplit split_for_overlap(const RankPlan& rp) {
  const BlockLayout& s = rp.local;
  const std::int32_t own_lo = rp.local_tile_begin, own_hi = rp.local_tile_begin + (rp.tile_end - rp.tile_begin);
  OverlapSplit o;
  // The same buffer, tiles, coordinates and mask; rows filled below.
  for (BlockLayout* d : {&o.interior, &o.boundary}) {
    d->n = s.n;
    d->tile = s.tile;
    d->n_tiles = s.n_tiles;
    d->cutoff = s.cutoff;
    d->mask = s.mask;
    d->order = s.order;
    d->builder = s.builder;
    d->perm = s.perm;
    d->coords = s.coords;
    d->row_ptr.assign(1, 0);
  }
  for (std::int32_t i = 0; i < s.n_tiles; ++i) {
    const std::int32_t e0 = s.row_ptr[i], e1 = s.row_ptr[i + 1];
    bool boundary = false;
    for (std::int32_t e = e0; e < e1 && !boundary; ++e) boundary = s.col_idx[e] < own_lo || s.col_idx[e] >= own_hi;
    if (e0 < e1) {
      BlockLayout& d = boundary ? o.boundary : o.interior;
      d.col_idx.insert(d.col_idx.end(), s.col_idx.begin() + e0, s.col_idx.begin() + e1);
      d.kind.insert(d.kind.end(), s.kind.begin() + e0, s.kind.begin() + e1);
      (boundary ? o.boundary_tiles : o.interior_tiles) += 1;
      (boundary ? o.boundary_blocks : o.interior_blocks) += e1 - e0;
    }
    for (BlockLayout* d : {&o.interior, &o.boundary}) d->row_ptr.push_back(static_cast<std::int32_t>(d->col_idx.size()));
    if (!boundary) continue;
    const std::int64_t first = static_cast<std::int64_t>(i) * s.tile;
    const std::int64_t rows = std::min<std::int64_t>(s.tile, s.n - first);
    if (!o.boundary_runs.empty() && o.boundary_runs.back().src + o.boundary_runs.back().rows == first)
      o.boundary_runs.back().rows += rows;
    else
      o.boundary_runs.push_back({first, first, rows, s.n, s.n, 0});
  }
  for (BlockLayout* d : {&o.interior, &o.boundary}) {
    d->stats.atoms = d->n;
    d->stats.tiles = d->n_tiles;
    d->stats.nnz = d->nnz();
    d->stats.density = d->n_tiles ? static_cast<double>(d->nnz()) / (static_cast<double>(d->n_tiles) * d->n_tiles) : 0;
  }
  return o;
}

std::vector<CopyRun> split_runs(const std::vector<CopyRun>& runs, std::int64_t max_rows) {
  if (max_rows < 1) throw Error("dist: runs must be cut into pieces of at least one row");
  std::vector<CopyRun> cut;
  for (const CopyRun& r : runs)
    for (std::int64_t o = 0; o < r.rows; o += max_rows)
      cut.push_back({r.src + o, r.dst + o, std::min(max_rows, r.rows - o), r.src_stride, r.dst_stride, r.tensor});
  return cut;
}

}  // namespace protattn::dist
