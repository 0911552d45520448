// trainer.h: one rank's training run, data-parallel over a Communicator.
//
// A run reads as its phases (Trainer::fit): (1) start: the checkpoint folder
// (lock, resume, the refusal of another run's files), the metrics file and
// the start event; (2) the sampler and the progress line; (3) each epoch:
// its steps, then the epoch's loss line, then evaluation, early stopping
// and the checkpoint; (4) the summary. SIGTERM / SIGINT (step_guard.h) end
// the run after the step in flight with a checkpoint that resumes exactly.
//
// A step reads as its phases too (train_step.cpp): (1) sample (the sampler
// threads built, packed and staged the batch ahead); (2) forward: the
// features of the packed tokens and the loss sum (the Objective; sampled
// losses read the item table through a copy of the rows the batch touches,
// item_rows.h); (3) backward, scaled by the GLOBAL target count; (4) reduce:
// every gradient summed over ranks in one call (the Reducer); (5) the
// non-finite check (train.on_nonfinite), the same on every rank; (6) the
// Adam step (the item table dense or lazy), then M[0] re-zeroed. Each phase
// is timed and the times written with each epoch. With runtime.cuda_graphs
// (2) and (3) are one replayed graph (step_graph.h); with model.kernels
// fused (auto on a CPU float32 run) one call of the explicit step, which
// sets every gradient without autograd (fused_model.h). At world size 1 the
// item table's gradient stays rows, which Adam steps without a dense copy.
// With train.item_table sharded each rank holds one block of the item table
// (item_shard.h): (2) fetches the batch's rows from their owners, (4)
// returns their gradients to the owners, (6) steps only this rank's rows;
// evaluation scores each block on its owner, and every rank writes its
// block of each checkpoint (checkpoint.h).
//
// Mode::Evaluate builds only the model and the evaluator: no optimizer, no
// reducer, and the memory plan of evaluation, so that a checkpoint can be
// evaluated wherever it fits. Rank 0's initial parameters are broadcast, so
// every replica starts identical. Only rank 0 writes files.
#pragma once

#include <torch/torch.h>

#include <memory>
#include <string>
#include <vector>

#include "sasrec/checkpoint.h"
#include "sasrec/comm.h"
#include "sasrec/config.h"
#include "sasrec/dataset.h"
#include "sasrec/evaluator.h"
#include "sasrec/fused_model.h"
#include "sasrec/memory_plan.h"
#include "sasrec/metrics.h"
#include "sasrec/model.h"
#include "sasrec/objective.h"
#include "sasrec/optimizer.h"
#include "sasrec/progress.h"
#include "sasrec/reducer.h"
#include "sasrec/sampler.h"
#include "sasrec/step_graph.h"
#include "sasrec/step_guard.h"
#include "sasrec/train_hooks.h"

namespace sasrec {

struct TrainSummary {
  int64_t epochs = 0;  // epochs finished (including those of a resumed run)
  int64_t steps = 0;
  double seconds = 0;
  int64_t best_epoch = 0;              // by valid NDCG@10 (first protocol), 0 if never evaluated
  std::vector<EvalResult> best_valid;  // at best_epoch
  std::vector<EvalResult> best_test;   // at best_epoch
  std::vector<EvalResult> last;        // the last evaluation (valid then test)
  int interrupted_by = 0;              // SIGTERM / SIGINT that stopped the run after a checkpoint; 0: ran to the end
  std::string checkpoint;              // the last checkpoint written, "" if none
  int64_t skipped_steps = 0;           // steps skipped for non-finite gradients (train.on_nonfinite: skip)
  bool early_stopped = false;          // eval.patience ended the run before train.epochs
  std::string run_id;                  // the run's id, recorded in its checkpoints (resumed: the checkpoint's)
};

class Trainer {
 public:
  enum class Mode { Train, Evaluate };
  // `hooks`: the test seam (train_hooks.h); null in a normal run. The
  // process's thread count and initial seed are main()'s (device.h).
  Trainer(Config config, Communicator& comm, Mode mode = Mode::Train, TrainHooks* hooks = nullptr);

  // Trains for train.epochs (or until train.max_steps), resuming when the
  // config says so; evaluates and checkpoints as configured (Mode::Train).
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
  const MemoryPlan& memory_plan() const { return memory_plan_; }
  bool has_optimizer() const { return optimizer_ != nullptr; }
  // The popularity proposal's training interactions per item over all ranks, [I+1]; empty: uniform.
  const std::vector<int64_t>& proposal_counts() const { return item_counts_; }
  // The item table's gradient of the last step, dense [I+1,d]: M's grad() where it is dense, else
  // made from the rows it came as (the sampled losses at world size 1, lazy_adam); undefined before any step.
  torch::Tensor item_gradient() const;

 private:
  // What fit's phases hand each other.
  struct Run;
  struct Epoch;
  // One step's outcome.
  struct StepOutcome {
    double loss_sum = 0;          // the batch's loss SUM (not mean)
    bool skipped = false;         // non-finite, train.on_nonfinite: skip
    bool stop_requested = false;  // some rank got SIGTERM/SIGINT (every rank agrees)
  };
  // Forward and backward of one step: the loss sum and, for the sampled
  // losses, the item rows whose gradient backward filled.
  struct Pass {
    double loss_sum = 0;
    ItemRows rows;
  };
  // Seconds in each step phase, this epoch.
  struct PhaseTimes {
    double sample = 0, forward = 0, backward = 0, reduce = 0, step = 0;
  };

