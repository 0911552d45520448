// trainer.cpp: setting a run up and fit's phases (see trainer.h); one step's
// phases are in train_step.cpp.
#include "sasrec/trainer.h"

#include <sys/stat.h>

#include <chrono>
#include <csignal>
#include <cmath>
#include <filesystem>
#include <limits>

#include <torch/csrc/autograd/profiler_legacy.h>

#include "sasrec/blas_kernels.h"
#include "sasrec/block_checkpoint.h"
#include "sasrec/device.h"
#include "sasrec/error.h"
#include "sasrec/log.h"
#include "sasrec/rng.h"
#include "sasrec/run_folder.h"
#include "sasrec/train_data.h"

namespace sasrec {
namespace {

using Clock = std::chrono::steady_clock;
double since(Clock::time_point t) { return std::chrono::duration<double>(Clock::now() - t).count(); }

// output.profile: steps 11..60 of the run, op by op.
constexpr int64_t kProfileFirst = 11, kProfileLast = 60;

nlohmann::json eval_event(int64_t epoch, const EvalResult& r) {
  nlohmann::json j{{"event", "eval"},
                   {"epoch", epoch},
                   {"split", r.split},
                   {"protocol", r.protocol},
                   {"users", r.metrics.count()},
                   {"nonfinite_users", r.metrics.nonfinite_users()},
                   {"seconds", r.seconds},
                   {"users_per_s", r.users_per_s}};
  for (const auto& [k, v] : r.metrics.means()) j[k] = v;  // none when no user was evaluated
  return j;
}

// NDCG@10 of the first protocol, the model-selection figure (MRR where 10
// is not among eval.ks); -1 when no user was evaluated (no figure at all).
double selection_score(const std::vector<EvalResult>& valid) {
  if (valid.empty() || valid.front().metrics.count() == 0) return -1;
  auto m = valid.front().metrics.means();
  auto it = m.find("ndcg@10");
  return it != m.end() ? it->second : m.at("mrr");
}

// output.profile: libtorch's Chrome trace of some steps, recorded into an
// AtomicOutput's temporary and renamed into place when the recording ends,
// so the file is there, whole, or not at all.
class ProfileTrace {
 public:
  ProfileTrace(const std::string& path, const std::vector<RunInput>& inputs)
      : out_(path, "output.profile", inputs),
        record_(std::make_unique<torch::autograd::profiler::RecordProfile>(out_.temp_path())) {}
  // Ends the recording, writes the file; returns the line to log. A failure
  // here costs the profile, not the run.
  std::string finish(int64_t first, int64_t last) {
    record_.reset();  // libtorch writes the trace now
    struct stat st {};
    if (::stat(out_.temp_path().c_str(), &st) != 0 || st.st_size == 0) {
      out_.discard();
      return "output.profile: libtorch wrote no trace, so " + out_.path() + " was not written";
    }
    try {
      out_.commit();
    } catch (const Error& e) {
      return std::string("output.profile: ") + e.what() + "; training goes on without it";
    }
    return detail::cat("wrote the profile of steps ", first, "-", last, " to ", out_.path());
  }

