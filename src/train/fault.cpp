// fault.cpp: SASREC_INJECT_FAULT, parsed and acted on (see fault.h).
#include "sasrec/fault.h"

#include <unistd.h>

#include <cerrno>
#include <csignal>
#include <cstdlib>
#include <limits>

#include "sasrec/error.h"

namespace sasrec {
namespace {
constexpr FaultKind kKinds[] = {FaultKind::Throw, FaultKind::Exit,     FaultKind::Kill,      FaultKind::Sigterm,
                                FaultKind::Nan,   FaultKind::CkptKill, FaultKind::CkptEnospc};
}  // namespace

const char* fault_name(FaultKind kind) {
  switch (kind) {
    case FaultKind::None: return "none";
    case FaultKind::Throw: return "throw";
    case FaultKind::Exit: return "exit";
    case FaultKind::Kill: return "kill";
    case FaultKind::Sigterm: return "sigterm";
    case FaultKind::Nan: return "nan";
    case FaultKind::CkptKill: return "ckpt_kill";
    case FaultKind::CkptEnospc: return "ckpt_enospc";
  }
  return "?";
}

FaultPlan FaultPlan::parse(const char* spec) {
  FaultPlan plan;
  if (!spec || !*spec) return plan;
  const std::string s(spec);
  auto fail = [&] {
    SASREC_FAIL(Config, "SASREC_INJECT_FAULT='", s,
                "': expected RANK:STEP[:KIND] with KIND one of throw, exit, "
                "kill, sigterm, nan, ckpt_kill, ckpt_enospc; unset it for a normal run");
  };
  const size_t c1 = s.find(':');
  if (c1 == std::string::npos) fail();
  const size_t c2 = s.find(':', c1 + 1);
  const std::string rank = s.substr(0, c1);
  const std::string step = s.substr(c1 + 1, c2 == std::string::npos ? std::string::npos : c2 - c1 - 1);
  const std::string kind = c2 == std::string::npos ? "throw" : s.substr(c2 + 1);
  char* end = nullptr;
  plan.rank = static_cast<int>(std::strtol(rank.c_str(), &end, 10));
  if (rank.empty() || *end || plan.rank < 0) fail();
  plan.step = std::strtoll(step.c_str(), &end, 10);
  if (step.empty() || *end || plan.step < 1) fail();
  for (FaultKind k : kKinds)
    if (kind == fault_name(k)) plan.kind = k;
  if (plan.kind == FaultKind::None) fail();
  return plan;
}

bool FaultPlan::due(FaultKind k, int r, int64_t s) const {
  if (kind != k || rank != r) return false;
  return (k == FaultKind::CkptKill || k == FaultKind::CkptEnospc) ? s >= step : s == step;
}

torch::Tensor FaultHooks::after_forward(int rank, int64_t step, torch::Tensor loss_sum) {
  if (!plan_.due(FaultKind::Nan, rank, step)) return loss_sum;
  return loss_sum * std::numeric_limits<double>::quiet_NaN();
}

void FaultHooks::after_step(int rank, int64_t step) {
  if (plan_.rank != rank || plan_.step != step) return;
  switch (plan_.kind) {
    case FaultKind::Throw: SASREC_FAIL(Check, "injected fault at step ", step, " (SASREC_INJECT_FAULT)");
    case FaultKind::Exit: ::_exit(kExitFailure);  // a rank dying without a word
    case FaultKind::Kill: std::raise(SIGKILL); break;
    case FaultKind::Sigterm: std::raise(SIGTERM); break;
    default: break;  // nan and the checkpoint kinds act at their own hooks
  }
}

MidWriteHook FaultHooks::checkpoint_write(int rank, int64_t step) {
  if (plan_.due(FaultKind::CkptKill, rank, step))
    return [](AtomicOutput&) { std::raise(SIGKILL); };  // a machine dying mid-write
  if (plan_.due(FaultKind::CkptEnospc, rank, step)) return [](AtomicOutput& out) { out.fail(ENOSPC); };  // a full disk
  return {};
}

}  // namespace sasrec
