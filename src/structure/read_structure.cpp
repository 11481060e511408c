// Reading PDB/mmCIF files (plain or gzipped) with gemmi into the flat Structure arrays.
// PDB: gemmi's reader; mmCIF: our tokenizer (cif_tokens) then gemmi's mmCIF model builder.
#include <gemmi/mmcif.hpp>
#include <gemmi/model.hpp>
#include <gemmi/pdb.hpp>

#include <algorithm>
#include <cctype>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <string_view>
#include <unordered_map>

#include "io/file_bytes.hpp"
#include "protattn/error.hpp"
#include "protattn/structure.hpp"
#include "structure/cif_tokens.hpp"

namespace protattn {
namespace {

constexpr std::size_t kPdbCoordColumn = 30;  // 0-based start of the x field (columns 31-38)
constexpr std::size_t kPdbCoordWidth = 8;
constexpr std::size_t kPdbCoordEnd = kPdbCoordColumn + 3 * kPdbCoordWidth;
constexpr std::size_t kPdbLineLength = 80;
constexpr int kPdbLegacyLineLength = 72;  // columns kept when 73-80 are an old id field

[[noreturn]] void fail(const std::string& path, const std::string& what) {
  throw Error("read_structure: " + path + ": " + what);
}

// Same test as gemmi's reader: the first four characters, any case, are ATOM or HETA.
bool is_atom_record(std::string_view line) {
  if (line.size() < 4) return false;
  char head[4];
  for (int i = 0; i < 4; ++i) head[i] = static_cast<char>(std::toupper(static_cast<unsigned char>(line[i])));
  return std::memcmp(head, "ATOM", 4) == 0 || std::memcmp(head, "HETA", 4) == 0;
}

// What a first pass over the ATOM/HETATM records found.
struct PdbScan {
  // Columns 73-80 hold an old-style entry id and line number ("2HHB 206"), not segment,
  // element and charge: seen when columns 79-80 are both digits, which no charge is.
  bool legacy_id_columns = false;
};

// A PDB coordinate field holds spaces then a decimal number: gemmi reads it without checks, so
// this pass finds garbage ("nan", letters, a cut line) and names its line first.
PdbScan scan_pdb_records(const std::string& text, const std::string& path) {
  PdbScan scan;
  std::size_t line_no = 0;
  std::size_t pos = 0;
  while (pos < text.size()) {
    std::size_t end = text.find('\n', pos);
    if (end == std::string::npos) end = text.size();
    ++line_no;
    std::string_view line(text.data() + pos, end - pos);
    if (!line.empty() && line.back() == '\r') line.remove_suffix(1);
    pos = end + 1;
    if (line.starts_with("END") && (line.size() == 3 || line[3] == ' ')) break;
    if (!is_atom_record(line)) continue;
    if (line.size() < kPdbCoordEnd)
      fail(path, "line " + std::to_string(line_no) + ": ATOM/HETATM record too short (" +
                     std::to_string(line.size()) + " columns, coordinates need " +
                     std::to_string(kPdbCoordEnd) + "); truncated file?");
    for (std::size_t f = 0; f < 3; ++f) {
      const std::string_view field = line.substr(kPdbCoordColumn + f * kPdbCoordWidth, kPdbCoordWidth);
      const std::string s(field);
      char* stop = nullptr;
      const double v = std::strtod(s.c_str(), &stop);
      while (stop && *stop == ' ') ++stop;
      const bool numeric = stop != s.c_str() && stop && *stop == '\0' &&
                           s.find_first_not_of(" +-.0123456789") == std::string::npos;
      if (!numeric || !std::isfinite(v))
        fail(path, "line " + std::to_string(line_no) + ": coordinate field '" + s +
                       "' (columns " + std::to_string(kPdbCoordColumn + f * kPdbCoordWidth + 1) +
                       "-" + std::to_string(kPdbCoordColumn + (f + 1) * kPdbCoordWidth) +
                       ") is not a number");
    }
    if (line.size() >= kPdbLineLength && std::isdigit(static_cast<unsigned char>(line[kPdbLineLength - 2])) &&
        std::isdigit(static_cast<unsigned char>(line[kPdbLineLength - 1])))
      scan.legacy_id_columns = true;
  }
  return scan;
}

// Whether the text looks like mmCIF (first non-blank, non-comment token starts with "data_").
bool looks_like_cif(const std::string& text) {
  std::size_t i = 0;
  while (i < text.size()) {
    const char c = text[i];
    if (c == ' ' || c == '\t' || c == '\r' || c == '\n') {
      ++i;
    } else if (c == '#') {
      while (i < text.size() && text[i] != '\n') ++i;
    } else {
      return text.compare(i, 5, "data_") == 0;
    }
  }
  return false;
}

// gemmi's mmCIF reader silently skips an _atom_site table that lacks a column it needs: name
// the missing columns instead.
void check_atom_site_columns(const gemmi::cif::Block& block, const std::string& path) {
  static constexpr const char* kRequired[] = {"id", "type_symbol", "label_alt_id", "label_asym_id",
                                              "Cartn_x", "Cartn_y", "Cartn_z", "occupancy",
                                              "B_iso_or_equiv", "auth_seq_id"};
  if (!block.has_tag("_atom_site.Cartn_x") && !block.has_tag("_atom_site.id"))
    fail(path, "no atoms (no _atom_site table in data_" + block.name + ")");
  std::string missing;
  for (const char* tag : kRequired)
    if (!block.has_tag(std::string("_atom_site.") + tag)) missing += std::string(missing.empty() ? "" : ", ") + tag;
  if (!missing.empty()) fail(path, "_atom_site lacks required column(s): " + missing);
}

std::string atom_label(const gemmi::Chain& ch, const gemmi::Residue& res, const gemmi::Atom& a) {
  return "atom " + a.name + " of " + res.name + " " + res.seqid.str() + " chain " + ch.name;
}

// Packs a residue number and insertion code into one key.
std::int64_t seqid_key(const gemmi::SeqId& id) {
  const std::int64_t num = id.num.has_value() ? static_cast<std::int64_t>(*id.num) : INT32_MIN;
  return num * 256 + static_cast<unsigned char>(id.icode | 0x20);
}

Structure select_atoms(const gemmi::Structure& st, const ReadOptions& opt, const std::string& path) {
  if (st.models.empty()) fail(path, "no atoms (no ATOM/HETATM or atom_site records found)");
  if (opt.model < 0 || static_cast<std::size_t>(opt.model) >= st.models.size())
    fail(path, "model index " + std::to_string(opt.model) + " requested, the file has " +
                   std::to_string(st.models.size()) + " model(s)");
  const gemmi::Model& model = st.models[static_cast<std::size_t>(opt.model)];
  Structure s;
  s.source = path;
  std::size_t total = 0;
  for (const gemmi::Chain& ch : model.chains)
    for (const gemmi::Residue& res : ch.residues) total += res.atoms.size();
  s.xyz.reserve(3 * total);
  s.element.reserve(total);
  s.atom_name.reserve(total);
  s.res_name.reserve(total);
  s.res_seq.reserve(total);
  s.chain.reserve(total);
  // First alternate location: per residue position (chain, number, insertion code), the first
  // altloc letter met in the file wins; atoms without altloc are always kept. This also picks one
  // residue of a microheterogeneity (e.g. PRO/SER sharing one number, altlocs A/B).
  std::unordered_map<std::string, std::unordered_map<std::int64_t, char>> first_alt;
  for (const gemmi::Chain& ch : model.chains) {
    auto& chain_alt = first_alt[ch.name];
    for (const gemmi::Residue& res : ch.residues) {
      if (!opt.waters && res.is_water()) continue;
      for (const gemmi::Atom& a : res.atoms) {
        if (!opt.hydrogens && a.is_hydrogen()) continue;
        if (a.altloc != '\0') {
          char& first = chain_alt[seqid_key(res.seqid)];
          if (first == '\0') first = a.altloc;
          if (a.altloc != first) continue;
        }
        const double c[3] = {a.pos.x, a.pos.y, a.pos.z};
        for (double v : c) {
          if (!std::isfinite(v))
            fail(path, atom_label(ch, res, a) + " has a non-finite coordinate");
          if (std::fabs(v) > kMaxAbsCoord)
            fail(path, atom_label(ch, res, a) + " has an absurd coordinate " + std::to_string(v) +
                           " (|x| > 1e5 A)");
          s.xyz.push_back(static_cast<float>(v));
        }
        s.element.push_back(static_cast<std::uint8_t>(a.element.atomic_number()));
        s.atom_name.push_back(a.name);
        s.res_name.push_back(res.name);
        s.res_seq.push_back(res.seqid.num.has_value() ? *res.seqid.num : 0);
        s.chain.push_back(ch.name);
      }
    }
  }
  if (s.size() == 0)
    fail(path, "no atoms after selection (model " + std::to_string(opt.model) +
                   (opt.hydrogens ? "" : ", hydrogens dropped") + (opt.waters ? "" : ", waters dropped") +
                   "; the file has " + std::to_string(total) + " atom(s) in that model)");
  const std::size_t limit = std::min(opt.max_atoms, kMaxAtoms);
  if (s.size() > limit)
    fail(path, std::to_string(s.size()) + " atoms selected, more than the limit of " +
                   std::to_string(limit));
  return s;
}

}  // namespace

Structure read_structure(const std::string& path, const ReadOptions& opt) {
  std::string text = io::read_file_bytes(path);
  if (text.empty()) fail(path, "empty file");
  if (text.find('\0') != std::string::npos)
    fail(path, "binary data (NUL byte at offset " + std::to_string(text.find('\0')) +
                   "): not a PDB or mmCIF text file");
  gemmi::Structure st;
  try {
    if (looks_like_cif(text)) {
      const gemmi::cif::Document doc = detail::parse_cif(text, path);
      st = gemmi::make_structure(doc);
      if (st.models.empty()) check_atom_site_columns(doc.blocks.front(), path);
    } else {
      const PdbScan scan = scan_pdb_records(text, path);
      gemmi::PdbReadOptions pdb_opt;
      if (scan.legacy_id_columns) pdb_opt.max_line_length = kPdbLegacyLineLength;
      st = gemmi::read_pdb_from_memory(text.data(), text.size(), path, pdb_opt);
    }
  } catch (const Error&) {
    throw;
  } catch (const std::exception& e) {
    fail(path, e.what());
  }
  return select_atoms(st, opt, path);
}

}  // namespace protattn
