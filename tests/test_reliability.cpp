// test_reliability.cpp: no wrong figure is reported and no file is
// destroyed, through the command lines a user runs (issue 16): rankings
// that never favour the target (ties, non-finite models), epochs without a
// step, checkpoint folders that hold one run, checkpoints that only meet
// their model and their store, outputs that never replace an input, and
// degenerate data said in words. Expected figures are closed forms over the
// store, computed here.
#include <gtest/gtest.h>
#include <hdf5.h>

#include <algorithm>
#include <cmath>
#include <set>
#include <sstream>

#include <nlohmann/json.hpp>

#include "sasrec/atomic_file.h"
#include "sasrec/checkpoint.h"
#include "sasrec/config.h"
#include "sasrec/model.h"
#include "sasrec/store.h"
#include "test_util.h"

namespace sasrec {
namespace {

using test::run;

std::vector<nlohmann::json> events_of(const std::string& path, const std::string& kind = "") {
  std::vector<nlohmann::json> out;
  std::istringstream in(test::read_text(path));
  for (std::string line; std::getline(in, line);) {
    if (line.empty() || line[0] != '{') continue;
    auto j = nlohmann::json::parse(line);
    if (kind.empty() || j.value("event", "") == kind) out.push_back(j);
  }
  return out;
}

class Reliability : public ::testing::Test {
 protected:
  // One store from a generated log (rows in user order), the same log with
  // its rows shuffled (another item id mapping, same sizes), one trained checkpoint.
  static void SetUpTestSuite() {
    dir_ = new test::TempDir();
    for (const char* order : {"user", "shuffled"}) {
      const std::string csv = dir_->file(std::string(order) + ".csv");
      test::synth_csv(csv, /*users=*/400, /*items=*/80, /*seed=*/6, /*mean_length=*/8,
                      /*shuffled=*/std::string(order) == "shuffled");
      auto r = run(std::string(SASREC_CSV2H5) + " " + csv + " " + dir_->file(std::string(order) + ".h5"));
      ASSERT_EQ(r.exit_code, 0) << r.output;
    }
    store_ = dir_->file("user.h5");
    config_ = dir_->file("c.yaml");
    test::write_text(config_,
                     "data:\n  path: " + store_ +
                         "\nmodel:\n  hidden: 8\n  maxlen: 10\ntrain:\n  epochs: 1\n  batch_size: 64\n"
                         "  threads: 1\neval:\n  every: 0\n  sampled_negatives: 20\noutput:\n  progress: off\n");
    auto r = train("--set checkpoint.dir=" + dir_->file("ckpt") + " --set output.metrics=" + dir_->file("a.jsonl"));
    ASSERT_EQ(r.exit_code, 0) << r.output;
    checkpoint_ = dir_->file("ckpt/epoch-000001.pt");
  }
  static void TearDownTestSuite() { delete dir_; }

  static test::RunResult train(const std::string& sets) {
    return run(std::string(SASREC_TRAINER) + " " + config_ + " " + sets);
  }
  static test::RunResult sub(const std::string& command, const std::string& args) {
    return run(std::string(SASREC_TRAINER) + " " + command + " " + config_ + " --checkpoint " + checkpoint_ + " " +
               args);
  }

