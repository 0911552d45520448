// model.h: SASRec (Kang & McAuley, ICDM 2018, section III) as a libtorch module.
//
//   E = M[s] * sqrt(d) + P[t]          item embedding M (row 0 = padding, kept 0),
//                                      learnable positions P, dropout
//   b blocks of  causal self-attention + point-wise FFN (ReLU), residuals,
//                LayerNorm placed by `norm` (pre | post | paper), dropout
//   F = LayerNorm(last block)          final LayerNorm
//   r(i, t) = F(t) . M(i)              prediction with the shared item embedding
//                                      (+ U(u) with the explicit user embedding)
//
// Variants (SASRecOptions, off by default): GELU and a wider FFN, an output
// projection W_O after attention, LayerNorm(M[s] + P[t]) in place of the
// sqrt(d) scale, N(0, init_std) initialisation; together with norm: post they
// give the BERT-style SASRec of S3-Rec / ICLRec / RecBole (docs/design.md).
//
// Positions count from the right end of the window: the newest item sits at
// P[maxlen-1] however long the sequence is. Batches arrive left-padded
// [B,T] and are packed (pack_sequences): only items go through the network,
// as [N,D] rows, sequence after sequence; the attention kernel keeps the
// sequences apart (attention.h). Padding costs nothing and changes nothing.
// This file owns the network; losses, sampling and scoring live elsewhere.
#pragma once

#include <torch/torch.h>

#include "sasrec/config.h"
#include "sasrec/dropout.h"
#include "sasrec/packing.h"

namespace sasrec {

// The model's shape: the model.* settings (ModelConfig, whose defaults are
// the paper's model) and the table sizes of the data; and how it computes
// (runtime.attention, runtime.precision), which changes no function.
struct SASRecOptions : ModelConfig {
  int64_t num_items = 0;  // I; the table has I+1 rows
  int64_t num_users = 0;  // U; used with user_embedding
  AttentionKernel attention = AttentionKernel::Auto;
  Precision precision = Precision::Fp32;
  // train.item_table sharded: the module holds only M's rows [item_begin,
  // item_begin + item_rows) (item_shard.h); -1: all I+1 rows.
  int64_t item_begin = 0, item_rows = -1;
  bool sharded() const { return item_rows >= 0; }
  int64_t table_rows() const { return sharded() ? item_rows : num_items + 1; }

  static SASRecOptions from(const ModelConfig& m, int64_t num_items, int64_t num_users);
  static SASRecOptions from(const Config& c, int64_t num_items, int64_t num_users);
};

// Causal multi-head self-attention: queries from `q_in`, keys/values from `kv_in`.
class AttentionImpl : public torch::nn::Module {
 public:
  // `output`: a projection W_O (with dropout) after the heads are joined;
  // `kernel`: how the core is computed (runtime.attention).
  AttentionImpl(int64_t hidden, int64_t heads, double dropout, bool output, std::shared_ptr<DropoutStream> stream,
                AttentionKernel kernel = AttentionKernel::Auto);
  // q_in, kv_in [N,D] packed -> [N,D]: the fused kernel on packed rows
  // (attention.h), or SDPA / tensor ops on the padded batch.
  torch::Tensor forward(const torch::Tensor& q_in, const torch::Tensor& kv_in, const Packing& packing);
  // The kernel `auto` resolves to for projections like `q` (float32 CPU: fused).
  AttentionKernel kernel_for(const torch::Tensor& q) const;

 private:
  // The heads' outputs joined, before W_O.
  torch::Tensor attend(const torch::Tensor& q_in, const torch::Tensor& kv_in, const Packing& packing);

  int64_t heads_;
  AttentionKernel kernel_;
  double dropout_;
  std::shared_ptr<DropoutStream> stream_;
  torch::nn::Linear q_{nullptr}, k_{nullptr}, v_{nullptr}, o_{nullptr};
};
TORCH_MODULE(Attention);

// Point-wise feed-forward: Dropout(W2 Dropout(act(W1 x + b1)) + b2), act
// ReLU (paper) or GELU, W1 [inner, hidden].
class FeedForwardImpl : public torch::nn::Module {
 public:
  FeedForwardImpl(int64_t hidden, int64_t inner, Activation activation, double dropout,
                  std::shared_ptr<DropoutStream> stream);
  torch::Tensor forward(const torch::Tensor& x);  // [N,D] -> [N,D]

 private:
  Activation activation_;
  double dropout_;
  std::shared_ptr<DropoutStream> stream_;
  torch::nn::Linear w1_{nullptr}, w2_{nullptr};
};
TORCH_MODULE(FeedForward);

class BlockImpl : public torch::nn::Module {
 public:
  BlockImpl(const SASRecOptions& options, std::shared_ptr<DropoutStream> stream);
  // x [N,D] packed -> [N,D]
  torch::Tensor forward(const torch::Tensor& x, const Packing& packing);

