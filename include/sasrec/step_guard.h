// step_guard.h: SIGTERM / SIGINT turned into a request to stop between steps.
//
// While a StepGuard lives, the first SIGTERM or SIGINT only records the
// signal: the trainer finishes the step in flight, writes a checkpoint and
// returns "interrupted" (exit code 3, kExitInterrupted). A second signal
// takes the default action (the process ends at once). The previous
// handlers are restored when the guard is destroyed. The recorded signal is
// process-wide by nature (a signal handler can only set a flag); one guard
// at a time.
#pragma once

namespace sasrec {

class StepGuard {
 public:
  StepGuard();
  ~StepGuard();
  StepGuard(const StepGuard&) = delete;
  StepGuard& operator=(const StepGuard&) = delete;

  // The signal received (SIGTERM or SIGINT) since the guard was made, or 0.
  int requested() const;
  static const char* signal_name(int sig);
};

}  // namespace sasrec
