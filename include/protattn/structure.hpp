// protattn: atoms of a structure (read from PDB/mmCIF or generated) as flat arrays.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

namespace protattn {

// Atoms in file order, structure of arrays. xyz holds 3 floats per atom (Angstrom).
struct Structure {
  std::string source;                  // file path, or a description of the generator
  std::vector<float> xyz;              // [n, 3]
  std::vector<std::uint8_t> element;   // atomic number (0 when unknown)
  std::vector<std::string> atom_name;  // "CA", "N", ...
  std::vector<std::string> res_name;   // "GLY", "HOH", ...
  std::vector<std::int32_t> res_seq;   // residue number from the file
  std::vector<std::string> chain;      // chain name
  std::size_t size() const { return element.size(); }
};

// Largest structure accepted anywhere (atoms).
inline constexpr std::size_t kMaxAtoms = 10'000'000;
// Largest coordinate magnitude accepted (Angstrom); beyond it a file is broken.
inline constexpr double kMaxAbsCoord = 1e5;

struct ReadOptions {
  bool hydrogens = false;  // keep H and D atoms
  bool waters = false;     // keep water molecules
  int model = 0;           // index of the model to read (0 = first)
  std::size_t max_atoms = kMaxAtoms;  // more selected atoms than this is an error
};

// Reads PDB or mmCIF, plain or gzipped. Default selection: first model, heavy atoms of
// polymers and ligands, no waters, first alternate location. Throws Error naming the file and
// the problem on a missing/unreadable/garbage file, no atoms after selection, NaN or absurd
// coordinates (|x| > 1e5 A), or more than kMaxAtoms atoms.
Structure read_structure(const std::string& path, const ReadOptions& opt = {});

// Checks coordinates (finite, |x| <= 1e5) and size; throws Error mentioning `what`.
void validate_coords(const float* xyz, std::size_t n, const std::string& what);

// W2-style synthetic globule: n atoms uniformly in a sphere whose radius gives `density`
// atoms per cubic Angstrom (0.058 ~ protein heavy atoms), carbon elements, one chain,
// residues of 8 atoms in a space-filling chain order. Same seed, same atoms.
Structure make_globule(std::size_t n, double density = 0.058, std::uint64_t seed = 1);

struct StructureInfo {
  std::size_t atoms = 0, residues = 0, chains = 0;
  float lo[3] = {0, 0, 0}, hi[3] = {0, 0, 0};  // bounding box
};
StructureInfo describe(const Structure& s);

}  // namespace protattn
