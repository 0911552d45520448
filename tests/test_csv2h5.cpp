// test_csv2h5.cpp: csv2h5 and the csv_import library: round trips of every
// format with shuffled rows (expected sequences computed here, independently),
// stable ties, id mapping order, time formats, the k-core filter, format
// detection, and every bad input (exit code 2, FILE:LINE, no output written,
// an existing output left untouched).
#include <unistd.h>

#include <algorithm>
#include <map>
#include <random>
#include <tuple>

#include "sasrec/csv_import.h"
#include "sasrec/error.h"
#include "sasrec/store.h"
#include "test_util.h"

namespace sasrec {
namespace {

using test::TempDir;
using Seqs = std::map<std::string, std::vector<std::string>>;  // user id -> item ids in order

std::string csv2h5(const std::string& args) { return std::string(SASREC_CSV2H5) + " " + args; }

Seqs sequences_of(const Interactions& d) {
  Seqs out;
  for (int64_t u = 0; u < d.num_users(); ++u)
    for (int64_t j = d.offsets[u]; j < d.offsets[u + 1]; ++j) out[d.user_ids[u]].push_back(d.item_ids[d.items[j]]);
  return out;
}

std::string quote(const std::string& s) {
  if (s.find_first_of(",\"") == std::string::npos) return s;
  std::string q = "\"";
  for (char c : s) q += c == '"' ? std::string("\"\"") : std::string(1, c);
  return q + "\"";
}

TEST(Csv2h5, CsvRoundTripShuffledWithStringIdsAndTimes) {
  TempDir dir;
  std::mt19937 rng(11);
  struct Row { std::string user, item; int64_t time; };
  std::vector<Row> rows;
  for (int u = 0; u < 300; ++u) {
    std::string user = (u % 7 == 0) ? "user, \"" + std::to_string(u) + "\"" : "U-" + std::to_string(u * 31);
    int len = 1 + static_cast<int>(rng() % 15);
    for (int k = 0; k < len; ++k)
      rows.push_back({user, (rng() % 9 == 0 ? "it,em" : "item_") + std::to_string(rng() % 400),
                      1600000000 + static_cast<int64_t>(rng() % 20)});  // many ties
  }
  std::shuffle(rows.begin(), rows.end(), rng);
  std::string text = "user_id,rating,item_id,timestamp\r\n";  // an extra column, CRLF line ends
  for (const Row& r : rows) text += quote(r.user) + ",5," + quote(r.item) + "," + std::to_string(r.time) + "\r\n";
  const std::string in = dir.file("in.csv"), out = dir.file("out.h5");
  test::write_text(in, text);
  auto res = test::run(csv2h5(in + " " + out));
  ASSERT_EQ(res.exit_code, 0) << res.output;
  EXPECT_NE(res.output.find("300 users"), std::string::npos) << res.output;
  EXPECT_NE(res.output.find("MB/s"), std::string::npos) << res.output;

  // Expected: each user's rows sorted by time, ties in file order.
  std::map<std::string, std::vector<std::tuple<int64_t, size_t, std::string>>> by_user;
  for (size_t k = 0; k < rows.size(); ++k) by_user[rows[k].user].emplace_back(rows[k].time, k, rows[k].item);
  Seqs want;
  std::map<std::string, std::vector<int64_t>> want_times;
  for (auto& [user, v] : by_user) {
    std::sort(v.begin(), v.end());
    for (auto& [t, k, item] : v) {
      want[user].push_back(item);
      want_times[user].push_back(t);
    }
  }
  Interactions d = read_store(out);
  EXPECT_EQ(sequences_of(d), want);
  ASSERT_EQ(d.timestamps.size(), rows.size());
  for (int64_t u = 0; u < d.num_users(); ++u)
    EXPECT_EQ(std::vector<int64_t>(d.timestamps.begin() + d.offsets[u], d.timestamps.begin() + d.offsets[u + 1]),
              want_times[d.user_ids[u]]);
  // Users 0..U-1 and items 1..I in order of first appearance in the file.
  EXPECT_EQ(d.user_ids[0], rows[0].user);
  EXPECT_EQ(d.item_ids[1], rows[0].item);
  std::vector<std::string> first_users;
  for (const Row& r : rows)
    if (std::find(first_users.begin(), first_users.end(), r.user) == first_users.end()) first_users.push_back(r.user);
  EXPECT_EQ(d.user_ids, first_users);

  // The library gives the same result.
  ImportStats st;
  Interactions lib = import_interactions(in, ImportOptions{}, &st);
  EXPECT_EQ(sequences_of(lib), want);
  EXPECT_EQ(st.format, InputFormat::Csv);
  EXPECT_EQ(st.time_col, "timestamp");
  EXPECT_EQ(st.rows, static_cast<int64_t>(rows.size()));
}

TEST(Csv2h5, StableTiesAndMappingOrder) {
  TempDir dir;
  const std::string in = dir.file("in.csv");
  test::write_text(in, "user,item,time\nb,x,5\na,y,3\nb,z,5\nb,w,1\na,x,3\n");
  Interactions d = import_interactions(in, ImportOptions{});
  EXPECT_EQ(d.user_ids, (std::vector<std::string>{"b", "a"}));
  EXPECT_EQ(d.item_ids, (std::vector<std::string>{"", "x", "y", "z", "w"}));
  // b: w(1), x(5), z(5) -- x before z as in the file; a: y(3), x(3).
  EXPECT_EQ(d.items, (std::vector<int32_t>{4, 1, 3, 2, 1}));
  EXPECT_EQ(d.offsets, (std::vector<int64_t>{0, 3, 5}));
  EXPECT_EQ(d.timestamps, (std::vector<int64_t>{1, 5, 5, 3, 3}));
}

// The block scanner's fast path and the general per-line path must agree:
// quoted and padded fields, CRLF, blank lines, ids around the 24 bytes kept
// in the hash slots, times beyond int32 offsets, and the string maps written
// fixed-length (short ids) or variable-length (one very long id).
TEST(Csv2h5, FastPathEdgeCasesAndMapTypes) {
  TempDir dir;
  const std::string in = dir.file("in.csv"), out = dir.file("out.h5");
  const std::string id24(24, 'a'), id25(25, 'a'), id23(23, 'a'), huge(2000, 'h');
  std::string text = "user_id,item_id,timestamp\r\n";
  text += id24 + ",x,1700000000000\r\n";            // ms times: wider than int32 offsets
  text += "\"" + id25 + "\",\"x,y\",5\n";          // quoted, with the delimiter inside
  text += "\n";                                       // blank line
  text += " " + id23 + "\t,  y , -3\n";              // padded fields, negative time
  text += id24 + ",\"z\"\"q\",2\r\n";              // escaped quote
  text += id25 + "," + huge + ",7";                   // no final newline
  test::write_text(in, text);
  auto res = test::run(csv2h5(in + " " + out));
  ASSERT_EQ(res.exit_code, 0) << res.output;
  Interactions d = read_store(out);
  EXPECT_EQ(d.user_ids, (std::vector<std::string>{id24, id25, id23}));
  EXPECT_EQ(d.item_ids, (std::vector<std::string>{"", "x", "x,y", "y", "z\"q", huge}));
  EXPECT_EQ(sequences_of(d), (Seqs{{id24, {"z\"q", "x"}}, {id25, {"x,y", huge}}, {id23, {"y"}}}));
  EXPECT_EQ(d.timestamps, (std::vector<int64_t>{2, 1700000000000, 5, 7, -3}));
  EXPECT_EQ(sequences_of(import_interactions(in, ImportOptions{})), sequences_of(d));
  // Many rows through the fast path, seconds (int32 offsets) and a long-id item map (vlen).
  std::string big = "user_id,item_id,timestamp\n";
  Seqs want;
  std::mt19937 rng(3);
  for (int k = 0; k < 20000; ++k) {
    std::string u = "user" + std::to_string(rng() % 700), i = "item" + std::to_string(rng() % 900);
    if (k == 77) i = huge;
    big += u + "," + i + "," + std::to_string(1500000000 + k) + "\n";
    want[u].push_back(i);
  }
  test::write_text(in, big);
  res = test::run(csv2h5(in + " " + out));
  ASSERT_EQ(res.exit_code, 0) << res.output;
  EXPECT_EQ(sequences_of(read_store(out)), want);
  EXPECT_EQ(read_item_ids(out).size(), read_store_info(out).num_items + 1u);
}

TEST(Csv2h5, NoTimeColumnMeansFileOrder) {
  TempDir dir;
  const std::string in = dir.file("in.tsv");
  test::write_text(in, "userId\tmovieId\trating\n1\t10\t4\n2\t20\t3\n1\t5\t1\n");
  ImportStats st;
  Interactions d = import_interactions(in, ImportOptions{}, &st);
  EXPECT_EQ(st.delimiter, '\t');
  EXPECT_EQ(st.time_col, "");
  EXPECT_TRUE(d.timestamps.empty());
  EXPECT_EQ(sequences_of(d), (Seqs{{"1", {"10", "5"}}, {"2", {"20"}}}));
}

TEST(Csv2h5, TimeFormats) {
  int64_t t = 0;
  auto parse = [&](const std::string& s) { return parse_time(s.data(), s.data() + s.size(), &t); };
  ASSERT_TRUE(parse("1577923200"));
  EXPECT_EQ(t, 1577923200);
  ASSERT_TRUE(parse("2020-01-02"));
  EXPECT_EQ(t, 1577923200);  // 2020-01-01 is 18262 days after 1970-01-01; +1 day
  ASSERT_TRUE(parse("2020-01-02 01:02:03"));
  EXPECT_EQ(t, 1577923200 + 3723);
  ASSERT_TRUE(parse("2020-01-02T01:02:03.5Z"));
  EXPECT_EQ(t, 1577923200 + 3723);
  ASSERT_TRUE(parse("1969-12-31"));
  EXPECT_EQ(t, -86400);
  ASSERT_TRUE(parse("978300760.6"));
  EXPECT_EQ(t, 978300761);
  ASSERT_TRUE(parse("1.5e9"));
  EXPECT_EQ(t, 1500000000);
  ASSERT_TRUE(parse("-5"));
  EXPECT_EQ(t, -5);
  for (const char* bad : {"", "yesterday", "2020-13-01", "2020-01-02 25:00", "12abc", "nan", "1e30"})
    EXPECT_FALSE(parse(bad)) << bad;

  TempDir dir;
  const std::string in = dir.file("in.csv");
  test::write_text(in, "reviewerID;asin;date\nA;p1;2020-01-03\nA;p2;2020-01-02 10:00:00\n");
  ImportStats st;
  Interactions d = import_interactions(in, ImportOptions{}, &st);
  EXPECT_EQ(st.delimiter, ';');
  EXPECT_EQ(sequences_of(d), (Seqs{{"A", {"p2", "p1"}}}));
  EXPECT_EQ(d.timestamps, (std::vector<int64_t>{1577923200 + 36000, 1577923200 + 86400}));
}

TEST(Csv2h5, NamedColumnsAndDelimiter) {
  TempDir dir;
  const std::string in = dir.file("in.txt"), out = dir.file("out.h5");
  test::write_text(in, "who|what|when\nx|1|2\nx|2|1\n");
  auto res = test::run(csv2h5(in + " " + out + " --format csv --delimiter '|' --user-col who --item-col what --time-col when"));
  ASSERT_EQ(res.exit_code, 0) << res.output;
  EXPECT_EQ(sequences_of(read_store(out)), (Seqs{{"x", {"2", "1"}}}));
}

TEST(Csv2h5, PairsRoundTrip) {
  TempDir dir;
  std::mt19937 rng(5);
  std::string text;
  Seqs want;
  for (int k = 0; k < 2000; ++k) {
    std::string u = "u" + std::to_string(rng() % 50), i = std::to_string(rng() % 300);
    text += u + (k % 2 ? "\t" : "  ") + i + "\n";
    want[u].push_back(i);
  }
  const std::string in = dir.file("in.txt"), out = dir.file("out.h5");
  test::write_text(in, text);
  EXPECT_EQ(detect_format(in), InputFormat::Pairs);
  auto res = test::run(csv2h5(in + " " + out));
  ASSERT_EQ(res.exit_code, 0) << res.output;
  EXPECT_NE(res.output.find("pairs"), std::string::npos) << res.output;
  Interactions d = read_store(out);
  EXPECT_EQ(sequences_of(d), want);
  EXPECT_FALSE(read_store_info(out).has_timestamps);
}

TEST(Csv2h5, SeqRoundTripAndRepeatedUserAppends) {
  TempDir dir;
  const std::string in = dir.file("in.txt"), out = dir.file("out.h5");
  test::write_text(in, "7 3 4 5\n\n2 9 3\n7 8\n10 3 2 1 4\n");
  EXPECT_EQ(detect_format(in), InputFormat::Seq);
  auto res = test::run(csv2h5(in + " " + out + " --format seq"));
  ASSERT_EQ(res.exit_code, 0) << res.output;
  Interactions d = read_store(out);
  EXPECT_EQ(d.user_ids, (std::vector<std::string>{"7", "2", "10"}));
  EXPECT_EQ(sequences_of(d), (Seqs{{"7", {"3", "4", "5", "8"}}, {"2", {"9", "3"}}, {"10", {"3", "2", "1", "4"}}}));
  EXPECT_EQ(d.item_ids, (std::vector<std::string>{"", "3", "4", "5", "9", "8", "2", "1"}));
}

TEST(Csv2h5, KCoreFilterHandWorked) {
  // min 2 per user and per item. Pass 1 drops (u2,c) and (u4,d): c and d
  // occur once; then u2 has one row left, so pass 2 drops (u2,a).
  TempDir dir;
  const std::string in = dir.file("in.csv"), out = dir.file("out.h5");
  test::write_text(in, "user_id,item_id\nu1,a\nu1,b\nu2,a\nu2,c\nu3,a\nu3,b\nu4,d\n");
  auto res = test::run(csv2h5(in + " " + out + " --min-user-interactions 2 --min-item-interactions 2"));
  ASSERT_EQ(res.exit_code, 0) << res.output;
  EXPECT_NE(res.output.find("3 dropped rows"), std::string::npos) << res.output;
  Interactions d = read_store(out);
  EXPECT_EQ(sequences_of(d), (Seqs{{"u1", {"a", "b"}}, {"u3", {"a", "b"}}}));
  EXPECT_EQ(d.user_ids, (std::vector<std::string>{"u1", "u3"}));
  EXPECT_EQ(d.item_ids, (std::vector<std::string>{"", "a", "b"}));

  ImportOptions opt;
  opt.min_user_interactions = 3;
  EXPECT_THROW(import_interactions(in, opt), Error);  // everything dropped
}

TEST(Csv2h5, FormatDetection) {
  TempDir dir;
  auto detect = [&](const std::string& text) {
    test::write_text(dir.file("d.txt"), text);
    return detect_format(dir.file("d.txt"));
  };
  EXPECT_EQ(detect("user_id,item_id\n1,2\n"), InputFormat::Csv);
  EXPECT_EQ(detect("user\titem\n1\t2\n"), InputFormat::Csv);
  EXPECT_EQ(detect("\n1 2\n3 4\n"), InputFormat::Pairs);
  EXPECT_EQ(detect("1 2 3\n3 4\n"), InputFormat::Seq);
  EXPECT_THROW(detect("1,2\n3,4\n"), Error);            // comma-separated without a header
  EXPECT_THROW(detect("1\t2\t3\n4\t5\t6\n"), Error);    // a headerless table
}

TEST(Csv2h5, HelpAndVersion) {
  auto help = test::run(csv2h5("--help"));
  EXPECT_EQ(help.exit_code, 0);
  EXPECT_NE(help.output.find("--min-user-interactions"), std::string::npos);
  auto version = test::run(csv2h5("--version"));
  EXPECT_EQ(version.exit_code, 0);
  EXPECT_NE(version.output.find(SASREC_VERSION), std::string::npos);
  EXPECT_EQ(test::run(csv2h5("")).exit_code, 2);
  EXPECT_EQ(test::run(csv2h5("a b --format xml")).exit_code, 2);
}

// ---- bad input ------------------------------------------------------------------------------------

struct BadCase {
  const char* name;
  std::string text;
  std::string args;
  std::string where;  // expected "FILE:LINE" suffix after the input path ("" = the path alone)
  std::string problem;
};

TEST(Csv2h5, BadInputs) {
  const std::vector<BadCase> cases = {
      {"missing column", "foo,bar\n1,2\n", "--format csv", ":1:", "no user column in the header (columns"},
      {"missing column lists header", "user_id,bar\n1,2\n", "", ":1:", "'user_id', 'bar'"},
      {"missing named column", "user_id,item_id\n1,2\n", "--time-col when", ":1:", "no time column named 'when'"},
      {"wrong field count", "user_id,item_id\na,b\nc\n", "", ":3:", "wrong field count: expected 2"},
      {"wrong field count pairs", "a b\nc d\ne f g\n", "--format pairs", ":3:", "expected 2 (user item), found 3"},
      {"empty user", "user_id,item_id\na,b\n,b\n", "", ":3:", "empty user id"},
      {"empty item", "user_id,item_id\na, \n", "", ":2:", "empty item id"},
      {"bad time", "user_id,item_id,timestamp\na,b,1\na,c,yesterday\n", "", ":3:", "unparsable time 'yesterday'"},
      {"unterminated quote", "user_id,item_id\n\"a,b\n", "", ":2:", "unterminated quoted field"},
      {"empty input", "", "", ":1:", "empty input"},
      {"empty csv", "user_id,item_id\n\n", "--format csv", ":", "no data rows"},
      {"blank lines only", "\n  \n", "", ":", "empty input"},
      {"binary", std::string("user_id,item_id\na,b\nc,\0\x01\x02", 25), "", ":3:", "binary data (a NUL byte)"},
  };
  for (const BadCase& c : cases) {
    SCOPED_TRACE(c.name);
    TempDir dir;
    const std::string in = dir.file("in.csv"), out = dir.file("out.h5");
    test::write_text(in, c.text);
    auto res = test::run(csv2h5(in + " " + out + " " + c.args));
    EXPECT_EQ(res.exit_code, 2) << res.output;
    EXPECT_EQ(res.output.rfind("csv2h5: " + in + c.where, 0), 0u) << res.output;
    EXPECT_NE(res.output.find(c.problem), std::string::npos) << res.output;
    EXPECT_NE(res.output.find("; "), std::string::npos) << "says what to do: " << res.output;
    EXPECT_EQ(std::count(res.output.begin(), res.output.end(), '\n'), 1) << "one line: " << res.output;
    EXPECT_FALSE(test::fs::exists(out));
    EXPECT_EQ(std::distance(test::fs::directory_iterator(dir.path()), test::fs::directory_iterator()), 1)
        << "no temporary left";
    // A pre-existing output is left untouched.
    test::write_text(out, "precious");
    res = test::run(csv2h5(in + " " + out + " " + c.args));
    EXPECT_EQ(res.exit_code, 2);
    EXPECT_EQ(test::read_text(out), "precious");
    // The library reports the same as sasrec::Error(Input).
    ImportOptions opt;
    if (c.args == "--format csv") opt.format = InputFormat::Csv;
    if (c.args == "--format pairs") opt.format = InputFormat::Pairs;
    if (c.args == "--time-col when") opt.time_col = "when";
    try {
      import_interactions(in, opt);
      ADD_FAILURE() << "library accepted it";
    } catch (const Error& e) {
      EXPECT_EQ(e.domain(), ErrorDomain::Input);
      EXPECT_NE(std::string(e.what()).find(c.problem), std::string::npos) << e.what();
    }
  }
}

TEST(Csv2h5, ManyShortQuotedFieldsOnOneLine) {
  // The unquoting buffer grows while the fields before are still in use;
  // they used to move with it (a dangling view, found by tools/fuzz.sh and
  // seen under AddressSanitizer: bash tools/dev.sh sanitize).
  TempDir dir;
  const std::string in = dir.file("in.csv"), out = dir.file("out.h5");
  test::write_text(in, "\"x1\",\"user_id\",\"x2\",\"item_id\",\"x3\",\"timestamp\"\n"
                       "\"a\",\"u1\",\"b\",\"i1\",\"c\",\"5\"\n\"a\",\"u1\",\"b\",\"i2\",\"c\",\"3\"\n");
  auto res = test::run(csv2h5(in + " " + out));
  ASSERT_EQ(res.exit_code, 0) << res.output;
  Interactions d = read_store(out);
  ASSERT_EQ(d.num_users(), 1);
  ASSERT_EQ(d.items.size(), 2u);
  EXPECT_EQ(d.item_ids[d.items[0]], "i2");  // time 3 before time 5
  EXPECT_EQ(d.item_ids[d.items[1]], "i1");
}

TEST(Csv2h5, BadPaths) {
  TempDir dir;
  const std::string in = dir.file("in.csv"), out = dir.file("out.h5");
  test::write_text(in, "user_id,item_id\na,b\n");

  auto res = test::run(csv2h5(dir.file("nope.csv") + " " + out));
  EXPECT_EQ(res.exit_code, 2);
  EXPECT_NE(res.output.find(dir.file("nope.csv") + ": no such file"), std::string::npos) << res.output;
  EXPECT_FALSE(test::fs::exists(out));

  res = test::run(csv2h5(in + " " + dir.file("no/such/dir/out.h5")));
  EXPECT_EQ(res.exit_code, 2);
  EXPECT_NE(res.output.find("does not exist; create it first"), std::string::npos) << res.output;

  res = test::run(csv2h5(dir.path().string() + " " + out));
  EXPECT_EQ(res.exit_code, 2);
  EXPECT_NE(res.output.find("is a directory"), std::string::npos) << res.output;

}

TEST(Csv2h5, UnwritableOutputDirectory) {
  TempDir dir;
  const std::string in = dir.file("in.csv");
  test::write_text(in, "user_id,item_id\na,b\n");
  if (geteuid() == 0) GTEST_SKIP() << "running as root: permissions do not stop writes, unwritable-dir case skipped";
  test::fs::create_directories(dir.file("ro"));
  test::fs::permissions(dir.file("ro"), test::fs::perms::owner_read | test::fs::perms::owner_exec);
  auto res = test::run(csv2h5(in + " " + dir.file("ro/out.h5")));
  EXPECT_EQ(res.exit_code, 2);
  EXPECT_NE(res.output.find("is not writable"), std::string::npos) << res.output;
  test::fs::permissions(dir.file("ro"), test::fs::perms::owner_all);
}

}  // namespace
}  // namespace sasrec
