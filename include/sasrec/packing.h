// packing.h: a left-padded batch as packed tokens, and a step's inputs
// staged in one host buffer so that they reach the device in one copy.
//
// Packed: the items of a [B,T] batch back to back without padding (the
// model runs every per-token layer on these N rows only, model.h). A step's
// inputs (the packing, each token's target and negatives, the shared
// negatives, the users) are cut from one byte buffer, built by the sampler
// threads ahead of the step; with `pin` the buffer is page-locked, so the
// copy to a CUDA device is one asynchronous transfer that overlaps the host.
// This file owns the layout; the sampler (sampler.h) fills Batch::inputs.
#pragma once

#include <torch/torch.h>

#include <cstdint>

namespace sasrec {

struct Batch;

// A left-padded batch seq [B,T] with its items packed back to back.
struct Packing {
  torch::Tensor items;           // [N] int64 item ids, sequence after sequence, in time order
  torch::Tensor positions;       // [N] int64 rows of P (counted from the right: the newest item is maxlen-1)
  torch::Tensor index;           // [N] int64 flat index of each item in the [B,T] batch
  torch::Tensor sequence;        // [N] int64 batch row of each item
  torch::Tensor offsets;         // [B+1] int64, CPU: sequence b is rows offsets[b]..offsets[b+1]
  int64_t batch = 0, width = 0;  // B, T
};
// Items must be right-aligned (left padding, 0 = padding); T <= maxlen.
Packing pack_sequences(const torch::Tensor& seq, int64_t maxlen);

// Rows x [N,D] of a packing back in its batch's shape: [B,T,D], 0 at padding.
torch::Tensor unpack_rows(const Packing& packing, const torch::Tensor& x);

// One row of a left-padded batch: the last min(n, width) of items[0..n)
// right-aligned in row[0..width), zeros before them (the model's input for
// "the history up to here": evaluation, serving).
void left_pad_last(const int32_t* items, int64_t n, int64_t width, int64_t* row);

// What a training step reads, packed: row n of pos / neg belongs to token n.
struct StepInputs {
  Packing packing;             // offsets stay on the host (the CPU attention kernel reads them)
  torch::Tensor pos;           // [N] int64 target of each token
  torch::Tensor neg;           // [N] (bce) or [N,k] (gbce) int64; undefined otherwise
  torch::Tensor shared;        // [K] int64 shared negatives (sampled_softmax); undefined otherwise
  torch::Tensor shared_log_q;  // [K] float32 log(K q) of the shared negatives (popularity); undefined otherwise
  torch::Tensor users;         // [B] int64 global user indices
  torch::Tensor staging;       // [bytes] uint8: every tensor above but offsets is a view of it

  // The same inputs on `device`: one copy of the staging buffer (without
  // blocking the host when it is pinned), the tensors views of the copy.
  StepInputs to(torch::Device device) const;
  // The staged tensors, in one fixed order (offsets excluded: host only);
  // undefined ones included.
  std::vector<torch::Tensor*> staged_tensors();
};

// Packs `batch` (maxlen: the model's) and cuts its tensors into one staging
// buffer, page-locked when `pin` (needs a CUDA build and device).
StepInputs stage_inputs(const Batch& batch, int64_t maxlen, bool pin);

}  // namespace sasrec
