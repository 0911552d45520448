// test_mpi_launch.cpp: whole jobs under mpirun, launched from a plain test:
// a 2-rank training run works end to end, and a rank that fails ends the
// whole job quickly with its message and a non-zero exit, never a hang.
#include <gtest/gtest.h>

#include <chrono>

#include "test_util.h"

using namespace sasrec;

namespace {

const std::string kMpirun = "timeout 240 mpirun -np 2 --oversubscribe --allow-run-as-root ";

struct Job {
  test::TempDir dir;
  std::string config;
  Job() {
    const std::string data = dir.file("d.h5");
    auto r = test::run(std::string(SASREC_SYNTH) + " --users 600 --items 200 --seed 2 --out " + data);
    EXPECT_EQ(r.exit_code, 0) << r.output;
    config = dir.file("c.yaml");
    test::write_text(config, "data:\n  path: " + data + "\nmodel:\n  hidden: 16\n  maxlen: 10\ntrain:\n  epochs: 2\n"
                             "  batch_size: 32\n  threads: 1\nruntime:\n  check_replicas: 3\ncheckpoint:\n  dir: " +
                             dir.file("ckpt") + "\noutput:\n  metrics: " + dir.file("m.jsonl") + "\n");
  }
};

}  // namespace

TEST(MpiLaunch, TwoRankTrainingRunsEndToEnd) {
  Job job;
  auto r = test::run(kMpirun + SASREC_TRAINER + " " + job.config);
  ASSERT_EQ(r.exit_code, 0) << r.output;
  const std::string metrics = test::read_text(job.dir.file("m.jsonl"));
  EXPECT_NE(metrics.find("\"world_size\":2"), std::string::npos) << metrics;
  EXPECT_NE(metrics.find("\"comm\":\"mpi\""), std::string::npos);
  EXPECT_NE(metrics.find("\"bytes_reduced_per_step\""), std::string::npos);
  EXPECT_TRUE(std::filesystem::exists(job.dir.file("ckpt/epoch-000002.pt")));
}

TEST(MpiLaunch, AFailingRankEndsTheJobWithItsMessage) {
  Job job;
  const auto start = std::chrono::steady_clock::now();
  auto r = test::run("SASREC_INJECT_FAULT=1:3 " + kMpirun + SASREC_TRAINER + " " + job.config);
  const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  EXPECT_NE(r.exit_code, 0) << r.output;
  EXPECT_NE(r.exit_code, 124) << "the job hung until the timeout";
  EXPECT_NE(r.output.find("[rank 1] error: injected fault at step 3"), std::string::npos) << r.output;
  EXPECT_LT(seconds, 120);
}
