// test_sweep.cpp: tools/sweep.sh on a tiny generated store: a grid runs every
// point in its own folder and tabulates them, a second start reruns nothing,
// an unfinished point (no summary event) is rerun alone, seeds are grouped
// with mean and spread, and --slurm writes a job array of the points not yet
// done whose --run-point tasks run them. Skipped where jq is missing.
#include <gtest/gtest.h>

#include <filesystem>
#include <string>

#include "test_util.h"

namespace sasrec {
namespace {

namespace fs = std::filesystem;
using test::run;

class SweepTest : public ::testing::Test {
 protected:
  void SetUp() override {
    if (run("command -v jq").exit_code != 0) GTEST_SKIP() << "jq not installed";
    data_ = dir_.file("synth.h5");
    auto r = run(std::string(SASREC_SYNTH) + " --users 300 --items 50 --mean-length 8 --seed 1 --out " + data_);
    ASSERT_EQ(r.exit_code, 0) << r.output;
  }
  // sweep.sh with a two-epoch training of the small model.
  test::RunResult sweep(const std::string& args) {
    return run("bash " + std::string(SASREC_SOURCE_DIR) + "/tools/sweep.sh --bin " + SASREC_TRAINER +
               " --set data.path=" + data_ +
               " --set model.hidden=16 --set model.maxlen=10 --set train.epochs=2 --set train.threads=1"
               " --set eval.every=1 --set eval.protocols=[full] " +
               args + " " + std::string(SASREC_SOURCE_DIR) + "/configs/default.yaml " + out());
  }
  std::string out() const { return dir_.file("sweep"); }
  std::string metrics(const std::string& point) const { return out() + "/" + point + "/metrics.jsonl"; }

  test::TempDir dir_;
  std::string data_;
};

TEST_F(SweepTest, HelpAndVersion) {
  const std::string sweep = "bash " + std::string(SASREC_SOURCE_DIR) + "/tools/sweep.sh";
  const auto help = run(sweep + " --help");
  EXPECT_EQ(help.exit_code, 0) << help.output;
  EXPECT_NE(help.output.find("Usage"), std::string::npos) << help.output;
  const auto version = run(sweep + " --version");
  EXPECT_EQ(version.exit_code, 0);
  EXPECT_NE(version.output.find(std::string("sweep ") + SASREC_VERSION), std::string::npos) << version.output;
  EXPECT_EQ(run(sweep + " --grid nonsense x y").exit_code, 2);
}

TEST_F(SweepTest, GridRunsEachPointOnceAndResumes) {
  auto r = sweep("--grid model.dropout=0.2,0.5 --grid train.lr=0.001");
  ASSERT_EQ(r.exit_code, 0) << r.output;
  const std::string a = "model.dropout=0.2,train.lr=0.001", b = "model.dropout=0.5,train.lr=0.001";
  for (const auto& p : {a, b}) {
    ASSERT_TRUE(fs::exists(metrics(p))) << p << "\n" << r.output;
    EXPECT_NE(test::read_text(metrics(p)).find("\"event\":\"summary\""), std::string::npos) << p;
    EXPECT_NE(r.output.find("| model.dropout=" + p.substr(14, 3) + " train.lr=0.001 | done | 2 |"), std::string::npos)
        << r.output;
  }
  EXPECT_TRUE(fs::exists(out() + "/results.md"));

  // A second start runs nothing.
  const auto before = fs::last_write_time(metrics(a));
  r = sweep("--grid model.dropout=0.2,0.5 --grid train.lr=0.001");
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_NE(r.output.find(a + ": done, skipped"), std::string::npos) << r.output;
  EXPECT_NE(r.output.find(b + ": done, skipped"), std::string::npos) << r.output;
  EXPECT_EQ(fs::last_write_time(metrics(a)), before);

  // A point whose training did not finish (no summary event) is run again, alone.
  std::string text = test::read_text(metrics(b));
  ASSERT_GT(text.size(), 2u);
  text = text.substr(0, text.rfind('\n', text.size() - 2) + 1);  // the last line (the summary) off
  ASSERT_EQ(text.find("\"summary\""), std::string::npos);
  test::write_text(metrics(b), text);
  r = sweep("--grid model.dropout=0.2,0.5 --grid train.lr=0.001");
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_NE(r.output.find(a + ": done, skipped"), std::string::npos) << r.output;
  EXPECT_NE(r.output.find(b + ": running"), std::string::npos) << r.output;
  EXPECT_NE(test::read_text(metrics(b)).find("\"event\":\"summary\""), std::string::npos);

  // The table alone, from the folder.
  r = run("bash " + std::string(SASREC_SOURCE_DIR) + "/tools/sweep.sh --table " + out());
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_EQ(r.output.find("| point |"), 0u) << r.output;
}

TEST_F(SweepTest, PointsFileAndSeedsGiveMeanAndSpread) {
  test::write_text(dir_.file("points.txt"), "# two models\nmodel.blocks=1\nmodel.blocks=2   model.heads=2\n");
  auto r = sweep("--points " + dir_.file("points.txt") + " --seeds 1,2");
  ASSERT_EQ(r.exit_code, 0) << r.output;
  for (const char* p : {"model.blocks=1,train.seed=1", "model.blocks=1,train.seed=2",
                        "model.blocks=2,model.heads=2,train.seed=1", "model.blocks=2,model.heads=2,train.seed=2"})
    EXPECT_TRUE(fs::exists(metrics(p))) << p << "\n" << r.output;
  EXPECT_NE(r.output.find("| model.blocks=1 | 2 |"), std::string::npos) << r.output;
  EXPECT_NE(r.output.find("| model.blocks=2 model.heads=2 | 2 |"), std::string::npos) << r.output;
  EXPECT_NE(r.output.find(" +- "), std::string::npos) << r.output;
}

TEST_F(SweepTest, SlurmWritesAnArrayOfThePointsNotDone) {
  auto r = sweep("--grid train.seed=1,2,3 --slurm --no-submit --sbatch --time=0:10:00");
  ASSERT_EQ(r.exit_code, 0) << r.output;
  const std::string script = test::read_text(out() + "/sweep.sbatch");
  EXPECT_NE(script.find("#SBATCH --array=0,1,2"), std::string::npos) << script;
  EXPECT_NE(script.find("#SBATCH --time=0:10:00"), std::string::npos) << script;
  // What one array task runs: point 1 only.
  r = run("bash " + std::string(SASREC_SOURCE_DIR) + "/tools/sweep.sh --run-point 1 " + out());
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_TRUE(fs::exists(metrics("train.seed=2")));
  EXPECT_FALSE(fs::exists(metrics("train.seed=1")));
  // Written again, the array leaves the done point out.
  r = sweep("--grid train.seed=1,2,3 --slurm --no-submit");
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_NE(test::read_text(out() + "/sweep.sbatch").find("#SBATCH --array=0,2\n"), std::string::npos);
}

}  // namespace
}  // namespace sasrec