  static test::TempDir* dir_;
  static std::string store_, config_, checkpoint_;
};
test::TempDir* Reliability::dir_ = nullptr;
std::string Reliability::store_, Reliability::config_, Reliability::checkpoint_;

// Issue 16, 1: with every score equal the target is level with all its
// candidates, so HR@10 = 10 / places, places = candidates + 1 (full: the
// items not in the history; sampled: 20 negatives + 1), not 1.0.
TEST_F(Reliability, AConstantScoreModelGetsKOverThePlacesOnBothProtocols) {
  const std::string metrics = dir_->file("constant.jsonl");
  auto r = train(
      "--set model.init=normal --set model.init_std=1e-30 --set train.lr=1e-30 --set train.max_steps=1"
      " --set model.dropout=0 --set eval.ks=[10] --set output.metrics=" +
      metrics);
  ASSERT_EQ(r.exit_code, 0) << r.output;
  const Interactions d = read_store(store_);
  for (const auto& e : events_of(metrics, "eval")) {
    const bool test = e["split"] == "test";
    double hr = 0, ndcg = 0;
    int64_t users = 0;
    for (int64_t u = 0; u < d.num_users(); ++u) {
      const int64_t b = d.offsets[u], n = d.offsets[u + 1] - b;
      if (n < 3) continue;
      const int64_t hist = n - (test ? 1 : 2);
      const std::set<int32_t> seen(d.items.begin() + b, d.items.begin() + b + hist + 1);  // history + target
      const int64_t places = e["protocol"] == "full" ? d.num_items() - static_cast<int64_t>(seen.size()) + 1 : 21;
      hr += std::min<int64_t>(10, places) / static_cast<double>(places);
      for (int64_t k = 0; k < std::min<int64_t>(10, places); ++k) ndcg += 1 / std::log2(k + 2.0) / places;
      ++users;
    }
    EXPECT_EQ(e["users"], users);
    EXPECT_NEAR(e["hr@10"].get<double>(), hr / users, 1e-9) << e.dump();
    EXPECT_NEAR(e["ndcg@10"].get<double>(), ndcg / users, 1e-9) << e.dump();
    EXPECT_EQ(e["nonfinite_users"], 0);
  }
  EXPECT_EQ(events_of(metrics, "eval").size(), 4u);
}

// Issue 16, 1: exploding parameters under skip: an epoch without a step
// reports no loss (null) and says so, and the run fails; a non-finite
// checkpoint evaluates as the worst rank, counted as non-finite.
TEST_F(Reliability, ExplodingParametersFailUnderSkipAndEvaluateLast) {
  const std::string metrics = dir_->file("explode.jsonl");
  auto r =
      train("--set train.lr=1e30 --set train.on_nonfinite=skip --set train.epochs=4 --set output.metrics=" + metrics);
  EXPECT_EQ(r.exit_code, 1) << r.output;
  EXPECT_NE(r.output.find("no step taken: all "), std::string::npos) << r.output;
  EXPECT_NE(r.output.find("step(s) was skipped for a non-finite loss or gradient"), std::string::npos) << r.output;
  const auto epochs = events_of(metrics, "train_epoch");
  ASSERT_FALSE(epochs.empty());
  EXPECT_TRUE(epochs.back()["loss"].is_null()) << epochs.back().dump();
  // A checkpoint whose item table is NaN, evaluated by `sasrec_ddp eval`.
  const Config c = load_config(config_);
  SASRec model(SASRecOptions::from(c.model, read_store_info(store_).num_items, read_store_info(store_).num_users));
  const TrainState state = load_checkpoint(checkpoint_, model, nullptr);
  {
    torch::NoGradGuard ng;
    model->item_weight().fill_(std::numeric_limits<float>::quiet_NaN());
  }
  const std::string nan_ckpt = dir_->file("nan.pt");
  save_checkpoint(nan_ckpt, model, nullptr, state);
  r = run(std::string(SASREC_TRAINER) + " eval " + config_ + " --checkpoint " + nan_ckpt);
  ASSERT_EQ(r.exit_code, 0) << r.output;
  int lines = 0;
  std::istringstream out(r.output);
  for (std::string line; std::getline(out, line);) {
    if (line.empty() || line[0] != '{') continue;
    const auto j = nlohmann::json::parse(line);
    EXPECT_EQ(j["nonfinite_users"], j["users"]) << line;
    EXPECT_EQ(j["hr@10"].get<double>(), 0.0) << line;
    ++lines;
  }
  EXPECT_EQ(lines, 4);
  EXPECT_NE(r.output.find("user(s) with NaN or Inf scores, ranked below every candidate"), std::string::npos);
}

// Issue 16, 3: a run owns its checkpoint folder.
TEST_F(Reliability, ACheckpointFolderHoldsOneRun) {
  const std::string before = test::read_text(checkpoint_);
  const std::string id = checkpoint_run_id(checkpoint_);
  ASSERT_EQ(id.size(), 16u) << id;
  // A fresh run in it: refused before anything is written, the old run untouched.
  const std::string metrics = dir_->file("second.jsonl");
  auto r = train("--set checkpoint.dir=" + dir_->file("ckpt") + " --set output.metrics=" + metrics);
  EXPECT_EQ(r.exit_code, 2) << r.output;
  EXPECT_NE(
      r.output.find("checkpoint.dir '" + dir_->file("ckpt") + "' holds 1 checkpoint(s) of another run (run " + id),
      std::string::npos)
      << r.output;
  EXPECT_NE(r.output.find("checkpoint.overwrite: true"), std::string::npos) << r.output;
  EXPECT_EQ(test::read_text(checkpoint_), before);
  EXPECT_FALSE(test::fs::exists(metrics));
  // Held by another process (the lock names it): refused, naming its pid.
  {
    FolderLock held(dir_->file("ckpt"), "checkpoint.dir");
    r = train("--set checkpoint.dir=" + dir_->file("ckpt") + " --set checkpoint.resume=auto --set train.epochs=2" +
              " --set output.metrics=" + dir_->file("locked.jsonl"));
    EXPECT_EQ(r.exit_code, 2) << r.output;
    EXPECT_NE(r.output.find("is in use by another run (pid " + std::to_string(::getpid())), std::string::npos)
        << r.output;
  }
  // A copy of the folder, resumed with another batch size: said, and the run id goes on.
  test::fs::copy(dir_->file("ckpt"), dir_->file("ckpt_copy"));
  test::fs::remove(dir_->file("ckpt_copy/lock"));
  r = train("--set checkpoint.dir=" + dir_->file("ckpt_copy") + " --set checkpoint.resume=auto --set train.epochs=2" +
            " --set train.batch_size=32 --set output.metrics=" + dir_->file("resumed.jsonl"));
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_NE(r.output.find("resume: train.batch_size is 32 here but 64 in the checkpoint"), std::string::npos)
      << r.output;
  EXPECT_EQ(checkpoint_run_id(dir_->file("ckpt_copy/epoch-000002.pt")), id);
  const auto start = events_of(dir_->file("resumed.jsonl"), "start");
  ASSERT_EQ(start.size(), 1u);
  EXPECT_EQ(start[0]["run_id"], id);
  EXPECT_EQ(start[0]["resume_differences"].size(), 1u) << start[0]["resume_differences"].dump();
  // checkpoint.overwrite: the old ones moved aside into a dated folder, said where.
  r = train("--set checkpoint.dir=" + dir_->file("ckpt_copy") + " --set checkpoint.overwrite=true" +
            " --set output.metrics=" + dir_->file("fresh.jsonl"));
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_NE(r.output.find("checkpoint.overwrite: moved 2 checkpoint(s) of an earlier run from " +
                          dir_->file("ckpt_copy") + " to " + dir_->file("ckpt_copy/replaced-")),
            std::string::npos)
      << r.output;
  int moved = 0;
  for (const auto& e : test::fs::recursive_directory_iterator(dir_->file("ckpt_copy")))
    moved += e.path().parent_path().filename().string().rfind("replaced-", 0) == 0;
  EXPECT_EQ(moved, 2);
  EXPECT_NE(checkpoint_run_id(dir_->file("ckpt_copy/epoch-000001.pt")), id) << "a new run, a new id";
}

// Issue 16, 4: a checkpoint refuses another model function and another item map.
TEST_F(Reliability, ACheckpointOnlyMeetsItsModelAndItsStore) {
  auto r = sub("eval", "--set model.norm=post");
  EXPECT_EQ(r.exit_code, 2) << r.output;
  EXPECT_NE(r.output.find("model.norm is pre in the checkpoint but post here"), std::string::npos) << r.output;
  EXPECT_NE(r.output.find("--set model.norm=pre"), std::string::npos) << r.output;
  r = sub("recommend", "--all --out " + dir_->file("recs.csv") + " --set model.activation=gelu");
  EXPECT_EQ(r.exit_code, 2) << r.output;
  EXPECT_NE(r.output.find("model.activation is relu in the checkpoint but gelu here"), std::string::npos) << r.output;
  r = sub("export", "--out " + dir_->file("e.h5") + " --set model.ffn_hidden=16 --set model.attention_output=true");
  EXPECT_EQ(r.exit_code, 2) << r.output;
  EXPECT_NE(r.output.find("model.ffn_hidden is 8 in the checkpoint but 16 here; model.attention_output is false"),
            std::string::npos)
      << r.output;
  EXPECT_FALSE(test::fs::exists(dir_->file("recs.csv")));
  EXPECT_FALSE(test::fs::exists(dir_->file("e.h5")));
  EXPECT_EQ(sub("eval", "--set model.ffn_hidden=8").exit_code, 0) << "0 and hidden are the same width";

  // The same log in another row order: same sizes, other item indices.
  const std::string shuffled = dir_->file("shuffled.h5");
  ASSERT_EQ(read_store_info(shuffled).num_items, read_store_info(store_).num_items);
  ASSERT_NE(read_item_map_fingerprint(shuffled), read_item_map_fingerprint(store_));
  for (const auto& [command, args] :
       std::vector<std::pair<std::string, std::string>>{{"eval", ""},
                                                        {"recommend", " --all --out " + dir_->file("x.csv")},
                                                        {"export", " --out " + dir_->file("x.h5")}}) {
    r = sub(command, "--set data.path=" + shuffled + args);
    EXPECT_EQ(r.exit_code, 2) << command << "\n" << r.output;
    EXPECT_NE(r.output.find(checkpoint_ + " was trained on '" + store_ + "' (item map " +
                            fingerprint_hex(read_item_map_fingerprint(store_)) + "), but data.path '" + shuffled +
                            "' has other item ids or the same ones in another order"),
              std::string::npos)
        << command << "\n"
        << r.output;
  }
  // A store written before the fingerprint attribute: computed from its map, and it matches.
  const std::string old = dir_->file("old.h5");
  test::fs::copy_file(store_, old);
  {
    hid_t f = H5Fopen(old.c_str(), H5F_ACC_RDWR, H5P_DEFAULT);
    ASSERT_GE(H5Adelete(f, "item_map_fnv1a64"), 0);
    H5Fclose(f);
  }
  EXPECT_EQ(read_item_map_fingerprint(old), read_item_map_fingerprint(store_));
  EXPECT_EQ(sub("eval", "--set data.path=" + old).exit_code, 0);
}

// Issue 16, 2: every writer goes through a temporary; none replaces an input.
TEST_F(Reliability, NoOutputReplacesWhatItMustNot) {
  // A recommend that fails leaves an existing --out as it was.
  const std::string recs = dir_->file("keep.csv");
  test::write_text(recs, "precious\n");
  auto r = sub("recommend", "--sequences " + dir_->file("missing.txt") + " --out " + recs);
  EXPECT_EQ(r.exit_code, 2) << r.output;
  EXPECT_NE(r.output.find("--sequences " + dir_->file("missing.txt") + ": cannot read it"), std::string::npos)
      << r.output;
  EXPECT_EQ(test::read_text(recs), "precious\n");
  // --out naming an input: the checkpoint, the store, the config.
  const std::string ckpt_bytes = test::read_text(checkpoint_);
  for (const auto& [out, what] : std::vector<std::pair<std::string, std::string>>{
           {checkpoint_, "--checkpoint"}, {store_, "data.path"}, {config_, "the config"}}) {
    r = sub("recommend", "--all --out " + out);
    EXPECT_EQ(r.exit_code, 2) << out << "\n" << r.output;
    EXPECT_NE(r.output.find("--out '" + out + "' is " + what + " '"), std::string::npos) << r.output;
    r = sub("export", "--out " + out);
    EXPECT_EQ(r.exit_code, 2) << out << "\n" << r.output;
  }
  EXPECT_EQ(test::read_text(checkpoint_), ckpt_bytes);
  EXPECT_EQ(read_store_info(store_).num_users, 400);
  // A working recommend still replaces its own earlier output.
  r = sub("recommend", "--all --out " + recs);
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_EQ(test::read_text(recs).rfind("user_id,rank,item_id,score\n", 0), 0u);
  // export: a missing folder is one line, no HDF5 error stack.
  r = sub("export", "--out " + dir_->file("no/such/e.h5"));
  EXPECT_EQ(r.exit_code, 2) << r.output;
  EXPECT_NE(r.output.find("does not exist; create it first"), std::string::npos) << r.output;
  EXPECT_EQ(r.output.find("HDF5-DIAG"), std::string::npos) << r.output;
  // export to a full disk (a file-size limit): exit 1 with one line, no crash in HDF5's exit handler.
  if (run("bash -c 'ulimit -f 64'").exit_code == 0) {
    r = run("bash -c \"trap '' XFSZ; ulimit -f 8; exec " + std::string(SASREC_TRAINER) + " export " + config_ +
            " --checkpoint " + checkpoint_ + " --out " + dir_->file("full.h5") + "\"");
    EXPECT_EQ(r.exit_code, 1) << r.output;
    EXPECT_NE(r.output.find("File too large"), std::string::npos) << r.output;
    EXPECT_EQ(r.output.find("HDF5-DIAG"), std::string::npos) << r.output;
    for (const auto& e : test::fs::directory_iterator(dir_->path()))
      EXPECT_EQ(e.path().filename().string().rfind("full.h5", 0), std::string::npos) << "left: " << e.path();
  }
  // output.profile in a missing folder: refused before training, not "wrote the profile".
  r = train("--set output.profile=" + dir_->file("no/such/trace.json") +
            " --set output.metrics=" + dir_->file("p.jsonl"));
  EXPECT_EQ(r.exit_code, 2) << r.output;
  EXPECT_NE(r.output.find("output.profile '" + dir_->file("no/such/trace.json") + "'"), std::string::npos) << r.output;
  EXPECT_EQ(r.output.find("epoch 1/1"), std::string::npos) << r.output;
  // A fresh run never truncates an earlier run's metrics: they are moved aside, said where.
  const std::string metrics = dir_->file("rerun.jsonl");
  test::write_text(metrics, "{\"event\":\"start\",\"note\":\"the earlier run\"}\n");
  r = train("--set train.max_steps=1 --set output.metrics=" + metrics);
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_NE(r.output.find("output.metrics: " + metrics + " held another run's events; moved to " + metrics + ".prev-"),
            std::string::npos)
      << r.output;
  int kept = 0;
  for (const auto& e : test::fs::directory_iterator(dir_->path()))
    if (e.path().filename().string().rfind("rerun.jsonl.prev-", 0) == 0)
      kept += test::read_text(e.path().string()) == "{\"event\":\"start\",\"note\":\"the earlier run\"}\n";
  EXPECT_EQ(kept, 1);
  EXPECT_EQ(events_of(metrics, "start").size(), 1u);
}

// Issue 16, 5: degenerate data is said in words.
TEST_F(Reliability, DegenerateDataIsSaidInWords) {
  // Every user has 2 interactions: all train, nobody to evaluate.
  test::Sequences pairs;
  for (int32_t u = 0; u < 50; ++u) pairs.push_back({1 + u % 30, 1 + (u * 7 + 3) % 30});
  const std::string two = dir_->file("two.h5");
  write_store(two, test::make_interactions(pairs, 30));
  const std::string metrics = dir_->file("nobody.jsonl");
  auto r = train("--set data.path=" + two + " --set output.metrics=" + metrics);
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_NE(r.output.find("eval valid/full epoch 1: no user to evaluate"), std::string::npos) << r.output;
  EXPECT_EQ(r.output.find("HR@10"), std::string::npos) << r.output;
  EXPECT_EQ(r.output.find("best valid"), std::string::npos) << r.output;
  for (const auto& e : events_of(metrics, "eval")) {
    EXPECT_EQ(e["users"], 0);
    EXPECT_FALSE(e.contains("hr@10")) << e.dump();
  }
  EXPECT_EQ(events_of(metrics, "summary").at(0)["best_epoch"], 0);
  // One item: nothing to rank (gbce's negatives would not exist).
  Interactions one = test::make_interactions(test::Sequences(10, {1, 1, 1, 1}), 1);
  one.item_ids[1] = "only";
  write_store(dir_->file("one.h5"), one);
  r = train("--set data.path=" + dir_->file("one.h5") +
            " --set train.loss=gbce --set output.metrics=" + dir_->file("one.jsonl"));
  EXPECT_EQ(r.exit_code, 2) << r.output;
  EXPECT_NE(r.output.find("the catalog has 1 item(s): there is nothing to rank"), std::string::npos) << r.output;
  // More sampled negatives than some user has untouched items (80 items, histories up to 40 or so).
  r = train("--set eval.sampled_negatives=79 --set output.metrics=" + dir_->file("neg.jsonl"));
  EXPECT_EQ(r.exit_code, 2) << r.output;
  EXPECT_NE(r.output.find("--set 'eval.sampled_negatives=79': config key 'eval.sampled_negatives' (79) is at or "
                          "above the number of items that"),
            std::string::npos)
      << r.output;
}

}  // namespace
}  // namespace sasrec
