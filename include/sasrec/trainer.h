// trainer.h: one rank's training loop, data-parallel over a Communicator.
//
// A step reads as its phases: (1) sample: the next batch from the sampler
// threads; (2) forward: features and the loss sum (the sampled losses read
// the item table through a copy of the rows the batch touches, item_rows.h);
// (3) backward, scaled by the GLOBAL target count; (4) reduce: every
// gradient in one flat bucket summed over ranks, the item rows' gradient
// either in it (dense) or gathered (sparse), train.exchange; (5) step: Adam
// (the item table dense or lazy, train.item_optimizer), then M[0] re-zeroed. Phase times are
// kept and written with each epoch. Rank 0's initial parameters are
// broadcast, so every replica starts identical. Evaluation, checkpoints and
// the metrics file follow the config; only rank 0 writes files.
#pragma once

#include <torch/torch.h>

#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "sasrec/atomic_file.h"
#include "sasrec/checkpoint.h"
#include "sasrec/comm.h"
#include "sasrec/config.h"
#include "sasrec/dataset.h"
#include "sasrec/evaluator.h"
#include "sasrec/memory_plan.h"
#include "sasrec/fault.h"
#include "sasrec/item_rows.h"
#include "sasrec/metrics.h"
#include "sasrec/model.h"
#include "sasrec/optimizer.h"
#include "sasrec/sampler.h"
#include "sasrec/step_graph.h"

namespace sasrec {

struct TrainSummary {
  int64_t epochs = 0;  // epochs finished (including those of a resumed run)
  int64_t steps = 0;
  double seconds = 0;
  int64_t best_epoch = 0;               // by valid NDCG@10 (first protocol), 0 if never evaluated
  std::vector<EvalResult> best_valid;   // at best_epoch
  std::vector<EvalResult> best_test;    // at best_epoch
  std::vector<EvalResult> last;         // the last evaluation (valid then test)
  int interrupted_by = 0;               // SIGTERM / SIGINT that stopped the run after a checkpoint; 0: ran to the end
  std::string checkpoint;               // the last checkpoint written, "" if none
  int64_t skipped_steps = 0;            // steps skipped for non-finite gradients (train.on_nonfinite: skip)
  bool early_stopped = false;           // eval.patience ended the run before train.epochs
  std::string run_id;                   // the run's id, recorded in its checkpoints (resumed: the checkpoint's)
};

class Trainer {
 public:
  Trainer(Config config, Communicator& comm);

  // Trains for train.epochs (or until train.max_steps), resuming when the
  // config says so; evaluates and checkpoints as configured. A SIGTERM or
  // SIGINT (step_guard.h) ends the run after the step in flight, with a
  // checkpoint that resumes exactly (summary.interrupted_by says which).
  // Rank 0 owns checkpoint.dir while it runs (a lock file); a fresh run in a
  // folder holding another run's checkpoints is refused (checkpoint.overwrite
  // moves them aside). An epoch in which every step was skipped for
  // non-finite values (train.on_nonfinite: skip) ends the run as a failure.
  TrainSummary fit();
  // Loads a checkpoint's parameters (no optimizer state) for evaluation;
  // refuses one made for another model function or item map (checkpoint.h).
  void load_model(const std::string& checkpoint);
  std::vector<EvalResult> evaluate(const std::string& split);

  SASRec& model() { return model_; }
  const SplitData& data() const { return *data_; }
  int64_t steps_per_epoch() const { return steps_per_epoch_; }
  torch::Device device() const { return device_; }
  // The popularity proposal's training interactions per item over all ranks, [I+1]; empty: uniform.
  const std::vector<int64_t>& proposal_counts() const { return item_counts_; }

