// test_faults.cpp: checkpoints that are corrupt, foreign or half-written;
// SIGTERM / SIGINT mid-epoch and an exact resume; a full disk; non-finite
// losses under train.on_nonfinite stop and skip. Faults come from
// SASREC_INJECT_FAULT (fault.h) or real signals.
#include <gtest/gtest.h>

#include <chrono>
#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <map>
#include <thread>

#include "sasrec/checkpoint.h"
#include "sasrec/comm.h"
#include "sasrec/error.h"
#include "sasrec/fault.h"
#include "sasrec/store.h"
#include "sasrec/trainer.h"
#include "test_util.h"

using namespace sasrec;

namespace {

using Params = std::map<std::string, torch::Tensor>;

class FaultTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    dir_ = new test::TempDir();
    data_ = dir_->file("synth.h5");
    test::synth_store(data_, /*users=*/800, /*items=*/150, /*seed=*/4, /*mean_length=*/8);
  }
  static void TearDownTestSuite() { delete dir_; }

  static Config config(const std::string& run, int epochs = 3) {
    Config c = parse_config(
        "", "test",
        {"data.path=" + data_, "model.hidden=16", "model.maxlen=10", "model.dropout=0.3", "train.batch_size=64",
         "train.threads=1", "eval.every=0", "eval.protocols=[full]", "eval.max_users=100", "train.seed=9",
         "checkpoint.dir=" + dir_->file("ckpt_" + run), "output.metrics=" + dir_->file(run + ".jsonl")});
    c.train.epochs = epochs;
    c.validate();
    return c;
  }
  // `fault`: a SASREC_INJECT_FAULT spec, given to the trainer through its
  // test seam as sasrec_ddp's main() does.
  static TrainSummary fit(const Config& c, const char* fault = nullptr) {
    FaultHooks hooks(FaultPlan::parse(fault));
    auto comm = make_single_communicator();
    Trainer t(c, *comm, Trainer::Mode::Train, &hooks);
    return t.fit();
  }
  static Params params(const std::string& checkpoint, const Config& c) {
    auto comm = make_single_communicator();
    Trainer t(c, *comm);
    t.load_model(checkpoint);
    Params out;
    for (auto& p : t.model()->named_parameters()) out[p.key()] = p.value().clone();
    return out;
  }
  static void expect_equal(const Params& a, const Params& b) {
    ASSERT_EQ(a.size(), b.size());
    for (auto& [name, t] : a) EXPECT_TRUE(torch::equal(t, b.at(name))) << name << " differs";
  }
  // Steps per epoch of this data at batch 64 (about 800 / 64).
  static int64_t spe() {
    static int64_t n = [] {
      auto comm = make_single_communicator();
      return Trainer(config("spe"), *comm).steps_per_epoch();
    }();
    return n;
  }
  static std::string at(int64_t step, const char* kind) { return sasrec::detail::cat("0:", step, ":", kind); }
  // A run of 3 epochs without faults, trained once for every test that compares with it.
  static const Params& straight() {
    static Params p = [] {
      Config c = config("straight");
      fit(c);
      return params(CheckpointDir(c.checkpoint.dir, 3).list().back(), c);
    }();
    return p;
  }
  static std::string cli_config(const std::string& run, const std::string& extra = "") {
    const std::string path = dir_->file(run + ".yaml");
    test::write_text(path, "data:\n  path: " + data_ +
                               "\nmodel:\n  hidden: 16\n  maxlen: 10\ntrain:\n  epochs: 2\n"
                               "  batch_size: 64\n  threads: 1\n" +
                               extra +
                               "eval:\n  every: 0\n  max_users: 100\n"
                               "checkpoint:\n  dir: " +
                               dir_->file("ckpt_" + run) +
                               "\n  keep: 5\noutput:\n  metrics: " + dir_->file(run + ".jsonl") + "\n");
    return path;
  }

  static test::TempDir* dir_;
  static std::string data_;
};
test::TempDir* FaultTest::dir_ = nullptr;
std::string FaultTest::data_;

void flip_byte(const std::string& path, size_t from_end) {
  std::string bytes = test::read_text(path);
  bytes[bytes.size() - from_end] ^= 0x5a;
  test::write_text(path, bytes);
}

}  // namespace

TEST(Checkpoint, Fnv1aKnownValues) {
  EXPECT_EQ(fnv1a64("", 0), 0xcbf29ce484222325ull);
  EXPECT_EQ(fnv1a64("a", 1), 0xaf63dc4c8601ec8cull);
  EXPECT_EQ(fnv1a64("foobar", 6), 0x85944171f73967e8ull);
}

