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
// and of equal scores, never a sort. Ties, NaN and Inf follow one rule in
// every path (the CPU blocked count, the tensor-op path of CUDA, the sampled
// protocol): the expected rank under a random tie-break, a NaN candidate
// above the target, a non-finite target below every candidate (metrics.h).
// Each rank evaluates its own users; sums are reduced over ranks, so every
// rank returns the same global figures. The users (eval.max_users) and
// sampled negatives are chosen by hashes of the global user index: the
// figures do not depend on the rank count. With a sharded item table
// (item_shard.h) the rows a chunk needs are fetched from their owners, and
// the full protocol sends every rank's user vectors to every rank, which
// counts them against its own block; the counts add up to a whole table's.
#pragma once

#include <string>
#include <vector>

#include "sasrec/comm.h"
#include "sasrec/config.h"
#include "sasrec/dataset.h"
#include "sasrec/item_shard.h"
#include "sasrec/metrics.h"
#include "sasrec/model.h"

namespace sasrec {

struct EvalResult {
  std::string split;       // valid | test
  std::string protocol;    // full | sampled
  RankMetrics metrics;     // metrics.nonfinite_users(): users with a NaN or Inf score
  double seconds = 0;      // the evaluation of the split, every protocol together
  double users_per_s = 0;  // global users evaluated / seconds
};

class Evaluator {
 public:
  // `shard`: the model's item table is this rank's block of a sharded one; null: whole.
  Evaluator(const SplitData& data, const EvalConfig& config, uint64_t seed, Communicator& comm,
            ItemShard* shard = nullptr);

  // One result per protocol of the config, reduced over ranks.
  std::vector<EvalResult> evaluate(SASRec& model, const std::string& split);

  // Where the targets of this rank's evaluated cases stand, for one protocol (tests).
  std::vector<TargetRank> ranks(SASRec& model, const std::string& split, Protocol protocol);

 private:
  // Places of `cases` under each protocol of the config: [protocol][case].
  std::vector<std::vector<TargetRank>> chunk_ranks(SASRec& model, Holdout split, const std::vector<EvalCase>& cases);
  // Places of every evaluated case: [protocol][case].
  std::vector<std::vector<TargetRank>> all_ranks(SASRec& model, Holdout split);
  // The sampled protocol's negatives of `cases` [n, eval.sampled_negatives], by hashes of the global user.
  torch::Tensor sampled_negatives(Holdout split, const std::vector<EvalCase>& cases,
                                  const std::vector<int64_t>& global_ids) const;
  // The full protocol against the table `w` by the eval.scorer kernel for `device`.
  std::vector<TargetRank> full_ranks(const torch::Tensor& h, const torch::Tensor& w, const torch::Tensor& target_score,
                                     const std::vector<std::vector<int32_t>>& masked, torch::Device device) const;
  // The full protocol on a sharded table: every rank's cases against every block, counts summed.
  std::vector<TargetRank> sharded_full_ranks(SASRec& model, const torch::Tensor& h, const torch::Tensor& target_score,
                                             const std::vector<std::vector<int32_t>>& masked);

  const SplitData& data_;
  EvalConfig config_;
  uint64_t seed_;
  Communicator& comm_;
  ItemShard* shard_;
  std::vector<EvalCase> cases_[2];  // the cases evaluated, [Holdout]
};

// The blocked CPU kernel's score block: users x items scored by one BLAS call
// and counted while in cache, 256 KiB a thread (the memory plan counts it).
inline constexpr int64_t kScoreBlockRows = 64, kScoreBlockCols = 1024;

// The two full-catalog kernels, public so that tests run both on one input.
// h [n,D] user vectors, w [I+1,D] the item table, target_score [n] each
// user's score of its target; masked[r]: the sorted, unique items not ranked
// for user r (the padding item 0, the history, the target itself, which is
// compared, never counted against itself). Same rule, same result:
//   blocked:    CPU float32 only; 64 x 1024 scores at a time by BLAS, counted
//               while in cache (the CPU path)
//   tensor ops: any device; chunks of at most memory_mb MiB of scores (the CUDA path)
std::vector<TargetRank> full_ranks_blocked(const torch::Tensor& h, const torch::Tensor& w,
                                           const torch::Tensor& target_score,
                                           const std::vector<std::vector<int32_t>>& masked);
std::vector<TargetRank> full_ranks_tensor_ops(const torch::Tensor& h, const torch::Tensor& w,
                                              const torch::Tensor& target_score,
                                              const std::vector<std::vector<int32_t>>& masked, int64_t memory_mb);
// The sampled protocol: each target_score [n] against its row of neg_score [n,k].
std::vector<TargetRank> sampled_ranks(const torch::Tensor& target_score, const torch::Tensor& neg_score);

}  // namespace sasrec
