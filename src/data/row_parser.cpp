// row_parser.cpp: the parser of row_parser.h: csv, pairs and seq text into
// RawRows.
//
// A csv block is scanned 64 bytes at a time (the delimiter, '\n' and '"'
// as a bit mask, platform.h); a line of exactly the header's field count,
// no quote, non-empty ids and a parsable time becomes string_views into the
// read buffer with no allocation and no per-line library call; any other
// line (quotes, blanks, errors) takes the general per-line path, so both
// give the same rows and the same messages. Ids are interned 16 rows after
// their hash slots were prefetched (a FIFO, so in file order).
#include "sasrec/row_parser.h"

#include <algorithm>
#include <cstring>
#include <string>
#include <string_view>
#include <vector>

#include "sasrec/error.h"
#include "sasrec/platform.h"
#include "sasrec/text_fields.h"
#include "sasrec/time_parse.h"

namespace sasrec::text_import {
namespace {

using detail::cat;

// Walks the positions of the delimiter, '\n' and '"' in a block [b, e)
// (kPad readable bytes after e), 64 bytes per step.
class Structural {
 public:
  explicit Structural(char delim) : classes_(delim, '\n', '"') {}

  void reset(const char* p, const char* e) {
    e_ = e;
    load(p);
  }
  // The next structural character at or after the last reset point, or e.
  const char* next() {
    while (m_ == 0) {
      if (base_ + 64 >= e_) return e_;
      load(base_ + 64);
    }
    const char* r = base_ + __builtin_ctzll(m_);
    m_ &= m_ - 1;
    return r;
  }

 private:
  void load(const char* p) {
    base_ = p;
    if (p >= e_) {
      m_ = 0;
      return;
    }
    m_ = classes_.mask64(p);
    const size_t left = e_ - p;
    if (left < 64) m_ &= (uint64_t{1} << left) - 1;
  }

  platform::ByteMask3 classes_;
  const char* base_ = nullptr;
  const char* e_ = nullptr;
  uint64_t m_ = 0;
};

// Reads the whole input into `rows` (user/item indices in first-appearance order).
class Parser {
 public:
  Parser(LineReader& reader, const ImportOptions& opt, ImportStats* st) : reader_(reader), opt_(opt), st_(st) {}

  void run(InputFormat format, RawRows* rows) {
    rows_ = rows;
    switch (format) {
      case InputFormat::Csv: read_csv(); break;
      case InputFormat::Pairs: read_tokens(false); break;
      case InputFormat::Seq: read_tokens(true); break;
      case InputFormat::Auto: SASREC_CHECK(false, "format must be resolved before parsing");
    }
    if (rows_->user.empty())
      SASREC_FAIL(Input, where(std::max<int64_t>(1, line_)), ": no data rows (", line_,
                  " lines read); the input must hold at least one interaction");
  }

 private:
  struct Pending {
    Key user, item;
    int64_t line;  // for the message about an id that is not UTF-8
  };
  static constexpr int kPending = 16;

  std::string where(int64_t line) const { return cat(reader_.path(), ":", line); }
  std::string where() const { return where(line_); }

  // Queues a row; ids are interned kPending rows later (FIFO, so in file
  // order), after the hash slots they need were prefetched. Keys may point
  // into the read buffer or the splitter's scratch: callers flush() before
  // either changes.
  void add(const Key& user, const Key& item, int64_t time) {
    rows_->users.prefetch(user.hash);
    rows_->items.prefetch(item.hash);
    if (rows_->has_time) rows_->time.push_back(time);
    if (npending_ == kPending) {
      intern(pending_[head_]);
      pending_[head_] = Pending{user, item, line_};
      head_ = (head_ + 1) % kPending;
    } else {
      pending_[(head_ + npending_) % kPending] = Pending{user, item, line_};
      ++npending_;
    }
  }

