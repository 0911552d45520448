// train_hooks.h: the trainer's test seam. A run takes no hooks; the tests of
// failure handling pass some (through sasrec_ddp's SASREC_INJECT_FAULT,
// fault.h) to make one rank misbehave at a chosen step: a non-finite loss,
// an exception, an exit, a signal, a checkpoint write that dies or finds the
// disk full. The trainer calls them at fixed points and knows nothing of
// what they do.
#pragma once

#include <torch/torch.h>

#include <cstdint>
#include <functional>

#include "sasrec/atomic_file.h"

namespace sasrec {

// Called half-way through a checkpoint's payload, with the output being written.
using MidWriteHook = std::function<void(AtomicOutput& out)>;

class TrainHooks {
 public:
  virtual ~TrainHooks() = default;
  // The loss sum of step `step` (1-based, over the run) on `rank`, after
  // the forward pass and before backward; returns the one to use.
  virtual torch::Tensor after_forward(int /*rank*/, int64_t /*step*/, torch::Tensor loss_sum) { return loss_sum; }
  // After step `step` on `rank`.
  virtual void after_step(int /*rank*/, int64_t /*step*/) {}
  // For rank 0's checkpoint after step `step`: a hook into the write, or none.
  virtual MidWriteHook checkpoint_write(int /*rank*/, int64_t /*step*/) { return {}; }
};

}  // namespace sasrec