  // ---- setting up (trainer.cpp) ----
  void build_training();  // the objective, optimizer, reducer and CUDA graphs
  void broadcast_parameters();
  SamplerOptions sampler_options() const;

  // ---- fit's phases (trainer.cpp) ----
  Run start_run();                            // 1
  std::vector<std::string> resume(Run& run);  // 1: checkpoint.resume loaded; the trajectory's differences
  Epoch run_epoch(Run& run, Sampler& sampler, Progress& progress, const StepGuard& guard, int64_t epoch);  // 3a
  TrainSummary interrupted(Run& run, const Epoch& e);                                                      // 3b
  void report_epoch(Run& run, const Epoch& e);                                                             // 3c
  void after_epoch(Run& run, int64_t epoch);                                                               // 3d
  TrainSummary finish(Run& run);                                                                           // 4
  void save_checkpoint(Run& run);
  bool checkpointing(const Run& run) const;  // whether this rank writes (a file of) the run's checkpoints
  void log_eval(int64_t epoch, const std::vector<EvalResult>& results);
  // runtime.check_replicas: every rank's parameter checksum must agree.
  void check_replicas(int64_t step);
  // What load_checkpoint must find: this run's store and its item map.
  CheckpointMatch checkpoint_match() const;
  // The files this run reads, which none of its outputs may replace.
  std::vector<RunInput> run_inputs(const std::string& resume) const;

  // ---- a step's phases (train_step.cpp) ----
  StepOutcome train_step(const Batch& batch, int64_t step, bool stop_requested);
  Pass forward_backward(const Batch& batch, int64_t step, int64_t global_targets);  // 2, 3
  // 5: what is not finite after the reduce ("" when all is), the same on every rank.
  std::string nonfinite(const ReduceOutcome& reduced, int64_t global_targets) const;
  void apply_update(int64_t step, const ReduceOutcome& reduced);  // 6

  Config config_;
  Communicator& comm_;
  Mode mode_;
  TrainHooks* hooks_;
  torch::Device device_;
  std::unique_ptr<SplitData> data_;
  SASRec model_{nullptr};
  std::unique_ptr<Evaluator> evaluator_;
  int64_t steps_per_epoch_ = 0;
  int64_t global_trainable_ = 0;
  std::unique_ptr<ItemShard> shard_;  // train.item_table sharded: this rank's block of the item table; null: whole
  MemoryPlan memory_plan_;            // made and checked in the constructor, written with the start event
  MemoryBudget memory_budget_;
  uint64_t item_map_ = 0;  // item_map_fingerprint of data.path, recorded in and checked against checkpoints

  // Mode::Train only.
  std::vector<int64_t> item_counts_;  // the popularity proposal's counts over all ranks [I+1]; empty: uniform
  std::unique_ptr<Objective> objective_;
  std::unique_ptr<FusedSASRec> fused_;  // model.kernels: the explicit step (fused_model.h); null: autograd
  std::unique_ptr<FusedAdam> optimizer_;
  std::unique_ptr<Reducer> reducer_;
  bool lazy_item_rows_ = false;  // train.item_optimizer lazy_adam: the item table steps by rows
  RowGradient last_item_rows_;   // the last step's item-table gradient when it came as rows
  // model_'s named parameters, listed once for the per-step loops over them (a listing
  // builds every name from its submodules' prefixes: ~0.5% of a Beauty step).
  torch::OrderedDict<std::string, torch::Tensor> params_;
  // runtime.cuda_graphs (step_graph.h): the captured steps, the token buckets, sequences per padded batch.
  std::unique_ptr<StepGraph> graph_;
  std::vector<int64_t> graph_buckets_;
  int64_t graph_batch_ = 0;
  // train.lr_schedule: the run's steps it spans (train.epochs, or
  // train.max_steps when fewer) and the rate of the last step taken.
  int64_t schedule_steps_ = 0;
  double lr_ = 0;
  PhaseTimes times_;
  MetricsWriter metrics_;
};

// A float64 checksum of every parameter (sum and a position-weighted sum).
std::vector<double> parameter_checksum(SASRec& model);

// Whether every element of `t` is finite: the per-step check of the gradients
// (train.on_nonfinite). On CPU float32 a single pass, ~0.1 ms for a step's
// gradients against ~2 ms and ~480 op calls for isfinite().all() per tensor.
bool all_finite(const torch::Tensor& t);

// The trainer's Adam over `model`'s parameters (train.lr, beta1, beta2):
// train.l2_emb as weight decay on the item and position tables, the
// gradient of the authors' l2_emb * (||M||^2 + ||P||^2) / 2; none elsewhere;
// train.weight_decay decoupled on the attention and FFN matrices.
std::unique_ptr<FusedAdam> make_optimizer(SASRec& model, const TrainConfig& train);

}  // namespace sasrec
