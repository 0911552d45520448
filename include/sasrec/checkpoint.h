// checkpoint.h: saving and restoring training state, atomically and checked.
//
// A checkpoint holds the model's parameters, the optimizer's state, the
// number of finished epochs and steps, the position inside an interrupted
// epoch, the dropout stream's counter and the resolved config. The sampler
// and dropout streams are functions of (seed, rank, epoch, batch), so these
// counters restore them exactly.
//
// File layout: a 32-byte header, then libtorch's archive (the payload):
//   "SASRECCK"  u32 version (1)  u32 0  u64 payload bytes  u64 FNV-1a-64 of the payload
// A truncated or altered file fails the size or checksum test before
// anything is loaded. Files are written to a temporary name (every write
// checked: a full disk is an error, not a short file), fsynced and renamed:
// a crash leaves the previous checkpoint intact. Plain archives written
// before the header existed still load (without the checksum test).
#pragma once

#include <torch/torch.h>

#include <cstdint>
#include <string>
#include <vector>

#include "sasrec/fault.h"
#include "sasrec/model.h"

namespace sasrec {

struct TrainState {
  int64_t epoch = 0;  // epochs finished
  int64_t step = 0;   // optimizer steps taken
  int64_t batch = 0;  // batches of epoch+1 already taken (an interrupted epoch); 0 at an epoch's end
  uint64_t dropout_calls = 0;  // masks drawn in epoch+1 so far (with batch)
  std::string config_yaml;
};

// FNV-1a, 64 bits, over `n` bytes (exposed for tests).
uint64_t fnv1a64(const void* data, size_t n);

// `inject` (tests only): CkptKill raises SIGKILL half-way through the
// payload, CkptEnospc fails the write as a full disk would.
void save_checkpoint(const std::string& path, SASRec& model, torch::optim::Optimizer* optimizer,
                     const TrainState& state, FaultKind inject = FaultKind::None);

// "" when `path` is an intact checkpoint (header, size and checksum agree),
// else what is wrong with it.
std::string checkpoint_problem(const std::string& path);

// Loads into `model` (and `optimizer` when given). Refuses a corrupt file,
// and, naming the tensor and both shapes, one written for another model
// shape or catalog size, before changing anything.
TrainState load_checkpoint(const std::string& path, SASRec& model, torch::optim::Optimizer* optimizer);

// Numbered checkpoints in one folder, newest `keep` kept:
// epoch-000012.pt after epoch 12, epoch-000012.step-000000345.pt when
// interrupted at step 345 of epoch 13 (names sort by training time).
class CheckpointDir {
 public:
  CheckpointDir(std::string dir, int keep);
  std::string save(SASRec& model, torch::optim::Optimizer* optimizer, const TrainState& state,
                   FaultKind inject = FaultKind::None);
  // The newest checkpoint, or "" when there is none.
  std::string latest() const;
  std::vector<std::string> list() const;  // oldest first
  // Removes temporaries a killed writer left behind (*.tmp-PID); returns how many.
  int remove_stale_temporaries() const;

 private:
  std::string dir_;
  int keep_;
};

}  // namespace sasrec
