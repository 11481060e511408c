// CIF 1.1 tokenizer: one pass over the text, tokens appended to gemmi cif::Document items.
#include "structure/cif_tokens.hpp"

#include <cstring>

#include "protattn/error.hpp"

namespace protattn::detail {
namespace {

namespace cif = gemmi::cif;

bool is_ws(char c) { return c == ' ' || c == '\t' || c == '\n' || c == '\r'; }

// Case-insensitive test for a reserved word prefix such as "data_" at text[pos].
bool has_prefix_ci(const std::string& text, std::size_t pos, const char* word) {
  const std::size_t len = std::strlen(word);
  if (pos + len > text.size()) return false;
  for (std::size_t i = 0; i < len; ++i) {
    char c = text[pos + i];
    if (c >= 'A' && c <= 'Z') c = static_cast<char>(c - 'A' + 'a');
    if (c != word[i]) return false;
  }
  return true;
}

enum class Tok { data, global, save_begin, save_end, loop, stop, tag, value, end };

class Lexer {
 public:
  Lexer(const std::string& text, const std::string& path) : t_(text), path_(path) {}

  // Next token; its text is [begin, end) of the input, its line is `line`.
  Tok next() {
    skip_ws_and_comments();
    begin = pos_;
    line = line_;
    if (pos_ >= t_.size()) return Tok::end;
    const char c = t_[pos_];
    const bool at_bol = pos_ == 0 || t_[pos_ - 1] == '\n';
    if (c == ';' && at_bol) return text_field();
    if (c == '\'' || c == '"') return quoted(c);
    const std::size_t word_end = scan_word();
    if (c == '_') return finish(word_end, Tok::tag);
    if (has_prefix_ci(t_, pos_, "data_")) return finish(word_end, Tok::data);
    if (has_prefix_ci(t_, pos_, "save_")) return finish(word_end, word_end - pos_ == 5 ? Tok::save_end : Tok::save_begin);
    if (word_end - pos_ == 5 && has_prefix_ci(t_, pos_, "loop_")) return finish(word_end, Tok::loop);
    if (word_end - pos_ == 7 && has_prefix_ci(t_, pos_, "global_")) return finish(word_end, Tok::global);
    if (word_end - pos_ == 5 && has_prefix_ci(t_, pos_, "stop_")) return finish(word_end, Tok::stop);
    if (c == '$' || c == '[' || c == ']')
      fail("unsupported value starting with '" + std::string(1, c) + "'");
    return finish(word_end, Tok::value);
  }

  std::string str() const { return t_.substr(begin, end - begin); }
  [[noreturn]] void fail(const std::string& what) const {
    throw Error(path_ + ":" + std::to_string(line) + ": " + what);
  }

  std::size_t begin = 0, end = 0;
  int line = 1;

 private:
  void skip_ws_and_comments() {
    while (pos_ < t_.size()) {
      const char c = t_[pos_];
      if (c == '\n') {
        ++line_;
        ++pos_;
      } else if (is_ws(c)) {
        ++pos_;
      } else if (c == '#') {
        while (pos_ < t_.size() && t_[pos_] != '\n') ++pos_;
      } else {
        break;
      }
    }
  }
  std::size_t scan_word() const {
    std::size_t e = pos_;
    while (e < t_.size() && !is_ws(t_[e])) ++e;
    return e;
  }
  Tok finish(std::size_t e, Tok kind) {
    end = e;
    pos_ = e;
    return kind;
  }
  // 'text' or "text": ends at the same quote followed by whitespace, '#' or the end of input.
  Tok quoted(char q) {
    std::size_t e = pos_ + 1;
    while (true) {
      if (e >= t_.size() || t_[e] == '\n') fail(std::string("unterminated ") + q + "quoted" + q + " value");
      if (t_[e] == q && (e + 1 == t_.size() || is_ws(t_[e + 1]) || t_[e + 1] == '#')) break;
      ++e;
    }
    return finish(e + 1, Tok::value);
  }
  // ;text field; from a ';' at the start of a line to the next line starting with ';'.
  Tok text_field() {
    std::size_t e = pos_ + 1;
    while (true) {
      const std::size_t nl = t_.find('\n', e);
      if (nl == std::string::npos) fail("unterminated text field (no closing ';' line)");
      ++line_;
      e = nl + 1;
      if (e < t_.size() && t_[e] == ';') break;
    }
    return finish(e + 1, Tok::value);
  }

  const std::string& t_;
  const std::string& path_;
  std::size_t pos_ = 0;
  int line_ = 1;
};

}  // namespace

cif::Document parse_cif(const std::string& text, const std::string& path) {
  cif::Document doc;
  doc.source = path;
  Lexer lex(text, path);
  std::vector<cif::Item>* items = nullptr;
  cif::Loop* loop = nullptr;   // the loop being filled
  bool loop_has_values = false;
  int loop_line = 0;
  auto close_loop = [&] {
    if (!loop) return;
    if (loop->tags.empty()) lex.fail("loop_ at line " + std::to_string(loop_line) + " has no tags");
    if (loop->values.size() % loop->tags.size() != 0)
      lex.fail("loop_ at line " + std::to_string(loop_line) + " with " +
               std::to_string(loop->tags.size()) + " tags ends with " +
               std::to_string(loop->values.size()) + " values, not a multiple (truncated file?)");
    loop = nullptr;
  };
  auto need_block = [&] {
    if (!items) lex.fail("data before the first data_ block heading");
  };
  while (true) {
    const Tok tok = lex.next();
    if (tok == Tok::value) {
      need_block();
      if (loop) {
        if (!loop_has_values && loop->tags.empty()) lex.fail("loop_ without tags");
        loop_has_values = true;
        loop->values.emplace_back(text, lex.begin, lex.end - lex.begin);
        continue;
      }
      lex.fail("value '" + lex.str() + "' without a tag");
    }
    if (tok == Tok::tag && loop && !loop_has_values) {
      loop->tags.emplace_back(text, lex.begin, lex.end - lex.begin);
      continue;
    }
    close_loop();
    switch (tok) {
      case Tok::end:
        if (doc.blocks.empty()) lex.fail("no data_ block (not a CIF file?)");
        gemmi::cif::check_for_missing_values(doc);
        return doc;
      case Tok::data:
      case Tok::global: {
        doc.blocks.emplace_back(tok == Tok::data ? lex.str().substr(5) : std::string());
        items = &doc.blocks.back().items;
        break;
      }
      case Tok::save_begin:
        need_block();
        items->emplace_back(cif::FrameArg{lex.str().substr(5)});
        items->back().line_number = lex.line;
        items = &items->back().frame.items;
        break;
      case Tok::save_end:
        need_block();
        items = &doc.blocks.back().items;
        break;
      case Tok::loop:
        need_block();
        items->emplace_back(cif::LoopArg{});
        items->back().line_number = lex.line;
        loop = &items->back().loop;
        loop_has_values = false;
        loop_line = lex.line;
        break;
      case Tok::tag: {
        need_block();
        const int tag_line = lex.line;
        std::string tag = lex.str();
        const Tok v = lex.next();
        if (v != Tok::value) {
          lex.line = tag_line;
          lex.fail("tag " + tag + " without a value");
        }
        items->emplace_back(tag, lex.str());
        items->back().line_number = tag_line;
        break;
      }
      case Tok::stop:
        lex.fail("stop_ is not allowed in CIF 1.1");
      case Tok::value:
        break;
    }
  }
}

}  // namespace protattn::detail