 private:
  struct StepOutcome {
    double loss_sum = 0;         // the batch's loss SUM (not mean)
    bool skipped = false;        // non-finite, train.on_nonfinite: skip
    bool stop_requested = false; // some rank got SIGTERM/SIGINT (every rank agrees)
  };
  // One optimizer step on `batch`, global step number `step`.
  StepOutcome train_step(const Batch& batch, int64_t step, bool stop_requested);
  // Sums gradients over ranks in one flat bucket that also carries two
  // flags; returns them summed: {ranks with a non-finite loss, ranks asked to stop}.
  // `rows`: the item rows of this rank's step (sampled losses; else empty),
  // exchanged sparse or dense; leaves their sum in item_grad_ (lazy_adam) or
  // in M's gradient (adam).
  std::pair<double, double> reduce_gradients(bool loss_bad, bool stop_requested, const ItemRows& rows);
  // Whether this step sends the item rows sparse: train.exchange, and for
  // auto the bytes of both ways (`total_rows` summed over ranks).
  bool exchange_sparse(int64_t total_rows) const;
  // M's dense gradient holding `g`'s rows (zero elsewhere).
  void set_dense_item_grad(const RowGradient& g);
  // The first parameter whose gradient holds NaN/Inf, or "".
  std::string nonfinite_gradient() const;
  void broadcast_parameters();
  // runtime.check_replicas: every rank's parameter checksum must agree.
  void check_replicas(int64_t step);
  // SASREC_INJECT_FAULT's step kinds (throw, exit, kill, sigterm) after step `step`.
  void inject_step_fault(int64_t step);
  void log_eval(int64_t epoch, const std::vector<EvalResult>& results);
  std::string resume_path() const;
  // What load_checkpoint must find: this run's store and its item map.
  CheckpointMatch checkpoint_match() const;
  // The files this run reads, which none of its outputs may replace.
  std::vector<RunInput> run_inputs(const std::string& resume) const;
  // Rank 0: refuses (or, checkpoint.overwrite, moves aside) the folder's
  // checkpoints of runs other than `run_id` ("" for a fresh run).
  void claim_checkpoint_dir(const CheckpointDir& dir, const std::string& run_id, bool resumed);
  // Config keys that change the trajectory and differ from the checkpoint's ("key: here vs there").
  std::vector<std::string> trajectory_differences(const TrainState& loaded) const;

  Config config_;
  Communicator& comm_;
  torch::Device device_;
  std::unique_ptr<SplitData> data_;
  SASRec model_{nullptr};
  std::unique_ptr<FusedAdam> optimizer_;
  std::unique_ptr<Evaluator> evaluator_;
  MetricsWriter metrics_;
  int64_t steps_per_epoch_ = 0;
  int64_t global_trainable_ = 0;
  // Sampled losses: the popularity proposal's counts over all ranks [I+1]
  // (empty: uniform) and log(K q(i)) by item id on device_, the sampler's table (undefined:
  // uniform); gbce's beta (1 otherwise).
  std::vector<int64_t> item_counts_;
  torch::Tensor log_kq_;
  double gbce_beta_ = 1;
  // train.lr_schedule: the run's steps it spans (train.epochs, or train.max_steps
  // when fewer) and the rate of the last step taken (reported per epoch).
  int64_t schedule_steps_ = 0;
  double lr_ = 0;
  // Phase timers of the current epoch, seconds.
  double t_sample_ = 0, t_forward_ = 0, t_backward_ = 0, t_reduce_ = 0, t_step_ = 0;
  // The item table's gradient arrives as rows (bce, sampled_softmax, gbce: every
  // use of M is a gather) rather than dense (ce); lazy_adam steps only those rows.
  bool item_rows_ = false;
  bool lazy_item_adam_ = false;
  RowGradient item_grad_;       // this step's summed item rows (lazy_adam)
  int64_t dense_bucket_bytes_ = 0;  // every gradient + the two flags
  // Exchange figures of the current epoch: steps each way, wire bytes of one
  // rank (ring algorithms, item_rows.h), item rows summed over ranks.
  int64_t sparse_steps_ = 0, dense_steps_ = 0, wire_bytes_ = 0, exchanged_rows_ = 0;
  // runtime.cuda_graphs (step_graph.h): the captured steps, the token buckets, sequences per padded batch.
  std::unique_ptr<StepGraph> graph_;
  std::vector<int64_t> graph_buckets_;
  int64_t graph_batch_ = 0;
  MemoryPlan memory_plan_;      // made and checked in the constructor, written with the start event
  MemoryBudget memory_budget_;
  FaultPlan fault_;             // SASREC_INJECT_FAULT (tests of failure handling)
  uint64_t item_map_ = 0;       // item_map_fingerprint of data.path, recorded in and checked against checkpoints
};

// A float64 checksum of every parameter (sum and a position-weighted sum).
std::vector<double> parameter_checksum(SASRec& model);

// Whether every element of `t` is finite: the per-step check of the gradients
// (train.on_nonfinite). On CPU float32 a single pass, ~0.1 ms for a step's
// gradients against ~2 ms and ~480 op calls for isfinite().all() per tensor.
bool all_finite(const torch::Tensor& t);

// The trainer's Adam over `model`'s parameters (train.lr, beta1, beta2):
// train.l2_emb as weight decay on the item and position tables, the
// gradient of the authors' l2_emb * (||M||^2 + ||P||^2) / 2; none elsewhere.
std::unique_ptr<FusedAdam> make_optimizer(SASRec& model, const TrainConfig& train);

// The device a config asks for ("auto": CUDA when Torch sees one).
torch::Device resolve_device(const std::string& setting, int local_rank);

}  // namespace sasrec
