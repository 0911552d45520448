// test_shared_data.cpp (label slow): converts each real data set in
// ../shared/data with csv2h5 --format seq and checks the counts against the
// table in its README; skips where the folder is absent.
#include "sasrec/store.h"
#include "test_util.h"

namespace sasrec {
namespace {

struct Expected {
  const char* file;
  int64_t users, items, interactions;
};

class SharedData : public ::testing::TestWithParam<Expected> {};

TEST_P(SharedData, ConvertsWithReadmeCounts) {
  const std::string dir = test::shared_data_dir();
  if (dir.empty()) GTEST_SKIP() << "shared data folder absent (set SASREC_SHARED_DATA_DIR or place ../shared/data)";
  const Expected& e = GetParam();
  const std::string in = dir + "/" + e.file;
  if (!test::fs::exists(in)) GTEST_SKIP() << in << " absent";
  test::TempDir tmp;
  const std::string out = tmp.file("d.h5");
  auto res = test::run(std::string(SASREC_CSV2H5) + " " + in + " " + out + " --format seq");
  ASSERT_EQ(res.exit_code, 0) << res.output;
  StoreInfo info = read_store_info(out);
  EXPECT_EQ(info.num_users, e.users);
  EXPECT_EQ(info.num_items, e.items);
  EXPECT_EQ(info.num_interactions, e.interactions);
  // The seq files number users 1..U and items 1..I in first-appearance order:
  // the store keeps those ids, so item index i has id "i".
  std::vector<std::string> ids = read_item_ids(out);
  for (int64_t i = 1; i <= e.items; i += 997) EXPECT_EQ(ids[i], std::to_string(i));
  Shard s = load_shard(out, 1, 3);
  EXPECT_GT(s.size(), 0);
}

INSTANTIATE_TEST_SUITE_P(Readme, SharedData,
                         ::testing::Values(Expected{"Beauty.txt", 22363, 12101, 198502},
                                           Expected{"Sports_and_Outdoors.txt", 35598, 18357, 296337},
                                           Expected{"Toys_and_Games.txt", 19412, 11924, 167597},
                                           Expected{"Yelp.txt", 30431, 20033, 316354}),
                         [](const auto& info) {
                           std::string n = info.param.file;
                           return n.substr(0, n.find('.'));
                         });

}  // namespace
}  // namespace sasrec
