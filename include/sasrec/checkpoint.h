// checkpoint.h: saving and restoring training state, atomically.
//
// A checkpoint holds the model's parameters, the optimizer's state, the
// number of finished epochs and steps and the resolved config. The sampler
// and dropout streams are functions of (seed, rank, epoch), so an epoch
// count restores them. Files are written to a temporary name, fsynced and
// renamed: a crash leaves the previous checkpoint intact.
#pragma once

#include <torch/torch.h>

#include <string>
#include <vector>

#include "sasrec/model.h"

namespace sasrec {

struct TrainState {
  int64_t epoch = 0;  // epochs finished
  int64_t step = 0;   // optimizer steps taken
  std::string config_yaml;
};

void save_checkpoint(const std::string& path, SASRec& model, torch::optim::Optimizer* optimizer,
                     const TrainState& state);

// Loads into `model` (and `optimizer` when given). Refuses, naming the
// tensor and both shapes, a checkpoint written for another model shape or
// catalog size.
TrainState load_checkpoint(const std::string& path, SASRec& model, torch::optim::Optimizer* optimizer);

// Numbered checkpoints in one folder: epoch-000012.pt, newest `keep` kept.
class CheckpointDir {
 public:
  CheckpointDir(std::string dir, int keep);
  std::string save(SASRec& model, torch::optim::Optimizer* optimizer, const TrainState& state);
  // The newest checkpoint, or "" when there is none.
  std::string latest() const;
  std::vector<std::string> list() const;  // oldest first

 private:
  std::string dir_;
  int keep_;
};

}  // namespace sasrec
