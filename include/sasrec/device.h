// device.h: where a rank computes: its device (runtime.device and the rank's
// place on its machine) and its intra-op threads (train.threads). The one
// place these rules live: the trainer, serving and the memory plan ask here.
#pragma once

#include <torch/torch.h>

#include "sasrec/config.h"

namespace sasrec {

// runtime.device: cpu; cuda (an error without a device); auto: CUDA where
// Torch sees one. A CUDA rank takes the GPU of its node-local rank (modulo
// the GPUs there).
torch::Device resolve_device(DeviceKind setting, int local_rank);

// train.threads: the setting when > 0, else every core of the machine.
int resolve_threads(int setting);

// While alive, libtorch's CPU generator draws from `seed`; the state before
// is restored after. The model's initial parameters come from train.seed so,
// without the trainer changing the process's random state for anyone else.
class TorchSeedScope {
 public:
  explicit TorchSeedScope(uint64_t seed);
  ~TorchSeedScope();
  TorchSeedScope(const TorchSeedScope&) = delete;
  TorchSeedScope& operator=(const TorchSeedScope&) = delete;

 private:
  torch::Tensor saved_;
};

}  // namespace sasrec