  void add_checked(std::string_view user, std::string_view item, int64_t time, bool padded) {
    if (user.empty())
      SASREC_FAIL(Input, where(), ": empty user id; every row needs a user id (remove the row or fill it in)");
    if (item.empty())
      SASREC_FAIL(Input, where(), ": empty item id; every row needs an item id (remove the row or fill it in)");
    if (padded)
      add(key_padded(user.data(), user.size()), key_padded(item.data(), item.size()), time);
    else
      add(key_of(user), key_of(item), time);
  }

  void intern(const Pending& p) {
    // Rows of one user often come together: skip the lookup then.
    const Key& u = p.user;
    if (!(have_last_ && u.len <= kKeyWords && u.len == last_user_.len && u.w[0] == last_user_.w[0] &&
          u.w[1] == last_user_.w[1] && u.w[2] == last_user_.w[2])) {
      const int64_t known = rows_->users.size();
      last_index_ = rows_->users.intern(u);
      if (rows_->users.size() != known) check_utf8(u, "user", p.line);
      last_user_ = u;
      have_last_ = true;
    }
    rows_->user.push_back(last_index_);
    const int64_t known = rows_->items.size();
    rows_->item.push_back(rows_->items.intern(p.item));
    if (rows_->items.size() != known) check_utf8(p.item, "item", p.line);
  }

  // A new id must be UTF-8: the store's id maps are UTF-8 strings (h5py's
  // .asstr() and every JSON output would fail on anything else). Checked
  // once per distinct id; ASCII ids of up to 24 bytes by one mask.
  void check_utf8(const Key& k, const char* what, int64_t line) const {
    if (k.len <= kKeyWords && ((k.w[0] | k.w[1] | k.w[2]) & 0x8080808080808080ull) == 0) return;
    const size_t bad = utf8_error(reinterpret_cast<const unsigned char*>(k.p), k.len);
    if (bad == std::string_view::npos) return;
    SASREC_FAIL(Input, where(line), ": the ", what, " id '", escaped(std::string_view(k.p, k.len)),
                "' is not valid UTF-8 (byte ", bad + 1,
                "); the store keeps ids as UTF-8 text: convert the input "
                "first, e.g. iconv -f latin1 -t utf-8 IN > IN.utf8");
  }

  void flush() {
    for (int k = 0; k < npending_; ++k) intern(pending_[(head_ + k) % kPending]);
    npending_ = 0;
    head_ = 0;
  }

  // One csv data line, any form (quotes, blanks, errors): the general path.
  void csv_line(std::string_view line) {
    if (line.empty()) return;
    if (const char* err = split_.split(line, &fields_); *err) SASREC_FAIL(Input, where(), ": ", err);
    if (fields_.size() != nf_) {
      if (fields_.size() == 1 && trim(fields_[0]).empty()) return;  // a blank line
      SASREC_FAIL(Input, where(), ": wrong field count: expected ", nf_, " (as in the header), found ", fields_.size(),
                  " split at '", delim_name(), "'; quote fields that contain the delimiter");
    }
    int64_t v = 0;
    if (tc_ >= 0) {
      std::string_view t = trim(fields_[tc_]);
      if (!parse_time(t.data(), t.data() + t.size(), &v))
        SASREC_FAIL(Input, where(), ": unparsable time '", printable(t), "' in column '", header_[tc_],
                    "'; use unix seconds, a number, or YYYY-MM-DD[ HH:MM:SS]");
    }
    const bool scratch = split_.used_scratch();
    add_checked(trim(fields_[uc_]), trim(fields_[ic_]), v, !scratch);
    if (scratch) flush();  // the views die with the next split
  }

  std::string delim_name() const { return delim_ == '\t' ? std::string("tab") : std::string(1, delim_); }

  static std::string_view trim_field(const char* b, const char* e) {
    while (b < e && is_space(*b)) ++b;
    while (e > b && is_space(e[-1])) --e;
    return std::string_view(b, e - b);
  }

