// Tests of structure reading (PDB, mmCIF, gzip, bad input), the synthetic globule and describe().
#include <gtest/gtest.h>
#include <gmock/gmock.h>
#include <zlib.h>

#include <cmath>
#include <filesystem>
#include <unistd.h>
#include <fstream>
#include <map>
#include <set>
#include <sstream>
#include <tuple>

#include "protattn/error.hpp"
#include "protattn/structure.hpp"

namespace fs = std::filesystem;
using protattn::Error;
using protattn::ReadOptions;
using protattn::Structure;
using testing::HasSubstr;

namespace {

const std::string kData = PROTATTN_TEST_DATA;

std::string data_file(const std::string& name) { return kData + "/" + name; }

std::string slurp(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

// A fresh temporary folder per test, removed afterwards.
class TempDir {
 public:
  TempDir() {
    const auto* info = testing::UnitTest::GetInstance()->current_test_info();
    path_ = fs::temp_directory_path() /
            ("protattn_" + std::string(info->test_suite_name()) + "_" + info->name() + "_" +
             std::to_string(::getpid()));
    fs::remove_all(path_);
    fs::create_directories(path_);
  }
  ~TempDir() { fs::remove_all(path_); }
  std::string file(const std::string& name, const std::string& content) const {
    const std::string p = (path_ / name).string();
    std::ofstream(p, std::ios::binary) << content;
    return p;
  }
  std::string path(const std::string& name) const { return (path_ / name).string(); }

 private:
  fs::path path_;
};

void gzip_to(const std::string& path, const std::string& content) {
  gzFile f = gzopen(path.c_str(), "wb");
  ASSERT_NE(f, nullptr);
  ASSERT_EQ(gzwrite(f, content.data(), static_cast<unsigned>(content.size())),
            static_cast<int>(content.size()));
  gzclose(f);
}

std::string trim(const std::string& s) {
  const auto b = s.find_first_not_of(' ');
  if (b == std::string::npos) return "";
  return s.substr(b, s.find_last_not_of(' ') - b + 1);
}

// Independent count over the raw text of a PDB file, by column slicing rather than gemmi:
// ATOM/HETATM lines of the first model (until the first ENDMDL or END), minus HOH, minus H/D
// (element columns 77-78), keeping blank altloc (column 17) or the first altloc letter seen for
// that residue position (chain col 22, number cols 23-26, insertion code col 27).
std::size_t count_pdb_atoms(const std::string& path, bool hydrogens, bool waters) {
  std::ifstream in(path);
  std::string line;
  std::map<std::string, char> first_alt;
  std::size_t count = 0;
  while (std::getline(in, line)) {
    if (line.rfind("ENDMDL", 0) == 0 || line == "END" || line.rfind("END ", 0) == 0) break;
    if (line.rfind("ATOM", 0) != 0 && line.rfind("HETATM", 0) != 0) continue;
    line.resize(80, ' ');
    if (!waters && line.substr(17, 3) == "HOH") continue;
    const std::string el = trim(line.substr(76, 2));
    if (!hydrogens && (el == "H" || el == "D")) continue;
    const char alt = line[16];
    if (alt != ' ') {
      char& first = first_alt[line.substr(21, 6)];
      if (first == 0) first = alt;
      if (alt != first) continue;
    }
    ++count;
  }
  return count;
}

Structure read_ok(const std::string& path, const ReadOptions& opt = {}) {
  if (!fs::exists(path)) throw std::runtime_error("missing " + path + ": run scripts/fetch-data.sh");
  return protattn::read_structure(path, opt);
}

// Expects read_structure to throw an Error whose message names the file and contains `what`.
void expect_read_error(const std::string& path, const std::string& what, const ReadOptions& opt = {}) {
  try {
    protattn::read_structure(path, opt);
    ADD_FAILURE() << "no error for " << path;
  } catch (const Error& e) {
    EXPECT_THAT(e.what(), HasSubstr(path));
    EXPECT_THAT(e.what(), HasSubstr(what));
  }
}

}  // namespace

TEST(ReadStructure, PdbCountsMatchColumnCount) {
  for (const char* name : {"1ubq.pdb", "1ubi.pdb", "1ejg.pdb", "2hhb.pdb", "1tii.pdb"}) {
    SCOPED_TRACE(name);
    const std::string path = data_file(name);
    const Structure s = read_ok(path);
    EXPECT_EQ(s.size(), count_pdb_atoms(path, false, false));
    EXPECT_EQ(s.xyz.size(), 3 * s.size());
    EXPECT_EQ(s.atom_name.size(), s.size());
    EXPECT_EQ(s.res_name.size(), s.size());
    EXPECT_EQ(s.res_seq.size(), s.size());
    EXPECT_EQ(s.chain.size(), s.size());
    ReadOptions all;
    all.hydrogens = true;
    all.waters = true;
    EXPECT_EQ(read_ok(path, all).size(), count_pdb_atoms(path, true, true));
  }
}

TEST(ReadStructure, UbiquitinFieldsMatchFirstRecordAndWatersAreOptional) {
  const std::string path = data_file("1ubq.pdb");
  const Structure s = read_ok(path);
  // First ATOM record of 1ubq.pdb: "ATOM      1  N   MET A   1      27.340  24.430   2.614 ..."
  std::ifstream in(path);
  std::string line;
  while (std::getline(in, line) && line.rfind("ATOM", 0) != 0) {
  }
  ASSERT_EQ(s.atom_name[0], trim(line.substr(12, 4)));
  EXPECT_EQ(s.res_name[0], trim(line.substr(17, 3)));
  EXPECT_EQ(s.chain[0], trim(line.substr(21, 1)));
  EXPECT_EQ(s.res_seq[0], std::stoi(line.substr(22, 4)));
  EXPECT_EQ(s.element[0], 7);  // nitrogen
  for (int c = 0; c < 3; ++c) EXPECT_FLOAT_EQ(s.xyz[c], std::stof(line.substr(30 + 8 * c, 8)));
  for (const auto& r : s.res_name) EXPECT_NE(r, "HOH");
  ReadOptions w;
  w.waters = true;
  const Structure sw = read_ok(path, w);
  std::size_t waters = 0;
  for (const auto& r : sw.res_name) waters += r == "HOH";
  // 1ubq.pdb has 58 HOH HETATM records (grep -c '^HETATM.*HOH').
  EXPECT_EQ(waters, 58u);
  EXPECT_EQ(sw.size(), s.size() + waters);
}

TEST(ReadStructure, CrambinDropsHydrogensAndKeepsFirstAltloc) {
  const std::string path = data_file("1ejg.pdb");
  const Structure s = read_ok(path);
  for (auto e : s.element) EXPECT_NE(e, 1) << "hydrogen kept by default";
  // One atom per (chain, residue number, atom name): alternate locations B and C are dropped.
  std::set<std::tuple<std::string, int, std::string>> seen;
  for (std::size_t i = 0; i < s.size(); ++i)
    EXPECT_TRUE(seen.emplace(s.chain[i], s.res_seq[i], s.atom_name[i]).second)
        << "duplicate atom " << s.atom_name[i] << " in residue " << s.res_seq[i];
  // Residue 22 is PRO (altloc A) / SER (altloc B) in 1ejg: only PRO remains.
  std::set<std::string> names22;
  for (std::size_t i = 0; i < s.size(); ++i)
    if (s.res_seq[i] == 22) names22.insert(s.res_name[i]);
  EXPECT_EQ(names22, std::set<std::string>{"PRO"});
  ReadOptions h;
  h.hydrogens = true;
  const Structure sh = read_ok(path, h);
  std::size_t hyd = 0;
  for (auto e : sh.element) hyd += e == 1;
  EXPECT_GT(hyd, 0u);
  EXPECT_EQ(sh.size(), s.size() + hyd);
}

TEST(ReadStructure, GzippedEqualsPlain) {
  TempDir tmp;
  const std::string plain = data_file("1ubq.pdb");
  const Structure a = read_ok(plain);
  const std::string gz = tmp.path("ubq.pdb.gz");
  gzip_to(gz, slurp(plain));
  const Structure b = protattn::read_structure(gz);
  EXPECT_EQ(a.xyz, b.xyz);
  EXPECT_EQ(a.element, b.element);
  EXPECT_EQ(a.atom_name, b.atom_name);
  EXPECT_EQ(b.source, gz);
}

namespace {

// A small mmCIF written for these tests: 2 models, an altloc pair, a water, a hydrogen and
// a quoted atom name.
constexpr const char* kSmallCif = R"(data_TEST
#
loop_
_atom_site.group_PDB
_atom_site.id
_atom_site.type_symbol
_atom_site.label_atom_id
_atom_site.label_alt_id
_atom_site.label_comp_id
_atom_site.label_asym_id
_atom_site.label_seq_id
_atom_site.Cartn_x
_atom_site.Cartn_y
_atom_site.Cartn_z
_atom_site.occupancy
_atom_site.B_iso_or_equiv
_atom_site.auth_seq_id
_atom_site.auth_asym_id
_atom_site.pdbx_PDB_model_num
ATOM   1 N N     . GLY A 1 1.000 2.000 3.000 1.0 20.0 5 B 1
ATOM   2 C CA    . GLY A 1 2.000 2.000 3.000 1.0 20.0 5 B 1
ATOM   3 H H     . GLY A 1 2.500 2.000 3.000 1.0 20.0 5 B 1
ATOM   4 C CB    A ALA A 2 3.000 2.000 3.000 1.0 20.0 6 B 1
ATOM   5 C CB    B ALA A 2 3.100 2.000 3.000 1.0 20.0 6 B 1
ATOM   6 O "O5'" . ALA A 2 4.000 2.000 3.000 1.0 20.0 6 B 1
HETATM 7 O O     . HOH C . 9.000 9.000 9.000 1.0 20.0 7 B 1
ATOM   8 N N     . GLY A 1 -1.000 2.000 3.000 1.0 20.0 5 B 2
#
)";

}  // namespace

