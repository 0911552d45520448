// test_progress.cpp: the live line and plain progress lines, when each is
// printed, and the run summary (progress.h).
#include <gtest/gtest.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <string>

#include "sasrec/progress.h"

namespace sasrec {
namespace {

ProgressState state() {
  ProgressState s;
  s.epoch = 3, s.epochs = 50, s.step = 120, s.steps = 175;
  s.loss = 0.81234, s.seqs_per_s = 3400.4, s.eta_seconds = 245;
  return s;
}

// Everything written to a FILE* by `body`.
template <typename F>
std::string captured(F body) {
  char* buf = nullptr;
  size_t size = 0;
  std::FILE* f = open_memstream(&buf, &size);
  body(f);
  std::fclose(f);
  std::string out(buf, size);
  std::free(buf);
  return out;
}

TEST(Progress, ModeFollowsTheTerminal) {
  EXPECT_EQ(resolve_progress_mode(ProgressKind::Auto, true), ProgressMode::Live);
  EXPECT_EQ(resolve_progress_mode(ProgressKind::Auto, false), ProgressMode::Lines);
  EXPECT_EQ(resolve_progress_mode(ProgressKind::Lines, true), ProgressMode::Lines);
  EXPECT_EQ(resolve_progress_mode(ProgressKind::Live, false), ProgressMode::Live);
  EXPECT_EQ(resolve_progress_mode(ProgressKind::Off, true), ProgressMode::Off);
}

TEST(Progress, LiveLineRewritesInPlace) {
  EXPECT_EQ(format_progress(state(), ProgressMode::Live),
            "\repoch 3/50  step 120/175  loss 0.8123  3400 seq/s  ETA 4:05\033[K");
}

TEST(Progress, PlainLineHasNoControlCharacters) {
  const std::string line = format_progress(state(), ProgressMode::Lines);
  EXPECT_EQ(line, "epoch 3/50  step 120/175  loss 0.8123  3400 seq/s  ETA 4:05");
  ProgressState unknown = state();
  unknown.eta_seconds = -1;
  EXPECT_NE(format_progress(unknown, ProgressMode::Lines).find("ETA ?"), std::string::npos);
}

TEST(Progress, PlainLinesEveryLogEverySteps) {
  const std::string out = captured([](std::FILE* f) {
    Progress p(ProgressMode::Lines, /*log_every=*/2, 30, f);
    ProgressState s = state();
    for (int step = 1; step <= 5; ++step) {
      s.step = step;
      p.update(s, /*elapsed=*/step * 0.5, /*steps_left=*/100);  // 2 steps/s
    }
    p.clear();  // nothing to clear without a live line
  });
  EXPECT_EQ(std::count(out.begin(), out.end(), '\n'), 2) << out;
  EXPECT_NE(out.find("step 2/175"), std::string::npos);
  EXPECT_NE(out.find("step 4/175"), std::string::npos);
  EXPECT_NE(out.find("ETA 50.0s"), std::string::npos) << out;  // 100 steps at 2 steps/s
  EXPECT_EQ(out.find('\r'), std::string::npos);
  EXPECT_EQ(out.find('\033'), std::string::npos);
}

TEST(Progress, PlainLinesByTimeWhenLogEveryIsZero) {
  const std::string out = captured([](std::FILE* f) {
    Progress p(ProgressMode::Lines, 0, /*line_seconds=*/30, f);
    ProgressState s = state();
    for (int step = 1; step <= 100; ++step) {
      s.step = step;
      p.update(s, step * 1.0, 10);  // one step a second: lines at 30, 60, 90 s
    }
  });
  EXPECT_EQ(std::count(out.begin(), out.end(), '\n'), 3) << out;
}

TEST(Progress, LiveLineThrottledAndCleared) {
  const std::string out = captured([](std::FILE* f) {
    Progress p(ProgressMode::Live, 2, 30, f);
    ProgressState s = state();
    s.steps = 10;
    for (int step = 1; step <= 10; ++step) {
      s.step = step;
      p.update(s, step * 0.01, 10 - step);  // 10 steps in 0.1 s: the first and the last drawn
    }
    p.clear();
  });
  EXPECT_EQ(out.find('\n'), std::string::npos) << out;
  EXPECT_EQ(std::count(out.begin(), out.end(), '\r'), 3) << out;  // two draws and the clear
  EXPECT_NE(out.find("step 10/10"), std::string::npos);
  EXPECT_EQ(out.substr(out.size() - 4), "\r\033[K");
}

TEST(Progress, OffPrintsNothing) {
  const std::string out = captured([](std::FILE* f) {
    Progress p(ProgressMode::Off, 1, 30, f);
    p.update(state(), 1, 1);
    p.clear();
  });
  EXPECT_TRUE(out.empty());
}

TEST(Progress, SummaryNamesBestEpochValidAndTest) {
  auto result = [](const std::string& protocol, std::vector<int64_t> ranks) {
    EvalResult r{"valid", protocol, RankMetrics({5, 10}), 0};
    for (int64_t k : ranks) r.metrics.add(k);
    return r;
  };
  // ranks 0 and 20: HR@10 = 1/2, NDCG@10 = (1/log2(2)) / 2 = 0.5; ranks 1, 3: HR@10 = 1,
  // NDCG@10 = (1/log2(3) + 1/log2(5)) / 2 = 0.5308
  const auto lines = format_summary(50, 8750, 1234.5, 40, {result("full", {0, 20})}, {result("full", {1, 3})}, {5, 10});
  ASSERT_EQ(lines.size(), 3u);
  EXPECT_EQ(lines[0], "done: 50 epochs, 8750 steps in 20:34");
  EXPECT_EQ(lines[1], "best valid at epoch 40: full HR@10 0.5000 NDCG@10 0.5000");
  EXPECT_EQ(lines[2], "test at epoch 40: full HR@10 1.0000 NDCG@10 0.5308");
  EXPECT_EQ(format_summary(2, 10, 5, 0, {}, {}, {10}).size(), 1u);  // never evaluated
  EXPECT_EQ(nearest_cutoff({1, 5, 20}), 5);
}

}  // namespace
}  // namespace sasrec