  // The data lines of a block [b, e). The fast path takes lines of exactly
  // nf unquoted fields, non-empty ids and a parsable time; any other line
  // (quotes, blank, wrong count, errors) goes through csv_line().
  void csv_block(const char* b, const char* e) {
    const char* fs[kMaxFastFields + 1];  // field starts; fs[k+1] - 1 = end of field k
    Structural scan(delim_);
    scan.reset(b, e);
    const char* ls = b;
    while (ls < e) {
      ++line_;
      size_t k = 0;
      const char* s = nullptr;
      bool ok = true;
      fs[0] = ls;
      while (true) {
        s = scan.next();
        const char c = s < e ? *s : '\n';
        if (c == delim_ && k + 1 < nf_) {
          fs[++k] = s + 1;
          continue;
        }
        ok = c == '\n' && k + 1 == nf_;
        fs[k + 1] = s + 1;
        break;
      }
      int64_t t = 0;
      if (ok) {
        // A CRLF line: the '\r' is not part of the last field.
        if (s > fs[nf_ - 1] && s[-1] == '\r') --fs[nf_];
        std::string_view user = trim_field(fs[uc_], fs[uc_ + 1] - 1);
        std::string_view item = trim_field(fs[ic_], fs[ic_ + 1] - 1);
        if (tc_ >= 0) ok = parse_time_fast(trim_field(fs[tc_], fs[tc_ + 1] - 1), &t);
        if (ok && !user.empty() && !item.empty()) {
          add(key_padded(user.data(), user.size()), key_padded(item.data(), item.size()), t);
          ls = s + 1;
          continue;
        }
      }
      // The general path for this line; the scan restarts after it.
      const char* nl = s < e && *s == '\n' ? s : static_cast<const char*>(std::memchr(ls, '\n', e - ls));
      const char* le = nl ? nl : e;
      csv_line(LineReader::clean_line(ls, le - ls, line_));
      ls = le + 1;
      scan.reset(ls, e);
    }
  }

  // The header line: the delimiter, the user, item and time columns.
  void read_header() {
    std::string_view line;
    while (reader_.next(&line) && trim(line).empty()) {
    }
    line_ = reader_.line_number();
    if (trim(line).empty())
      SASREC_FAIL(Input, where(std::max<int64_t>(1, line_)),
                  ": empty input (no header, no data rows); give a csv file with a header line and at least one row");
    const int64_t header_line = line_;
    const char found = delimiter_in(line);
    delim_ = opt_.delimiter ? opt_.delimiter : found ? found : ',';
    split_ = CsvSplitter(delim_);
    if (const char* err = split_.split(line, &fields_); *err) SASREC_FAIL(Input, where(), ": ", err);
    header_names_.assign(fields_.begin(), fields_.end());
    header_.assign(header_names_.begin(), header_names_.end());
    nf_ = header_.size();
    auto missing = [&](const char* what, const char* flag, const std::string& want) {
      SASREC_FAIL(Input, where(header_line), ": no ", what, " column",
                  want.empty() ? std::string() : cat(" named '", want, "'"), " in the header (columns, split at '",
                  delim_name(), "': ", join(header_), "); name it with ", flag,
                  " or set the delimiter with --delimiter");
    };
    // Two columns of the chosen name: which one is meant is a guess, so not made.
    auto unique = [&](const Column& c, const char* what) {
      if (c.twin >= 0)
        SASREC_FAIL(Input, where(header_line), ": the header has two columns named '", trim(header_[c.index]),
                    "' (columns ", c.index + 1, " and ", c.twin + 1, "); which one holds the ", what,
                    " is ambiguous: rename one of them");
      return c.index;
    };
    uc_ = unique(find_column(header_, opt_.user_col,
                             {"userid", "user", "uid", "reviewerid", "customerid", "visitorid", "sessionid"}),
                 "user");
    if (uc_ < 0) missing("user", "--user-col", opt_.user_col);
    ic_ = unique(find_column(header_, opt_.item_col,
                             {"itemid", "item", "iid", "movieid", "asin", "productid", "product", "businessid",
                              "trackid", "songid", "articleid", "bookid", "isbn"}),
                 "item");
    if (ic_ < 0) missing("item", "--item-col", opt_.item_col);
    if (ic_ == uc_)
      SASREC_FAIL(Input, where(header_line), ": the user and item columns are the same column '", header_[uc_],
                  "'; name them with --user-col and --item-col");
    tc_ = unique(find_column(header_, opt_.time_col,
                             {"timestamp", "time", "unixreviewtime", "ts", "datetime", "date", "eventtime", "createdat",
                              "unixtime"}),
                 "time");
    if (tc_ < 0 && !opt_.time_col.empty()) missing("time", "--time-col", opt_.time_col);
    if (st_) {
      st_->delimiter = delim_;
      st_->user_col = header_[uc_];
      st_->item_col = header_[ic_];
      st_->time_col = tc_ >= 0 ? std::string(header_[tc_]) : std::string();
    }
    rows_->has_time = tc_ >= 0;
  }

