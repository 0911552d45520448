// test_cli.cpp: every binary and tool answers --help and --version with exit
// code 0, a usage error exits 2 with the usage line (never CLI11's own
// codes), cmake --install lays them out under a prefix, and
// tools/plot_metrics.sh turns metrics files into a PNG (skipped where jq or
// gnuplot is missing); the trainer computes with BLAS kernels for its CPU.
#include <gtest/gtest.h>

#include <string>

#include "test_util.h"

namespace sasrec {
namespace {

using test::run;

struct Binary {
  std::string command;  // what to run
  std::string name;     // what --version must print
};

std::vector<Binary> binaries() {
  return {{SASREC_TRAINER, "sasrec_ddp"},
          {SASREC_CSV2H5, "csv2h5"},
          {SASREC_SYNTH, "sasrec_synth"},
          {"bash " + std::string(SASREC_SOURCE_DIR) + "/tools/plot_metrics.sh", "plot_metrics"}};
}

TEST(Cli, HelpAndVersionExitZero) {
  for (const auto& b : binaries()) {
    const auto help = run(b.command + " --help");
    EXPECT_EQ(help.exit_code, 0) << b.command << "\n" << help.output;
    EXPECT_NE(help.output.find("sage"), std::string::npos) << b.command << ": no usage in\n" << help.output;
    const auto version = run(b.command + " --version");
    EXPECT_EQ(version.exit_code, 0) << b.command << "\n" << version.output;
    EXPECT_NE(version.output.find(b.name + " " + SASREC_VERSION), std::string::npos) << version.output;
  }
}

// CLI11's app.exit() would return 105-109; the README's table says 2.
TEST(Cli, UsageErrorsExitTwoWithTheUsageLine) {
  test::TempDir dir;
  const std::string cfg = dir.file("c.yaml"), ckpt = dir.file("c.pt");
  test::write_text(cfg, "data:\n  path: x.h5\n");
  test::write_text(ckpt, "x");
  const std::string t = SASREC_TRAINER;
  const std::vector<std::pair<std::string, std::string>> cases{
      {t + " --no-such-flag", "Usage: sasrec_ddp"},
      {t + " recommend " + cfg + " --checkpoint " + ckpt + " --all --topk 0", "Usage: sasrec_ddp recommend"},
      {t + " recommend " + cfg + " --checkpoint " + ckpt + " --all --topk -1", "Usage: sasrec_ddp recommend"},
      {t + " recommend " + cfg + " --checkpoint " + ckpt + " --all --topk many", "Usage: sasrec_ddp recommend"},
      {t + " eval " + cfg + " --checkpoint " + dir.path().string(), "Usage: sasrec_ddp eval"},
      {t + " export " + cfg + " --checkpoint " + ckpt, "Usage: sasrec_ddp export"},
      {std::string(SASREC_CSV2H5) + " --no-such-flag a b", "Usage: csv2h5"},
      {std::string(SASREC_CSV2H5) + " only-one-argument", "Usage: csv2h5"},
      {std::string(SASREC_SYNTH) + " --users many --out x", "Usage: sasrec_synth"}};
  for (const auto& [command, usage] : cases) {
    const auto r = run(command);
    EXPECT_EQ(r.exit_code, 2) << command << "\n" << r.output;
    EXPECT_NE(r.output.find(usage), std::string::npos) << command << "\n" << r.output;
    EXPECT_NE(r.output.find("--help' for every option"), std::string::npos) << r.output;
  }
  // A directory as the config.
  const auto r = run(t + " " + dir.path().string());
  EXPECT_EQ(r.exit_code, 2) << r.output;
  EXPECT_NE(r.output.find("is a directory; give the YAML config file"), std::string::npos) << r.output;
}

TEST(Cli, InstallPutsBinariesAndConfigsUnderAPrefix) {
  test::TempDir prefix;
  const std::string build = std::filesystem::path(SASREC_TRAINER).parent_path().string();
  const auto r = run("cmake --install " + build + " --prefix " + prefix.path().string());
  ASSERT_EQ(r.exit_code, 0) << r.output;
  for (const char* f : {"bin/sasrec_ddp", "bin/csv2h5", "bin/sasrec_synth", "bin/sasrec_plot_metrics",
                        "share/sasrec_ddp/configs/default.yaml", "share/sasrec_ddp/configs/amazon.yaml"})
    EXPECT_TRUE(std::filesystem::exists(prefix.path() / f)) << f;
  const auto v = run((prefix.path() / "bin/sasrec_ddp").string() + " --version");
  EXPECT_EQ(v.exit_code, 0) << v.output;
}

TEST(Cli, SubcommandsHaveHelp) {
  for (const char* sub : {"eval", "recommend", "export"}) {
    const auto r = run(std::string(SASREC_TRAINER) + " " + sub + " --help");
    EXPECT_EQ(r.exit_code, 0) << sub << "\n" << r.output;
    EXPECT_NE(r.output.find("--checkpoint"), std::string::npos) << r.output;
  }
}

// OpenBLAS's kernels (blas_kernels.h): whatever it would choose on this CPU,
// the trainer computes with ones that use the vector units the CPU has, and a
// user's OPENBLAS_CORETYPE is kept as given.
TEST(Cli, TrainerComputesWithKernelsForThisCpu) {
  const std::string t = SASREC_TRAINER;
  const auto chosen = run("env -u OPENBLAS_CORETYPE " + t + " --blas-kernels 2>/dev/null");
  ASSERT_EQ(chosen.exit_code, 0) << chosen.output;
  const std::string kernels = chosen.output.substr(0, chosen.output.find('\n'));
  if (kernels.empty()) GTEST_SKIP() << "the BLAS is not OpenBLAS";
#if defined(__x86_64__) && defined(__GNUC__)
  if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma"))
    for (const char* slow : {"Prescott", "Core2", "Penryn", "Dunnington", "Nehalem"})
      EXPECT_NE(kernels, slow) << "a CPU with AVX2 and FMA";
#endif
  const auto kept = run("env OPENBLAS_CORETYPE=Prescott " + t + " --blas-kernels");
  EXPECT_EQ(kept.exit_code, 0) << kept.output;
  EXPECT_EQ(kept.output, "Prescott\n");  // nothing said, nothing restarted
}

TEST(Cli, PlotMakesAPng) {
  if (run("command -v gnuplot && command -v jq").exit_code != 0) GTEST_SKIP() << "gnuplot or jq not installed";
  test::TempDir dir;
  std::filesystem::create_directories(dir.path() / "run-a");
  test::write_text(
      dir.file("run-a/metrics.jsonl"),
      "{\"event\":\"start\",\"world_size\":1}\n"
      "{\"event\":\"train_epoch\",\"epoch\":1,\"loss\":0.9}\n"
      "{\"event\":\"train_epoch\",\"epoch\":2,\"loss\":0.7}\n"
      "{\"event\":\"eval\",\"epoch\":2,\"split\":\"valid\",\"protocol\":\"full\",\"hr@10\":0.05,\"ndcg@10\":0.03}\n"
      "{\"event\":\"eval\",\"epoch\":2,\"split\":\"test\",\"protocol\":\"full\",\"hr@10\":0.04,\"ndcg@10\":0.02}\n");
  test::write_text(dir.file("b.jsonl"), "{\"event\":\"train_epoch\",\"epoch\":1,\"loss\":0.8}\n");
  const std::string png = dir.file("curves.png");
  const auto r = run("bash " + std::string(SASREC_SOURCE_DIR) + "/tools/plot_metrics.sh " + png + " " +
                     dir.file("run-a/metrics.jsonl") + " second=" + dir.file("b.jsonl"));
  ASSERT_EQ(r.exit_code, 0) << r.output;
  const std::string bytes = test::read_text(png);
  ASSERT_GT(bytes.size(), 1000u);
  EXPECT_EQ(bytes.substr(0, 8), std::string("\x89PNG\r\n\x1a\n", 8));
  // Not a metrics file: a clear failure, not an empty picture.
  test::write_text(dir.file("bad.jsonl"), "not json\n");
  EXPECT_NE(run("bash " + std::string(SASREC_SOURCE_DIR) + "/tools/plot_metrics.sh " + dir.file("x.png") + " " +
                dir.file("bad.jsonl"))
                .exit_code,
            0);
}

}  // namespace
}  // namespace sasrec
