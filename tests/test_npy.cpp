// Tests of the .npy reader and writer: round trips, byte-exact headers, and every refused input.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <cstring>
#include <filesystem>
#include <unistd.h>
#include <fstream>
#include <sstream>

#include "protattn/error.hpp"
#include "protattn/npy.hpp"

namespace fs = std::filesystem;
using protattn::Error;
using protattn::NpyArray;
using testing::HasSubstr;

namespace {

class NpyTest : public testing::Test {
 protected:
  void SetUp() override {
    dir_ = fs::temp_directory_path() / ("protattn_npy_" + std::to_string(::getpid()) + "_" +
                                        testing::UnitTest::GetInstance()->current_test_info()->name());
    fs::create_directories(dir_);
  }
  void TearDown() override { fs::remove_all(dir_); }
  std::string path(const std::string& name) const { return (dir_ / name).string(); }
  std::string write_raw(const std::string& name, const std::string& bytes) const {
    std::ofstream(path(name), std::ios::binary) << bytes;
    return path(name);
  }
  static std::string slurp(const std::string& p) {
    std::ifstream in(p, std::ios::binary);
    std::stringstream ss;
    ss << in.rdbuf();
    return ss.str();
  }
  // A version 1.0 file with the given header dictionary (padded to 64 bytes) and data.
  std::string npy_bytes(const std::string& dict, const std::string& data) const {
    std::string h = dict;
    while ((10 + h.size() + 1) % 64 != 0) h += ' ';
    h += '\n';
    std::string out = "\x93NUMPY";
    out += '\x01';
    out += '\x00';
    out += static_cast<char>(h.size() & 0xff);
    out += static_cast<char>(h.size() >> 8);
    return out + h + data;
  }
  void expect_error(const std::string& p, const std::string& what) const {
    try {
      protattn::read_npy(p);
      ADD_FAILURE() << "no error reading " << p;
    } catch (const Error& e) {
      EXPECT_THAT(e.what(), HasSubstr(p));
      EXPECT_THAT(e.what(), HasSubstr(what));
    }
  }
  fs::path dir_;
};

}  // namespace

TEST_F(NpyTest, RoundTripShapesAndTypes) {
  const std::vector<float> f = {1.5f, -2.0f, 3.25f, 0.0f, 1e-7f, 6.0f};
  protattn::write_npy(path("f.npy"), "<f4", {2, 3}, f.data());
  const NpyArray a = protattn::read_npy(path("f.npy"));
  EXPECT_EQ(a.descr, "<f4");
  EXPECT_EQ(a.shape, (std::vector<std::int64_t>{2, 3}));
  EXPECT_EQ(a.count(), 6);
  EXPECT_EQ(a.item_size(), 4u);
  ASSERT_EQ(a.data.size(), 24u);
  EXPECT_EQ(std::memcmp(a.data.data(), f.data(), 24), 0);

  const std::vector<std::int32_t> i = {7, -1, 2147483647};
  protattn::write_npy(path("i.npy"), "<i4", {3}, i.data());
  const NpyArray b = protattn::read_npy(path("i.npy"));
  EXPECT_EQ(b.shape, (std::vector<std::int64_t>{3}));
  EXPECT_EQ(std::memcmp(b.data.data(), i.data(), 12), 0);

  const std::uint8_t u = 9;
  protattn::write_npy(path("s.npy"), "|u1", {}, &u);
  const NpyArray c = protattn::read_npy(path("s.npy"));
  EXPECT_TRUE(c.shape.empty());
  EXPECT_EQ(c.count(), 1);
  EXPECT_EQ(c.data, std::vector<std::uint8_t>{9});

  protattn::write_npy(path("e.npy"), "<i8", {0, 4}, nullptr);
  const NpyArray d = protattn::read_npy(path("e.npy"));
  EXPECT_EQ(d.count(), 0);
  EXPECT_TRUE(d.data.empty());
}

