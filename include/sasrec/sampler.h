// sampler.h: training batches built on their own threads, ahead of the model.
//
// An epoch is a seeded shuffle of this rank's trainable users cut into
// steps_per_epoch nearly equal batches (at most batch_size each), so each
// user comes once an epoch. With length buckets, users are first sorted by
// length within windows of a few batches and the batch order is shuffled. Batch b of epoch e is a pure function of
// (seed, rank, e, b) and the data: its negatives come from an RNG seeded with that tuple, so the same seed gives the
// same batches whatever the thread count. Worker w builds batches w, w+W, w+2W, ... into its own bounded queue; next()
// takes them back in order. Batches are trimmed to their longest input (never wider than maxlen) and left-padded with
// item 0.
//
// Negatives per target: bce draws one for each target position, neg [B,T];
// gbce draws k (train.negatives) for each, neg [B,T,k], as gSASRec does.
// Both are uniform over 1..I and never in the user's history
// (sample_negatives), 0 where the position is ignored, drawn row after row
// from the batch's RNG (positions in order, a position's k in a row).
//
// Shared negatives (sampled_softmax) are K items drawn with
// replacement from the proposal: uniform over 1..I, or (popularity) item i
// with q(i) = count(i) / sum(count), drawn in O(1) from a Walker alias table
// built once here; then the batch also carries log(K q(i)) of each, the
// log-Q correction of the sampled softmax (loss.h).
#pragma once

#include <torch/torch.h>

#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <memory>
#include <mutex>
#include <thread>
#include <vector>

#include "sasrec/dataset.h"
#include "sasrec/packing.h"

namespace sasrec {

struct Batch {
  int64_t epoch = 0;
  int64_t index = 0;           // batch within the epoch
  torch::Tensor seq;           // [B,T] int64: inputs, left-padded with 0
  torch::Tensor pos;           // [B,T] int64: next-item targets, 0 where ignored
  torch::Tensor neg;           // int64, 0 where ignored: [B,T] one negative per target (bce), [B,T,k] k per
                               // target (gbce: negatives_per_target); undefined otherwise
  torch::Tensor shared;        // [K]  int64: negatives shared by the batch (sampled_softmax); undefined otherwise
  torch::Tensor shared_log_q;  // [K] float: log(K q(shared_k)) under the popularity proposal; undefined otherwise
  torch::Tensor users;         // [B]  int64: global user indices
  int64_t targets = 0;         // number of non-ignored targets
  StepInputs inputs;           // the same, packed and staged (SamplerOptions::stage); else undefined
};

struct SamplerOptions {
  int64_t batch_size = 128;
  int64_t maxlen = 50;
  bool per_position_negatives = true;  // bce: neg [B,T]
  int64_t negatives_per_target = 0;    // gbce: k > 0 gives neg [B,T,k] (per_position_negatives must be off)
  int64_t shared_negatives = 0;        // sampled_softmax: K, 0 for none
  // Popularity proposal for the shared negatives: [I+1] weights (training
  // interactions per item, all ranks; item 0 weighs 0). Empty: uniform.
  std::vector<int64_t> proposal_counts;
  uint64_t seed = 42;
  int rank = 0;
  int threads = 1;
  int prefetch = 8;
  // Batches per epoch; 0: ceil(trainable users / batch_size). Data-parallel
  // runs pass the global figure, ceil(all ranks' users / (batch_size * world)),
  // so every rank takes the same number of steps.
  int64_t steps_per_epoch = 0;
  // Sort users by length within windows of this many batches (0 or 1: off),
  // then shuffle the batch order: less padding, same users per epoch.
  int64_t length_buckets = 0;
  // The workers also pack each batch and stage its tensors (packing.h), off
  // the training thread; with pin_memory the staging buffer is page-locked
  // (CUDA runs).
  bool stage = false;
  bool pin_memory = false;
};

// Steps in an epoch: every trainable user of every rank once, batch_size
// sequences per rank per step (at least one step). Data-parallel runs use
// the global count, so every rank takes the same number of steps.
int64_t steps_for_epoch(int64_t trainable_users, int64_t batch_size, int world_size);

// Fills `out` with `n` items drawn uniformly (with replacement) from the
// items of 1..num_items not in `history_sorted` (sorted ascending): by
// rejection while the history is under 90% of the catalog, else from the
// explicit complement. Only a history holding every item leaves nothing to
// draw from; then any item is drawn (training; the evaluator refuses such a
// user). Exposed for tests.
void sample_negatives(class Rng& rng, int64_t num_items, const std::vector<int32_t>& history_sorted, int64_t n,
                      int64_t* out);

// Walker's alias method (Vose's construction), in exact integer arithmetic:
// draw() returns i with probability weights[i] / sum(weights) exactly (up to
// the RNG), in O(1) with two RNG calls; zero weights are never drawn.
class AliasTable {
 public:
  explicit AliasTable(const std::vector<int64_t>& weights);
  int64_t draw(class Rng& rng) const;
  int64_t size() const { return static_cast<int64_t>(alias_.size()); }

 private:
  int64_t total_ = 0;               // sum of the weights
  std::vector<int64_t> threshold_;  // slot i keeps i when a draw below total_ is < threshold_[i] ...
  std::vector<int32_t> alias_;      // ... else it gives alias_[i]
};

// log(k * counts[i] / sum(counts)) for every i, float [I+1] (-inf where the
// count is 0): the log of item i's expected count among k draws from the
// popularity proposal. The sampler and the trainer both take it from here.
torch::Tensor log_expected_counts(const std::vector<int64_t>& counts, int64_t k);

class Sampler {
 public:
  Sampler(const SplitData& data, SamplerOptions options);
  ~Sampler();
  Sampler(const Sampler&) = delete;
  Sampler& operator=(const Sampler&) = delete;

  int64_t steps_per_epoch() const { return steps_; }
  // Starts building epoch `epoch` from batch `first` on (stopping any epoch
  // in flight); first > 0 resumes an interrupted epoch exactly.
  void start_epoch(int64_t epoch, int64_t first = 0);
  // The next batch of the current epoch; blocks until it is built.
  Batch next();

  // Builds batch `index` of `epoch` on the calling thread (what the workers run).
  Batch build(int64_t epoch, int64_t index) const;

 private:
  struct Queue {
    std::mutex mu;
    std::condition_variable cv;
    std::deque<Batch> items;
  };
  void stop();
  void work(int worker);

  const SplitData& data_;
  SamplerOptions opt_;
  std::unique_ptr<AliasTable> proposal_;  // popularity proposal; null: uniform
  torch::Tensor log_kq_;                  // [I+1] float log(K q(i)), popularity only
  int64_t steps_ = 0;
  int64_t epoch_ = -1;
  int64_t next_index_ = 0;
  int64_t first_ = 0;           // the epoch's first batch (read by the workers)
  std::vector<int64_t> order_;  // this epoch's user order (local indices)
  std::vector<int64_t> slot_;   // batch index -> run of order_ it takes
  std::vector<std::unique_ptr<Queue>> queues_;
  std::vector<std::thread> workers_;
  std::atomic<bool> stopping_{false};
};

}  // namespace sasrec
