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
// Unset, every query answers "no fault". sasrec_ddp's main() reads the
// environment and hands the trainer a FaultHooks (train_hooks.h, the
// trainer's test seam); this code is linked into sasrec_ddp and the tests
// only (the sasrec_fault library), never into the trainer library itself.
#pragma once

#include <cstdint>
#include <string>

#include "sasrec/train_hooks.h"

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

// The plan's faults at the trainer's hook points: nan after the forward
// pass, throw / exit / kill / sigterm after the step, ckpt_kill / ckpt_enospc
// half-way through the checkpoint's payload.
class FaultHooks final : public TrainHooks {
 public:
  explicit FaultHooks(FaultPlan plan) : plan_(plan) {}
  torch::Tensor after_forward(int rank, int64_t step, torch::Tensor loss_sum) override;
  void after_step(int rank, int64_t step) override;
  MidWriteHook checkpoint_write(int rank, int64_t step) override;

 private:
  FaultPlan plan_;
};

}  // namespace sasrec
