// config.h: the trainer's configuration as typed structs, parsed once from
// YAML (plus `--set section.key=value` overrides) and validated in one place.
//
// Every default lives here, in the struct; configs/default.yaml writes them
// all out. Unknown keys and wrong types are errors naming the full key path
// (with a did-you-mean); cross-field rules are checked by validate(). This
// file does not touch data, devices or MPI.
#pragma once

#include <cstdint>
#include <map>
#include <string>
#include <vector>

namespace sasrec {

enum class Norm { Pre, Post, Paper };
enum class Activation { Relu, Gelu };
enum class Init { Xavier, Normal };
enum class LossKind { Bce, Ce, SampledSoftmax, Gbce };
// How attention is computed (runtime.attention): the same function each way.
//   fused   the packed CPU kernel (attention.h), float32 CPU only
//   sdpa    at::scaled_dot_product_attention on the padded batch (libtorch 2.x)
//   tensor  tensor ops on the padded batch (any device and libtorch)
//   auto    fused for float32 on CPU, else sdpa where libtorch has it, else tensor
enum class AttentionKernel { Auto, Fused, Sdpa, Tensor };
// The blocks' arithmetic (runtime.precision): fp32, or bf16 autocast of the
// blocks with fp32 master weights, final LayerNorm, loss and optimizer.
enum class Precision { Fp32, Bf16 };
// How a training step is computed (model.kernels): the same function each way.
//   fused     explicit forward and backward layers over packed tokens (fused_model.h), CPU float32
//   autograd  the libtorch module and autograd (model.h), any device and precision
//   auto      fused where it runs (CPU, fp32, no CUDA graphs, attention auto or fused), else autograd
enum class Kernels { Auto, Fused, Autograd };
// How full-catalog scores are ranked (eval.scorer): blocked (CPU: BLAS
// blocks counted in cache), tensor (chunked tensor ops, the device path;
// runs on CPU too), auto (blocked on CPU, tensor elsewhere).
enum class Scorer { Auto, Blocked, Tensor };
enum class SplitKind { LeaveOneOut, Time };     // data.split
enum class EvalTargets { All, First };          // data.eval_targets (split: time)
enum class SampledExclude { Sequence, Train };  // eval.sampled_exclude

// A cutoff of the global temporal split (data.valid_from, data.test_from):
// unset, a timestamp in the store's unit (written as an integer or a UTC
// date, "1388534400", "2014-01-01"), or a quantile of all interaction times
// ("q0.8": the time below which 80% of the interactions lie).
struct TimeCutoff {
  enum class Kind { None, Timestamp, Quantile };
  Kind kind = Kind::None;
  int64_t timestamp = 0;  // Kind::Timestamp
  double quantile = 0;    // Kind::Quantile, in (0, 1)
  std::string text;       // as written ("" when unset), for messages and the YAML dump
  bool set() const { return kind != Kind::None; }
};
// "" -> unset; "q0.8" -> quantile; an integer or a date -> timestamp. Throws
// Error(Config) naming `key` for anything else (a bare 0.8 included: it
// would be the timestamp 1, so the quantile must be written q0.8).
TimeCutoff parse_time_cutoff(const std::string& text, const std::string& key);
enum class LrSchedule { Constant, Cosine, Linear };
enum class Proposal { Uniform, Popularity };         // train.proposal (sampled_softmax's negatives)
enum class Exchange { Auto, Sparse, Dense };         // train.exchange (the item table's gradient across ranks)
enum class ItemOptimizer { Adam, LazyAdam };         // train.item_optimizer
enum class ItemTable { Replicated, Sharded };        // train.item_table (item_shard.h)
enum class OnNonfinite { Stop, Skip };               // train.on_nonfinite
enum class Protocol { Full, Sampled };               // eval.protocols
enum class DeviceKind { Auto, Cpu, Cuda };           // runtime.device
enum class CommKind { Auto, Mpi, Nccl, None };       // runtime.comm
enum class ProgressKind { Auto, Live, Lines, Off };  // output.progress

// checkpoint.resume: none, auto (the newest intact checkpoint of
// checkpoint.dir) or a checkpoint file.
struct ResumeFrom {
  enum class Kind { None, Auto, Path };
  Kind kind = Kind::None;
  std::string path;  // Kind::Path
  bool operator==(const ResumeFrom& o) const { return kind == o.kind && path == o.path; }
};

struct DataConfig {
  std::string path;         // the HDF5 store written by csv2h5 / sasrec_synth
  int sampler_threads = 1;  // threads building batches ahead of the model
  int prefetch = 8;         // batches queued ahead per sampler thread
  int length_buckets = 0;   // sort users by length within windows of this many batches; 0: off (random batches)
  // The split (dataset.h): leave_one_out (per user: last item test, the one
  // before valid) or time (global temporal: one pair of cutoffs for everyone).
  SplitKind split = SplitKind::LeaveOneOut;
  TimeCutoff valid_from;                        // time: interactions at or after it and before test_from are valid
  TimeCutoff test_from;                         // time: interactions at or after it are test
  EvalTargets eval_targets = EvalTargets::All;  // time: every held-out interaction, or each user's first
  bool refit = false;                           // train on train + valid (the final refit); valid is then not evaluated
};

struct ModelConfig {
  int hidden = 50;  // d
  int blocks = 2;   // b
  int heads = 1;
  int maxlen = 50;  // n
  double dropout = 0.5;
  Norm norm = Norm::Pre;
  bool user_embedding = false;  // explicit user vector added to every position
  // The BERT-style recipe of S3-Rec/ICLRec's SASRec (docs/design.md, "Model
  // variants"); the defaults are the paper's model.
  Activation activation = Activation::Relu;  // FFN nonlinearity
  int ffn_hidden = 0;                        // FFN inner width; 0: hidden, as the paper
  bool attention_output = false;             // output projection W_O (+ dropout) after attention
  bool embedding_norm = false;               // LayerNorm(E + P) in place of sqrt(d) E + P
  Init init = Init::Xavier;                  // xavier (normal) | normal(0, init_std), biases 0
  double init_std = 0.02;
  Kernels kernels = Kernels::Auto;  // how a training step computes (fused | autograd | auto)
};

struct TrainConfig {
  int epochs = 200;
  int batch_size = 128;  // sequences per rank per step
  double lr = 1e-3;
  double beta1 = 0.9;
  double beta2 = 0.98;
  double l2_emb = 0.0;  // the authors' L2 penalty l2_emb * (||M||^2 + ||P||^2) / 2 on the item and position tables
  // Decoupled weight decay (AdamW) on the dense matrices: attention and FFN
  // weights; not biases, LayerNorm or the embedding tables.
  double weight_decay = 0.0;
  // The learning rate over the run's steps (optimizer.h, scheduled_lr): a
  // linear warm-up over warmup_steps, then constant or decaying to min_lr at
  // the last step of train.epochs.
  LrSchedule lr_schedule = LrSchedule::Constant;
  int64_t warmup_steps = 0;
  double min_lr = 0.0;
  LossKind loss = LossKind::Bce;
  int negatives = 256;                    // sampled_softmax: K shared by the batch; gbce: k per target
  Proposal proposal = Proposal::Uniform;  // sampled_softmax negatives: uniform | popularity (log-Q corrected)
  double gbce_t = 0.75;                   // gbce calibration t in [0, 1] (0: plain BCE with `negatives` negatives)
  // Item-table gradients across ranks: sparse (allgather of the touched rows),
  // dense (in the all-reduce bucket), auto (sparse when its bytes are fewer, each step).
  Exchange exchange = Exchange::Auto;
  ItemOptimizer item_optimizer = ItemOptimizer::Adam;  // adam (dense, the paper's) | lazy_adam (touched rows only)
  // The item table and its optimizer state: whole on every rank, or one
  // block of rows per rank, rows fetched and gradients returned by all-to-all.
  ItemTable item_table = ItemTable::Replicated;
  uint64_t seed = 42;
  int64_t max_steps = 0;  // 0: no limit (stop after this many steps in total)
  int threads = 0;        // intra-op threads for the model; 0: all cores
  OnNonfinite on_nonfinite =
      OnNonfinite::Stop;  // NaN/Inf loss or gradient: stop (error, last checkpoint kept) | skip the step
};

struct EvalConfig {
  int every = 20;  // epochs between evaluations; 0: only after the last
  std::vector<Protocol> protocols{Protocol::Full, Protocol::Sampled};
  std::vector<int> ks{1, 5, 10, 20};
  int64_t max_users = 0;  // 0: every eligible user
  int sampled_negatives = 100;
  int batch_users = 512;         // users scored together
  int64_t memory_mb = 256;       // bound on one score block (users x items x 4 bytes)
  int patience = 0;              // stop after this many evaluations in a row without a better valid score; 0: off
  Scorer scorer = Scorer::Auto;  // full-catalog ranking: blocked (CPU) | tensor (device path) | auto
  // sampled protocol: negatives avoid every item of the user's sequence
  // (sequence) or only its training items (train: the authors' code and the port).
  SampledExclude sampled_exclude = SampledExclude::Sequence;
};

struct CheckpointConfig {
  std::string dir;    // empty: no checkpoints
  int every = 1;      // epochs between checkpoints
  int keep = 3;       // newest checkpoints kept
  ResumeFrom resume;  // none | auto | PATH
  // A fresh run in a folder holding another run's checkpoints: false refuses
  // it (exit 2); true moves them aside into DIR/replaced-YYYYmmdd-HHMMSS/.
  bool overwrite = false;
};

struct RuntimeConfig {
  DeviceKind device = DeviceKind::Auto;  // auto | cpu | cuda
  CommKind comm = CommKind::Auto;        // auto | mpi | nccl | none
  int check_replicas = 0;                // compare a parameter checksum every N steps; 0: off
  int64_t memory_mb = 0;                 // per-rank memory budget for the plan (memory_plan.h); 0: what the machine has
  AttentionKernel attention = AttentionKernel::Auto;  // attention.h / model.h
  Precision precision = Precision::Fp32;              // bf16: autocast of the blocks (CUDA; CPU for tests)
  bool pin_memory = true;    // CUDA: batches staged in pinned host memory by the sampler, copied without blocking
  bool cuda_graphs = false;  // CUDA: forward + backward captured once per packed-size bucket and replayed
};

struct OutputConfig {
  std::string metrics = "metrics.jsonl";
  int log_every = 0;  // steps between plain progress lines (output not a terminal); 0: one every 30 s
  ProgressKind progress =
      ProgressKind::Auto;  // auto (live line on a terminal, plain lines otherwise) | live | lines | off
  std::string profile;     // Chrome trace of steps 11-60 of the run (rank 0); empty: off
};

struct Config {
  DataConfig data;
  ModelConfig model;
  TrainConfig train;
  EvalConfig eval;
  CheckpointConfig checkpoint;
  RuntimeConfig runtime;
  OutputConfig output;

