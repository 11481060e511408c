// GPU tests of atom_encoder: the GPU forward (fused engine) against the CPU forward on real structures.
#include <cuda_runtime.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <string>
#include <vector>

#include "cuda/common/host_staging.hpp"
#include "protattn/half.hpp"
#include "protattn/model.hpp"
#include "protattn/structure.hpp"

namespace protattn {
namespace {

// Bounds of |gpu - cpu| over every element (the embedding is a LayerNorm output, |x| <~ 4):
// the GPU rounds the LayerNorm outputs, weights, Q/K/V, P, O and the MLP hidden to fp16 (2^-11
// relative each) and accumulates in fp32. Measured on an H100 80GB HBM3, 2026-11-25: max 2.44e-3,
// RMS 5.4e-4 (default model, 4-structure batch); max 1.95e-3, RMS 4.9e-4 (tiles, d=128, 3 layers).
// The bounds are twice the worst measured value.
constexpr double kMaxAbs = 5e-3;
constexpr double kMaxRms = 1.1e-3;

// Real structures: $PROTATTN_TEST_DATA, else the build's PROTATTN_TEST_DATA, else tests/data beside this file.
std::string data_dir() {
  if (const char* env = std::getenv("PROTATTN_TEST_DATA")) return env;
#ifdef PROTATTN_TEST_DATA
  return PROTATTN_TEST_DATA;
#else
  return (std::filesystem::path(__FILE__).parent_path() / "data").string();
#endif
}

bool have_gpu() {
  int n = 0;
  return cudaGetDeviceCount(&n) == cudaSuccess && n > 0;
}

struct Loaded {
  std::vector<Structure> s;
  std::vector<std::vector<std::int32_t>> el;
  std::vector<AtomInput> batch() const {
    std::vector<AtomInput> b;
    for (std::size_t i = 0; i < s.size(); ++i) b.push_back({s[i].xyz, el[i]});
    return b;
  }
  void add(Structure st) {
    el.emplace_back(st.element.begin(), st.element.end());
    s.push_back(std::move(st));
  }
};

Loaded load(const std::vector<std::string>& names) {
  Loaded l;
  for (const std::string& n : names) {
    ReadOptions o;
    o.hydrogens = n == "1ejg.pdb";  // crambin with its hydrogens: 637 atoms
    l.add(read_structure(data_dir() + "/" + n, o));
  }
  return l;
}

void compare(const std::vector<Embedding>& gpu, const std::vector<Embedding>& cpu, const std::string& what) {
  ASSERT_EQ(gpu.size(), cpu.size());
  double worst = 0, ss = 0;
  std::size_t count = 0, non_finite = 0;
  for (std::size_t b = 0; b < gpu.size(); ++b) {
    ASSERT_EQ(gpu[b].size(), cpu[b].size()) << what << " structure " << b;
    for (std::size_t i = 0; i < gpu[b].size(); ++i) {
      const double g = half_to_float(gpu[b][i]), c = half_to_float(cpu[b][i]);
      if (!std::isfinite(g)) ++non_finite;
      worst = std::max(worst, std::abs(g - c));
      ss += (g - c) * (g - c);
    }
    count += gpu[b].size();
  }
  const double rms = std::sqrt(ss / static_cast<double>(count));
  std::printf("[ model ] %s: %zu elements, max |gpu - cpu| %.3e, rms %.3e\n", what.c_str(), count, worst, rms);
  EXPECT_EQ(non_finite, 0u) << what;
  EXPECT_LE(worst, kMaxAbs) << what;
  EXPECT_LE(rms, kMaxRms) << what;
}

TEST(ModelGpu, MatchesCpuOnRealStructuresInARaggedBatch) {
  if (!have_gpu()) GTEST_SKIP() << "no CUDA device";
  const Loaded data = load({"1ubq.pdb", "1ejg.pdb", "2hhb.pdb", "1tii.pdb"});
  const Model m = init_model(ModelConfig{}, 1);  // the default: C=128, L=2, H=4, d=64, mask atoms
  AtomEncoder cpu(m, "cpu"), gpu(m, "fused");
  const auto ref = cpu.forward(data.batch());
  compare(gpu.forward(data.batch()), ref, "batch 1ubq+1ejg+2hhb+1tii, mask atoms, d=64");
  // One structure alone gives the same embedding, within the same bound, as in the batch.
  compare(gpu.forward({data.batch()[2]}), {ref[2]}, "2hhb alone");
}

// The plan's uploads and the fetch through a staging buffer far smaller than the data (copied in
// many pieces, structures split across pieces at odd places) give the same bits as in one piece.
TEST(ModelGpu, StagingInPiecesGivesTheSameBits) {
  if (!have_gpu()) GTEST_SKIP() << "no CUDA device";
  const Loaded data = load({"1ubq.pdb", "1ejg.pdb", "2hhb.pdb"});
  AtomEncoder gpu(init_model(ModelConfig{}, 2), "fused");
  const auto whole = gpu.forward(data.batch());
  struct Restore {
    ~Restore() { cuda::set_staging_limit(0); }
  } restore;
  cuda::set_staging_limit(6002);  // even (fp16 rows), not a multiple of any row or structure
  const auto pieces = gpu.forward(data.batch());
  ASSERT_EQ(pieces.size(), whole.size());
  for (std::size_t b = 0; b < whole.size(); ++b) {
    ASSERT_EQ(pieces[b].size(), whole[b].size()) << "structure " << b;
    const auto diff = std::mismatch(pieces[b].begin(), pieces[b].end(), whole[b].begin());
    EXPECT_TRUE(diff.first == pieces[b].end())
        << "structure " << b << ": first difference at element " << (diff.first - pieces[b].begin());
  }
}

// Uploads committed in an UploadGroup (the model's plan and its attention plan) land whole once
// the group finishes: several commits packed after one another, with a staging buffer that holds
// them all and with one far smaller (settled and reused in between), and a download in the
// middle of a group (which settles it first).
TEST(ModelGpu, UploadGroupKeepsEveryByte) {
  if (!have_gpu()) GTEST_SKIP() << "no CUDA device";
  struct Restore {
    ~Restore() { cuda::set_staging_limit(0); }
  } restore;
  for (const std::size_t limit : {std::size_t{0}, std::size_t{1000}}) {
    cuda::set_staging_limit(limit);
    std::vector<std::vector<std::uint32_t>> host;
    for (const std::size_t n : {7, 300, 1, 2049, 64}) {
      std::vector<std::uint32_t> v(n);
      for (std::size_t i = 0; i < n; ++i) v[i] = static_cast<std::uint32_t>(n * 1000003u + i * 2654435761u);
      host.push_back(std::move(v));
    }
    std::vector<cuda::DeviceBuffer> dev(host.size());
    std::vector<std::uint32_t> mid;
    {
      cuda::UploadGroup group;
      for (std::size_t i = 0; i < host.size(); ++i) {
        cuda::Uploads up;
        up.add(dev[i], host[i]);
        up.commit();
        if (i == 2) {  // a download inside the group reads what was committed so far
          mid.resize(host[1].size());
          cuda::download(dev[1].get(), dev[1].bytes(), cudaStreamPerThread,
                         [&](std::size_t off, const std::uint8_t* d, std::size_t n) {
                           std::memcpy(reinterpret_cast<std::uint8_t*>(mid.data()) + off, d, n);
                         });
        }
      }
      group.finish();
    }
    EXPECT_EQ(mid, host[1]) << "limit " << limit;
    for (std::size_t i = 0; i < host.size(); ++i) {
      std::vector<std::uint32_t> back(host[i].size(), 0xDEADBEEFu);
      ASSERT_EQ(cudaMemcpy(back.data(), dev[i].get(), dev[i].bytes(), cudaMemcpyDeviceToHost), cudaSuccess);
      EXPECT_EQ(back, host[i]) << "limit " << limit << ", upload " << i;
    }
  }
}

// PROTATTN_MODEL_EPILOGUE=0 (Q/K/V and fc1 in fp32, then the bias / GELU row kernels, for
// comparison) is a forward of its own: it matches the CPU forward within the same bounds, at
// C=64 and at C=30 (the embedding's element-wise form) with three heads.
TEST(ModelGpu, WithoutEpiloguesMatchesCpu) {
  if (!have_gpu()) GTEST_SKIP() << "no CUDA device";
  const Loaded data = load({"1ubq.pdb", "1ejg.pdb"});
  ASSERT_EQ(setenv("PROTATTN_MODEL_EPILOGUE", "0", 1), 0);
  struct Restore {
    ~Restore() { unsetenv("PROTATTN_MODEL_EPILOGUE"); }
  } restore;
  for (const int channels : {64, 30}) {
    ModelConfig c;
    c.channels = channels;
    c.heads = channels == 64 ? 2 : 3;
    c.head_dim = 64;
    const Model m = init_model(c, 5);
    AtomEncoder cpu(m, "cpu"), gpu(m, "fused");
    compare(gpu.forward(data.batch()), cpu.forward(data.batch()), "no epilogues, C=" + std::to_string(channels));
  }
}

TEST(ModelGpu, MatchesCpuWithTilesMaskAndHeadDim128) {
  if (!have_gpu()) GTEST_SKIP() << "no CUDA device";
  const Loaded data = load({"2hhb.pdb", "1ubq.pdb"});
  ModelConfig c;
  c.channels = 96;  // not a multiple of 64 or 128
  c.layers = 3;
  c.heads = 2;
  c.head_dim = 128;
  c.mask = MaskMode::tiles;
  const Model m = init_model(c, 3);
  AtomEncoder cpu(m, "cpu"), gpu(m, "fused");
  compare(gpu.forward(data.batch()), cpu.forward(data.batch()), "batch 2hhb+1ubq, mask tiles, d=128, C=96, 3 layers");
}

// The shape of AlphaFold 3's atom attention, 128 channels in 4 heads of 32: the fused engine's d=32.
TEST(ModelGpu, MatchesCpuWithHeadDim32) {
  if (!have_gpu()) GTEST_SKIP() << "no CUDA device";
  const Loaded data = load({"2hhb.pdb", "1ubq.pdb"});
  ModelConfig c;
  c.channels = 128;
  c.heads = 4;
  c.head_dim = 32;
  const Model m = init_model(c, 7);
  AtomEncoder cpu(m, "cpu"), gpu(m, "fused");
  compare(gpu.forward(data.batch()), cpu.forward(data.batch()), "batch 2hhb+1ubq, mask atoms, 4 heads of d=32");
}

// Channels that are not a multiple of 4 take the row kernels' one-element path (the embedding
// rows); the rest take 16-byte vectors.
TEST(ModelGpu, MatchesCpuWithChannelsNotAMultipleOfFour) {
  if (!have_gpu()) GTEST_SKIP() << "no CUDA device";
  const Loaded data = load({"1ubq.pdb", "1ejg.pdb"});
  ModelConfig c;
  c.channels = 30;
  c.layers = 1;
  c.heads = 3;
  c.head_dim = 64;
  const Model m = init_model(c, 5);
  AtomEncoder cpu(m, "cpu"), gpu(m, "fused");
  compare(gpu.forward(data.batch()), cpu.forward(data.batch()), "batch 1ubq+1ejg, mask atoms, C=30, 3 heads");
}

// Embeddings fetched into the caller's memory (as a server does into registered shared memory):
// one structure into page-locked memory, one into ordinary memory, one the usual way; the same
// bits as the plain fetch, poisoned destinations fully overwritten, the returned ones empty.
TEST(ModelGpu, FetchIntoDestinationsGivesTheSameBits) {
  if (!have_gpu()) GTEST_SKIP() << "no CUDA device";
  const Loaded data = load({"1ubq.pdb", "2hhb.pdb", "1ejg.pdb"});
  AtomEncoder gpu(init_model(ModelConfig{}, 4), "fused");
  auto plan = gpu.plan(data.batch());
  gpu.run(*plan);
  const auto plain = gpu.fetch(*plan);
  ASSERT_EQ(plain.size(), 3u);
  std::uint16_t* pinned = nullptr;
  ASSERT_EQ(cudaMallocHost(&pinned, plain[0].size() * sizeof(std::uint16_t)), cudaSuccess);
  std::fill(pinned, pinned + plain[0].size(), std::uint16_t{0x7e00});  // fp16 NaN
  std::vector<std::uint16_t> ordinary(plain[2].size(), 0x7e00);
  gpu.run(*plan);
  const auto got = gpu.fetch(*plan, nullptr, {pinned, nullptr, ordinary.data()});
  EXPECT_TRUE(got[0].empty());
  EXPECT_TRUE(got[2].empty());
  EXPECT_EQ(got[1], plain[1]);
  EXPECT_EQ(std::vector<std::uint16_t>(pinned, pinned + plain[0].size()), plain[0]);
  EXPECT_EQ(ordinary, plain[2]);
  cudaFreeHost(pinned);
  // Every structure to a destination: no staged copy at all.
  std::vector<std::vector<std::uint16_t>> all;
  std::vector<void*> dests;
  for (const auto& e : plain) all.emplace_back(e.size(), 0x7e00);
  for (auto& a : all) dests.push_back(a.data());
  gpu.run(*plan);
  gpu.fetch(*plan, nullptr, dests);
  for (std::size_t b = 0; b < plain.size(); ++b) EXPECT_EQ(all[b], plain[b]) << "structure " << b;
  EXPECT_THROW(gpu.fetch(*plan, nullptr, {nullptr}), Error);  // one destination for three structures
}

// EngineOptions::gpu_wait_poll (serve --gpu-wait=poll): fetch waits by polling an event. The
// destinations are page-locked, so the copies are asynchronous: a wait that returned early would
// leave the poison in them.
TEST(ModelGpu, PollingWaitGivesTheSameBits) {
  if (!have_gpu()) GTEST_SKIP() << "no CUDA device";
  const Loaded data = load({"2hhb.pdb", "1ubq.pdb"});
  const Model model = init_model(ModelConfig{}, 6);
  AtomEncoder spin(model, "fused");
  EngineOptions eo;
  eo.gpu_wait_poll = true;
  AtomEncoder poll(model, "fused", eo);
  auto p_spin = spin.plan(data.batch());
  spin.run(*p_spin);
  const auto want = spin.fetch(*p_spin);
  cudaStream_t stream;
  ASSERT_EQ(cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking), cudaSuccess);
  auto plan = poll.plan(data.batch());
  for (int round = 0; round < 3; ++round) {
    std::vector<void*> dests;
    for (const auto& e : want) {
      std::uint16_t* d = nullptr;
      ASSERT_EQ(cudaMallocHost(&d, e.size() * sizeof(std::uint16_t)), cudaSuccess);
      std::fill(d, d + e.size(), std::uint16_t{0x7e00});  // fp16 NaN
      dests.push_back(d);
    }
    poll.run(*plan, stream);
    poll.fetch(*plan, stream, dests);
    for (std::size_t b = 0; b < want.size(); ++b) {
      const auto* d = static_cast<const std::uint16_t*>(dests[b]);
      EXPECT_EQ(std::vector<std::uint16_t>(d, d + want[b].size()), want[b]) << "round " << round << ", structure " << b;
      cudaFreeHost(dests[b]);
    }
    poll.run(*plan, stream);
    EXPECT_EQ(poll.fetch(*plan, stream), want) << "round " << round << ", staged";
  }
  cudaStreamDestroy(stream);
}

TEST(ModelGpu, RunIsDeterministicAndCapturable) {
  if (!have_gpu()) GTEST_SKIP() << "no CUDA device";
  const Loaded data = load({"1ubq.pdb", "2hhb.pdb"});
  AtomEncoder gpu(init_model(ModelConfig{}, 1), "fused");
  auto plan = gpu.plan(data.batch());
  gpu.run(*plan);
  const auto first = gpu.fetch(*plan);
  gpu.run(*plan);
  EXPECT_EQ(gpu.fetch(*plan), first) << "two runs differ";

  cudaStream_t stream;
  ASSERT_EQ(cudaStreamCreate(&stream), cudaSuccess);
  cudaGraph_t graph;
  cudaGraphExec_t exec;
  ASSERT_EQ(cudaStreamBeginCapture(stream, cudaStreamCaptureModeGlobal), cudaSuccess);
  gpu.run(*plan, stream);
  ASSERT_EQ(cudaStreamEndCapture(stream, &graph), cudaSuccess);
  ASSERT_EQ(cudaGraphInstantiate(&exec, graph, 0), cudaSuccess);
  for (int i = 0; i < 3; ++i) ASSERT_EQ(cudaGraphLaunch(exec, stream), cudaSuccess);
  EXPECT_EQ(gpu.fetch(*plan, stream), first) << "graph replay differs from a direct run";
  cudaGraphExecDestroy(exec);
  cudaGraphDestroy(graph);
  cudaStreamDestroy(stream);
}

// Not a check: forward times of the default model, printed for docs/model.md (graph replays,
// CUDA events, median of 20 after 3 warm-ups).
TEST(ModelGpu, ForwardTimes) {
  if (!have_gpu()) GTEST_SKIP() << "no CUDA device";
  constexpr int kWarmup = 3, kIters = 20;
  AtomEncoder gpu(init_model(ModelConfig{}, 1), "fused");
  cudaDeviceProp prop{};
  cudaGetDeviceProperties(&prop, 0);
  struct Job { std::string name; std::vector<std::size_t> sizes; };
  for (const Job& job : {Job{"1 x 4096 atoms", {4096}}, Job{"1 x 20000 atoms", {20000}}, Job{"64 x 4096 atoms", std::vector<std::size_t>(64, 4096)},
                         Job{"ragged 1k..20k, 16 structures", {1000, 2500, 4096, 8000, 12000, 20000, 1500, 3000, 6000, 9000, 15000, 18000, 1200, 5000, 7000, 10000}}}) {
    Loaded data;
    for (std::size_t i = 0; i < job.sizes.size(); ++i) data.add(make_globule(job.sizes[i], 0.058, 10 + i));
    const auto t0 = std::chrono::steady_clock::now();
    auto plan = gpu.plan(data.batch());
    const double plan_ms = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
    cudaStream_t stream;
    cudaStreamCreate(&stream);
    cudaGraph_t graph;
    cudaGraphExec_t exec;
    ASSERT_EQ(cudaStreamBeginCapture(stream, cudaStreamCaptureModeGlobal), cudaSuccess);
    gpu.run(*plan, stream);
    ASSERT_EQ(cudaStreamEndCapture(stream, &graph), cudaSuccess);
    ASSERT_EQ(cudaGraphInstantiate(&exec, graph, 0), cudaSuccess);
    cudaEvent_t e0, e1;
    cudaEventCreate(&e0);
    cudaEventCreate(&e1);
    std::vector<float> ms;
    for (int i = 0; i < kWarmup + kIters; ++i) {
      cudaEventRecord(e0, stream);
      cudaGraphLaunch(exec, stream);
      cudaEventRecord(e1, stream);
      cudaEventSynchronize(e1);
      float t = 0;
      cudaEventElapsedTime(&t, e0, e1);
      if (i >= kWarmup) ms.push_back(t);
    }
    std::sort(ms.begin(), ms.end());
    const double med = ms[ms.size() / 2];
    std::printf("[ model ] %s: %s, %lld atoms: forward %.3f ms (median of %d graph replays), %.0f structures/s, plan %.1f ms (host)\n",
                prop.name, job.name.c_str(), static_cast<long long>(plan->total_n()), med, kIters, job.sizes.size() * 1000.0 / med, plan_ms);
    cudaEventDestroy(e0);
    cudaEventDestroy(e1);
    cudaGraphExecDestroy(exec);
    cudaGraphDestroy(graph);
    cudaStreamDestroy(stream);
  }
}

}  // namespace
}  // namespace protattn
