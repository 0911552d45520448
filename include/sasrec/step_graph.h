// step_graph.h: runtime.cuda_graphs, a training step's forward and backward
// captured once in a CUDA graph per bucket of packed token counts, then
// replayed: one launch instead of a few hundred kernel launches a step.
//
// A graph has fixed shapes, and a packed batch's token count N changes from
// step to step. So N is rounded up to a bucket (token_buckets: geometric,
// ratio 1.25, multiples of 64, up to batch_size x maxlen), and the step's
// inputs are padded to exactly that many tokens and a fixed number of
// sequences of width maxlen (pad_inputs): the real sequences first, then
// padding sequences of padding tokens (item 0, target and negatives item 1,
// weight 0), which attend only among themselves and add nothing to the loss
// or any gradient. The loss is the weighted sum of loss.h. The captured
// region reads the item table whole (its gradient is dense: no item rows,
// whose count would change the shapes again), so config validation asks for
// train.item_optimizer adam and a dense exchange. The reduce, the
// non-finite check and the optimizer step run outside the graph.
//
// The bucketing and the padding are plain tensor code, tested on the CPU
// (test_item_rows.cpp: a padded step gives the unpadded loss and
// gradients). The capture itself (StepGraph) is in step_graph_cuda.cpp in a
// CUDA build; step_graph_unavailable.cpp refuses it elsewhere.
#pragma once

#include <torch/torch.h>

#include <functional>
#include <memory>
#include <vector>

#include "sasrec/packing.h"

namespace sasrec {

// Bucket sizes for packed token counts up to `max_tokens`, ascending, the
// last one max_tokens itself.
std::vector<int64_t> token_buckets(int64_t max_tokens);
// The smallest bucket holding `tokens` (which must not exceed the last).
int64_t bucket_for(const std::vector<int64_t>& buckets, int64_t tokens);
// The sequences a padded batch has: batch_size plus enough rows of width
// `width` for the largest padding any bucket needs.
int64_t padded_batch(const std::vector<int64_t>& buckets, int64_t batch_size, int64_t width);

struct PaddedInputs {
  StepInputs inputs;     // exactly `tokens` tokens, `batch` sequences of width `width`
  torch::Tensor weight;  // [tokens] float32: 1 for the real targets, 0 for padding
};
// `in` (host tensors, any width <= `width`) padded as described above.
PaddedInputs pad_inputs(const StepInputs& in, int64_t tokens, int64_t batch, int64_t width);

// The captured steps of one model. `body` computes the step's weighted loss
// SUM from padded inputs (forward and loss); run() copies a step's inputs
// into the bucket's static tensors, replays (capturing on first use:
// warm-up, capture), and leaves the gradient of loss * scale in every
// parameter's grad(). Returns the loss sum (a device scalar).
class StepGraph {
 public:
  using Body = std::function<torch::Tensor(const StepInputs& inputs, const torch::Tensor& weight)>;
  StepGraph(std::vector<torch::Tensor> parameters, Body body);
  ~StepGraph();
  StepGraph(const StepGraph&) = delete;
  StepGraph& operator=(const StepGraph&) = delete;
  torch::Tensor run(const PaddedInputs& inputs, double scale);
  int64_t captured() const;  // graphs captured so far (one per bucket used)

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace sasrec