  void read_csv() {
    read_header();
    const bool fast = nf_ <= kMaxFastFields && delim_ != '"' && delim_ != '\n';
    while (true) {
      flush();  // before the buffer moves
      reader_.set_line_number(line_);
      const char *b, *e;
      if (!reader_.next_block(&b, &e)) break;
      if (fast) {
        csv_block(b, e);
      } else {
        for (const char* ls = b; ls < e;) {
          const char* nl = static_cast<const char*>(std::memchr(ls, '\n', e - ls));
          const char* le = nl ? nl : e;
          ++line_;
          csv_line(LineReader::clean_line(ls, le - ls, line_));
          ls = le + 1;
        }
      }
    }
    flush();
  }

  void read_tokens(bool seq) {
    rows_->has_time = false;
    line_ = 0;
    while (true) {
      flush();  // before the buffer moves
      reader_.set_line_number(line_);
      const char *b, *e;
      if (!reader_.next_block(&b, &e)) break;
      for (const char* ls = b; ls < e;) {
        const char* nl = static_cast<const char*>(std::memchr(ls, '\n', e - ls));
        const char* le = nl ? nl : e;
        ++line_;
        split_whitespace(LineReader::clean_line(ls, le - ls, line_), &fields_);
        ls = le + 1;
        if (fields_.empty()) continue;
        if (fields_[0].front() == '#') {  // a comment line (docs/data.md)
          if (st_) ++st_->comment_lines;
          continue;
        }
        if (seq) {
          const Key user = key_padded(fields_[0].data(), fields_[0].size());
          for (size_t k = 1; k < fields_.size(); ++k) add(user, key_padded(fields_[k].data(), fields_[k].size()), 0);
        } else {
          if (fields_.size() != 2)
            SASREC_FAIL(Input, where(), ": wrong field count: expected 2 (user item), found ", fields_.size(),
                        "; use --format seq for 'user item item ...' lines or --format csv for a table");
          add(key_padded(fields_[0].data(), fields_[0].size()), key_padded(fields_[1].data(), fields_[1].size()), 0);
        }
      }
    }
    flush();
  }

  static constexpr size_t kMaxFastFields = 64;

  LineReader& reader_;
  const ImportOptions& opt_;
  ImportStats* st_;
  RawRows* rows_ = nullptr;
  int64_t line_ = 0;  // the line being read (1-based)
  // csv
  char delim_ = ',';
  CsvSplitter split_{','};
  std::vector<std::string_view> fields_;
  std::vector<std::string> header_names_;
  std::vector<std::string_view> header_;
  size_t nf_ = 0;
  int uc_ = -1, ic_ = -1, tc_ = -1;
  // batch interning
  Pending pending_[kPending];
  int npending_ = 0, head_ = 0;
  Key last_user_{};
  bool have_last_ = false;
  int32_t last_index_ = -1;
};

}  // namespace

void parse_rows(LineReader& reader, const ImportOptions& options, InputFormat format, RawRows* rows, ImportStats* st) {
  Parser(reader, options, st).run(format, rows);
}

}  // namespace sasrec::text_import
