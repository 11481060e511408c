// Tests of atom_encoder: safetensors round trips, every refused model file, and the CPU forward.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <random>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <numeric>

#include "model/half_rows.hpp"
#include "model/safetensors.hpp"
#include "protattn/error.hpp"
#include "protattn/half.hpp"
#include "protattn/model.hpp"
#include "protattn/structure.hpp"

namespace fs = std::filesystem;
using namespace protattn;
using testing::AllOf;
using testing::HasSubstr;

namespace {

// A small model: the tests run it often.
ModelConfig small_config() {
  ModelConfig c;
  c.channels = 32;
  c.layers = 2;
  c.heads = 2;
  c.head_dim = 16;
  return c;
}

class ModelTest : public testing::Test {
 protected:
  void SetUp() override {
    dir_ = fs::temp_directory_path() / ("protattn_model_" + std::to_string(::getpid()) + "_" +
                                        testing::UnitTest::GetInstance()->current_test_info()->name());
    fs::create_directories(dir_);
  }
  void TearDown() override { fs::remove_all(dir_); }
  std::string path(const std::string& name) const { return (dir_ / name).string(); }

  // The raw file of a saved small model, for tampering.
  st::File saved_raw() {
    save_model(init_model(small_config(), 3), path("m.safetensors"));
    return st::read(path("m.safetensors"));
  }
  // Writes `f` and returns the message load_model throws on it (empty when it loads).
  std::string load_error(const st::File& f) {
    st::write(path("bad.safetensors"), f);
    try {
      load_model(path("bad.safetensors"));
    } catch (const Error& e) {
      return e.what();
    }
    return "";
  }
  fs::path dir_;
};

struct Inputs {
  Structure s;
  std::vector<std::int32_t> elements;
  AtomInput input() const { return {s.xyz, elements}; }
};

Inputs read_inputs(const std::string& name) {
  Inputs in;
  in.s = read_structure(std::string(PROTATTN_TEST_DATA) + "/" + name);
  in.elements.assign(in.s.element.begin(), in.s.element.end());
  return in;
}

TEST_F(ModelTest, SafetensorsRoundTrip) {
  st::File f;
  f.metadata = {{"a", "1"}, {"note", "x y"}};
  st::RawTensor t32{"F32", {2, 3}, std::vector<std::uint8_t>(24)};
  std::iota(t32.data.begin(), t32.data.end(), 0);
  st::RawTensor t16{"F16", {5}, std::vector<std::uint8_t>(10, 7)};
  st::RawTensor ti{"I32", {1, 1, 1}, {1, 2, 3, 4}};
  st::RawTensor empty{"F32", {0, 4}, {}};
  f.tensors = {{"w", t32}, {"h", t16}, {"i", ti}, {"e", empty}};
  st::write(path("t.safetensors"), f);
  const st::File g = st::read(path("t.safetensors"));
  EXPECT_EQ(g.metadata, f.metadata);
  ASSERT_EQ(g.tensors.size(), f.tensors.size());
  for (const auto& [name, t] : f.tensors) {
    const st::RawTensor& u = g.tensors.at(name);
    EXPECT_EQ(u.dtype, t.dtype) << name;
    EXPECT_EQ(u.shape, t.shape) << name;
    EXPECT_EQ(u.data, t.data) << name;
  }
  // The data starts 8-byte aligned, as the format's writers do.
  std::ifstream in(path("t.safetensors"), std::ios::binary);
  std::uint64_t hlen = 0;
  in.read(reinterpret_cast<char*>(&hlen), 8);
  EXPECT_EQ((8 + hlen) % 8, 0u);
  EXPECT_EQ(fs::file_size(path("t.safetensors")), 8 + hlen + 24 + 10 + 4);
}

TEST_F(ModelTest, ModelRoundTripIsBitExact) {
  ModelConfig c = small_config();
  c.cutoff = 6.5f;
  c.order = Order::morton;
  c.mask = MaskMode::tiles;
  const Model m = init_model(c, 42);
  save_model(m, path("m.safetensors"));
  const Model r = load_model(path("m.safetensors"));
  EXPECT_EQ(r.config.channels, c.channels);
  EXPECT_EQ(r.config.layers, c.layers);
  EXPECT_EQ(r.config.heads, c.heads);
  EXPECT_EQ(r.config.head_dim, c.head_dim);
  EXPECT_EQ(r.config.cutoff, 6.5f);
  EXPECT_EQ(r.config.order, Order::morton);
  EXPECT_EQ(r.config.mask, MaskMode::tiles);
  EXPECT_EQ(r.config.tile, c.tile);
  EXPECT_FALSE(r.config.trained);
  EXPECT_EQ(r.config.seed, 42u);
  ASSERT_EQ(r.tensors.size(), expected_tensors(c).size());
  for (const auto& [name, t] : m.tensors) {
    const Tensor& u = r.at(name);
    EXPECT_EQ(u.shape, t.shape) << name;
    EXPECT_EQ(std::memcmp(u.data.data(), t.data.data(), t.data.size() * 4), 0) << name;
  }
  // The file says it is untrained, in words.
  const st::File raw = st::read(path("m.safetensors"));
  EXPECT_EQ(raw.metadata.at("trained"), "false");
  EXPECT_THAT(raw.metadata.at("note"), HasSubstr("UNTRAINED"));
}

TEST_F(ModelTest, InitIsSeeded) {
  const Model a = init_model(small_config(), 1), b = init_model(small_config(), 1), c = init_model(small_config(), 2);
  EXPECT_EQ(a.at("layers.1.mlp.fc2.weight").data, b.at("layers.1.mlp.fc2.weight").data);
  EXPECT_NE(a.at("layers.1.mlp.fc2.weight").data, c.at("layers.1.mlp.fc2.weight").data);
  // Linear weights have standard deviation 1/sqrt(fan_in): fc1 [128, 32] -> 1/sqrt(32).
  const auto& w = a.at("layers.0.mlp.fc1.weight").data;
  double ss = 0;
  for (float v : w) ss += static_cast<double>(v) * v;
  EXPECT_NEAR(std::sqrt(ss / static_cast<double>(w.size())), 1 / std::sqrt(32.0), 0.01);  // 4096 samples: sd of the estimate ~0.002
}

TEST_F(ModelTest, MissingTensorIsNamed) {
  st::File f = saved_raw();
  f.tensors.erase("layers.1.attn.v.bias");
  EXPECT_THAT(load_error(f), AllOf(HasSubstr(path("bad.safetensors")), HasSubstr("tensor 'layers.1.attn.v.bias' missing"),
                                   HasSubstr("expected F32 [32]")));
}

TEST_F(ModelTest, WrongShapeIsNamed) {
  st::File f = saved_raw();
  st::RawTensor& t = f.tensors.at("layers.0.attn.q.weight");
  t.shape = {16, 64};  // same bytes, other shape
  EXPECT_THAT(load_error(f), AllOf(HasSubstr(path("bad.safetensors")), HasSubstr("'layers.0.attn.q.weight'"),
                                   HasSubstr("has shape [16, 64], expected [32, 32]")));
}

TEST_F(ModelTest, WrongDtypeIsNamed) {
  st::File f = saved_raw();
  st::RawTensor& t = f.tensors.at("final_norm.bias");
  t.dtype = "I32";  // 4 bytes per element, so the sizes still agree
  EXPECT_THAT(load_error(f), AllOf(HasSubstr("'final_norm.bias'"), HasSubstr("has dtype I32, expected F32")));
}

TEST_F(ModelTest, UnexpectedTensorIsNamed) {
  st::File f = saved_raw();
  f.tensors["layers.2.norm1.weight"] = {"F32", {32}, std::vector<std::uint8_t>(128)};
  EXPECT_THAT(load_error(f), HasSubstr("unexpected tensor 'layers.2.norm1.weight'"));
}

TEST_F(ModelTest, BadMetadataIsNamed) {
  st::File f = saved_raw();
  f.metadata["heads"] = "four";
  EXPECT_THAT(load_error(f), HasSubstr("metadata 'heads' is 'four', expected an integer"));
  f = saved_raw();
  f.metadata.erase("cutoff");
  EXPECT_THAT(load_error(f), HasSubstr("metadata key 'cutoff' missing"));
  f = saved_raw();
  f.metadata["mask"] = "windows";
  EXPECT_THAT(load_error(f), HasSubstr("mask 'windows'"));
  // More heads in the metadata than in the tensors: the first tensor that disagrees is named.
  f = saved_raw();
  f.metadata["heads"] = "3";
  EXPECT_THAT(load_error(f), HasSubstr("'layers.0.attn.q.weight' has shape [32, 32], expected [48, 32]"));
}

TEST_F(ModelTest, NonFiniteWeightIsRefused) {
  st::File f = saved_raw();
  const float nan = std::nanf("");
  std::memcpy(f.tensors.at("embed.weight").data.data() + 8, &nan, 4);
  EXPECT_THAT(load_error(f), HasSubstr("'embed.weight' holds a non-finite value at element 2"));
}

TEST_F(ModelTest, TruncatedFilesAreRefused) {
  saved_raw();
  const std::string good = path("m.safetensors");
  const auto size = fs::file_size(good);
  for (std::uintmax_t keep : {std::uintmax_t{0}, std::uintmax_t{5}, std::uintmax_t{100}, size - 1}) {
    fs::copy_file(good, path("cut.safetensors"), fs::copy_options::overwrite_existing);
    fs::resize_file(path("cut.safetensors"), keep);
    try {
      load_model(path("cut.safetensors"));
      ADD_FAILURE() << "a file cut to " << keep << " bytes loaded";
    } catch (const Error& e) {
      EXPECT_THAT(e.what(), AllOf(HasSubstr(path("cut.safetensors")), HasSubstr("truncated"))) << keep;
    }
  }
  EXPECT_THROW(load_model(path("absent.safetensors")), Error);
}

TEST_F(ModelTest, Fp16WeightsLoad) {
  st::File f = saved_raw();
  const Model ref = load_model(path("m.safetensors"));
  st::RawTensor& t = f.tensors.at("embed.weight");
  std::vector<std::uint8_t> h(t.data.size() / 2);
  for (std::size_t i = 0; i < h.size() / 2; ++i) {
    float v;
    std::memcpy(&v, t.data.data() + 4 * i, 4);
    const std::uint16_t b = float_to_half(v);
    std::memcpy(h.data() + 2 * i, &b, 2);
  }
  t = {"F16", t.shape, h};
  ASSERT_EQ(load_error(f), "");
  const Model m = load_model(path("bad.safetensors"));
  const auto& a = m.at("embed.weight").data;
  const auto& r = ref.at("embed.weight").data;
  for (std::size_t i = 0; i < a.size(); ++i) ASSERT_EQ(a[i], half_to_float(float_to_half(r[i]))) << i;
}

// The bulk conversion of the CPU forward's output gives float_to_half's bits: every fp16 value,
// the midpoints between neighbours (ties to even), both sides of the overflow threshold and of
// the smallest subnormal, signs, and random floats; n not a multiple of the vector width.
TEST(HalfRows, BulkConversionMatchesFloatToHalf) {
  std::vector<float> v;
  for (std::uint32_t h = 0; h < 0x7c00u; ++h) {
    const float a = half_to_float(static_cast<std::uint16_t>(h)), b = half_to_float(static_cast<std::uint16_t>(h + 1));
    for (const float x : {a, 0.5f * (a + b), std::nextafter(0.5f * (a + b), 0.0f), std::nextafter(0.5f * (a + b), 1e9f)}) {
      v.push_back(x);
      v.push_back(-x);
    }
  }
  for (const float x : {65504.0f, 65519.9f, 65520.0f, 1e6f, INFINITY, 2.98e-8f, 2.99e-8f, 5.96e-8f, 1e-10f, 0.0f})
    for (const float s : {1.0f, -1.0f}) v.push_back(s * x);
  std::uint32_t seed = 12345;
  for (int i = 0; i < 100000; ++i) {
    seed = seed * 1664525u + 1013904223u;
    std::uint32_t bits = seed;
    if ((bits & 0x7f800000u) == 0x7f800000u) bits &= ~0x00800000u;  // no NaN or infinity here
    float x;
    std::memcpy(&x, &bits, 4);
    v.push_back(x);
  }
  v.push_back(1.0f);  // n % 8 != 0
  ASSERT_NE(v.size() % 8, 0u);
  std::vector<std::uint16_t> out(v.size());
  model::floats_to_halves(v.data(), out.data(), v.size());
  for (std::size_t i = 0; i < v.size(); ++i) ASSERT_EQ(out[i], float_to_half(v[i])) << "value " << v[i] << " at " << i;
}

// The fp16 row norm (the loop's score): the F16C path gives the scalar path's bits, and both the
// plain float64 value within float32 rounding, for widths with and without a remainder mod 32.
TEST(HalfRows, MeanRowNormMatchesAPlainSum) {
  std::mt19937 rng(11);
  std::uniform_real_distribution<float> val(-30.0f, 30.0f);
  for (const std::size_t width : {std::size_t{1}, std::size_t{7}, std::size_t{32}, std::size_t{128}, std::size_t{131}, std::size_t{200}}) {
    const std::size_t rows = 37;
    std::vector<std::uint16_t> h(rows * width);
    for (auto& x : h) x = float_to_half(val(rng));
    double want = 0;
    for (std::size_t r = 0; r < rows; ++r) {
      double sq = 0;
      for (std::size_t c = 0; c < width; ++c) sq += static_cast<double>(half_to_float(h[r * width + c])) * half_to_float(h[r * width + c]);
      want += std::sqrt(sq);
    }
    want /= rows;
    const double got = model::mean_row_norm(h.data(), rows, width);
    EXPECT_EQ(got, model::mean_row_norm_scalar(h.data(), rows, width)) << "width " << width;
    EXPECT_NEAR(got, want, 1e-6 * want) << "width " << width;
    EXPECT_GT(want, 1.0) << "width " << width;
  }
  EXPECT_EQ(model::mean_row_norm(nullptr, 0, 128), 0.0);
  const std::uint16_t three_four[2] = {float_to_half(3.0f), float_to_half(4.0f)};
  EXPECT_EQ(model::mean_row_norm(three_four, 1, 2), 5.0);
}

TEST_F(ModelTest, ForwardIsDeterministicAndBatchIndependent) {
  const Inputs a = read_inputs("1ubq.pdb"), b = read_inputs("1ejg.pdb");
  AtomEncoder enc(init_model(small_config(), 5), "cpu");
  const auto one = enc.forward({a.input()});
  const auto again = enc.forward({a.input()});
  const auto both = enc.forward({b.input(), a.input()});
  ASSERT_EQ(one[0].size(), a.s.size() * 32);
  EXPECT_EQ(one[0], again[0]);
  EXPECT_EQ(both[1], one[0]);  // a structure's embedding does not depend on its batch
  EXPECT_EQ(both[0], enc.forward({b.input()})[0]);
  // Not degenerate: the final LayerNorm gives each atom mean ~0 (beta) and spread ~1 (gamma).
  double ss = 0;
  for (std::uint16_t h : one[0]) ss += static_cast<double>(half_to_float(h)) * half_to_float(h);
  EXPECT_GT(ss / static_cast<double>(one[0].size()), 0.5);
}

TEST_F(ModelTest, FetchIntoDestinationsGivesTheSameBits) {
  // A structure's embedding written into the caller's memory instead of returned: the same bits.
  const Inputs a = read_inputs("1ubq.pdb"), b = read_inputs("1ejg.pdb");
  AtomEncoder enc(init_model(small_config(), 5), "cpu");
  auto plan = enc.plan({a.input(), b.input()});
  enc.run(*plan);
  const auto plain = enc.fetch(*plan);
  std::vector<std::uint16_t> dest(plain[1].size(), 0x7e00);  // fp16 NaN
  const auto got = enc.fetch(*plan, nullptr, {nullptr, dest.data()});
  EXPECT_EQ(got[0], plain[0]);
  EXPECT_TRUE(got[1].empty());
  EXPECT_EQ(dest, plain[1]);
  EXPECT_THROW(enc.fetch(*plan, nullptr, {dest.data()}), Error);  // one destination for two structures
}

TEST_F(ModelTest, LayoutBuiltByTheCallerGivesTheSameEmbedding) {
  // A server builds each structure's layout on the thread that received it; the plan takes it.
  const Inputs a = read_inputs("1ubq.pdb"), b = read_inputs("1ejg.pdb");
  AtomEncoder enc(init_model(small_config(), 5), "cpu");
  const LayoutOptions opt = layout_options(enc.config());
  const BlockLayout la = build_cutoff_layout(a.s.xyz.data(), a.s.size(), opt);
  const BlockLayout lb = build_cutoff_layout(b.s.xyz.data(), b.s.size(), opt);
  AtomInput ia = a.input(), ib = b.input();
  ia.layout = &la;
  ib.layout = &lb;
  EXPECT_EQ(enc.forward({ib, ia}), enc.forward({b.input(), a.input()}));
  {
    // Taken instead of copied: the same embedding, and the caller's layout is left empty.
    BlockLayout taken = la;
    AtomInput it = a.input();
    it.layout_to_take = &taken;
    EXPECT_EQ(enc.forward({ib, it}), enc.forward({b.input(), a.input()}));
    EXPECT_EQ(taken.n, 0);
    EXPECT_TRUE(taken.perm.empty());
  }
  // A layout of other options, or of another structure, is refused naming the structure.
  LayoutOptions other = opt;
  other.tile = 64;
  const BlockLayout wrong_tile = build_cutoff_layout(a.s.xyz.data(), a.s.size(), other);
  ia.layout = &wrong_tile;
  EXPECT_THROW(enc.forward({ia}), Error);
  ia.layout = &lb;
  try {
    enc.forward({ia});
    ADD_FAILURE() << "a layout of another structure was accepted";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("structure 0"), std::string::npos) << e.what();
  }
}

