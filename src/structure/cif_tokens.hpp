// CIF 1.1 tokenizer that fills gemmi's cif::Document (gemmi's own parser needs PEGTL headers).
#pragma once
#include <gemmi/cifdoc.hpp>

#include <string>

namespace protattn::detail {

// Parses CIF text into a gemmi document: data blocks, save frames, tag/value pairs and loops,
// values kept raw (quotes and text-field markers included) as gemmi's parser keeps them.
// Throws Error "path:line: problem" on a syntax error (unterminated quote or text field, a tag
// without value, a loop whose value count is not a multiple of its tag count, ...).
gemmi::cif::Document parse_cif(const std::string& text, const std::string& path);

}  // namespace protattn::detail
