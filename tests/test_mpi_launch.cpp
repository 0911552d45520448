// test_mpi_launch.cpp: whole jobs under mpirun, launched from a plain test:
// a 2-rank training run works end to end and twice gives the same bits; a
// rank that throws, exits or is killed ends the whole job quickly with a
// non-zero exit, never a hang; SIGTERM on one rank stops every rank after
// the same step with a checkpoint that resumes; SIGTERM to the launch script
// (launch/mpirun_cpu.sh) ends the job with exit 3, as one rank's does.
#include <gtest/gtest.h>

#include <chrono>
#include <map>

#include "sasrec/checkpoint.h"
#include "sasrec/model.h"
#include "sasrec/store.h"
#include "test_util.h"

using namespace sasrec;

namespace {

const std::string kMpirun = "timeout 240 mpirun -np 2 --oversubscribe --allow-run-as-root ";

struct Job {
  test::TempDir dir;
  std::string config;
  Job() {
    const std::string data = dir.file("d.h5");
    test::synth_store(data, /*users=*/600, /*items=*/200, /*seed=*/2);
    config = dir.file("c.yaml");
    test::write_text(config, "data:\n  path: " + data +
                                 "\nmodel:\n  hidden: 16\n  maxlen: 10\ntrain:\n  epochs: 2\n"
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
  EXPECT_NE(metrics.find("\"dense_bytes_per_step\""), std::string::npos);
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

namespace {

// The parameters in a checkpoint, by name (shapes from the data file and the test config).
std::map<std::string, torch::Tensor> parameters(const std::string& checkpoint, const std::string& data) {
  const StoreInfo info = read_store_info(data);
  ModelConfig m;
  m.hidden = 16;
  m.maxlen = 10;
  SASRec model(SASRecOptions::from(m, info.num_items, info.num_users));
  load_checkpoint(checkpoint, model, nullptr);
  std::map<std::string, torch::Tensor> out;
  for (auto& p : model->named_parameters()) out[p.key()] = p.value().clone();
  return out;
}

// Runs the job with SASREC_INJECT_FAULT=`fault`; expects a quick non-zero end.
test::RunResult failing_job(const std::string& fault) {
  Job job;
  const auto start = std::chrono::steady_clock::now();
  auto r = test::run("SASREC_INJECT_FAULT=" + fault + " " + kMpirun + SASREC_TRAINER + " " + job.config);
  const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  EXPECT_NE(r.exit_code, 0) << r.output;
  EXPECT_NE(r.exit_code, 124) << "the job hung until the timeout";
  EXPECT_LT(seconds, 120);
  return r;
}

}  // namespace

TEST(MpiLaunch, ARankThatExitsOrIsKilledEndsTheJob) {
  failing_job("1:3:exit");
  failing_job("1:3:kill");
}

TEST(MpiLaunch, SameConfigSameBitsOnTwoRanks) {
  Job job;
  for (const char* dir : {"ckpt", "ckpt_again"}) {
    auto r = test::run(kMpirun + SASREC_TRAINER + " " + job.config + " --set checkpoint.dir=" + job.dir.file(dir));
    ASSERT_EQ(r.exit_code, 0) << r.output;
  }
  auto a = parameters(job.dir.file("ckpt/epoch-000002.pt"), job.dir.file("d.h5"));
  auto b = parameters(job.dir.file("ckpt_again/epoch-000002.pt"), job.dir.file("d.h5"));
  ASSERT_EQ(a.size(), b.size());
  for (auto& [name, t] : a) EXPECT_TRUE(torch::equal(t, b.at(name))) << name;
}

TEST(MpiLaunch, SigtermOnOneRankStopsAllAfterTheSameStepAndResumes) {
  Job job;
  auto r = test::run("SASREC_INJECT_FAULT=1:4:sigterm " + kMpirun + SASREC_TRAINER + " " + job.config);
  EXPECT_EQ(r.exit_code, 3) << r.output;
  // Rank 1's flag travels in step 5's gradient bucket: every rank stops after step 5.
  EXPECT_NE(r.output.find("interrupted by SIGTERM after step 5"), std::string::npos) << r.output;
  const std::string ckpt = job.dir.file("ckpt/epoch-000000.step-000000005.pt");
  ASSERT_TRUE(std::filesystem::exists(ckpt)) << r.output;
  EXPECT_EQ(checkpoint_problem(ckpt), "");
  r = test::run(kMpirun + SASREC_TRAINER + " " + job.config + " --set checkpoint.resume=auto");
  EXPECT_EQ(r.exit_code, 0) << r.output;
  EXPECT_NE(r.output.find("resumed from " + ckpt), std::string::npos) << r.output;
  EXPECT_TRUE(std::filesystem::exists(job.dir.file("ckpt/epoch-000002.pt")));
}

// mpirun's own SIGTERM kills the job (exit 1, a SIGKILL 1 s later); the
// launch script hands the signal to the ranks instead: the same step on
// every rank, a checkpoint, exit 3 from the script.
TEST(MpiLaunch, SigtermToTheLaunchScriptEndsTheJobWithTheInterruptedStatus) {
  Job job;
  const std::string metrics = job.dir.file("m.jsonl");
  auto r = test::run("timeout 240 bash -c 'SASREC_DDP=" + std::string(SASREC_TRAINER) + " NP=2 THREADS=1 bash " +
                     std::string(SASREC_SOURCE_DIR) + "/launch/mpirun_cpu.sh " + job.config +
                     " --set train.epochs=1000 & pid=$!; for i in $(seq 600); do grep -q train_epoch " + metrics +
                     " 2>/dev/null && break; sleep 0.1; done; kill -TERM $pid; wait $pid'");
  EXPECT_EQ(r.exit_code, 3) << r.output;
  EXPECT_NE(r.output.find("interrupted by SIGTERM after step"), std::string::npos) << r.output;
  // The checkpoint the line names: the interrupted step's (epoch-N.step-S.pt), or epoch-N.pt when the
  // signal came after an epoch's last step (a window that a loaded machine widens).
  const std::string said = "; checkpoint ", written = " written";
  const auto from = r.output.find(said), to = r.output.find(written, from);
  ASSERT_TRUE(from != std::string::npos && to != std::string::npos) << r.output;
  const std::string ckpt = r.output.substr(from + said.size(), to - from - said.size());
  EXPECT_TRUE(std::filesystem::exists(ckpt)) << ckpt;
  EXPECT_EQ(checkpoint_problem(ckpt), "") << ckpt;
}