TEST_F(ModelTest, LayoutsBuiltOnSeveralThreadsChangeNothing) {
  // 48 structures (ubiquitin and crambin alternating, ~36k atoms): plan() shares the layouts out
  // over threads by atoms; the embeddings must be those of a one-thread encoder, bit for bit.
  const Inputs a = read_inputs("1ubq.pdb"), b = read_inputs("1ejg.pdb");
  std::vector<AtomInput> batch;
  for (int i = 0; i < 48; ++i) batch.push_back(i % 2 ? b.input() : a.input());
  AtomEncoder one(init_model(small_config(), 5), "cpu", EngineOptions{1, 0});
  AtomEncoder three(init_model(small_config(), 5), "cpu", EngineOptions{3, 0});
  EXPECT_EQ(three.forward(batch), one.forward(batch));
}

TEST_F(ModelTest, ForwardAnswersInInputOrder) {
  // Reversing the atoms of the input reverses the embedding rows. Mask atoms makes the model
  // independent of the order up to float32 summation order (bound: 4 fp16 ulps at |x| < 8).
  const Inputs a = read_inputs("1ubq.pdb");
  Inputs r = a;
  const std::size_t n = a.s.size();
  for (std::size_t i = 0; i < n; ++i) {
    r.elements[i] = a.elements[n - 1 - i];
    for (int k = 0; k < 3; ++k) r.s.xyz[3 * i + k] = a.s.xyz[3 * (n - 1 - i) + k];
  }
  AtomEncoder enc(init_model(small_config(), 5), "cpu");
  const auto fa = enc.forward({a.input()}), fr = enc.forward({r.input()});
  constexpr int C = 32;
  double worst = 0;
  for (std::size_t i = 0; i < n; ++i)
    for (int j = 0; j < C; ++j)
      worst = std::max(worst, std::abs(static_cast<double>(half_to_float(fa[0][i * C + j])) - half_to_float(fr[0][(n - 1 - i) * C + j])));
  EXPECT_LE(worst, 4 * 0.0078125);  // fp16 ulp in [4, 8) is 2^-7
}

TEST_F(ModelTest, BadInputsAreNamed) {
  AtomEncoder enc(init_model(small_config(), 5), "cpu");
  std::vector<float> xyz = {0, 0, 0, 1, 0, 0, 0, 1, 0};
  std::vector<std::int32_t> el = {6, 7, 119};
  auto message = [&](const std::vector<AtomInput>& batch) -> std::string {
    try {
      enc.forward(batch);
    } catch (const Error& e) {
      return e.what();
    }
    return "";
  };
  EXPECT_THAT(message({{xyz, el}}), HasSubstr("structure 0: atom 2 has atomic number 119 (valid: 0..118)"));
  el[2] = 8;
  EXPECT_EQ(message({{xyz, el}}), "");
  EXPECT_THAT(message({{xyz, el}, {std::span<const float>(xyz).first(6), el}}), HasSubstr("structure 1: 6 coordinates for 3 elements"));
  EXPECT_THAT(message({{xyz, el}, {{}, {}}}), HasSubstr("structure 1 has no atoms"));
  xyz[4] = std::nanf("");
  EXPECT_THAT(message({{xyz, el}}), HasSubstr("structure 0"));
  EXPECT_THAT(message({}), HasSubstr("empty batch"));
}

}  // namespace