TEST_F(FaultTest, CorruptAndTruncatedCheckpointsAreRefusedBeforeLoading) {
  Config c = config("corrupt", 1);
  fit(c);
  const std::string good = CheckpointDir(c.checkpoint.dir, 3).list().back();
  ASSERT_EQ(checkpoint_problem(good), "");
  const Params before = params(good, c);

  const std::string flipped = dir_->file("flipped.pt");
  test::fs::copy_file(good, flipped);
  flip_byte(flipped, 100);
  EXPECT_NE(checkpoint_problem(flipped).find("checksum"), std::string::npos) << checkpoint_problem(flipped);
  const std::string cut = dir_->file("cut.pt");
  test::write_text(cut, test::read_text(good).substr(0, 5000));
  EXPECT_NE(checkpoint_problem(cut).find("truncated"), std::string::npos) << checkpoint_problem(cut);
  const std::string text = dir_->file("text.pt");
  test::write_text(text, "hello");
  EXPECT_NE(checkpoint_problem(text).find("not a sasrec_ddp checkpoint"), std::string::npos);

  auto comm = make_single_communicator();
  Trainer t(c, *comm);
  t.load_model(good);
  for (const std::string& bad : {flipped, cut, text}) {
    try {
      t.load_model(bad);
      ADD_FAILURE() << bad << " loaded";
    } catch (const Error& e) {
      EXPECT_EQ(e.domain(), ErrorDomain::Input);  // the file named is a bad input: exit 2
      EXPECT_NE(std::string(e.what()).find(bad + ": "), std::string::npos) << e.what();
      EXPECT_NE(std::string(e.what()).find("; point checkpoint.resume"), std::string::npos) << e.what();
    }
  }
  for (auto& p : t.model()->named_parameters()) EXPECT_TRUE(torch::equal(p.value(), before.at(p.key()))) << p.key();
}

TEST_F(FaultTest, CheckpointOfAnotherCatalogIsRefusedSayingSo) {
  Config c = config("catalog", 1);
  fit(c);
  test::TempDir other_dir;
  const std::string other = other_dir.file("other.h5");
  test::synth_store(other, /*users=*/300, /*items=*/90, /*seed=*/5);
  Config d = c;
  d.data.path = other;
  auto comm = make_single_communicator();
  Trainer t(d, *comm);
  const auto before = t.model()->item_weight().clone();
  try {
    t.load_model(CheckpointDir(c.checkpoint.dir, 3).list().back());
    FAIL() << "a checkpoint of another catalog loaded";
  } catch (const Error& e) {
    const std::string msg = e.what();
    const std::string expected = sasrec::detail::cat("catalog of ", read_store_info(data_).num_items,
                                                     " items, this data has ", read_store_info(other).num_items);
    EXPECT_NE(msg.find(expected), std::string::npos) << msg;
  }
  EXPECT_TRUE(torch::equal(before, t.model()->item_weight())) << "a refused checkpoint changed the model";
}

TEST_F(FaultTest, ResumeAutoFallsBackToThePreviousGoodCheckpoint) {
  Config c = config("fallback", 2);
  fit(c);
  CheckpointDir dir(c.checkpoint.dir, 3);
  ASSERT_EQ(dir.list().size(), 2u);
  flip_byte(dir.list().back(), 10);  // epoch 2's file is corrupt
  Config resumed = c;
  resumed.checkpoint.resume = {ResumeFrom::Kind::Auto, ""};
  resumed.train.epochs = 3;
  testing::internal::CaptureStdout();
  TrainSummary s = fit(resumed);
  const std::string out = testing::internal::GetCapturedStdout();
  EXPECT_EQ(s.epochs, 3);
  EXPECT_NE(out.find("skipping " + dir.list()[1]), std::string::npos) << out;  // (the list is now 1, 2, 3)
  EXPECT_NE(out.find("falling back to the previous one"), std::string::npos) << out;
  EXPECT_NE(out.find("resumed from " + dir.list()[0] + " after epoch 1"), std::string::npos) << out;
  // From epoch 1 on, the run is the uninterrupted one.
  expect_equal(params(dir.list().back(), c), straight());

  // Nothing intact: an error, not a silent fresh start.
  for (const auto& f : dir.list()) flip_byte(f, 10);
  try {
    fit(resumed);
    FAIL() << "resumed from corrupt files";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("no checkpoint in " + c.checkpoint.dir + " is intact"), std::string::npos)
        << e.what();
  }
}