TEST(ReadStructure, SmallCifFieldsAndSelection) {
  TempDir tmp;
  const std::string path = tmp.file("small.cif", kSmallCif);
  const Structure s = protattn::read_structure(path);
  ASSERT_EQ(s.size(), 4u);  // N, CA, CB (altloc A), O5'
  EXPECT_EQ(s.atom_name, (std::vector<std::string>{"N", "CA", "CB", "O5'"}));
  EXPECT_EQ(s.element, (std::vector<std::uint8_t>{7, 6, 6, 8}));
  EXPECT_EQ(s.res_seq, (std::vector<std::int32_t>{5, 5, 6, 6}));  // auth_seq_id
  EXPECT_EQ(s.chain, (std::vector<std::string>{"B", "B", "B", "B"}));  // auth_asym_id
  EXPECT_FLOAT_EQ(s.xyz[3 * 2], 3.0f);  // altloc A, not B (3.1)
  ReadOptions all;
  all.hydrogens = all.waters = true;
  EXPECT_EQ(protattn::read_structure(path, all).size(), 6u);
  ReadOptions second;
  second.model = 1;
  const Structure m2 = protattn::read_structure(path, second);
  ASSERT_EQ(m2.size(), 1u);
  EXPECT_FLOAT_EQ(m2.xyz[0], -1.0f);
  second.model = 2;
  expect_read_error(path, "model index 2", second);
  // gzipped mmCIF under a name without any extension.
  const std::string gz = tmp.path("small_cif_gz");
  gzip_to(gz, kSmallCif);
  EXPECT_EQ(protattn::read_structure(gz).xyz, s.xyz);
}