TEST_F(NpyTest, HeaderIsWhatNumpyWrites) {
  // numpy.save(np.zeros(3, np.int32)) writes this exact header: 128 bytes in all (64-aligned).
  const std::vector<std::int32_t> z(3, 0);
  protattn::write_npy(path("z.npy"), "<i4", {3}, z.data());
  const std::string bytes = slurp(path("z.npy"));
  const std::string dict = "{'descr': '<i4', 'fortran_order': False, 'shape': (3,), }";
  ASSERT_EQ(bytes.size(), 128u + 12u);
  EXPECT_EQ(bytes.substr(0, 8), std::string("\x93NUMPY\x01\x00", 8));
  EXPECT_EQ(static_cast<unsigned char>(bytes[8]), 118u);
  EXPECT_EQ(bytes[9], 0);
  EXPECT_EQ(bytes.substr(10, dict.size()), dict);
  EXPECT_EQ(bytes[127], '\n');
}

TEST_F(NpyTest, ReadsVersion2AndHandWrittenHeaders) {
  std::string h = "{'shape':(2,2),'fortran_order':False,'descr':'<f2'}";
  while ((12 + h.size() + 1) % 64 != 0) h += ' ';
  h += '\n';
  std::string bytes = std::string("\x93NUMPY\x02\x00", 8);
  bytes += static_cast<char>(h.size());
  bytes += std::string(3, '\0');
  bytes += h + std::string(8, '\x3c');
  const NpyArray a = protattn::read_npy(write_raw("v2.npy", bytes));
  EXPECT_EQ(a.descr, "<f2");
  EXPECT_EQ(a.shape, (std::vector<std::int64_t>{2, 2}));
  EXPECT_EQ(a.data.size(), 8u);
}

TEST_F(NpyTest, RefusesBadFiles) {
  expect_error(path("missing.npy"), "cannot open");
  expect_error(write_raw("short.npy", "\x93NUM"), "truncated");
  expect_error(write_raw("magic.npy", std::string(80, 'x')), "bad magic");
  const std::string data12(12, '\0');
  expect_error(write_raw("fortran.npy",
                         npy_bytes("{'descr': '<f4', 'fortran_order': True, 'shape': (3,), }", data12)),
               "Fortran");
  expect_error(write_raw("big.npy",
                         npy_bytes("{'descr': '>f4', 'fortran_order': False, 'shape': (3,), }", data12)),
               "big-endian");
  expect_error(write_raw("trunc.npy",
                         npy_bytes("{'descr': '<f4', 'fortran_order': False, 'shape': (4,), }", data12)),
               "size mismatch");
  expect_error(write_raw("extra.npy",
                         npy_bytes("{'descr': '<f4', 'fortran_order': False, 'shape': (2,), }", data12)),
               "size mismatch");
  expect_error(write_raw("obj.npy",
                         npy_bytes("{'descr': '|O', 'fortran_order': False, 'shape': (3,), }", data12)),
               "unsupported dtype");
  expect_error(write_raw("noshape.npy", npy_bytes("{'descr': '<f4', 'fortran_order': False, }", data12)),
               "lacks");
  expect_error(write_raw("badtuple.npy",
                         npy_bytes("{'descr': '<f4', 'fortran_order': False, 'shape': (x,), }", data12)),
               "bad header");
  std::string v9 = npy_bytes("{'descr': '<f4', 'fortran_order': False, 'shape': (3,), }", data12);
  v9[6] = 9;
  expect_error(write_raw("v9.npy", v9), "version 9");
}

TEST_F(NpyTest, WriteRefusesBadArguments) {
  const float x = 1;
  EXPECT_THROW(protattn::write_npy(path("a.npy"), "<q9", {1}, &x), Error);
  EXPECT_THROW(protattn::write_npy(path("b.npy"), "<f4", {2}, nullptr), Error);
  EXPECT_THROW(protattn::write_npy((dir_ / "no" / "such" / "dir.npy").string(), "<f4", {1}, &x), Error);
}
