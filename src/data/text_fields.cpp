// text_fields.cpp: the field splitting of text_fields.h: blanks, tokens,
// csv fields with quotes, header columns by name, UTF-8 checking and the
// renderings of fields in messages.
#include "sasrec/text_fields.h"

#include <cctype>
#include <charconv>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <system_error>

#include "sasrec/error.h"

namespace sasrec::text_import {

using detail::cat;

namespace {

std::string normalize(std::string_view name) {
  std::string out;
  for (char c : name)
    if (c != '_' && c != '-' && c != ' ' && c != '.')
      out.push_back(static_cast<char>(std::tolower(static_cast<unsigned char>(c))));
  return out;
}

}  // namespace

void split_whitespace(std::string_view line, std::vector<std::string_view>* out) {
  out->clear();
  const char* p = line.data();
  const char* e = p + line.size();
  while (true) {
    while (p < e && is_space(*p)) ++p;
    if (p == e) return;
    const char* q = p;
    while (q < e && !is_space(*q)) ++q;
    out->emplace_back(p, q - p);
    p = q;
  }
}

bool is_comment(std::string_view line) {
  line = trim(line);
  return !line.empty() && line.front() == '#';
}

bool is_number(std::string_view s) {
  s = trim(s);
  if (s.empty()) return false;
  int64_t i;
  if (s.front() != '+' && std::from_chars(s.data(), s.data() + s.size(), i).ptr == s.data() + s.size()) return true;
  double d;
  auto r = std::from_chars(s.data(), s.data() + s.size(), d);
  return r.ec == std::errc() && r.ptr == s.data() + s.size();
}

const char* CsvSplitter::split(std::string_view line, std::vector<std::string_view>* out) {
  out->clear();
  used_scratch_ = false;
  const char* p = line.data();
  const char* e = p + line.size();
  if (!std::memchr(p, '"', line.size())) {  // fast path
    while (true) {
      const char* d = static_cast<const char*>(std::memchr(p, delim_, e - p));
      if (!d) {
        out->emplace_back(p, e - p);
        return "";
      }
      out->emplace_back(p, d - p);
      p = d + 1;
    }
  }
  size_t k = 0;
  used_scratch_ = true;
  while (true) {
    const char* s = p;
    while (s < e && *s == ' ') ++s;
    if (s < e && *s == '"') {
      if (scratch_.size() <= k) scratch_.resize(k + 1);
      std::string& f = scratch_[k];
      f.clear();
      const char* j = s + 1;
      while (true) {
        const char* q = static_cast<const char*>(std::memchr(j, '"', e - j));
        if (!q) return "unterminated quoted field; close the quote on the same line (fields may not span lines)";
        f.append(j, q - j);
        if (q + 1 < e && q[1] == '"') {
          f.push_back('"');
          j = q + 2;
          continue;
        }
        p = q + 1;
        break;
      }
      while (p < e && *p == ' ') ++p;
      if (p < e && *p != delim_) return "text after a closing quote; write \"\" for a quote inside a quoted field";
      out->emplace_back(f);
    } else {
      const char* d = static_cast<const char*>(std::memchr(p, delim_, e - p));
      const char* fe = d ? d : e;
      out->emplace_back(p, fe - p);
      p = fe;
    }
    ++k;
    if (p == e) return "";
    ++p;  // the delimiter
    if (p == e) {
      out->emplace_back();
      return "";
    }
  }
}

char delimiter_in(std::string_view header) {
  for (char c : {',', '\t', ';'})
    if (header.find(c) != std::string_view::npos) return c;
  return 0;
}

Column find_column(const std::vector<std::string_view>& header, const std::string& want,
                   std::initializer_list<const char*> candidates) {
  auto matching = [&](auto same) {
    Column c;
    for (size_t i = 0; i < header.size(); ++i) {
      if (!same(trim(header[i]))) continue;
      if (c.index < 0)
        c.index = static_cast<int>(i);
      else if (c.twin < 0)
        c.twin = static_cast<int>(i);
    }
    return c;
  };
  if (!want.empty()) {
    Column c = matching([&](std::string_view h) { return h == want; });
    return c.index >= 0 ? c : matching([&](std::string_view h) { return normalize(h) == normalize(want); });
  }
  for (const char* name : candidates) {
    Column c = matching([&](std::string_view h) { return normalize(h) == name; });
    if (c.index >= 0) return c;
  }
  return {};
}

size_t utf8_error(const unsigned char* s, size_t n) {
  size_t i = 0;
  while (i < n) {
    const unsigned c = s[i];
    if (c < 0x80) {
      ++i;
      continue;
    }
    size_t len;
    unsigned lo = 0x80, hi = 0xBF;  // the allowed range of the second byte
    if (c >= 0xC2 && c <= 0xDF)
      len = 2;
    else if (c == 0xE0)
      len = 3, lo = 0xA0;
    else if (c >= 0xE1 && c <= 0xEC)
      len = 3;
    else if (c == 0xED)
      len = 3, hi = 0x9F;
    else if (c >= 0xEE && c <= 0xEF)
      len = 3;
    else if (c == 0xF0)
      len = 4, lo = 0x90;
    else if (c >= 0xF1 && c <= 0xF3)
      len = 4;
    else if (c == 0xF4)
      len = 4, hi = 0x8F;
    else
      return i;
    if (i + len > n || s[i + 1] < lo || s[i + 1] > hi) return i;
    for (size_t k = 2; k < len; ++k)
      if (s[i + k] < 0x80 || s[i + k] > 0xBF) return i;
    i += len;
  }
  return std::string_view::npos;
}

std::string escaped(std::string_view s) {
  std::string out;
  for (unsigned char c : s.substr(0, 60)) {
    if (c >= 0x20 && c < 0x7f) {
      out += static_cast<char>(c);
    } else {
      char buf[8];
      std::snprintf(buf, sizeof(buf), "\\x%02X", c);
      out += buf;
    }
  }
  return s.size() > 60 ? out + "..." : out;
}

std::string printable(std::string_view s) {
  std::string out(s.substr(0, 60));
  if (s.size() > 60) out += "...";
  return out;
}

std::string join(const std::vector<std::string_view>& v) {
  std::string out;
  for (size_t i = 0; i < v.size(); ++i) out += cat(i ? ", " : "", "'", v[i], "'");
  return out;
}

}  // namespace sasrec::text_import
