// test_csv2h5.cpp: csv2h5 and the csv_import library: round trips of every
// format with shuffled rows (expected sequences computed here, independently),
// stable ties, id mapping order, time formats, the k-core filter, format
// detection, and every bad input (exit code 2, FILE:LINE, no output written,
// an existing output left untouched).
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <limits>
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
  struct Row {
    std::string user, item;
    int64_t time;
  };
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
  text += id24 + ",x,1700000000000\r\n";   // ms times: wider than int32 offsets
  text += "\"" + id25 + "\",\"x,y\",5\n";  // quoted, with the delimiter inside
  text += "\n";                            // blank line
  text += " " + id23 + "\t,  y , -3\n";    // padded fields, negative time
  text += id24 + ",\"z\"\"q\",2\r\n";      // escaped quote
  text += id25 + "," + huge + ",7";        // no final newline
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
  // Every int64, its minimum included; days a month does not have are refused like 2020-01-32.
  ASSERT_TRUE(parse("-9223372036854775808"));
  EXPECT_EQ(t, std::numeric_limits<int64_t>::min());
  ASSERT_TRUE(parse("9223372036854775807"));
  EXPECT_EQ(t, std::numeric_limits<int64_t>::max());
  EXPECT_FALSE(parse("-9223372036854775809"));
  ASSERT_TRUE(parse("2020-02-29"));
  EXPECT_EQ(t, 1583020800 - 86400);  // 2020-03-01 00:00 UTC is 1583020800
  ASSERT_TRUE(parse("2000-02-29"));  // divisible by 400: a leap year
  EXPECT_EQ(t, 951782400);
  for (const char* bad :
       {"2019-02-29", "2020-02-30", "2100-02-29", "2020-04-31", "2020-06-31", "2020-01-32", "2020-11-31 10:00:00"})
    EXPECT_FALSE(parse(bad)) << bad;
  for (const char* good : {"2020-01-31", "2020-04-30", "2020-12-31", "2019-02-28"}) EXPECT_TRUE(parse(good)) << good;

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
  auto res = test::run(
      csv2h5(in + " " + out + " --format csv --delimiter '|' --user-col who --item-col what --time-col when"));
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
  EXPECT_THROW(detect("1,2\n3,4\n"), Error);          // comma-separated without a header
  EXPECT_THROW(detect("1\t2\t3\n4\t5\t6\n"), Error);  // a headerless table
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
  test::write_text(in,
                   "\"x1\",\"user_id\",\"x2\",\"item_id\",\"x3\",\"timestamp\"\n"
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

// The input is read once, as a stream: the same store from a file, standard
// input ("-" and /dev/stdin), a FIFO and a process substitution (bash).
TEST(Csv2h5, StreamsAreReadOnce) {
  TempDir dir;
  std::string text = "user_id,item_id,timestamp\n";
  for (int k = 0; k < 3000; ++k)  // bigger than a pipe's buffer
    text += "u" + std::to_string(k % 97) + ",i" + std::to_string((k * 13) % 211) + "," + std::to_string(k) + "\n";
  const std::string in = dir.file("in.csv"), fifo = dir.file("fifo");
  test::write_text(in, text);
  ASSERT_EQ(::mkfifo(fifo.c_str(), 0644), 0);
  auto res = test::run(csv2h5(in + " " + dir.file("file.h5")));
  ASSERT_EQ(res.exit_code, 0) << res.output;
  const Seqs want = sequences_of(read_store(dir.file("file.h5")));
  // timeout: a reader that opens its input twice waits for a second FIFO writer forever.
  const std::string t = "timeout 60 ";
  const std::vector<std::pair<std::string, std::string>> ways{
      {"stdin.h5", "cat " + in + " | " + t + csv2h5("- ") + dir.file("stdin.h5")},
      {"devstdin.h5", t + csv2h5("/dev/stdin ") + dir.file("devstdin.h5") + " < " + in},
      {"fifo.h5", "(cat " + in + " > " + fifo + " &); " + t + csv2h5(fifo + " ") + dir.file("fifo.h5")},
      {"subst.h5", "bash -c '" + t + csv2h5("<(cat " + in + ") ") + dir.file("subst.h5") + "'"},
      {"pairs.h5", "sed 1d " + in + " | tr , ' ' | cut -d' ' -f1,2 | " + t + csv2h5("- ") + dir.file("pairs.h5")}};
  for (const auto& [out, command] : ways) {
    res = test::run(command);
    ASSERT_EQ(res.exit_code, 0) << command << "\n" << res.output;
    EXPECT_NE(res.output.find("3000 interactions"), std::string::npos) << res.output;
    EXPECT_EQ(sequences_of(read_store(dir.file(out))), want) << command;
  }
  // The size read counts for a stream too (MB/s of the summary line).
  ImportStats st;
  import_interactions(in, ImportOptions{}, &st);
  EXPECT_EQ(st.bytes, static_cast<int64_t>(text.size()));
}

// The output may not be anything but a regular file, nor the input by
// another name; each refusal leaves the node as it was.
TEST(Csv2h5, RefusesAnOutputThatIsNotARegularFileOrIsTheInput) {
  TempDir dir;
  const std::string in = dir.file("in.csv"), text = "user_id,item_id\na,b\nc,b\n";
  test::write_text(in, text);
  test::fs::create_hard_link(in, dir.file("same.csv"));
  ASSERT_EQ(::mkfifo(dir.file("fifo").c_str(), 0644), 0);
  for (const auto& [out, expect] : std::vector<std::pair<std::string, std::string>>{
           {in, "is the input '" + in + "' (the same file)"},
           {dir.file("same.csv"), "is the input '" + in + "' (the same file)"},
           {dir.file("fifo"), "exists and is a FIFO (named pipe), not a regular file"},
           {dir.path().string(), "exists and is a directory, not a regular file"}}) {
    const auto res = test::run(csv2h5(in + " " + out));
    EXPECT_EQ(res.exit_code, 2) << out << "\n" << res.output;
    EXPECT_NE(res.output.find(expect), std::string::npos) << res.output;
  }
  EXPECT_EQ(test::read_text(in), text) << "the input was replaced";
  struct stat st {};
  ASSERT_EQ(::lstat(dir.file("fifo").c_str(), &st), 0);
  EXPECT_TRUE(S_ISFIFO(st.st_mode)) << "the FIFO was replaced";
  // The input from standard input, named again as the output.
  const auto res = test::run(csv2h5("- " + in) + " < " + in);
  EXPECT_EQ(res.exit_code, 2) << res.output;
  EXPECT_NE(res.output.find("is the input 'stdin' (the same file)"), std::string::npos) << res.output;
  EXPECT_EQ(test::read_text(in), text);
}

// SIGTERM / SIGINT: the temporary goes, exit 3; a temporary of a killed
// run is removed by the next run, saying so.
TEST(Csv2h5, SignalsRemoveTheTemporaryAndTheNextRunRemovesAKilledOnes) {
  TempDir dir;
  // Interrupted while the input is still coming: nothing written, exit 3.
  const std::string fifo = dir.file("fifo");
  ASSERT_EQ(::mkfifo(fifo.c_str(), 0644), 0);
  auto res = test::run("((sleep 5 > " + fifo + " &); " + csv2h5(fifo + " " + dir.file("a.h5")) +
                       " & pid=$!; sleep 1; kill -TERM $pid; wait $pid)");
  EXPECT_EQ(res.exit_code, kExitInterrupted) << res.output;
  EXPECT_NE(res.output.find("csv2h5: interrupted by SIGTERM"), std::string::npos) << res.output;
  EXPECT_FALSE(test::fs::exists(dir.file("a.h5")));
  // Interrupted while a temporary exists: sasrec_synth streams its output
  // through the same AtomicOutput; stop it once the temporary is there.
  const std::string big = dir.file("big.csv");
  res = test::run("(" + std::string(SASREC_SYNTH) + " --users 3000000 --threads 1 --format csv --out " + big +
                  " & pid=$!; for i in $(seq 200); do [ -e " + big +
                  ".tmp-$pid ] && break; sleep 0.05; done; "
                  "sleep 0.2; kill -INT $pid; wait $pid)");
  EXPECT_EQ(res.exit_code, kExitInterrupted) << res.output;
  EXPECT_NE(res.output.find("sasrec_synth: interrupted by SIGINT; nothing was written, no unfinished output is left"),
            std::string::npos)
      << res.output;
  for (const auto& e : test::fs::directory_iterator(dir.path()))
    EXPECT_EQ(e.path().filename().string().rfind("big.csv", 0), std::string::npos) << "left: " << e.path();
  // A temporary whose writer is gone (SIGKILL cannot be caught) goes with the next run.
  const std::string in = dir.file("in.csv"), out = dir.file("out.h5");
  test::write_text(in, "user_id,item_id\na,b\n");
  test::write_text(out + ".tmp-999999999", "partial");  // above pid_max: no such process
  res = test::run(csv2h5(in + " " + out));
  EXPECT_EQ(res.exit_code, 0) << res.output;
  EXPECT_NE(res.output.find("removed 1 unfinished " + out + ".tmp-PID file(s) of a killed run"), std::string::npos)
      << res.output;
  EXPECT_FALSE(test::fs::exists(out + ".tmp-999999999"));
}

// The silent oddities, decided (docs/data.md): '#' lines of pairs and seq
// are comments, said in the summary; two columns of the chosen name are
// refused; an id that is not UTF-8 is refused at its own line.
TEST(Csv2h5, CommentsDuplicateColumnsAndInvalidUtf8) {
  TempDir dir;
  const std::string pairs = dir.file("p.txt");
  test::write_text(pairs, "# exported 2020-01-01\nu1 i1\n  #u1 i2\nu1 i3\nu2 i1\n");
  ImportStats st;
  ImportOptions pairs_opt;
  pairs_opt.format = InputFormat::Pairs;
  EXPECT_EQ(sequences_of(import_interactions(pairs, pairs_opt, &st)), (Seqs{{"u1", {"i1", "i3"}}, {"u2", {"i1"}}}));
  EXPECT_EQ(st.comment_lines, 2);
  auto res = test::run(csv2h5(pairs + " " + dir.file("p.h5")));  // auto-detected as pairs
  EXPECT_EQ(res.exit_code, 0) << res.output;
  EXPECT_NE(res.output.find("2 comment line(s) starting with '#' skipped"), std::string::npos) << res.output;

  test::write_text(dir.file("dup.csv"), "user_id,item_id,rating,user_id\na,b,5,c\n");
  res = test::run(csv2h5(dir.file("dup.csv") + " " + dir.file("d.h5")));
  EXPECT_EQ(res.exit_code, 2) << res.output;
  EXPECT_NE(res.output.find("dup.csv:1: the header has two columns named 'user_id' (columns 1 and 4)"),
            std::string::npos)
      << res.output;
  test::write_text(dir.file("dup2.csv"), "user_id,item_id,rating,rating\na,b,5,4\n");  // not a column used
  EXPECT_EQ(test::run(csv2h5(dir.file("dup2.csv") + " " + dir.file("d2.h5"))).exit_code, 0);

  // Valid UTF-8 of every length passes; a Latin-1 byte on line 23 (after more rows than the
  // reader interns at once), an overlong form and a surrogate do not.
  std::string text = "user_id,item_id\n";
  for (int k = 0; k < 20; ++k) text += "u" + std::to_string(k) + ",caf\xc3\xa9 \xe6\x97\xa5 \xf0\x9f\x8e\xb5\n";
  test::write_text(dir.file("ok.csv"), text);
  EXPECT_EQ(test::run(csv2h5(dir.file("ok.csv") + " " + dir.file("ok.h5"))).exit_code, 0);
  for (const auto& [bytes, at] :
       std::vector<std::pair<std::string, std::string>>{{"caf\xe9", "'caf\\xE9' is not valid UTF-8 (byte 4)"},
                                                        {"\xc0\xaf", "(byte 1)"},
                                                        {"x\xed\xa0\x80", "(byte 2)"}}) {
    test::write_text(dir.file("bad.csv"), text + "u1,i1\nu2," + bytes + "\n");
    res = test::run(csv2h5(dir.file("bad.csv") + " " + dir.file("bad.h5")));
    EXPECT_EQ(res.exit_code, 2) << res.output;
    EXPECT_NE(res.output.find("bad.csv:23: the item id"), std::string::npos) << res.output;
    EXPECT_NE(res.output.find(at), std::string::npos) << res.output;
    EXPECT_FALSE(test::fs::exists(dir.file("bad.h5")));
  }
}

// A full disk (a file-size limit, RLIMIT_FSIZE, the unprivileged way to get
// one): one line naming the reason, exit 1, no HDF5 error stack, no crash in
// HDF5's exit handler, nothing left behind.
TEST(Csv2h5, AFullDiskIsOneLineAndNothingIsLeft) {
  if (test::run("bash -c 'ulimit -f 64'").exit_code != 0) GTEST_SKIP() << "no ulimit -f here";
  TempDir dir;
  std::string text = "user_id,item_id\n";
  for (int k = 0; k < 20000; ++k) text += "u" + std::to_string(k % 3000) + ",i" + std::to_string(k % 5000) + "\n";
  const std::string in = dir.file("in.csv"), out = dir.file("out.h5");
  test::write_text(in, text);
  // SIGXFSZ ignored: a write past the limit fails with EFBIG, as it fails with ENOSPC on a full disk.
  const auto res = test::run("bash -c \"trap '' XFSZ; ulimit -f 64; exec " + csv2h5(in + " " + out) + "\"");
  EXPECT_EQ(res.exit_code, 1) << res.output;
  EXPECT_NE(res.output.find("File too large"), std::string::npos) << res.output;
  EXPECT_EQ(res.output.find("HDF5-DIAG"), std::string::npos) << res.output;
  EXPECT_EQ(res.output.find("infinite loop"), std::string::npos) << res.output;
  EXPECT_EQ(std::count(res.output.begin(), res.output.end(), '\n'), 1) << res.output;
  for (const auto& e : test::fs::directory_iterator(dir.path()))
    EXPECT_EQ(e.path().filename().string().rfind("out.h5", 0), std::string::npos) << "left: " << e.path();
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