 private:
  Norm norm_;
  torch::nn::LayerNorm ln_attn_{nullptr}, ln_ffn_{nullptr};
  Attention attn_{nullptr};
  FeedForward ffn_{nullptr};
};
TORCH_MODULE(Block);

class SASRecImpl : public torch::nn::Module {
 public:
  explicit SASRecImpl(const SASRecOptions& options);

  // The items of a packed batch; users [B] (only with user_embedding)
  // -> F [N,D], the vectors scored against M, row for row. With `item_rows`
  // (a [U,D] copy of some rows of M, item_rows.h) packing.items index that
  // table instead of M, and the gradient goes to it.
  torch::Tensor forward_packed(const Packing& packing, const torch::Tensor& users = {},
                               const torch::Tensor& item_rows = {});
  // The blocks' input, dropout applied: sqrt(d) M[s] + P[t] (or
  // LayerNorm(M[s] + P[t]) with embedding_norm) -> [N,D]; `item_rows` as above.
  torch::Tensor embed(const Packing& packing, const torch::Tensor& item_rows = {});
  // seq [B,T] int64, left-padded with 0, T <= maxlen -> F [B,T,D] (0 at padding).
  torch::Tensor forward(const torch::Tensor& seq, const torch::Tensor& users = {});

  // M, [I+1, D]; row 0 is the padding item. Sharded: this rank's rows of M.
  const torch::Tensor& item_weight() const { return item_->weight; }
  // P, [maxlen, D]; row maxlen-1 is the newest item's position.
  const torch::Tensor& position_weight() const { return position_->weight; }
  const SASRecOptions& options() const { return options_; }

  // Xavier-normal (init: xavier) or normal(0, init_std) with zero biases
  // (init: normal) for every parameter of rank >= 2, defaults elsewhere,
  // padding row of M zeroed. M's rows come from their own streams
  // (init_item_rows), the rest from libtorch's generator: a model's
  // parameters do not depend on how its table is sharded.
  void reset_parameters();
  // Re-zeroes M[0] (after an optimizer step).
  void zero_padding();
  // Restarts the dropout mask stream (the trainer does it every epoch).
  // `calls`: masks already drawn from this key (resuming inside an epoch).
  void reseed_dropout(uint64_t key, uint64_t calls = 0) { dropout_stream_->reseed(key, calls); }
  uint64_t dropout_calls() const { return dropout_stream_->calls(); }
  // The mask stream itself: the fused step (fused_model.h) draws from it in this module's order.
  DropoutStream& dropout_stream() { return *dropout_stream_; }

 private:
  SASRecOptions options_;
  std::shared_ptr<DropoutStream> dropout_stream_ = std::make_shared<DropoutStream>();
  torch::nn::Embedding item_{nullptr}, position_{nullptr}, user_{nullptr};
  torch::nn::ModuleList blocks_;
  torch::nn::LayerNorm final_ln_{nullptr}, embedding_ln_{nullptr};
};
TORCH_MODULE(SASRec);

// Every parameter of the model `o` describes, by its checkpoint name, in the
// order named_parameters() lists them: the one statement of the model's
// shapes. The constructor checks the module it builds against it; the
// memory plan sums it without building anything (memory_plan.h).
struct ParameterShape {
  std::string name;            // "blocks.0.attn.q.weight"
  std::vector<int64_t> shape;  // [d, d]
};
std::vector<ParameterShape> parameter_shapes(const SASRecOptions& o);

// Rows [begin, begin + w.size(0)) of an item table of `total_rows` rows
// drawn from N(0, std^2): blocks of 4096 rows, block b from the stream
// mix_seed(seed, b) (rng.h, Box-Muller), so a row's value depends on (seed,
// its id) only: not on the rank count, the thread count or libtorch's version.
void init_item_rows(torch::Tensor& w, int64_t begin, int64_t total_rows, double std, uint64_t seed);

// Which keys each query of a left-padded batch may see: seq [B,T] (item
// ids, or bool "is an item") -> bool [B,1,T,T], true where key j <= query
// i and j is an item, or j == i (a padding query sees itself: no softmax
// row is empty, nothing is NaN).
torch::Tensor attention_allowed(const torch::Tensor& seq);
// The same as an additive mask: 0 where allowed, -inf elsewhere, float32 [B,1,T,T].
torch::Tensor attention_mask(const torch::Tensor& seq);

}  // namespace sasrec
