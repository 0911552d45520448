// evaluator.h: scoring the evaluation cases of the split, full-catalog and sampled.
//
//   the cases of valid and test come from the split (dataset.h): under
//   leave_one_out, valid = (train part -> valid item) and test = (train
//   part + valid item -> test item); under time, each held-out interaction
//   (or each user's first) from the whole history before it
//   protocol full:    rank the target against every item 1..I, the items of
//                     the input history excluded (the target's own score is
//                     compared, never counted against itself)
//   protocol sampled: against `sampled_negatives` items drawn uniformly from
//                     those not in the user's sequence (eval.sampled_exclude:
//                     sequence), or not in its training part only (train: the
//                     authors' code and the port, where the held-out items
//                     themselves can be drawn)
// Full scoring is chunked over cases (eval.batch_users) and items (so one
// score block stays under eval.memory_mb); the rank is a count of higher
// scores, never a sort. Each rank evaluates its own users; sums are reduced
// over ranks, so every rank returns the same global figures. The users
// (eval.max_users) and sampled negatives are chosen by hashes of the global
// user index: the figures do not depend on the rank count.
#pragma once

#include <string>
#include <vector>

#include "sasrec/comm.h"
#include "sasrec/config.h"
#include "sasrec/dataset.h"
#include "sasrec/metrics.h"
#include "sasrec/model.h"

namespace sasrec {

struct EvalResult {
  std::string split;     // valid | test
  std::string protocol;  // full | sampled
  RankMetrics metrics;
  double seconds = 0;     // the evaluation of the split, every protocol together
  double users_per_s = 0; // global users evaluated / seconds
};

class Evaluator {
 public:
  Evaluator(const SplitData& data, const EvalConfig& config, uint64_t seed, Communicator& comm);

  // One result per protocol of the config, reduced over ranks.
  std::vector<EvalResult> evaluate(SASRec& model, const std::string& split);

  // The 0-based ranks of this rank's evaluated cases for one protocol (tests).
  std::vector<int64_t> ranks(SASRec& model, const std::string& split, const std::string& protocol);

 private:
  // Ranks of `cases` under each protocol of the config: [protocol][case].
  std::vector<std::vector<int64_t>> chunk_ranks(SASRec& model, Holdout split, const std::vector<EvalCase>& cases);
  // Ranks of every evaluated case: [protocol][case].
  std::vector<std::vector<int64_t>> all_ranks(SASRec& model, Holdout split);

  const SplitData& data_;
  EvalConfig config_;
  uint64_t seed_;
  Communicator& comm_;
  std::vector<EvalCase> cases_[2];  // the cases evaluated, [Holdout]
};

}  // namespace sasrec
