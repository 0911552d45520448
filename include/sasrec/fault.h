// fault.h: fault injection for the tests of failure handling.
//
// SASREC_INJECT_FAULT=RANK:STEP[:KIND] makes rank RANK misbehave once, at
// optimizer step STEP (counted from 1 over the whole run), or for the
// checkpoint kinds at the first checkpoint written at or after that step:
//   throw        throw a sasrec::Error (the default KIND)
//   exit         leave at once with _exit(1), as a crashing rank would
//   kill         raise SIGKILL
//   sigterm      raise SIGTERM (the step guard's path; see step_guard.h)
//   nan          the step's loss becomes NaN before backward
//   ckpt_kill    SIGKILL half-way through writing the checkpoint file
//   ckpt_enospc  the checkpoint write fails with ENOSPC (disk full)
// Unset, every query answers "no fault". Parsed once from the environment
// by the Trainer; this header does not read the environment itself.
#pragma once

#include <cstdint>
#include <string>

namespace sasrec {

enum class FaultKind { None, Throw, Exit, Kill, Sigterm, Nan, CkptKill, CkptEnospc };

struct FaultPlan {
  int rank = -1;
  int64_t step = -1;
  FaultKind kind = FaultKind::None;

  // "RANK:STEP[:KIND]"; empty or null gives no fault. A malformed value is a
  // sasrec::Error(Config) naming SASREC_INJECT_FAULT.
  static FaultPlan parse(const char* spec);
  // Whether `kind` is due on `rank` at `step` (exact step; the checkpoint
  // kinds at any step at or after it).
  bool due(FaultKind kind, int rank, int64_t step) const;
};

const char* fault_name(FaultKind kind);

}  // namespace sasrec
