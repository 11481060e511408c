// protattn dist: the CPU executor. P simulated ranks in one process run the plan's data path
// step by step as the NCCL executor does (pack, exchange, unpack, compute, gather), memcpy
// standing in for ncclSend / ncclRecv, so the data path is tested without GPUs.
#include <cstring>
#include <string>
#include <vector>

#include "common/timing.hpp"
#include "protattn/dist.hpp"
#include "protattn/error.hpp"

namespace protattn::dist {
namespace {

using detail::Clock;
using detail::ms_since;

using Bytes = std::vector<std::uint8_t>;

void check_host_args(const RunArgs& a, const char* who) {
  if (!a.q || !a.k || !a.v || !a.o) throw Error(std::string(who) + ": q, k, v and o must not be null");
}

}  // namespace

void copy_runs(const std::vector<CopyRun>& runs, const void* const srcs[2], void* const dsts[2], std::size_t row_bytes,
               int heads) {
  for (const CopyRun& run : runs) {
    // An empty run may come with an empty rank's buffers (null data()), which memcpy must not see.
    if (run.rows <= 0) continue;
    const auto* src = static_cast<const std::uint8_t*>(srcs[run.tensor]);
    auto* dst = static_cast<std::uint8_t*>(dsts[run.tensor]);
    for (int h = 0; h < heads; ++h)
      std::memcpy(dst + static_cast<std::size_t>(run.dst + h * run.dst_stride) * row_bytes,
                  src + static_cast<std::size_t>(run.src + h * run.src_stride) * row_bytes,
                  static_cast<std::size_t>(run.rows) * row_bytes);
  }
}

ExecReport run_heads_host(Engine& engine, const BlockLayout& l, const ProblemShape& shape, int ranks,
                          const RunArgs& host) {
  if (engine.on_device()) throw Error("dist: the CPU executor runs host engines only (got " + std::string(engine.name()) + ")");
  check_host_args(host, "dist heads");
  const std::vector<int> b = split_heads(shape.heads, ranks);
  const std::size_t head_bytes = static_cast<std::size_t>(l.n) * shape.dim * dtype_size(shape.dtype);
  ExecReport rep;
  rep.mode = Mode::heads;
  rep.ranks = ranks;
  for (int r = 0; r < ranks; ++r) {
    // Each rank holds only its heads: [hr, n, dim], contiguous slices of the global tensors.
    const int hr = b[r + 1] - b[r];
    const std::size_t off = static_cast<std::size_t>(b[r]) * head_bytes, bytes = hr * head_bytes;
    const auto slice = [&](const void* p) {
      const auto* s = static_cast<const std::uint8_t*>(p) + off;
      return Bytes(s, s + bytes);
    };
    const Bytes q = slice(host.q), k = slice(host.k), v = slice(host.v);
    Bytes o(bytes);
    std::vector<float> lse(static_cast<std::size_t>(hr) * l.n);
    ProblemShape rs = shape;
    rs.heads = hr;
    const auto t0 = Clock::now();
    const auto plan = engine.plan({&l}, rs);
    engine.run(*plan, RunArgs{q.data(), k.data(), v.data(), o.data(), lse.data(), nullptr});
    RankReport rr;
    rr.rank = r;
    rr.head_begin = b[r];
    rr.head_end = b[r + 1];
    rr.compute_ms = ms_since(t0);
    // Gather to "rank 0": the slices land where the heads belong.
    std::memcpy(static_cast<std::uint8_t*>(host.o) + off, o.data(), bytes);
    if (host.lse) std::memcpy(host.lse + static_cast<std::size_t>(b[r]) * l.n, lse.data(), lse.size() * sizeof(float));
    rep.rank.push_back(rr);
  }
  return rep;
}

ExecReport run_spatial_host(Engine& engine, const SpatialPlan& plan, const BlockLayout& l, const ProblemShape& shape,
                            const RunArgs& host, bool overlap) {
  if (engine.on_device()) throw Error("dist: the CPU executor runs host engines only (got " + std::string(engine.name()) + ")");
  check_host_args(host, "dist spatial");
  if (plan.n != l.n || plan.n_tiles != l.n_tiles || plan.tile != l.tile)
    throw Error("dist: the spatial plan was made for another layout");
  const int heads = shape.heads, P = plan.ranks;
  const std::size_t row_bytes = static_cast<std::size_t>(shape.dim) * dtype_size(shape.dtype);

  // Per rank: local Q, K, V, O [heads, local.n, dim]; owned rows written once, as the previous
  // layer of a model would write them in place. Halo rows of Q stay zero (their rows are empty).
  struct Local {
    Bytes q, k, v, o, send, recv;
    std::vector<float> lse;
    ExchangePlan x;
  };
  std::vector<Local> loc(static_cast<std::size_t>(P));
  for (int r = 0; r < P; ++r) {
    const RankPlan& rp = plan.rank[r];
    Local& L = loc[r];
    const std::size_t bytes = static_cast<std::size_t>(heads) * rp.local.n * row_bytes;
    L.q.assign(bytes, 0);
    L.k.assign(bytes, 0);
    L.v.assign(bytes, 0);
    L.o.assign(bytes, 0);
    L.lse.assign(static_cast<std::size_t>(heads) * rp.local.n, 0.0f);
    const CopyRun owned{rp.atom_begin, rp.local_atom_begin, rp.owned_atoms, l.n, rp.local.n, 0};
    const auto place = [&](const void* global, std::vector<std::uint8_t>& local) {
      const void* srcs[2] = {global, global};
      void* dsts[2] = {local.data(), local.data()};
      copy_runs({owned}, srcs, dsts, row_bytes, heads);
    };
    place(host.q, L.q);
    place(host.k, L.k);
    place(host.v, L.v);
    L.x = exchange_plan(plan, r, heads);
    L.send.assign(static_cast<std::size_t>(L.x.send_rows) * row_bytes, 0);
    L.recv.assign(static_cast<std::size_t>(L.x.recv_rows) * row_bytes, 0);
  }

  ExecReport rep;
  rep.mode = Mode::spatial;
  rep.ranks = P;
  rep.rank.resize(static_cast<std::size_t>(P));
  // 1. Every rank packs its messages.
  for (int r = 0; r < P; ++r) {
    Local& L = loc[r];
    const auto t0 = Clock::now();
    const void* srcs[2] = {L.k.data(), L.v.data()};
    void* dsts[2] = {L.send.data(), L.send.data()};
    copy_runs(L.x.pack, srcs, dsts, row_bytes, heads);
    rep.rank[r].exchange_ms += ms_since(t0);
  }
  // 2. The "network": each receive is matched with the peer's send of the same size, as NCCL
  //    matches a grouped ncclRecv with the peer's ncclSend.
  for (int r = 0; r < P; ++r) {
    Local& L = loc[r];
    const auto t0 = Clock::now();
    for (const Message& m : L.x.recvs) {
      const Local& S = loc[m.peer];
      const Message* sm = nullptr;
      for (const Message& c : S.x.sends)
        if (c.peer == r) sm = &c;
      if (!sm || sm->rows != m.rows)
        throw Error("dist: rank " + std::to_string(r) + " expects " + std::to_string(m.rows) + " rows from rank " +
                    std::to_string(m.peer) + ", which sends " + (sm ? std::to_string(sm->rows) : std::string("none")));
      std::memcpy(L.recv.data() + static_cast<std::size_t>(m.offset) * row_bytes,
                  S.send.data() + static_cast<std::size_t>(sm->offset) * row_bytes,
                  static_cast<std::size_t>(m.rows) * row_bytes);
      rep.rank[r].bytes_received += m.rows * static_cast<std::int64_t>(row_bytes);
      rep.rank[m.peer].bytes_sent += m.rows * static_cast<std::int64_t>(row_bytes);
    }
    rep.rank[r].exchange_ms += ms_since(t0);
  }
  // 3. Every rank unpacks into its local buffer and computes (with overlap: its interior rows
  //    first, on K and V without the halo, as they would run while the messages travel, then its
  //    boundary rows into a second output); 4. the owned rows are gathered.
  for (int r = 0; r < P; ++r) {
    const RankPlan& rp = plan.rank[r];
    Local& L = loc[r];
    RankReport& rr = rep.rank[r];
    const RunArgs local_args{L.q.data(), L.k.data(), L.v.data(), L.o.data(), L.lse.data(), nullptr};
    OverlapSplit split;
    if (overlap && rp.local.n > 0) {
      split = split_for_overlap(rp);
      const auto t0 = Clock::now();
      engine.run(*engine.plan({&split.interior}, shape), local_args);
      rr.compute_ms += ms_since(t0);
    }
    auto t0 = Clock::now();
    const void* srcs[2] = {L.recv.data(), L.recv.data()};
    void* dsts[2] = {L.k.data(), L.v.data()};
    copy_runs(L.x.unpack, srcs, dsts, row_bytes, heads);
    rr.exchange_ms += ms_since(t0);
    rr.rank = r;
    rr.tile_begin = rp.tile_begin;
    rr.tile_end = rp.tile_end;
    rr.cost = rp.cost;
    rr.halo_atoms = rp.halo_atoms;
    if (overlap && rp.local.n > 0) {
      t0 = Clock::now();
      Bytes ob(L.o.size(), 0);
      std::vector<float> lseb(L.lse.size(), 0.0f);
      RunArgs b = local_args;
      b.o = ob.data();
      b.lse = lseb.data();
      engine.run(*engine.plan({&split.boundary}, shape), b);
      const void* bo[2] = {ob.data(), ob.data()};
      void* to[2] = {L.o.data(), L.o.data()};
      copy_runs(split.boundary_runs, bo, to, row_bytes, heads);
      const void* bl[2] = {lseb.data(), lseb.data()};
      void* tl[2] = {L.lse.data(), L.lse.data()};
      copy_runs(split.boundary_runs, bl, tl, sizeof(float), heads);
      rr.compute_ms += ms_since(t0);
    } else if (rp.local.n > 0) {
      t0 = Clock::now();
      const auto p = engine.plan({&rp.local}, shape);
      engine.run(*p, local_args);
      rr.compute_ms = ms_since(t0);
    }
    const CopyRun back{rp.local_atom_begin, rp.atom_begin, rp.owned_atoms, rp.local.n, l.n, 0};
    const void* osrc[2] = {L.o.data(), L.o.data()};
    void* odst[2] = {host.o, host.o};
    copy_runs({back}, osrc, odst, row_bytes, heads);
    if (host.lse) {
      const void* lsrc[2] = {L.lse.data(), L.lse.data()};
      void* ldst[2] = {host.lse, host.lse};
      copy_runs({back}, lsrc, ldst, sizeof(float), heads);
    }
  }
  for (const RankReport& rr : rep.rank) rep.bytes_moved += rr.bytes_received;
  return rep;
}

}  // namespace protattn::dist
