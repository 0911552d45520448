// test_serve.cpp: recommend and export from a checkpoint (serve.h).
// Expected lists come from a float64 brute force over the checkpoint's own
// tensors, with every sequence padded to maxlen (the code under test trims
// batches to their longest history); export rows are compared with the
// tensors read back from the checkpoint file.
#include <gtest/gtest.h>
#include <hdf5.h>

#include <algorithm>
#include <map>
#include <set>
#include <sstream>

#include <nlohmann/json.hpp>

#include "sasrec/checkpoint.h"
#include "sasrec/config.h"
#include "sasrec/serve.h"
#include "sasrec/store.h"
#include "h5_read.h"
#include "test_util.h"

namespace sasrec {
namespace {

using test::TempDir;

constexpr int64_t kItems = 30, kUsers = 7, kMaxlen = 6;

// A store of 7 users over 30 items, ids "u<k>" and "item-<i>", histories
// of 1 to 13 items (longer than maxlen for some), and a random-initialised
// checkpoint for it.
struct Fixture {
  TempDir dir;
  Interactions data;
  std::string store = dir.file("s.h5"), ckpt = dir.file("c.pt");
  Config config;

  Fixture() {
    test::Sequences seqs(kUsers);
    for (int64_t u = 0; u < kUsers; ++u)
      for (int64_t t = 0; t < 1 + (u * 2) % 13; ++t)
        seqs[u].push_back(static_cast<int32_t>(1 + (u * 7 + t * 11) % kItems));
    data = test::make_interactions(seqs, kItems, "item-");
    write_store(store, data);
    config = parse_config("data:\n  path: " + store + "\nmodel:\n  hidden: 8\n  blocks: 2\n  heads: 2\n  maxlen: " +
                              std::to_string(kMaxlen) + "\ntrain:\n  threads: 1\n",
                          "<test>");
    torch::manual_seed(7);
    SASRec model(SASRecOptions::from(config.model, kItems, kUsers));
    save_checkpoint(ckpt, model, nullptr, TrainState{});
  }

  std::vector<int32_t> history(int64_t u) const {
    return {data.items.begin() + data.offsets[u], data.items.begin() + data.offsets[u + 1]};
  }