 private:
  AtomicOutput out_;  // declared first: destroyed after the recording, so it removes what that wrote
  std::unique_ptr<torch::autograd::profiler::RecordProfile> record_;
};

nlohmann::json best_figures(const std::vector<EvalResult>& results, const std::string& prefix, nlohmann::json into) {
  for (const auto& r : results) {
    auto m = r.metrics.means();
    into[prefix + r.protocol] = {{"hr@10", m["hr@10"]}, {"ndcg@10", m["ndcg@10"]}};
  }
  return into;
}

}  // namespace

// ---- what fit's phases hand each other ---------------------------------------------

struct Trainer::Run {
  TrainState state;
  TrainSummary summary;
  std::string resumed_from;                    // "" for a fresh run
  std::unique_ptr<FolderLock> lock;            // rank 0, with checkpoint.dir
  std::unique_ptr<CheckpointDir> checkpoints;  // rank 0, with checkpoint.dir
  std::vector<RunInput> profile_inputs;        // what output.profile must not replace
  std::unique_ptr<ProfileTrace> profile;
  Clock::time_point start = Clock::now();
  int64_t run_steps = 0;  // the run's last step (train.epochs, or train.max_steps)
  double best_score = -1;
  int evals_without_gain = 0;  // eval.patience
  bool stop = false;           // train.max_steps reached, or early stopping
};

struct Trainer::Epoch {
  int64_t epoch = 0;
  int64_t steps = 0, taken = 0;        // steps run; of them not skipped (the same on every rank)
  int64_t targets = 0, sequences = 0;  // this rank's
  double loss_sum = 0;                 // this rank's, over the steps taken
  double seconds = 0;
  int interrupted_by = 0;  // SIGTERM / SIGINT, once every rank knows of it
};

// ---- setting up --------------------------------------------------------------------------

Trainer::Trainer(Config config, Communicator& comm, Mode mode, TrainHooks* hooks)
    : config_(std::move(config)),
      comm_(comm),
      mode_(mode),
      hooks_(hooks),
      device_(resolve_device(config_.runtime.device, comm.local_rank())) {
  // 1. The split of this rank's shard, and what it can train on.
  data_ = load_split(config_.data, comm_);
  global_trainable_ = comm_.allreduce_sum(static_cast<int64_t>(data_->trainable_users().size()));
  if (global_trainable_ == 0 && mode_ == Mode::Train)
    SASREC_FAIL(Input, config_.data.path, ": no user has 2 or more training interactions",
                config_.data.split == SplitKind::Time ? " before the cutoff (data.valid_from)" : "",
                "; nothing to train on");
  steps_per_epoch_ = steps_for_epoch(global_trainable_, config_.train.batch_size, comm_.world_size());
  check_data_for_config(config_, *data_, comm_);
  item_map_ = read_item_map_fingerprint(config_.data.path);

  // 2. Before the model exists: a config that cannot fit stops here, on every rank alike.
  const MemoryUse use = mode_ == Mode::Train ? MemoryUse::Training : MemoryUse::Evaluation;
  std::tie(memory_plan_, memory_budget_) = plan_rank_memory(config_, *data_, comm_, device_, use);
  for (const auto& line : format_memory_plan(memory_plan_, memory_budget_)) log_line(comm_.is_root(), line);
  check_memory_plan(memory_plan_, memory_budget_);

  // 3. The model, identical on every rank; what training needs; the evaluator.
  {
    const TorchSeedScope seed(config_.train.seed);  // initial parameters: rank 0's are broadcast below
    SASRecOptions options = SASRecOptions::from(config_, data_->num_items(), data_->num_users_total());
    if (config_.train.item_table == ItemTable::Sharded) {
      // This rank's block of M; its rows are drawn as a whole table's would be (init_item_rows).
      shard_ = std::make_unique<ItemShard>(comm_, data_->num_items() + 1, config_.model.hidden, device_);
      options.item_begin = shard_->begin(), options.item_rows = shard_->size();
    }
    model_ = SASRec(options);
  }
  model_->to(device_);
  broadcast_parameters();
  if (mode_ == Mode::Train) build_training();
  evaluator_ = std::make_unique<Evaluator>(*data_, config_.eval, config_.train.seed, comm_, shard_.get());
}

void Trainer::build_training() {
  // The popularity proposal counts every rank's training interactions (each rank holds a shard of the users).
  if (config_.train.loss == LossKind::SampledSoftmax && config_.train.proposal == Proposal::Popularity) {
    std::vector<int64_t> counts = data_->train_item_counts();  // [I+1]
    auto all = torch::from_blob(counts.data(), {static_cast<int64_t>(counts.size())}, torch::kInt64).clone();
    comm_.allreduce_sum(all);
    item_counts_.assign(all.data_ptr<int64_t>(), all.data_ptr<int64_t>() + all.numel());
  }
  objective_ = Objective::make(config_.train, data_->num_items(), item_counts_, device_);
  optimizer_ = make_optimizer(model_, config_.train);
  params_ = model_->named_parameters();
  schedule_steps_ = config_.train.epochs * steps_per_epoch_;
  if (config_.train.max_steps > 0) schedule_steps_ = std::min(schedule_steps_, config_.train.max_steps);
  lr_ = config_.train.lr;
  // runtime.cuda_graphs: the step's forward and backward captured per token
  // bucket; the item table is then read whole (step_graph.h).
  if (config_.runtime.cuda_graphs) {
    if (!device_.is_cuda())
      SASREC_FAIL(Config, "runtime.cuda_graphs is true but this run is on ", device_.str(),
                  ": CUDA graphs need a CUDA device; set runtime.cuda_graphs: false");
    graph_buckets_ = token_buckets(static_cast<int64_t>(config_.train.batch_size) * config_.model.maxlen);
    graph_batch_ = padded_batch(graph_buckets_, config_.train.batch_size, config_.model.maxlen);
    graph_ = std::make_unique<StepGraph>(model_->parameters(), [this](const StepInputs& in, const torch::Tensor& w) {
      auto features = model_->forward_packed(in.packing, in.users);
      return objective_->loss_sum(features, model_->item_weight(), in, objective_->terms(in), w);
    });
  }
  const bool item_rows = objective_->gathers_item_rows() && !graph_;
  lazy_item_rows_ = item_rows && config_.train.item_optimizer == ItemOptimizer::LazyAdam;  // validate(): never with ce
  reducer_ = std::make_unique<Reducer>(comm_, model_->parameters(), model_->item_weight(), config_.train.exchange,
                                       item_rows, lazy_item_rows_, shard_.get());
  // model.kernels: the explicit fused step where it runs (fused_model.h), else the module and autograd.
  const std::string no_fused = fused_unsupported(config_, device_);
  if (config_.model.kernels == Kernels::Fused && !no_fused.empty())
    SASREC_FAIL(Config, "model.kernels is fused, but ", no_fused, "; set model.kernels: auto or autograd");
  if (config_.model.kernels != Kernels::Autograd && no_fused.empty())
    fused_ = std::make_unique<FusedSASRec>(model_, objective_->kind());
  else if (config_.model.kernels == Kernels::Auto)
    log_line(comm_.is_root(), "model.kernels auto: the autograd step, as " + no_fused);
}

void Trainer::broadcast_parameters() {
  if (comm_.world_size() == 1) return;
  torch::NoGradGuard no_grad;
  for (auto& p : model_->parameters()) {
    if (shard_ && p.is_same(model_->item_weight())) continue;  // each rank's own block
    auto t = p.detach().contiguous();
    comm_.broadcast(t, 0);
    p.copy_(t);
  }
}

SamplerOptions Trainer::sampler_options() const {
  SamplerOptions so;
  so.batch_size = config_.train.batch_size;
  so.maxlen = config_.model.maxlen;
  objective_->configure(so);  // the loss's negatives
  so.seed = config_.train.seed;
  so.rank = comm_.rank();
  so.threads = config_.data.sampler_threads;
  so.prefetch = config_.data.prefetch;
  so.steps_per_epoch = steps_per_epoch_;
  so.length_buckets = config_.data.length_buckets;
  so.stage = true;  // packing and staging on the sampler threads
  so.pin_memory = device_.is_cuda() && config_.runtime.pin_memory;
  return so;
}

std::unique_ptr<FusedAdam> make_optimizer(SASRec& model, const TrainConfig& train) {
  // The authors' penalty l2_emb * (||M||^2 + ||P||^2) / 2 (TF's l2_regularizer on
  // both tables) has the gradient l2_emb * W: Adam's weight decay l2_emb on M and P.
  std::vector<torch::Tensor> tables{model->item_weight(), model->position_weight()}, rest;
  for (auto& p : model->parameters())
    if (!p.is_same(model->item_weight()) && !p.is_same(model->position_weight())) rest.push_back(p);
  auto options = [&](double decay) {
    return std::make_unique<torch::optim::AdamOptions>(
        torch::optim::AdamOptions(train.lr).betas({train.beta1, train.beta2}).weight_decay(decay));
  };
  std::vector<torch::optim::OptimizerParamGroup> groups;
  groups.emplace_back(tables, options(train.l2_emb));
  groups.emplace_back(rest, options(0));
  auto adam = std::make_unique<FusedAdam>(groups, torch::optim::AdamOptions(train.lr));
  // Decoupled weight decay on the dense matrices (attention, FFN), not on
  // biases, LayerNorm or the embedding tables (item, position, user).
  if (train.weight_decay > 0) {
    std::vector<torch::Tensor> dense;
    for (const auto& p : model->named_parameters())
      if (p.value().dim() == 2 && p.key() != "item.weight" && p.key() != "position.weight" && p.key() != "user.weight")
        dense.push_back(p.value());
    adam->set_decoupled_weight_decay(dense, train.weight_decay);
  }
  return adam;
}

// ---- fit ---------------------------------------------------------------------------------

TrainSummary Trainer::fit() {
  SASREC_CHECK(mode_ == Mode::Train, "fit() of a trainer built for evaluation");
  const StepGuard guard;  // SIGTERM / SIGINT: finish the step, checkpoint, return
  // 1. Start: the checkpoint folder, the resume, the metrics file, the start event.
  Run run = start_run();
  // 2. The sampler threads and rank 0's live line or plain lines (progress.h).
  Sampler sampler(*data_, sampler_options());
  // output.progress auto is resolved by main(), which knows whether stdout is a terminal; here auto means lines.
  Progress progress(
      comm_.is_root() ? resolve_progress_mode(config_.output.progress, /*stdout_is_tty=*/false) : ProgressMode::Off,
      config_.output.log_every);
  // 3. The epochs: steps, the loss line, evaluation, early stopping, checkpoints.
  for (int64_t epoch = run.state.epoch + 1; epoch <= config_.train.epochs && !run.stop; ++epoch) {
    const Epoch e = run_epoch(run, sampler, progress, guard, epoch);
    progress.clear();
    if (e.interrupted_by) return interrupted(run, e);
    report_epoch(run, e);
    after_epoch(run, epoch);
  }
  // 4. The summary.
  return finish(run);
}

// Loads run.resumed_from (each rank its block, when sharded) into the model
// and optimizer; returns how the resumed run's path differs from an
// uninterrupted one's (trajectory_differences).
std::vector<std::string> Trainer::resume(Run& run) {
  if (run.resumed_from.empty()) return {};
  const bool root = comm_.is_root();
  const TrainState loaded =
      shard_ ? load_block_checkpoint(run.resumed_from, model_, optimizer_.get(), comm_, checkpoint_match())
             : load_checkpoint(run.resumed_from, model_, optimizer_.get(), checkpoint_match());
  run.state.epoch = loaded.epoch, run.state.step = loaded.step, run.state.batch = loaded.batch;
  run.state.dropout_calls = loaded.dropout_calls, run.state.run_id = loaded.run_id;
  SASREC_CHECK(run.state.batch < steps_per_epoch_, run.resumed_from, ": resumes at batch ", run.state.batch,
               " of an epoch of ", steps_per_epoch_,
               " steps; it was written with another train.batch_size or rank count");
  log_line(root, detail::cat(
                     "resumed from ", run.resumed_from, " after epoch ", run.state.epoch, ", step ", run.state.step,
                     run.state.batch ? detail::cat(" (batch ", run.state.batch, " of epoch ", run.state.epoch + 1, ")")
                                     : std::string()));
  const std::vector<std::string> differences = trajectory_differences(config_, comm_.world_size(), loaded);
  for (const auto& d : differences)
    log_line(root, "resume: " + d + "; the run goes on along another path than an uninterrupted one would");
  return differences;
}

Trainer::Run Trainer::start_run() {
  const bool root = comm_.is_root();
  Run run;
  run.state.config_yaml = to_yaml(config_);
  // Rank 0 owns checkpoint.dir for the whole run, before anything reads it.
  if (!config_.checkpoint.dir.empty() && root) {
    run.checkpoints = std::make_unique<CheckpointDir>(config_.checkpoint.dir, config_.checkpoint.keep);
    run.lock = std::make_unique<FolderLock>(config_.checkpoint.dir, "checkpoint.dir");
    if (run.lock->previous_pid())
      log_line(root, detail::cat("checkpoint.dir: took over the lock of pid ", run.lock->previous_pid(),
                                 ", which is no longer running"));
    if (const int stale = run.checkpoints->remove_stale_temporaries())
      log_line(root, detail::cat("removed ", stale, " unfinished checkpoint file(s) of a killed run from ",
                                 config_.checkpoint.dir));
  }
  run.resumed_from = resume_checkpoint(config_.checkpoint, root);
  const std::vector<std::string> differences = resume(run);
  const bool resumed = !run.resumed_from.empty();
  if (run.checkpoints) claim_checkpoint_dir(*run.checkpoints, config_, run.state.run_id, resumed);
  if (run.state.run_id.empty()) run.state.run_id = new_run_id();  // fresh, or resumed from a file without one
  if (shard_) run.state.run_id = comm_.broadcast_string(run.state.run_id);  // every block names rank 0's run
  run.summary.run_id = run.state.run_id;
  run.state.config_hash = config_hash(config_);
  run.state.world_size = comm_.world_size();
  run.state.item_map = item_map_;
  run.state.data_path = config_.data.path;

  const std::vector<RunInput> inputs = run_inputs(run.resumed_from);
  if (root) {
    metrics_ = MetricsWriter(config_.output.metrics, /*append=*/resumed, inputs);
    if (!metrics_.moved_aside().empty())
      log_line(root, detail::cat("output.metrics: ", config_.output.metrics, " held another run's events; moved to ",
                                 metrics_.moved_aside()));
  }
  // output.profile: checked now, written at step kProfileLast (or the run's end).
  run.profile_inputs = inputs;
  run.profile_inputs.push_back(run_input("output.metrics", config_.output.metrics));
  if (root && !config_.output.profile.empty())
    check_output(config_.output.profile, "output.profile", run.profile_inputs);

  int64_t params = 0;  // this rank's: with a sharded table, its block of it
  for (const auto& p : model_->parameters()) params += p.numel();
  const int64_t block = shard_ ? shard_->layout().size(0) : data_->num_items() + 1;  // rows of M a rank holds, at most
  const std::string blas = blas_kernels();  // OpenBLAS's choice ("" for another BLAS), blas_kernels.h
  metrics_.write({{"event", "start"},
                  {"world_size", comm_.world_size()},
                  {"comm", comm_.name()},
                  {"device", device_.str()},
                  {"kernels", fused_ ? "fused" : "autograd"},  // what model.kernels (auto) chose
                  {"item_table", item_table_name(config_.train.item_table)},
                  {"item_rows_per_rank", block},
                  {"threads", torch::get_num_threads()},
                  {"blas_kernels", blas},
                  {"parameters", params},
                  {"users", data_->num_users_total()},
                  {"items", data_->num_items()},
                  {"trainable_users", global_trainable_},
                  {"steps_per_epoch", steps_per_epoch_},
                  {"resumed_from", run.resumed_from},
                  {"run_id", run.state.run_id},
                  {"config_hash", fingerprint_hex(run.state.config_hash)},
                  {"item_map", fingerprint_hex(item_map_)},
                  {"resume_differences", differences},
                  {"config", run.state.config_yaml}});
  metrics_.write(memory_plan_event(memory_plan_, memory_budget_));
  log_line(root, detail::cat("sasrec_ddp: ", data_->num_users_total(), " users, ", data_->num_items(), " items, ",
                             params, " parameters, ", comm_.world_size(), " rank(s) on ", device_.str(), ", ",
                             torch::get_num_threads(), " thread(s) each",
                             device_.is_cpu() && !blas.empty() ? " (OpenBLAS " + blas + ")" : "",
                             ", ", steps_per_epoch_, " steps/epoch, loss ",
                             loss_name(config_.train.loss),
                             shard_ ? detail::cat(", item table sharded (", block, " rows a rank)") : std::string()));
  const int64_t max_steps = config_.train.max_steps;
  run.run_steps = std::min<int64_t>(config_.train.epochs * steps_per_epoch_, max_steps > 0 ? max_steps : INT64_MAX);
  run.stop = max_steps > 0 && run.state.step >= max_steps;
  return run;
}

Trainer::Epoch Trainer::run_epoch(Run& run, Sampler& sampler, Progress& progress, const StepGuard& guard,
                                  int64_t epoch) {
  const bool root = comm_.is_root();
  // Dropout's stream is a function of (seed, rank, epoch) and its call
  // count, batches of (seed, rank, epoch, batch): a resumed run, even one
  // resumed inside an epoch, draws the same masks and batches.
  const int64_t first = run.state.batch;
  const uint64_t dropout_key =
      mix_seed({config_.train.seed, static_cast<uint64_t>(comm_.rank()), static_cast<uint64_t>(epoch), 0xd0ull});
  model_->reseed_dropout(dropout_key, first > 0 ? run.state.dropout_calls : 0);
  torch::manual_seed(dropout_key);  // libtorch's own dropout on CUDA (a resume inside an epoch is exact on CPU only)
  model_->train();
  sampler.start_epoch(epoch, first);
  run.state.batch = 0;
  times_ = {};
  reducer_->reset_stats();
  Epoch e;
  e.epoch = epoch;
  const auto epoch_start = Clock::now();
  for (int64_t s = first; s < steps_per_epoch_; ++s) {
    if (root && !config_.output.profile.empty() && run.state.step + 1 == kProfileFirst)
      run.profile = std::make_unique<ProfileTrace>(config_.output.profile, run.profile_inputs);
    auto t = Clock::now();
    Batch batch;
    {
      RECORD_USER_SCOPE("phase::sample");
      batch = sampler.next();
    }
    times_.sample += since(t);
    const StepOutcome outcome = train_step(batch, run.state.step + 1, guard.requested() != 0);
    if (outcome.skipped) ++run.summary.skipped_steps;
    e.loss_sum += outcome.loss_sum;
    if (!outcome.skipped) e.targets += batch.targets, ++e.taken;
    e.sequences += batch.seq.size(0);
    ++e.steps;
    ++run.state.step;
    if (run.profile && run.state.step == kProfileLast) {
      progress.clear();
      log_line(root, run.profile->finish(kProfileFirst, kProfileLast));
      run.profile.reset();
    }
    if (config_.runtime.check_replicas > 0 && run.state.step % config_.runtime.check_replicas == 0)
      check_replicas(run.state.step);
    if (hooks_) hooks_->after_step(comm_.rank(), run.state.step);
    if (root) {
      const double elapsed = since(epoch_start);
      ProgressState ps;
      ps.epoch = epoch, ps.epochs = config_.train.epochs, ps.step = s + 1, ps.steps = steps_per_epoch_;
      ps.loss = e.loss_sum / std::max<int64_t>(1, e.targets);
      ps.seqs_per_s = static_cast<double>(e.sequences * comm_.world_size()) / std::max(1e-9, elapsed);
      progress.update(ps, elapsed, std::max<int64_t>(0, run.run_steps - run.state.step));
    }
    // One rank: the guard is read here. Several: its flag travelled in this
    // step's gradient bucket, so every rank stops after the same step.
    const bool stop_now = comm_.world_size() == 1 ? guard.requested() != 0 : outcome.stop_requested;
    if (stop_now) {
      e.interrupted_by = guard.requested() ? guard.requested() : SIGTERM;
      run.state.batch = s + 1;
      break;
    }
    if (config_.train.max_steps > 0 && run.state.step >= config_.train.max_steps) {
      run.stop = true;
      break;
    }
  }
  e.seconds = since(epoch_start);
  return e;
}

TrainSummary Trainer::interrupted(Run& run, const Epoch& e) {
  const bool root = comm_.is_root();
  if (run.profile) log_line(root, run.profile->finish(kProfileFirst, run.state.step)), run.profile.reset();
  if (run.state.batch == steps_per_epoch_) run.state.epoch = e.epoch, run.state.batch = 0;
  run.state.dropout_calls = model_->dropout_calls();
  run.summary.interrupted_by = e.interrupted_by;
  run.summary.epochs = run.state.epoch;
  run.summary.steps = run.state.step;
  if (checkpointing(run)) save_checkpoint(run);
  const char* signal = StepGuard::signal_name(e.interrupted_by);
  metrics_.write(
      {{"event", "interrupted"}, {"signal", signal}, {"step", run.state.step}, {"checkpoint", run.summary.checkpoint}});
  log_line(root, detail::cat("interrupted by ", signal, " after step ", run.state.step,
                             run.summary.checkpoint.empty() ? "; no checkpoint.dir, nothing saved"
                                                            : "; checkpoint " + run.summary.checkpoint +
                                                                  " written, resume with checkpoint.resume: auto"));
  comm_.barrier();  // no rank leaves (and ends the job) before rank 0 has written
  run.summary.seconds = since(run.start);
  return run.summary;
}

void Trainer::report_epoch(Run& run, const Epoch& e) {
  const bool root = comm_.is_root();
  std::vector<double> sums{e.loss_sum, static_cast<double>(e.targets), static_cast<double>(e.sequences)};
  comm_.allreduce_sum(sums);
  if (!std::isfinite(sums[0]))
    SASREC_FAIL(Check, "epoch ", e.epoch, ": the loss is not finite (", sums[0], "); lower train.lr or check the data");
  const double seq_per_s = sums[2] / std::max(1e-9, e.seconds);
  run.state.epoch = e.epoch;
  run.summary.epochs = e.epoch;
  // No step taken (all skipped): there is no loss, not a loss of 0.
  const nlohmann::json loss = e.taken > 0 ? nlohmann::json(sums[0] / std::max(1.0, sums[1])) : nlohmann::json();
  metrics_.write({{"event", "train_epoch"},
                  {"epoch", e.epoch},
                  {"steps", e.steps},
                  {"step", run.state.step},
                  {"loss", loss},
                  {"lr", lr_},
                  {"seqs_per_s", seq_per_s},
                  {"seconds", e.seconds},
                  {"phase_seconds",
                   {{"sample", times_.sample},
                    {"forward", times_.forward},
                    {"backward", times_.backward},
                    {"reduce", times_.reduce},
                    {"step", times_.step}}},
                  {"exchange", reducer_->stats_json()}});
  if (e.taken == 0) {
    // Nothing was learnt in a whole epoch: the parameters make every step
    // non-finite, and going on would skip every step again.
    log_line(root, detail::cat("epoch ", e.epoch, "/", config_.train.epochs, "  no step taken: all ", e.steps,
                               " step(s) were skipped for non-finite values (train.on_nonfinite: skip), so there "
                               "is no loss"));
    SASREC_FAIL(Check, "epoch ", e.epoch, ": every one of its ", e.steps,
                " step(s) was skipped for a non-finite loss "
                "or gradient (train.on_nonfinite: skip): the training diverged and cannot go on",
                run.summary.checkpoint.empty() ? std::string() : "; the last checkpoint is " + run.summary.checkpoint,
                ". Lower train.lr (", config_.train.lr, ") or check the data");
  }
  log_line(root, detail::cat("epoch ", e.epoch, "/", config_.train.epochs, "  loss ", loss.get<double>(), "  ",
                             static_cast<int64_t>(seq_per_s), " seq/s  ", format_duration(e.seconds),
                             e.taken < e.steps
                                 ? detail::cat("  (", e.steps - e.taken, " of ", e.steps, " steps skipped: non-finite)")
                                 : std::string()));
}

void Trainer::after_epoch(Run& run, int64_t epoch) {
  const bool last = epoch == config_.train.epochs || run.stop;
  const int every = config_.eval.every;
  if (last || (every > 0 && epoch % every == 0)) {
    // data.refit trains on valid: no valid figures, and the latest evaluation is the one reported.
    const bool refit = config_.data.refit;
    auto valid = refit ? std::vector<EvalResult>{} : evaluate("valid");
    auto test = evaluate("test");
    log_eval(epoch, valid);
    log_eval(epoch, test);
    const double score = refit ? static_cast<double>(epoch) : selection_score(valid);
    if (score > run.best_score) {
      run.best_score = score;
      run.summary.best_epoch = epoch;
      run.summary.best_valid = valid;
      run.summary.best_test = test;
      run.evals_without_gain = 0;
    } else {
      ++run.evals_without_gain;
    }
    run.summary.last = valid;
    run.summary.last.insert(run.summary.last.end(), test.begin(), test.end());
    // The metrics are all-reduced, so every rank takes the same decision.
    const int patience = config_.eval.patience;
    if (patience > 0 && run.evals_without_gain >= patience && !last) {
      run.stop = true;
      run.summary.early_stopped = true;
      metrics_.write(
          {{"event", "early_stop"}, {"epoch", epoch}, {"best_epoch", run.summary.best_epoch}, {"patience", patience}});
      log_line(comm_.is_root(), detail::cat("early stop after epoch ", epoch, ": no better valid score in ", patience,
                                            " evaluation(s) since epoch ", run.summary.best_epoch, " (eval.patience)"));
    }
  }
  if (checkpointing(run) && (last || run.stop || epoch % config_.checkpoint.every == 0)) save_checkpoint(run);
}

TrainSummary Trainer::finish(Run& run) {
  const bool root = comm_.is_root();
  if (run.profile) log_line(root, run.profile->finish(kProfileFirst, run.state.step)), run.profile.reset();
  TrainSummary& summary = run.summary;
  summary.steps = run.state.step;
  summary.seconds = since(run.start);
  nlohmann::json done{
      {"event", "summary"},         {"epochs", summary.epochs},         {"steps", summary.steps},
      {"seconds", summary.seconds}, {"best_epoch", summary.best_epoch}, {"early_stopped", summary.early_stopped}};
  done = best_figures(summary.best_test, "best_test_", best_figures(summary.best_valid, "best_valid_", done));
  metrics_.write(done);
  for (const auto& line : format_summary(summary.epochs, summary.steps, summary.seconds, summary.best_epoch,
                                         summary.best_valid, summary.best_test, config_.eval.ks))
    log_line(root, line);
  if (summary.best_epoch == 0 && !summary.last.empty())
    log_line(root, "no evaluation had a user to evaluate, so there is no best epoch and no figure");
  return summary;
}

bool Trainer::checkpointing(const Run& run) const {
  return run.checkpoints || (shard_ && !config_.checkpoint.dir.empty());
}

// Rank 0 writes; with a sharded table every rank writes its block first
// (checkpoint.h). The tests' hooks may reach into the write (train_hooks.h).
void Trainer::save_checkpoint(Run& run) {
  const MidWriteHook mid_write = hooks_ ? hooks_->checkpoint_write(comm_.rank(), run.state.step) : MidWriteHook();
  if (shard_) {
    const std::string main = (std::filesystem::path(config_.checkpoint.dir) / checkpoint_file_name(run.state)).string();
    if (!comm_.is_root()) {
      std::filesystem::create_directories(main + ".shards");
      sasrec::save_checkpoint(shard_checkpoint_path(main, comm_.rank()), model_, optimizer_.get(), run.state,
                              mid_write);
    }
    comm_.barrier();  // every block on disk before rank 0's file makes the checkpoint
    if (!comm_.is_root()) return;
  }
  run.summary.checkpoint = run.checkpoints->save(model_, optimizer_.get(), run.state, mid_write);
  metrics_.write({{"event", "checkpoint"},
                  {"epoch", run.state.epoch},
                  {"step", run.state.step},
                  {"path", run.summary.checkpoint}});
}

void Trainer::log_eval(int64_t epoch, const std::vector<EvalResult>& results) {
  for (const auto& r : results) {
    metrics_.write(eval_event(epoch, r));
    const std::string what = detail::cat("eval ", r.split, "/", r.protocol, " epoch ", epoch, ": ");
    if (r.metrics.count() == 0) {
      log_line(comm_.is_root(), what +
                                    "no user to evaluate (a user needs 3 or more interactions to have a valid "
                                    "and a test item); no figure");
      continue;
    }
    // The cutoff nearest to 10 on the terminal; the metrics file has them all.
    const int k = nearest_cutoff(config_.eval.ks);
    auto m = r.metrics.means();
    const std::string at = "@" + std::to_string(k);
    const int64_t bad = r.metrics.nonfinite_users();
    log_line(comm_.is_root(),
             detail::cat(what, "HR", at, " ", m["hr" + at], "  NDCG", at, " ", m["ndcg" + at], "  MRR ", m["mrr"],
                         "  (", r.metrics.count(), " users, ", format_duration(r.seconds), ", ",
                         static_cast<int64_t>(r.users_per_s), " users/s)",
                         bad ? detail::cat("; ", bad,
                                           " user(s) with NaN or Inf scores, ranked below every candidate: "
                                           "the model is not finite")
                             : std::string()));
  }
}

std::vector<double> parameter_checksum(SASRec& model) {
  torch::NoGradGuard no_grad;
  double sum = 0, weighted = 0;
  for (const auto& p : model->parameters()) {
    if (model->options().sharded() && p.is_same(model->item_weight())) continue;  // each rank's own block
    auto flat = p.detach().reshape(-1).to(torch::kFloat64).cpu();
    sum += flat.sum().item<double>();
    weighted += (flat * torch::arange(1, flat.numel() + 1, flat.options())).sum().item<double>();
  }
  return {sum, weighted};
}

void Trainer::check_replicas(int64_t step) {
  const auto mine = parameter_checksum(model_);
  auto all = comm_.allgather(torch::tensor(mine, torch::kFloat64).view({1, 2})).contiguous();  // [world,2]
  for (int r = 1; r < comm_.world_size(); ++r)
    if (all[r][0].item<double>() != all[0][0].item<double>() || all[r][1].item<double>() != all[0][1].item<double>())
      SASREC_FAIL(Check, "step ", step, ": the parameters of rank ", r, " differ from rank 0's (checksum ",
                  all[r][0].item<double>(), " vs ", all[0][0].item<double>(),
                  "): the replicas diverged. This is a bug; please report it with the config");
}

std::vector<EvalResult> Trainer::evaluate(const std::string& split) { return evaluator_->evaluate(model_, split); }

void Trainer::load_model(const std::string& checkpoint) {
  if (shard_)
    load_block_checkpoint(checkpoint, model_, nullptr, comm_, checkpoint_match());
  else
    load_checkpoint(checkpoint, model_, nullptr, checkpoint_match());
}

CheckpointMatch Trainer::checkpoint_match() const { return CheckpointMatch{config_.data.path, item_map_}; }

std::vector<RunInput> Trainer::run_inputs(const std::string& resume) const {
  std::vector<RunInput> in{run_input("data.path", config_.data.path)};
  if (!config_.source.empty()) in.push_back(run_input("the config", config_.source));
  if (!resume.empty()) in.push_back(run_input("the checkpoint resumed from", resume));
  return in;
}

}  // namespace sasrec