TEST(ReadStructure, RibosomeCifCountsMatchRowCount) {
  const std::string path = data_file("6zu5.cif");
  if (!fs::exists(path)) GTEST_SKIP() << "6zu5.cif missing: run scripts/fetch-data.sh";
  // Independent count: split the ATOM/HETATM rows of the atom_site loop on whitespace (6zu5.cif
  // quotes no value with spaces there), columns by the _atom_site tag order.
  std::ifstream in(path);
  std::string line;
  std::vector<std::string> tags;
  std::size_t expected = 0;
  std::set<std::string> chains;
  std::map<std::string, char> first_alt;
  while (std::getline(in, line)) {
    if (line.rfind("_atom_site.", 0) == 0) tags.push_back(trim(line.substr(11)));
    if (line.rfind("ATOM", 0) != 0 && line.rfind("HETATM", 0) != 0) continue;
    std::istringstream ss(line);
    std::map<std::string, std::string> row;
    for (const auto& t : tags) ss >> row[t];
    if (row["pdbx_PDB_model_num"] != "1" || row["label_comp_id"] == "HOH") continue;
    if (row["type_symbol"] == "H" || row["type_symbol"] == "D") continue;
    if (row["label_alt_id"] != ".") {
      char& first = first_alt[row["auth_asym_id"] + ":" + row["auth_seq_id"] + row["pdbx_PDB_ins_code"]];
      if (first == 0) first = row["label_alt_id"][0];
      if (row["label_alt_id"][0] != first) continue;
    }
    ++expected;
    chains.insert(row["auth_asym_id"]);
  }
  ASSERT_GT(expected, 100000u);
  const Structure s = protattn::read_structure(path);
  EXPECT_EQ(s.size(), expected);
  const auto info = protattn::describe(s);
  EXPECT_EQ(info.chains, chains.size());
}

TEST(ReadStructureErrors, MissingFile) {
  TempDir tmp;
  expect_read_error(tmp.path("nope.pdb"), "cannot open");
}