  // A request for k items a user, written to `out_name` in the fixture's folder.
  RecommendRequest request(int k, const std::string& out_name) const {
    RecommendRequest r;
    r.checkpoint = ckpt;
    r.topk = k;
    r.out = dir.file(out_name);
    return r;
  }
};

// Reads a tensor straight from the checkpoint file: its header (checkpoint.h:
// 32 bytes in version 1, 48 in version 2) skipped, libtorch's archive read as is.
torch::Tensor checkpoint_tensor(const std::string& path, const std::string& key) {
  const std::string bytes = test::read_text(path);
  EXPECT_EQ(bytes.compare(0, 8, "SASRECCK"), 0) << path;
  const size_t header = bytes[8] == 1 ? 32 : 48;
  torch::serialize::InputArchive archive, model;
  archive.load_from(bytes.data() + header, bytes.size() - header);
  EXPECT_TRUE(archive.try_read("model", model));
  torch::Tensor t;
  EXPECT_TRUE(model.try_read(key, t)) << key;
  return t;
}

// F at the last position of the last maxlen items, padded to the full maxlen: [D] float64.
torch::Tensor reference_state(SASRec& model, const std::vector<int32_t>& items) {
  torch::NoGradGuard no_grad;
  model->eval();
  auto seq = torch::zeros({1, kMaxlen}, torch::kInt64);
  const int64_t len = std::min<int64_t>(kMaxlen, items.size());
  for (int64_t t = 0; t < len; ++t) seq[0][kMaxlen - len + t] = items[items.size() - len + t];
  return model->forward(seq)[0][kMaxlen - 1].to(torch::kFloat64);
}

// Every item but 0 and the history, by float64 score, best first: the first k.
std::vector<int32_t> brute_force(const torch::Tensor& state, const torch::Tensor& table,
                                 const std::vector<int32_t>& history, int k) {
  const auto scores = table.to(torch::kFloat64).matmul(state);  // [I+1]
  std::vector<std::pair<double, int32_t>> all;
  for (int32_t i = 1; i <= kItems; ++i)
    if (std::find(history.begin(), history.end(), i) == history.end()) all.push_back({-scores[i].item<double>(), i});
  std::sort(all.begin(), all.end());
  std::vector<int32_t> out;
  for (int j = 0; j < k && j < static_cast<int>(all.size()); ++j) out.push_back(all[j].second);
  return out;
}

TEST(Serve, TopKHandWorked) {
  const float scores[] = {99.f, 0.5f, 0.9f, 0.1f, 0.9f, 0.3f};  // row 0 (padding) never counts
  auto ids = [](const std::vector<ScoredItem>& v) {
    std::vector<int32_t> o;
    for (const auto& s : v) o.push_back(s.item);
    return o;
  };
  EXPECT_EQ(ids(top_k(scores, 5, {2}, 3)), (std::vector<int32_t>{4, 1, 5}));
  EXPECT_EQ(ids(top_k(scores, 5, {}, 2)), (std::vector<int32_t>{2, 4}));         // a tie: lower index first
  EXPECT_EQ(ids(top_k(scores, 5, {1, 2, 3, 4}, 3)), (std::vector<int32_t>{5}));  // fewer left than k
  EXPECT_FLOAT_EQ(top_k(scores, 5, {2}, 1)[0].score, 0.9f);
}

// Items 1..7 of a table of 8 rows split as ShardLayout splits it at 1, 2
// and 3 ranks ([0,8); [0,4) [4,8); [0,3) [3,6) [6,8)); each block's own
// top-3, then the merge, by hand. Scores (item: score): 1: .2, 2: .7, 3: .7,
// 4: .9, 5: .7, 6: .1, 7: .8; item 4 excluded (in the history). Whole
// table: 7 (.8), then the tie at .7 by lower index: 2, 3.
TEST(Serve, BlockTopKAndTheirMergeHandWorked) {
  const float all[] = {5.f, .2f, .7f, .7f, .9f, .7f, .1f, .8f};  // row 0 (padding) never counts
  const std::vector<int32_t> history{4};
  auto ids = [](const std::vector<ScoredItem>& v) {
    std::vector<int32_t> o;
    for (const auto& s : v) o.push_back(s.item);
    return o;
  };
  auto block = [&](int64_t first, int64_t end) { return top_k(all + first, first, end - first, history, 3); };
  const std::vector<int32_t> want{7, 2, 3};
  // 1 rank: the block is the table.
  EXPECT_EQ(ids(block(0, 8)), want);
  EXPECT_EQ(ids(merge_top_k({block(0, 8)}, 3)), want);
  // 2 ranks: [0,4) gives 2, 3, 1 (4 excluded); [4,8) gives 7, 5, 6.
  EXPECT_EQ(ids(block(0, 4)), (std::vector<int32_t>{2, 3, 1}));
  EXPECT_EQ(ids(block(4, 8)), (std::vector<int32_t>{7, 5, 6}));
  EXPECT_EQ(ids(merge_top_k({block(0, 4), block(4, 8)}, 3)), want);
  // 3 ranks: [0,3) gives 2, 1; [3,6) gives 3, 5 (a tie: lower index), 4
  // excluded; [6,8) gives 7, 6. The merge breaks the .7 tie across blocks.
  EXPECT_EQ(ids(block(0, 3)), (std::vector<int32_t>{2, 1}));
  EXPECT_EQ(ids(block(3, 6)), (std::vector<int32_t>{3, 5}));
  EXPECT_EQ(ids(block(6, 8)), (std::vector<int32_t>{7, 6}));
  EXPECT_EQ(ids(merge_top_k({block(0, 3), block(3, 6), block(6, 8)}, 3)), want);
  EXPECT_EQ(ids(merge_top_k({block(6, 8), block(0, 3), block(3, 6)}, 3)), want);  // any order of blocks
  EXPECT_EQ(ids(merge_top_k({block(0, 3), block(3, 6), block(6, 8)}, 5)), (std::vector<int32_t>{7, 2, 3, 5, 1}));
  // Fewer items than k, an empty block (a rank past the last row), k = 0.
  EXPECT_EQ(ids(merge_top_k({block(6, 8), {}}, 3)), (std::vector<int32_t>{7, 6}));
  EXPECT_TRUE(block(8, 8).empty());
  EXPECT_TRUE(merge_top_k({block(0, 8)}, 0).empty());
  EXPECT_FLOAT_EQ(merge_top_k({block(0, 4), block(4, 8)}, 1)[0].score, .8f);
}

TEST(Serve, RecommendMatchesBruteForceAndExcludesHistory) {
  Fixture f;
  SASRec model = load_model_for_serving(f.config, f.ckpt);
  const auto table = checkpoint_tensor(f.ckpt, "item.weight");
  std::vector<History> histories;
  for (int64_t u = 0; u < kUsers; ++u) histories.push_back({f.history(u), u});
  const int k = 5;
  const auto lists = recommend(model, histories, k);
  ASSERT_EQ(lists.size(), static_cast<size_t>(kUsers));
  for (int64_t u = 0; u < kUsers; ++u) {
    std::vector<int32_t> got;
    for (const auto& s : lists[u]) got.push_back(s.item);
    EXPECT_EQ(got, brute_force(reference_state(model, f.history(u)), table, f.history(u), k)) << "user " << u;
    const auto history = f.history(u);
    for (int32_t i : got) EXPECT_EQ(std::count(history.begin(), history.end(), i), 0) << "history item " << i;
  }
}

TEST(Serve, RecommendCsvByOriginalIds) {
  Fixture f;
  RecommendRequest req = f.request(4, "rec.csv");
  req.all = true;
  std::ostringstream log;
  EXPECT_EQ(run_recommend(f.config, req, log), kUsers);
  std::istringstream csv(test::read_text(req.out));
  std::string line;
  std::getline(csv, line);
  EXPECT_EQ(line, "user_id,rank,item_id,score");
  std::map<std::string, std::vector<std::string>> got;
  while (std::getline(csv, line)) {
    std::istringstream row(line);
    std::string user, rank, item;
    std::getline(row, user, ',');
    std::getline(row, rank, ',');
    std::getline(row, item, ',');
    EXPECT_EQ(std::stoul(rank), got[user].size() + 1);
    got[user].push_back(item);
  }
  ASSERT_EQ(got.size(), static_cast<size_t>(kUsers));
  SASRec model = load_model_for_serving(f.config, f.ckpt);
  const auto table = checkpoint_tensor(f.ckpt, "item.weight");
  for (int64_t u = 0; u < kUsers; ++u) {
    std::vector<std::string> want;
    for (int32_t i : brute_force(reference_state(model, f.history(u)), table, f.history(u), 4))
      want.push_back("item-" + std::to_string(i));
    EXPECT_EQ(got["u" + std::to_string(u)], want);
  }
}

TEST(Serve, UserListReportsUnknownUsers) {
  Fixture f;
  test::write_text(f.dir.file("users.txt"), "u3\nnobody\n\nu0\n");
  RecommendRequest req = f.request(2, "rec.jsonl");
  req.users_file = f.dir.file("users.txt");
  std::ostringstream log;
  EXPECT_EQ(run_recommend(f.config, req, log), 2);
  EXPECT_NE(log.str().find("unknown user id 'nobody'"), std::string::npos) << log.str();
  std::istringstream lines(test::read_text(req.out));
  std::string line;
  std::vector<std::string> users;
  while (std::getline(lines, line)) users.push_back(nlohmann::json::parse(line)["user"].get<std::string>());
  EXPECT_EQ(users, (std::vector<std::string>{"u3", "u0"}));  // in the order asked
}

TEST(Serve, NewUserSequencesReportUnknownItems) {
  Fixture f;
  const auto index = index_ids(read_item_ids(f.store));
  std::istringstream in("# comment\nalice: item-3 nope item-5\n\nitem-2,ghost\tphantom\nghost\n");
  const auto parsed = parse_sequences(in, index);
  ASSERT_EQ(parsed.size(), 3u);
  EXPECT_EQ(parsed[0].label, "alice");
  EXPECT_EQ(parsed[0].history.items, (std::vector<int32_t>{3, 5}));
  EXPECT_EQ(parsed[0].unknown, (std::vector<std::string>{"nope"}));
  EXPECT_EQ(parsed[1].label, "new-4");
  EXPECT_EQ(parsed[1].history.items, (std::vector<int32_t>{2}));
  EXPECT_EQ(parsed[1].unknown, (std::vector<std::string>{"ghost", "phantom"}));
  EXPECT_TRUE(parsed[2].history.items.empty());

  // Through run_recommend: reported on the log, the known items served, nothing thrown.
  test::write_text(f.dir.file("new.txt"), "alice: item-3 nope item-5\nghost\n");
  RecommendRequest req = f.request(3, "rec.jsonl");
  req.sequences_file = f.dir.file("new.txt");
  std::ostringstream log;
  EXPECT_EQ(run_recommend(f.config, req, log), 1);
  EXPECT_NE(log.str().find("alice: 1 unknown item id(s) skipped: nope"), std::string::npos) << log.str();
  EXPECT_NE(log.str().find("new-2: no known item"), std::string::npos) << log.str();
  const auto j = nlohmann::json::parse(test::read_text(req.out));
  EXPECT_EQ(j["user"].get<std::string>(), "alice");
  SASRec model = load_model_for_serving(f.config, f.ckpt);
  std::vector<std::string> want;
  for (int32_t i : brute_force(reference_state(model, {3, 5}), checkpoint_tensor(f.ckpt, "item.weight"), {3, 5}, 3))
    want.push_back("item-" + std::to_string(i));
  EXPECT_EQ(j["items"].get<std::vector<std::string>>(), want);
}

TEST(Serve, RecommendCommandLineReadsStdin) {
  Fixture f;
  test::write_text(f.dir.file("run.yaml"), to_yaml(f.config));
  const auto r =
      test::run("printf 'item-1 item-2 zzz\\n' | " + std::string(SASREC_TRAINER) + " recommend " +
                f.dir.file("run.yaml") + " --checkpoint " + f.ckpt + " --sequences - --topk 2 --format jsonl");
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_NE(r.output.find("\"user\":\"new-1\""), std::string::npos) << r.output;
  EXPECT_NE(r.output.find("unknown item id(s) skipped: zzz"), std::string::npos) << r.output;
}

TEST(Serve, ExportFileContents) {
  Fixture f;
  test::write_text(f.dir.file("run.yaml"), to_yaml(f.config));
  const std::string out = f.dir.file("emb.h5");
  const auto r = test::run(std::string(SASREC_TRAINER) + " export " + f.dir.file("run.yaml") + " --checkpoint " +
                           f.ckpt + " --out " + out);
  ASSERT_EQ(r.exit_code, 0) << r.output;

  hid_t file = H5Fopen(out.c_str(), H5F_ACC_RDONLY, H5P_DEFAULT);
  ASSERT_GE(file, 0);
  auto attr = [&](const char* name) {
    int64_t v = -1;
    hid_t a = H5Aopen(file, name, H5P_DEFAULT);
    EXPECT_GE(H5Aread(a, H5T_NATIVE_INT64, &v), 0) << name;
    H5Aclose(a);
    return v;
  };
  EXPECT_EQ(attr("version"), kExportVersion);
  EXPECT_EQ(attr("hidden"), 8);
  EXPECT_EQ(attr("num_items"), kItems);
  EXPECT_EQ(attr("num_users"), kUsers);

  EXPECT_EQ(test::read_h5_strings(file, "/items/id"),
            std::vector<std::string>(f.data.item_ids.begin() + 1, f.data.item_ids.end()));
  EXPECT_EQ(test::read_h5_strings(file, "/users/id"), f.data.user_ids);
  const auto item_vectors = test::read_h5_matrix(file, "/items/vector");  // [I,D]
  const auto table = checkpoint_tensor(f.ckpt, "item.weight");      // [I+1,D]
  ASSERT_EQ(item_vectors.size(0), kItems);
  ASSERT_EQ(item_vectors.size(1), 8);
  EXPECT_TRUE(torch::equal(item_vectors, table.slice(0, 1)));
  const auto user_vectors = test::read_h5_matrix(file, "/users/vector");  // [U,D]
  ASSERT_EQ(user_vectors.size(0), kUsers);
  ASSERT_EQ(user_vectors.size(1), 8);
  SASRec model = load_model_for_serving(f.config, f.ckpt);
  for (int64_t u = 0; u < kUsers; ++u)
    EXPECT_TRUE(torch::allclose(user_vectors[u].to(torch::kFloat64), reference_state(model, f.history(u)), 1e-5, 1e-5))
        << "user " << u;
  H5Fclose(file);
}

}  // namespace
}  // namespace sasrec
