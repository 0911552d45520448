// checkpoint.h: saving and restoring training state, atomically and checked.
//
// A checkpoint holds the model's parameters, the optimizer's state, the
// number of finished epochs and steps, the position inside an interrupted
// epoch, the dropout stream's counter, the resolved config, the run it
// belongs to, the config hash, the world size and the fingerprint of the
// store's item map. The sampler and dropout streams are functions of (seed,
// rank, epoch, batch), so these counters restore them exactly.
//
// File layout: a 48-byte header, then libtorch's archive (the payload):
//   "SASRECCK"  u32 version (2)  u32 0  u64 payload bytes  u64 checksum  char run_id[16]
// checksum = FNV-1a-64 of run_id then the payload. The run id sits in the
// header so that a folder's owners are known without loading any archive.
// A truncated or altered file fails the size or checksum test before
// anything is loaded. Files are written through an AtomicOutput (every
// write checked: a full disk is an error, not a short file; fsynced and
// renamed): a crash leaves the previous checkpoint intact. Version 1 files
// (a 32-byte header without the run id) and plain archives written before
// the header existed still load.
//
// Loading refuses, before anything changes: a corrupt file; a parameter of
// another shape; a model key that changes the function (model.norm,
// model.activation, ...) other than this model's, naming the key and both
// values; a store whose item map differs from the one it was trained on.
#pragma once

#include <torch/torch.h>

#include <cstdint>
#include <string>
#include <vector>

#include "sasrec/train_hooks.h"
#include "sasrec/fnv.h"
#include "sasrec/model.h"

namespace sasrec {

struct TrainState {
  int64_t epoch = 0;           // epochs finished
  int64_t step = 0;            // optimizer steps taken
  int64_t batch = 0;           // batches of epoch+1 already taken (an interrupted epoch); 0 at an epoch's end
  uint64_t dropout_calls = 0;  // masks drawn in epoch+1 so far (with batch)
  std::string config_yaml;
  std::string run_id;        // 16 hex digits, the same for every checkpoint of a run; "" in older files
  uint64_t config_hash = 0;  // config_hash() of the run's config; 0: not recorded
  int64_t world_size = 0;    // ranks of the run; 0: not recorded
  uint64_t item_map = 0;     // item_map_fingerprint (store.h) of the store it was trained on; 0: not recorded
  std::string data_path;     // that store, as data.path named it
};

// What a checkpoint must have been made for, checked by load_checkpoint
// before anything is loaded.
struct CheckpointMatch {
  std::string data_path;  // this run's store, named in the message
  uint64_t item_map = 0;  // its item-map fingerprint; 0: not checked
};

// `mid_write` (the tests' seam, train_hooks.h): called half-way through the
// payload with the output being written.
void save_checkpoint(const std::string& path, SASRec& model, torch::optim::Optimizer* optimizer,
                     const TrainState& state, const MidWriteHook& mid_write = {});

// "" when `path` is an intact checkpoint (header, size and checksum agree),
// else what is wrong with it.
std::string checkpoint_problem(const std::string& path);
// The run id in `path`'s header ("" for files older than the run id), read
// without loading the archive; throws Error(Input) for a file that is no checkpoint.
std::string checkpoint_run_id(const std::string& path);

// Loads into `model` (and `optimizer` when given). Refuses, with
// Error(Input) and before changing anything: a corrupt file; a model key
// that changes the function (model.hidden, .blocks, .heads, .maxlen, .norm,
// .activation, .ffn_hidden, .attention_output, .embedding_norm,
// .user_embedding) other than the model's, naming the key and both values;
// a parameter of another shape or catalog size; a store other than `match`
// says (its item map differs).
TrainState load_checkpoint(const std::string& path, SASRec& model, torch::optim::Optimizer* optimizer,
                           const CheckpointMatch& match = {});

// The file CheckpointDir::save names `state`'s checkpoint (epoch-000012.pt, epoch-000012.step-000000345.pt).
std::string checkpoint_file_name(const TrainState& state);
// A sharded run (train.item_table: sharded) checkpoints on every rank: rank r
// writes its block of the item table, its optimizer state and the dense
// parameters to MAIN.shards/rank-0000r.pt, then rank 0 writes MAIN, the file
// CheckpointDir lists, which so exists only once every block does. This is
// rank `rank`'s file of the checkpoint `main` (`main` itself for rank 0).
std::string shard_checkpoint_path(const std::string& main, int rank);

// What `path` records (TrainState) and the rows of its item table (this
// file's block, for a sharded run's) and user table (0: none), from one read
// of the file, without a model to load into; the file is checked as
// load_checkpoint checks it.
struct CheckpointShape {
  TrainState state;
  int64_t item_rows = 0, user_rows = 0;
};
CheckpointShape read_checkpoint_shape(const std::string& path);

// A new run id: 16 hex digits from the clock, the pid and the system's entropy.
std::string new_run_id();

// Numbered checkpoints in one folder, newest `keep` kept:
// epoch-000012.pt after epoch 12, epoch-000012.step-000000345.pt when
// interrupted at step 345 of epoch 13 (names sort by training time); a
// sharded checkpoint's blocks in the folder beside it (.pt.shards) go and
// move with it.
class CheckpointDir {
 public:
  CheckpointDir(std::string dir, int keep);
  std::string save(SASRec& model, torch::optim::Optimizer* optimizer, const TrainState& state,
                   const MidWriteHook& mid_write = {});
  std::vector<std::string> list() const;  // oldest first
  // Removes temporaries a killed writer left behind (*.tmp-PID of a pid
  // that no longer runs); returns how many.
  int remove_stale_temporaries() const;
  // The checkpoints of runs other than `run_id`, oldest first: for a fresh
  // run ("") every checkpoint; for a resumed run those whose header names
  // another run (files older than the run id belong to whichever run resumes them).
  std::vector<std::string> foreign(const std::string& run_id) const;
  // Moves every checkpoint into DIR/replaced-YYYYmmdd-HHMMSS/ (checkpoint.overwrite); returns that folder.
  std::string move_aside() const;
  const std::string& dir() const { return dir_; }

 private:
  std::string dir_;
  int keep_;
};

}  // namespace sasrec