TEST(ReadStructureErrors, EmptyAndGarbage) {
  TempDir tmp;
  expect_read_error(tmp.file("empty.pdb", ""), "empty file");
  std::string binary(4096, '\0');
  for (std::size_t i = 0; i < binary.size(); ++i) binary[i] = static_cast<char>((i * 7919) % 251);
  expect_read_error(tmp.file("binary.cif", binary), "binary data");
  expect_read_error(tmp.file("text.pdb", "hello\nthis is not a structure\n"), "no atoms");
  expect_read_error(tmp.file("corrupt.gz", std::string("\x1f\x8b\x08\x00garbage-not-deflate", 24)),
                    "gzip");
}

TEST(ReadStructureErrors, TruncatedPdbNamesLine) {
  TempDir tmp;
  const std::string text = slurp(data_file("1ubq.pdb"));
  // Cut in the middle of the y coordinate of the first ATOM record.
  const std::size_t atom = text.find("\nATOM") + 1;
  const std::size_t line_no = static_cast<std::size_t>(std::count(text.begin(), text.begin() + atom, '\n')) + 1;
  const std::string cut = text.substr(0, atom + 42);
  expect_read_error(tmp.file("cut.pdb", cut), "line " + std::to_string(line_no) + ":");
  // The same file truncated and gzipped, and a gzip stream cut short.
  const std::string gz = tmp.path("cut.pdb.gz");
  gzip_to(gz, cut);
  expect_read_error(gz, "line " + std::to_string(line_no) + ":");
  const std::string full_gz = tmp.path("full.pdb.gz");
  gzip_to(full_gz, text);
  const std::string packed = slurp(full_gz);
  expect_read_error(tmp.file("half.pdb.gz", packed.substr(0, packed.size() / 2)), "truncated gzip");
}

TEST(ReadStructureErrors, TruncatedCifNamesLine) {
  TempDir tmp;
  const std::string text = kSmallCif;
  // Cut row 4 (file line 23) after its coordinates: the loop (line 3) has a partial row.
  const std::size_t row4 = text.find("ATOM   4");
  expect_read_error(tmp.file("cut.cif", text.substr(0, row4 + 30)), "cut.cif:23: loop_ at line 3");
  expect_read_error(tmp.file("quote.cif", text.substr(0, text.find("O5'") + 2)), "unterminated");
  expect_read_error(tmp.file("nodata.cif", "data_X\n_cell.length_a\n"), "nodata.cif:2:");
}

TEST(ReadStructureErrors, BadCoordinates) {
  TempDir tmp;
  const std::string head = "ATOM      1  N   MET A   1      27.340  24.430   2.614  1.00  0.00           N\n";
  const std::string nan_line = "ATOM      2  CA  MET A   1         nan  24.430   2.614  1.00  0.00           C\n";
  const std::string big_line = "ATOM      2  CA  MET A   1    250000.0  24.430   2.614  1.00  0.00           C\n";
  const std::string txt_line = "ATOM      2  CA  MET A   1      26.abc  24.430   2.614  1.00  0.00           C\n";
  expect_read_error(tmp.file("nan.pdb", head + nan_line), "line 2: coordinate field");
  expect_read_error(tmp.file("letters.pdb", head + txt_line), "line 2: coordinate field");
  expect_read_error(tmp.file("big.pdb", head + big_line), "absurd coordinate");
  std::string cif = kSmallCif;
  cif.replace(cif.find("2.000 2.000 3.000"), 5, "?    ");
  expect_read_error(tmp.file("nan.cif", cif), "non-finite coordinate");
}

TEST(ReadStructureErrors, NoAtomsAfterSelectionAndTooMany) {
  TempDir tmp;
  const std::string water =
      "HETATM    1  O   HOH A 101      10.000  10.000  10.000  1.00  0.00           O\n"
      "HETATM    2  H1  HOH A 101      10.500  10.000  10.000  1.00  0.00           H\n";
  const std::string path = tmp.file("water.pdb", water);
  expect_read_error(path, "no atoms after selection");
  ReadOptions w;
  w.waters = true;
  EXPECT_EQ(protattn::read_structure(path, w).size(), 1u);
  const std::string ubq = data_file("1ubq.pdb");
  const std::size_t n = read_ok(ubq).size();
  ReadOptions lim;
  lim.max_atoms = n;
  EXPECT_EQ(protattn::read_structure(ubq, lim).size(), n);
  lim.max_atoms = n - 1;
  expect_read_error(ubq, "more than the limit of " + std::to_string(n - 1), lim);
}

