// progress.h: rank 0's progress during training and the run summary.
//
// On a terminal, one live line rewritten in place ("\r...\033[K"): epoch,
// step/steps, loss so far, sequences/s and the ETA of the run. When stdout
// is not a terminal (log files, Slurm), plain lines instead: every
// output.log_every steps, or every 30 s when that is 0. The summary at the
// end names the best epoch, its valid figures and the test figures of that
// epoch, and the total time. Formatting is pure (tested); Progress only
// decides when to print. Nothing here writes the metrics file (metrics.h).
#pragma once

#include <cstdint>
#include <cstdio>
#include <string>
#include <vector>

#include "sasrec/evaluator.h"

namespace sasrec {

enum class ProgressMode { Live, Lines, Off };

// output.progress: auto (Live on a terminal, else Lines) | live | lines | off.
ProgressMode resolve_progress_mode(ProgressKind setting, bool stdout_is_tty);

struct ProgressState {
  int64_t epoch = 0, epochs = 0;  // current epoch and the run's last
  int64_t step = 0, steps = 0;    // step in this epoch (1-based) and steps per epoch
  double loss = 0;                // mean loss of the epoch so far
  double seqs_per_s = 0;          // over all ranks
  double eta_seconds = -1;        // until the last step of the run; < 0: unknown
};

// Live: "\repoch 3/50  step 120/175  loss 0.8123  3400 seq/s  ETA 4:05\033[K" (no newline);
// Lines: "epoch 3/50  step 120/175  loss 0.8123  3400 seq/s  ETA 4:05" (log_line adds time and newline).
std::string format_progress(const ProgressState& state, ProgressMode mode);

// The cutoff of `ks` nearest to `target` (the first of equals): the one shown on the terminal.
int nearest_cutoff(const std::vector<int>& ks, int target = 10);

// "done: 50 epochs, 8750 steps in 20:34" and, when evaluated, "best valid at
// epoch 40: full HR@10 .. NDCG@10 ..; its test: full HR@10 .. NDCG@10 ..".
std::vector<std::string> format_summary(int64_t epochs, int64_t steps, double seconds, int64_t best_epoch,
                                        const std::vector<EvalResult>& best_valid,
                                        const std::vector<EvalResult>& best_test, const std::vector<int>& ks);

class Progress {
 public:
  // log_every: steps between plain lines (0: every `line_seconds`).
  Progress(ProgressMode mode, int log_every, double line_seconds = 30, std::FILE* out = stdout);
  // After each step; `elapsed` = seconds since the epoch began, `steps_left`
  // = steps of the run after this one.
  void update(const ProgressState& state, double elapsed, int64_t steps_left);
  // Clears the live line before other output (epoch and eval lines).
  void clear();

 private:
  ProgressMode mode_;
  int log_every_;
  double line_seconds_;
  std::FILE* out_;
  double last_print_ = -1;  // `elapsed` of the last print in this epoch
  int64_t last_epoch_ = -1;
  bool live_shown_ = false;
};

}  // namespace sasrec
