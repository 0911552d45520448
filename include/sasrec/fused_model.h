// fused_model.h: SASRec's training step (forward, loss, backward) as explicit
// layer functions over packed tokens (fused_layers.h), not autograd.
//
// The libtorch module (model.h) stays what the model IS: its parameters,
// their names in checkpoints, evaluation, and the test oracle. FusedSASRec
// reads those parameters and computes, for one packed batch, the loss SUM
// and the gradient of scale x that sum for every parameter, in one pass over
// an activation arena sized once per packed-token count, with a handful of
// BLAS calls per layer and every other operation in loops: a step costs a
// few libtorch dispatches instead of about 900 (docs/results.md). Dropout
// masks come from the model's own stream in the model's order, so the
// fused step and the autograd step give the same loss and gradients, to
// float rounding, with dropout on (tests/test_fused.cpp checks every model
// option and loss against the module).
//
// Threads: the batch's sequences are cut into one run per thread (balanced
// by their cost), and each run goes through the whole forward, loss and
// backward on its own rows; weight gradients are summed over the runs at the
// end, in run order, so a step is deterministic for a given thread count.
// CPU and float32 only (model.kernels, config.h): a CUDA step keeps the
// module and autograd; the layer functions take raw pointers and sizes, so
// device kernels can take their place later.
#pragma once

#include <torch/torch.h>

#include <memory>
#include <string>

#include "sasrec/config.h"
#include "sasrec/loss.h"
#include "sasrec/model.h"
#include "sasrec/packing.h"

namespace sasrec {

// Why the fused step cannot run this config on `device` ("" when it can):
// model.kernels auto then takes autograd (the trainer logs the reason),
// model.kernels fused is refused with it.
std::string fused_unsupported(const Config& config, torch::Device device);

class FusedSASRec {
 public:
  // `model` lives on the CPU in float32; its parameters are read at every
  // step (they may change between steps, not their shapes).
  FusedSASRec(SASRec model, LossKind loss);
  ~FusedSASRec();
  FusedSASRec(const FusedSASRec&) = delete;
  FusedSASRec& operator=(const FusedSASRec&) = delete;

  struct Result {
    double loss_sum = 0;          // the batch's loss SUM over its targets, unscaled
    double forward_seconds = 0;   // the first run's forward and loss
    double backward_seconds = 0;  // the rest of the call
    int threads = 0;              // distinct threads that computed the runs (at most at::get_num_threads())
    torch::Tensor rows_grad;      // [U,D] the gradient of the rows M[rows] (when `rows` was given)
  };
  // One step's loss and gradients, as loss_sum_rows(forward_packed(...)) and
  // backward of scale x that sum would give them:
  //   packing    the batch (packing.items: rows of `table`)
  //   users      [B] (user_embedding only)
  //   table      the item rows every id refers to: M itself ([I+1,D]; ce
  //              needs it), or a batch-local copy (item_rows.h), with pos /
  //              neg / shared remapped to its rows
  //   pos [N], neg [N] (bce) or [N,k] (gbce), shared [K] (sampled_softmax)
  //   terms      log-Q (sampled_softmax, popularity) and gbce's beta
  //   rows       optional [U] int64: the batch-local table is M[rows], read
  //              in place from `table` = M (no copy; ids as unique_and_remap
  //              leaves them), its gradient returned as Result::rows_grad
  // Every parameter's .grad() is set (M's only when `table` is M and no
  // `rows` are given, else table.grad() or rows_grad); the gradients stay
  // valid until the next call.
  Result forward_backward(const Packing& packing, const torch::Tensor& users, const torch::Tensor& table,
                          const torch::Tensor& pos, const torch::Tensor& neg, const torch::Tensor& shared,
                          const SampledTerms& terms, double scale, const torch::Tensor& rows = {});

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace sasrec