TEST_F(FaultTest, SigtermMidEpochCheckpointsAndResumesBitIdentical) {
  Config c = config("sigterm");
  const int64_t step = spe() + 5;  // batch 5 of epoch 2
  TrainSummary s = fit(c, at(step, "sigterm").c_str());
  EXPECT_EQ(s.interrupted_by, SIGTERM);
  EXPECT_EQ(s.steps, step);
  EXPECT_EQ(s.epochs, 1);
  char name[64];
  std::snprintf(name, sizeof(name), "epoch-000001.step-%09lld.pt", static_cast<long long>(step));
  EXPECT_NE(s.checkpoint.find(name), std::string::npos) << s.checkpoint;
  EXPECT_EQ(checkpoint_problem(s.checkpoint), "");
  EXPECT_NE(test::read_text(dir_->file("sigterm.jsonl")).find("\"event\":\"interrupted\""), std::string::npos);
  Config resumed = c;
  resumed.checkpoint.resume = {ResumeFrom::Kind::Auto, ""};
  TrainSummary r = fit(resumed);
  EXPECT_EQ(r.interrupted_by, 0);
  EXPECT_EQ(r.epochs, 3);
  EXPECT_EQ(r.steps, 3 * spe());
  expect_equal(params(r.checkpoint, c), straight());
}

TEST_F(FaultTest, SigtermOnTheLastBatchOfAnEpochResumesAtTheNext) {
  Config c = config("sigterm_end");
  TrainSummary s = fit(c, at(spe(), "sigterm").c_str());
  EXPECT_EQ(s.interrupted_by, SIGTERM);
  EXPECT_EQ(s.epochs, 1);
  EXPECT_NE(s.checkpoint.find("epoch-000001.pt"), std::string::npos) << s.checkpoint;
  Config resumed = c;
  resumed.checkpoint.resume = {ResumeFrom::Kind::Auto, ""};
  expect_equal(params(fit(resumed).checkpoint, c), straight());
}

TEST_F(FaultTest, NonFiniteLossSkipPolicySkipsTheStep) {
  Config c = config("skip", 1);
  c.train.on_nonfinite = OnNonfinite::Skip;
  testing::internal::CaptureStdout();
  TrainSummary s = fit(c, "0:4:nan");
  const std::string out = testing::internal::GetCapturedStdout();
  EXPECT_EQ(s.skipped_steps, 1);
  EXPECT_EQ(s.steps, spe());
  EXPECT_NE(out.find("step 4 (epoch 1, batch 3): the loss is not finite"), std::string::npos) << out;
  for (auto& [name, t] : params(s.checkpoint, c)) EXPECT_TRUE(torch::isfinite(t).all().item<bool>()) << name;
  EXPECT_NE(test::read_text(dir_->file("skip.jsonl")).find("\"event\":\"nonfinite\""), std::string::npos);
}

TEST_F(FaultTest, NonFiniteLossStopPolicyEndsTheRunKeepingTheLastCheckpoint) {
  const std::string cfg = cli_config("nanstop");
  const int64_t step = spe() + 7;
  auto r = test::run("SASREC_INJECT_FAULT=" + at(step, "nan") + " " + std::string(SASREC_TRAINER) + " " + cfg);
  EXPECT_EQ(r.exit_code, 1) << r.output;
  EXPECT_NE(
      r.output.find(sasrec::detail::cat("[rank 0] error: step ", step, " (epoch 2, batch 6): the loss is not finite")),
      std::string::npos)
      << r.output;
  EXPECT_NE(r.output.find("train.on_nonfinite: skip"), std::string::npos) << r.output;
  CheckpointDir dir(dir_->file("ckpt_nanstop"), 5);
  ASSERT_EQ(dir.list().size(), 1u);
  EXPECT_NE(dir.list().back().find("epoch-000001.pt"), std::string::npos);
  EXPECT_EQ(checkpoint_problem(dir.list().back()), "");
}

