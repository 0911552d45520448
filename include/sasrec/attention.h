// attention.h: SASRec's causal self-attention core, softmax(Q K^T / sqrt(dh)
// + mask) V with dropout on the weights, on packed sequences, as one
// autograd function on CPU.
//
// Packed: the B sequences of a batch lie back to back without padding,
// sequence b in rows offsets[b]..offsets[b+1] of [N,D] tensors, so no work
// is spent on padding (Beauty's batches were 43% padding even when sorted
// by length). Every row is an item and the mask is causal only.
//
// Why fused: done with tensor ops, a [B,H,T,T] batch of tiny products costs
// far more than its arithmetic. libtorch 1.13's CPU bmm loops over the batch
// with select/as_strided/resolve_conj per matrix (3,800 of them a step on
// Beauty, over half the step), and the mask, scale, softmax and dropout are
// six more ops each way. Here each (sequence, head) is two BLAS products
// forward and four backward, with softmax and dropout in loops between
// them, in parallel over the batch. Dropout masks are drawn element by
// element from the counter-based stream of dropout.h (regenerated, not
// stored, for the backward pass), so they do not depend on the thread count.
//
// This file owns the attention arithmetic; the projections live in
// model.cpp, the mask stream in dropout.cpp.
#pragma once

#include <torch/torch.h>

#include <cstdint>

namespace sasrec {

// q, k, v [N,D] float32 CPU (heads are the D/H column groups); offsets
// [B+1] int64 CPU; dropout p on the weights, drawn from mask stream `key`
// (p = 0: none) -> [N,D]. Differentiable in q, k and v.
torch::Tensor packed_causal_attention(const torch::Tensor& q, const torch::Tensor& k, const torch::Tensor& v,
                                      const torch::Tensor& offsets, int64_t heads, double p, uint64_t key);

// The same function with tensor ops on a left-padded batch (any device):
// the CUDA path, and the reference the fused kernel is tested against.
// q, k, v [B,T,D], additive_mask [B,1,T,T] (attention_mask() of the batch),
// drop [B,H,T,T] (0 or 1/(1-p); undefined: no dropout) -> [B,T,D].
torch::Tensor causal_attention_reference(const torch::Tensor& q, const torch::Tensor& k, const torch::Tensor& v,
                                         const torch::Tensor& additive_mask, int64_t heads, const torch::Tensor& drop);

// The dropout mask packed_causal_attention draws, laid out for the reference:
// sequence b's n x n block at the bottom right of its [T,T] matrices, 1
// elsewhere (masked there anyway). -> [B,H,T,T] float32.
torch::Tensor packed_attention_dropout_mask(const torch::Tensor& offsets, int64_t heads, int64_t width, double p,
                                            uint64_t key);

}  // namespace sasrec