TEST(ValidateCoords, RejectsNonFiniteAndAbsurd) {
  std::vector<float> ok = {1, 2, 3, -4, 5, 6};
  EXPECT_NO_THROW(protattn::validate_coords(ok.data(), 2, "ok"));
  auto bad = ok;
  bad[4] = std::nanf("");
  EXPECT_THROW(protattn::validate_coords(bad.data(), 2, "x"), Error);
  bad = ok;
  bad[5] = 1.5e5f;
  try {
    protattn::validate_coords(bad.data(), 2, "my coords");
    ADD_FAILURE();
  } catch (const Error& e) {
    EXPECT_THAT(e.what(), HasSubstr("my coords"));
    EXPECT_THAT(e.what(), HasSubstr("atom 1"));
  }
  EXPECT_THROW(protattn::validate_coords(ok.data(), protattn::kMaxAtoms + 1, "huge"), Error);
}

TEST(Globule, DensityRadiusAndReproducible) {
  const std::size_t n = 20000;
  const double density = 0.058;
  const Structure a = protattn::make_globule(n, density, 7);
  const Structure b = protattn::make_globule(n, density, 7);
  const Structure c = protattn::make_globule(n, density, 8);
  ASSERT_EQ(a.size(), n);
  EXPECT_EQ(a.xyz, b.xyz);
  EXPECT_NE(a.xyz, c.xyz);
  const double radius = std::cbrt(3.0 * n / (4.0 * M_PI * density));
  double max_r = 0;
  std::size_t inner = 0;  // atoms within half the radius: expect n/8
  for (std::size_t i = 0; i < n; ++i) {
    const double r = std::hypot(a.xyz[3 * i], a.xyz[3 * i + 1], a.xyz[3 * i + 2]);
    max_r = std::max(max_r, r);
    inner += r < radius / 2;
  }
  EXPECT_LE(max_r, radius * (1 + 1e-6));
  EXPECT_GT(max_r, radius * 0.99);
  // Binomial(n, 1/8): mean 2500, sd ~47; 5 sd bounds.
  EXPECT_NEAR(static_cast<double>(inner), n / 8.0, 5 * std::sqrt(n * (1.0 / 8) * (7.0 / 8)));
  // Chain-like order: consecutive atoms are near (a residue-sized cell apart at most, mostly).
  double sum_step = 0;
  for (std::size_t i = 1; i < n; ++i)
    sum_step += std::hypot(a.xyz[3 * i] - a.xyz[3 * i - 3], a.xyz[3 * i + 1] - a.xyz[3 * i - 2],
                           a.xyz[3 * i + 2] - a.xyz[3 * i - 1]);
  const double cell = std::cbrt(8 / density);
  EXPECT_LT(sum_step / (n - 1), cell);
  EXPECT_EQ(a.res_seq.front(), 1);
  EXPECT_EQ(a.res_seq.back(), static_cast<int>((n - 1) / 8 + 1));
  EXPECT_EQ(a.element.front(), 6);
  EXPECT_THROW(protattn::make_globule(0), Error);
  EXPECT_THROW(protattn::make_globule(10, -1.0), Error);
}

TEST(Describe, CountsResiduesChainsAndBox) {
  const Structure s = read_ok(data_file("2hhb.pdb"));
  const auto info = protattn::describe(s);
  EXPECT_EQ(info.atoms, s.size());
  // Haemoglobin: chains A, B, C, D (globins with one HEM each) plus the two PO4 ions that
  // 2hhb.pdb lists with a blank chain id (column 22): 5 chain names.
  EXPECT_EQ(info.chains, 5u);
  // Independent residue count: distinct (chain, number, name) among the selected atoms.
  std::set<std::tuple<std::string, int, std::string>> res;
  float lo[3] = {1e9f, 1e9f, 1e9f}, hi[3] = {-1e9f, -1e9f, -1e9f};
  for (std::size_t i = 0; i < s.size(); ++i) {
    res.emplace(s.chain[i], s.res_seq[i], s.res_name[i]);
    for (int c = 0; c < 3; ++c) {
      lo[c] = std::min(lo[c], s.xyz[3 * i + c]);
      hi[c] = std::max(hi[c], s.xyz[3 * i + c]);
    }
  }
  EXPECT_EQ(info.residues, res.size());
  for (int c = 0; c < 3; ++c) {
    EXPECT_EQ(info.lo[c], lo[c]);
    EXPECT_EQ(info.hi[c], hi[c]);
  }
  const auto g = protattn::describe(protattn::make_globule(100));
  EXPECT_EQ(g.residues, 13u);
  EXPECT_EQ(g.chains, 1u);
}