  // Where each key given was written: "FILE:LINE" or "--set 'key=value'"
  // (keys left at their default are absent), and the config file itself.
  std::map<std::string, std::string> origins;
  std::string source;

  // Cross-field and range checks; throws sasrec::Error(Config) naming the
  // key and where it was written.
  void validate() const;
  // "FILE:LINE: " / "--set 'key=value': " of a key, "" for a default.
  std::string where(const std::string& key) const;
};

// The longest model.maxlen accepted (validate()).
inline constexpr int kMaxMaxlen = 65536;

// Parses YAML text; `source` names it in messages (a path or "<string>").
// `overrides` are "section.key=value" strings applied on top.
Config parse_config(const std::string& yaml_text, const std::string& source,
                    const std::vector<std::string>& overrides = {});
Config load_config(const std::string& path, const std::vector<std::string>& overrides = {});

// The fully resolved config as YAML (every key), for run folders and checkpoints.
std::string to_yaml(const Config& config);
// One key's value as the YAML dump writes it ("post", "0.001", "[1, 5, 10]").
std::string config_value(const Config& config, const std::string& key);
// FNV-1a-64 over every key=value of the data, model and train sections: the
// config hash a run's checkpoints record (the sections that decide what is trained).
uint64_t config_hash(const Config& config);

// The name of each choice as YAML spells it (one name table per enum, in
// config.cpp, serves parsing, did-you-mean and the YAML dump).
const char* norm_name(Norm n);
const char* proposal_name(Proposal p);
const char* exchange_name(Exchange e);
const char* item_optimizer_name(ItemOptimizer o);
const char* item_table_name(ItemTable t);
const char* on_nonfinite_name(OnNonfinite o);
const char* protocol_name(Protocol p);
const char* device_name(DeviceKind d);
const char* comm_name(CommKind c);
const char* progress_name(ProgressKind p);
// "none" | "auto" | the path.
std::string resume_name(const ResumeFrom& r);
const char* activation_name(Activation a);
const char* init_name(Init i);
const char* loss_name(LossKind l);
const char* attention_name(AttentionKernel a);
const char* precision_name(Precision p);
const char* kernels_name(Kernels k);
const char* scorer_name(Scorer s);
const char* split_name(SplitKind s);
const char* eval_targets_name(EvalTargets t);
const char* sampled_exclude_name(SampledExclude e);
const char* lr_schedule_name(LrSchedule s);

}  // namespace sasrec