TEST_F(FaultTest, KilledWhileWritingACheckpointKeepsThePreviousOne) {
  const std::string cfg = cli_config("ckptkill", "");
  // A step of epoch 2: the kill hits epoch 2's checkpoint half-written.
  auto r =
      test::run("SASREC_INJECT_FAULT=" + at(spe() + 1, "ckpt_kill") + " " + std::string(SASREC_TRAINER) + " " + cfg);
  EXPECT_EQ(r.exit_code, 128 + SIGKILL) << r.output;
  CheckpointDir dir(dir_->file("ckpt_ckptkill"), 5);
  ASSERT_EQ(dir.list().size(), 1u);
  EXPECT_EQ(checkpoint_problem(dir.list().back()), "");
  int temporaries = 0;
  for (const auto& e : test::fs::directory_iterator(dir_->file("ckpt_ckptkill")))
    temporaries += e.path().string().find(".tmp-") != std::string::npos;
  EXPECT_EQ(temporaries, 1) << "the half-written file stays under its temporary name";
  r = test::run(std::string(SASREC_TRAINER) + " " + cfg + " --set checkpoint.resume=auto");
  EXPECT_EQ(r.exit_code, 0) << r.output;
  EXPECT_NE(r.output.find("removed 1 unfinished checkpoint file"), std::string::npos) << r.output;
  EXPECT_NE(r.output.find("resumed from " + dir.list()[0]), std::string::npos) << r.output;
  EXPECT_EQ(dir.list().size(), 2u);
  EXPECT_EQ(checkpoint_problem(dir.list().back()), "");
}

TEST_F(FaultTest, DiskFullOnCheckpointIsAClearErrorAndKeepsThePreviousOne) {
  const std::string cfg = cli_config("enospc");
  auto r =
      test::run("SASREC_INJECT_FAULT=" + at(spe() + 1, "ckpt_enospc") + " " + std::string(SASREC_TRAINER) + " " + cfg);
  EXPECT_EQ(r.exit_code, 1) << r.output;
  EXPECT_NE(r.output.find("No space left on device"), std::string::npos) << r.output;
  EXPECT_NE(r.output.find("the previous checkpoint is kept"), std::string::npos) << r.output;
  CheckpointDir dir(dir_->file("ckpt_enospc"), 5);
  ASSERT_EQ(dir.list().size(), 1u);
  EXPECT_EQ(checkpoint_problem(dir.list().back()), "");
  for (const auto& e : test::fs::directory_iterator(dir_->file("ckpt_enospc")))
    EXPECT_EQ(e.path().string().find(".tmp-"), std::string::npos) << "temporary left: " << e.path();
}

TEST_F(FaultTest, RealSigintEndsTheProcessWithTheInterruptedStatus) {
  // Many epochs, so the run is still going when the signal comes.
  const std::string cfg = cli_config("sigint");
  const std::string metrics = dir_->file("sigint.jsonl");
  auto r = test::run("(" + std::string(SASREC_TRAINER) + " " + cfg + " --set train.epochs=1000 & pid=$!; " +
                     "for i in $(seq 600); do grep -q train_epoch " + metrics +
                     " 2>/dev/null && break; sleep 0.1; done; " + "kill -INT $pid; wait $pid)");
  EXPECT_EQ(r.exit_code, kExitInterrupted) << r.output;
  EXPECT_NE(r.output.find("interrupted by SIGINT after step"), std::string::npos) << r.output;
  CheckpointDir dir(dir_->file("ckpt_sigint"), 5);
  ASSERT_FALSE(dir.list().empty());
  const std::string written = dir.list().back();
  EXPECT_EQ(checkpoint_problem(written), "");
  const size_t at_step = r.output.find("after step ");
  ASSERT_NE(at_step, std::string::npos);
  const long long step = std::atoll(r.output.c_str() + at_step + 11);
  // Two more steps from where it stopped.
  r = test::run(std::string(SASREC_TRAINER) + " " + cfg + " --set train.epochs=1000 --set checkpoint.resume=auto" +
                " --set train.max_steps=" + std::to_string(step + 2));
  EXPECT_EQ(r.exit_code, 0) << r.output;
  EXPECT_NE(r.output.find("resumed from " + written), std::string::npos) << r.output;
  EXPECT_NE(r.output.find(sasrec::detail::cat("done: ")), std::string::npos) << r.output;
}

TEST_F(FaultTest, MalformedFaultSpecIsABadInput) {
  auto r = test::run("SASREC_INJECT_FAULT=oops " + std::string(SASREC_TRAINER) + " " + cli_config("spec"));
  EXPECT_EQ(r.exit_code, 2) << r.output;
  EXPECT_NE(r.output.find("SASREC_INJECT_FAULT='oops'"), std::string::npos) << r.output;
}
