// test_step_guard.cpp: SIGTERM / SIGINT become a request, once, while a guard lives.
#include <gtest/gtest.h>

#include <csignal>

#include "sasrec/fault.h"
#include "sasrec/error.h"
#include "sasrec/step_guard.h"

using namespace sasrec;

TEST(StepGuard, RecordsTheSignalAndRestoresTheOldHandler) {
  static volatile std::sig_atomic_t old_seen = 0;
  auto* previous = std::signal(SIGINT, [](int) { old_seen = 1; });
  {
    StepGuard guard;
    EXPECT_EQ(guard.requested(), 0);
    std::raise(SIGINT);  // would end the test process without the guard's handler
    EXPECT_EQ(guard.requested(), SIGINT);
    EXPECT_STREQ(StepGuard::signal_name(guard.requested()), "SIGINT");
    EXPECT_EQ(old_seen, 0);
  }
  std::raise(SIGINT);  // the handler from before the guard is back
  EXPECT_EQ(old_seen, 1);
  std::signal(SIGINT, previous);
  StepGuard again;  // a new guard starts with no request
  EXPECT_EQ(again.requested(), 0);
  std::raise(SIGTERM);
  EXPECT_EQ(again.requested(), SIGTERM);
}

TEST(StepGuard, OneAtATime) {
  StepGuard a;
  EXPECT_THROW(StepGuard b, Error);
}

TEST(FaultPlan, ParsesAndRefuses) {
  EXPECT_EQ(FaultPlan::parse(nullptr).kind, FaultKind::None);
  EXPECT_EQ(FaultPlan::parse("").kind, FaultKind::None);
  FaultPlan p = FaultPlan::parse("1:3");
  EXPECT_EQ(p.rank, 1);
  EXPECT_EQ(p.step, 3);
  EXPECT_EQ(p.kind, FaultKind::Throw);
  EXPECT_TRUE(p.due(FaultKind::Throw, 1, 3));
  EXPECT_FALSE(p.due(FaultKind::Throw, 0, 3));
  EXPECT_FALSE(p.due(FaultKind::Throw, 1, 4));
  p = FaultPlan::parse("0:5:ckpt_kill");
  EXPECT_EQ(p.kind, FaultKind::CkptKill);
  EXPECT_FALSE(p.due(FaultKind::CkptKill, 0, 4));
  EXPECT_TRUE(p.due(FaultKind::CkptKill, 0, 9));  // the first checkpoint at or after step 5
  for (const char* bad : {"1", "a:3", "1:0", "1:3:boom", "-1:3", "1:3:"}) {
    try {
      FaultPlan::parse(bad);
      ADD_FAILURE() << bad << " accepted";
    } catch (const Error& e) {
      EXPECT_EQ(e.domain(), ErrorDomain::Config);
      EXPECT_NE(std::string(e.what()).find("SASREC_INJECT_FAULT"), std::string::npos) << e.what();
    }
  }
}
