// protattn: attention over several ranks (GPUs): head-parallel and spatial (tile-range) plans,
// the halo exchange of K/V tiles, an in-process executor of the same data path on the CPU, and
// the process-group plumbing (rank variables, id rendezvous through files, a local launcher).
#pragma once
#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#include "protattn/engine.hpp"
#include "protattn/layout.hpp"

namespace protattn::dist {

// heads:   every rank runs all query tiles over its contiguous range of heads.
// spatial: every rank runs all heads over its contiguous range of query tiles; it receives the
//          K/V tiles its rows reference that another rank owns (the halo), never all of K/V.
enum class Mode { heads, spatial };
const char* to_string(Mode);
Mode parse_mode(const std::string&);  // "heads" | "spatial"; throws Error listing them

// ---------------------------------------------------------------------------------------------
// Head-parallel plan

// Boundaries [ranks + 1]: rank r owns heads [b[r], b[r + 1]). Contiguous, sizes differ by at
// most one (the first heads % ranks ranks take one more). Throws Error when ranks < 1 or
// ranks > heads (a rank with no head would idle).
std::vector<int> split_heads(int heads, int ranks);

// ---------------------------------------------------------------------------------------------
// Spatial plan

// Cost of a query tile: its kept key blocks, FULL and PARTIAL weighted apart (a PARTIAL block
// evaluates the mask per pair; its weight is a measured ratio on a given GPU, 1 by default).
struct CostModel {
  double full = 1.0;
  double partial = 1.0;
};
std::vector<double> tile_costs(const BlockLayout& l, const CostModel& cm = {});

// Contiguous ranges of query tiles balancing cost, not tile counts.
struct TileSplit {
  std::vector<std::int32_t> bounds;  // [ranks + 1]: rank r owns query tiles [bounds[r], bounds[r + 1])
  std::vector<double> cost;          // [ranks]
  double total = 0, max = 0, mean = 0, max_tile = 0;  // max_tile: the costliest single tile
  double imbalance() const { return mean > 0 ? max / mean : 1.0; }  // max / mean, 1 = perfect
};
// Boundary k sits at the prefix of tile costs nearest to k * total / ranks, so every rank's cost
// lies within mean +- max_tile. A layout with no kept block is split by tile counts. Ranks may
// own no tile when ranks > n_tiles. Throws Error when ranks < 1.
TileSplit split_tiles(const BlockLayout& l, int ranks, const CostModel& cm = {});

// Tiles moved between one rank and one peer (global tile ids, ascending).
struct PeerTiles {
  int peer = 0;
  std::vector<std::int32_t> tiles;
  std::int64_t atoms = 0;  // rows of those tiles: the layout's last tile may be short
};

// One rank's part of a spatial plan.
//
// The local K/V buffer holds the tiles local_tiles = owned U halo in ascending GLOBAL order, each
// at tile stride (only the layout's last tile can be short, and it is the highest id, so it is
// last here too). As every rank owns a contiguous range, that order is [tiles received from lower
// ranks][owned tiles][tiles received from higher ranks], and the tiles from one peer are contiguous:
// each received message lands in one run of rows.
//
// The sub-layout `local` is square over that buffer: one position space for queries and keys,
// as every engine and mask_allows() use (coords[p] serve query p and key p alike, so one coords
// array suffices). Its rows for owned tiles carry the global row's blocks with columns remapped
// by a monotone map (so still sorted, and each row accumulates its key tiles in the original
// order: the results are bit-identical to one engine); its rows for halo tiles are empty (O = 0,
// LSE = -inf there, never read). Q and O therefore use the same [heads, local.n, dim] shape,
// owned rows at local_atom_begin.
struct RankPlan {
  int rank = 0;
  std::int32_t tile_begin = 0, tile_end = 0;  // owned query tiles, global ids
  std::int64_t atom_begin = 0, owned_atoms = 0;  // owned positions, global
  double cost = 0;
  std::vector<std::int32_t> halo;         // referenced by owned rows, not owned; ascending
  std::vector<std::int32_t> local_tiles;  // the local buffer's tiles (global ids), ascending
  std::int32_t local_tile_begin = 0;      // index of tile_begin in local_tiles
  std::int64_t local_atom_begin = 0;      // local_tile_begin * tile
  std::int64_t halo_atoms = 0;
  std::vector<PeerTiles> recv;  // halo tiles by owner (peer ascending, non-empty lists only)
  std::vector<PeerTiles> send;  // owned tiles each peer references (peer ascending, non-empty)
  BlockLayout local;            // the square sub-layout described above
};

struct SpatialPlan {
  int ranks = 1;
  std::int32_t n = 0, tile = 128, n_tiles = 0;
  CostModel cost_model;
  TileSplit split;
  std::vector<RankPlan> rank;
  double plan_ms = 0;  // split + halo + sub-layouts, steady clock
  std::int64_t halo_atoms() const;      // received by all ranks in one step
  std::int64_t max_halo_atoms() const;  // received by the busiest rank
  std::int64_t allgather_atoms() const; // what a full all-gather would deliver: sum of n - owned
};
// Throws Error when ranks < 1, on an invalid layout, or for mask windows when a rank's local
// tiles are not one contiguous global range (the windows rule reads absolute positions; a
// uniform shift by whole tiles keeps it exact, a gap would not).
SpatialPlan plan_spatial(const BlockLayout& l, int ranks, const CostModel& cm = {});

// Bytes of K and V for `atoms` rows: atoms * heads * dim * elem_bytes * 2.
std::int64_t kv_bytes(std::int64_t atoms, int heads, int dim, std::size_t elem_bytes);

// ---------------------------------------------------------------------------------------------
// The per-step data movement, in rows of one head (dim elements). The NCCL executor and the CPU
// executor move exactly these bytes.
//
// Send buffer of a rank: for each send peer in order, one message [K | V][heads][rows][dim];
// the receive buffer holds the messages from the recv peers the same way.

// Copies `rows` rows for each head h (and the tensor picked by `tensor`: 0 = K, 1 = V):
// src row (src + h * src_stride) -> dst row (dst + h * dst_stride).
struct CopyRun {
  std::int64_t src = 0, dst = 0, rows = 0, src_stride = 0, dst_stride = 0;
  std::int32_t tensor = 0;
};
struct Message {
  int peer = 0;
  std::int64_t offset = 0;  // first row of the message in the send / receive buffer
  std::int64_t rows = 0;    // rows of the message: 2 * heads * atoms
};
struct ExchangePlan {
  std::vector<Message> sends, recvs;
  std::int64_t send_rows = 0, recv_rows = 0;  // buffer sizes
  std::vector<CopyRun> pack;    // local K/V buffer -> send buffer (one run per run of consecutive tiles)
  std::vector<CopyRun> unpack;  // receive buffer -> local K/V buffer (one run per peer and tensor)
};
ExchangePlan exchange_plan(const SpatialPlan& plan, int rank, int heads);

// The same copies cut into runs of at most max_rows rows (the GPU kernel gives each piece a block).
std::vector<CopyRun> split_runs(const std::vector<CopyRun>& runs, std::int64_t max_rows);

// Applies runs on host memory. pack: srcs = {K local, V local}, dsts = {send, send};
// unpack: srcs = {recv, recv}, dsts = {K local, V local}. row_bytes = dim * element size.
void copy_runs(const std::vector<CopyRun>& runs, const void* const srcs[2], void* const dsts[2], std::size_t row_bytes,
               int heads);

// ---------------------------------------------------------------------------------------------
// The exchange beside the attention (`--overlap`): a rank's owned rows that reference no halo
// tile (interior) need none of the step's messages, so they can run while the messages travel;
// the rest (boundary) once the halo has arrived. Both are square sub-layouts over the same local
// buffer as RankPlan::local, each with the other's rows empty, and each row keeps its blocks and
// their order: the interior run's O and LSE and the boundary run's boundary rows together are the
// bits of one run of `local`.
struct OverlapSplit {
  BlockLayout interior, boundary;
  // The boundary rows as runs of local positions (src = dst, strides local.n, tensor 0; the last
  // tile may be short): what is copied from the boundary run's O and LSE into the interior run's.
  std::vector<CopyRun> boundary_runs;
  std::int32_t interior_tiles = 0, boundary_tiles = 0;  // owned tiles with at least one block
  std::int64_t interior_blocks = 0, boundary_blocks = 0;
};
OverlapSplit split_for_overlap(const RankPlan& rank);

// ---------------------------------------------------------------------------------------------
// The CPU executor: P simulated ranks in one process, the same plan and data path as the NCCL
// executor, memcpy standing in for ncclSend/ncclRecv. Inputs and outputs are the global
// [heads, n, dim] host tensors of RunArgs (one layout, batch of one).

struct RankReport {
  int rank = 0;
  int head_begin = 0, head_end = 0;          // heads mode
  std::int32_t tile_begin = 0, tile_end = 0; // spatial mode
  double cost = 0;
  std::int64_t halo_atoms = 0, bytes_sent = 0, bytes_received = 0;
  double exchange_ms = 0, compute_ms = 0;
};
struct ExecReport {
  Mode mode = Mode::heads;
  int ranks = 1;
  std::vector<RankReport> rank;
  std::int64_t bytes_moved = 0;  // halo bytes of one step, all ranks
};

ExecReport run_heads_host(Engine& engine, const BlockLayout& l, const ProblemShape& shape, int ranks,
                          const RunArgs& host);
// overlap: each rank runs its interior rows before unpacking the messages (split_for_overlap),
// then its boundary rows into a second output, whose boundary rows it copies over.
ExecReport run_spatial_host(Engine& engine, const SpatialPlan& plan, const BlockLayout& l, const ProblemShape& shape,
                            const RunArgs& host, bool overlap = false);

// ---------------------------------------------------------------------------------------------
// Process group

struct RankInfo {
  int rank = 0, world = 1, local = 0;
  bool from_env = false;  // false: no rank variables (a single process, or the launcher)
};
// RANK / WORLD_SIZE / LOCAL_RANK (torchrun style), else OMPI_COMM_WORLD_RANK / _SIZE / _LOCAL_RANK
// (mpirun). LOCAL_RANK defaults to RANK. Throws Error on malformed or inconsistent values.
RankInfo rank_from_env();

// Writes `bytes` to dir/name atomically (a temporary file, then rename), creating dir.
void publish_file(const std::string& dir, const std::string& name, const void* data, std::size_t bytes);
// Waits until dir/name holds exactly `bytes` bytes and returns them; throws Error naming the file
// after timeout_s seconds.
std::vector<std::uint8_t> wait_file(const std::string& dir, const std::string& name, std::size_t bytes,
                                    double timeout_s);

// Starts `world` copies of argv[0] argv[1..] with RANK, WORLD_SIZE, LOCAL_RANK set (and the extra
// variables `env`, "NAME=value"), waits for all of them. When one fails the others are stopped
// (SIGTERM) and Error names the failed ranks and their exit status.
void spawn_ranks(const std::vector<std::string>& argv, int world, const std::vector<std::string>& env);

}  // namespace protattn::dist
