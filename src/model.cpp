// model.cpp: the SASRec network (see model.h for the equations).
#include "sasrec/model.h"

#include <cmath>
#include <limits>

#include "sasrec/attention.h"
#include "sasrec/error.h"

namespace sasrec {
namespace {
constexpr double kLayerNormEps = 1e-8;  // as the authors' code and the PyTorch port

torch::nn::LayerNorm layer_norm(int64_t hidden) {
  return torch::nn::LayerNorm(torch::nn::LayerNormOptions({hidden}).eps(kLayerNormEps));
}
}  // namespace

SASRecOptions SASRecOptions::from(const ModelConfig& m, int64_t num_items, int64_t num_users) {
  SASRecOptions o;
  static_cast<ModelConfig&>(o) = m;
  o.num_items = num_items;
  o.num_users = num_users;
  return o;
}

torch::Tensor attention_mask(const torch::Tensor& seq) {
  const int64_t T = seq.size(1);
  auto opts = torch::TensorOptions().dtype(torch::kBool).device(seq.device());
  auto causal = torch::ones({T, T}, opts).tril();        // [T,T] j <= i
  auto self = torch::eye(T, opts);                        // [T,T] j == i
  auto key_is_item = (seq != 0).unsqueeze(1);             // [B,1,T]
  auto allowed = causal & (key_is_item | self);           // [B,T,T]
  auto mask = torch::zeros(allowed.sizes(), torch::TensorOptions().dtype(torch::kFloat32).device(seq.device()));
  mask.masked_fill_(allowed.logical_not(), -std::numeric_limits<float>::infinity());
  return mask.unsqueeze(1);                               // [B,1,T,T]
}

AttentionImpl::AttentionImpl(int64_t hidden, int64_t heads, double dropout, bool output,
                             std::shared_ptr<DropoutStream> stream)
    : heads_(heads), dropout_(dropout), stream_(std::move(stream)) {
  SASREC_CHECK(hidden % heads == 0, "heads must divide hidden");
  q_ = register_module("q", torch::nn::Linear(hidden, hidden));
  // No key bias: q.(k + b) shifts every score of a query row by the same
  // q.b, which softmax ignores. Its true gradient is 0, and Adam would turn
  // the float noise in it into full-size steps.
  k_ = register_module("k", torch::nn::Linear(torch::nn::LinearOptions(hidden, hidden).bias(false)));
  v_ = register_module("v", torch::nn::Linear(hidden, hidden));
  if (output) o_ = register_module("o", torch::nn::Linear(hidden, hidden));
}

torch::Tensor AttentionImpl::forward(const torch::Tensor& q_in, const torch::Tensor& kv_in, const Packing& packing) {
  auto heads = attend(q_in, kv_in, packing);
  if (!o_) return heads;
  return dropout(o_->forward(heads), dropout_, is_training(), *stream_);
}

torch::Tensor AttentionImpl::attend(const torch::Tensor& q_in, const torch::Tensor& kv_in, const Packing& packing) {
  auto q = q_->forward(q_in), k = k_->forward(kv_in), v = v_->forward(kv_in);  // [N,D]
  const double p = is_training() ? dropout_ : 0.0;
  if (q.device().is_cpu()) return packed_causal_attention(q, k, v, packing.offsets, heads_, p, p > 0 ? stream_->next_key() : 0);
  // Elsewhere: scatter to the padded batch, tensor ops, gather back.
  const int64_t B = packing.batch, T = packing.width, D = q.size(1);
  auto padded = [&](const torch::Tensor& x) {
    return torch::zeros({B * T, D}, x.options()).index_copy(0, packing.index, x).view({B, T, D});
  };
  auto is_item = torch::zeros({B * T}, q.options().dtype(torch::kBool)).index_fill(0, packing.index, true).view({B, T});
  torch::Tensor drop;
  if (p > 0) drop = torch::empty({B, heads_, T, T}, q.options()).bernoulli_(1.0 - p).div_(1.0 - p);
  auto out = causal_attention_reference(padded(q), padded(k), padded(v), attention_mask(is_item), heads_, drop);
  return out.view({B * T, D}).index_select(0, packing.index);
}

FeedForwardImpl::FeedForwardImpl(int64_t hidden, int64_t inner, Activation activation, double dropout,
                                 std::shared_ptr<DropoutStream> stream)
    : activation_(activation), dropout_(dropout), stream_(std::move(stream)) {
  w1_ = register_module("w1", torch::nn::Linear(hidden, inner));
  w2_ = register_module("w2", torch::nn::Linear(inner, hidden));
}

torch::Tensor FeedForwardImpl::forward(const torch::Tensor& x) {
  auto a = w1_->forward(x);
  a = activation_ == Activation::Gelu ? torch::gelu(a) : torch::relu(a);  // gelu: the exact (erf) form
  auto h = dropout(a, dropout_, is_training(), *stream_);
  return dropout(w2_->forward(h), dropout_, is_training(), *stream_);
}

BlockImpl::BlockImpl(const SASRecOptions& o, std::shared_ptr<DropoutStream> stream) : norm_(o.norm) {
  ln_attn_ = register_module("ln_attn", layer_norm(o.hidden));
  attn_ = register_module("attn", Attention(o.hidden, o.heads, o.dropout, o.attention_output, stream));
  ln_ffn_ = register_module("ln_ffn", layer_norm(o.hidden));
  const int64_t inner = o.ffn_hidden > 0 ? o.ffn_hidden : o.hidden;
  ffn_ = register_module("ffn", FeedForward(o.hidden, inner, o.activation, o.dropout, stream));
}

torch::Tensor BlockImpl::forward(const torch::Tensor& x, const Packing& packing) {
  switch (norm_) {
    case Norm::Pre: {  // x + SA(LN x), then x + FFN(LN x)
      auto h = ln_attn_->forward(x);
      auto y = x + attn_->forward(h, h, packing);
      return y + ffn_->forward(ln_ffn_->forward(y));
    }
    case Norm::Paper: {  // the authors' code: LN on the query only; residual from the normalized input
      auto q = ln_attn_->forward(x);
      auto y = q + attn_->forward(q, x, packing);
      auto z = ln_ffn_->forward(y);
      return z + ffn_->forward(z);
    }
    case Norm::Post: {  // LN(x + SA(x)), then LN(x + FFN(x))
      auto y = ln_attn_->forward(x + attn_->forward(x, x, packing));
      return ln_ffn_->forward(y + ffn_->forward(y));
    }
  }
  SASREC_CHECK(false, "unknown norm");
  return {};
}

SASRecImpl::SASRecImpl(const SASRecOptions& options) : options_(options) {
  SASREC_CHECK(options.num_items >= 1 && options.hidden >= 1 && options.maxlen >= 1 && options.blocks >= 1);
  item_ = register_module("item", torch::nn::Embedding(options.num_items + 1, options.hidden));
  position_ = register_module("position", torch::nn::Embedding(options.maxlen, options.hidden));
  if (options.user_embedding) {
    SASREC_CHECK(options.num_users >= 1, "user_embedding needs the user count");
    user_ = register_module("user", torch::nn::Embedding(options.num_users, options.hidden));
  }
  blocks_ = register_module("blocks", torch::nn::ModuleList());
  for (int64_t b = 0; b < options.blocks; ++b)
    blocks_->push_back(Block(options, dropout_stream_));
  final_ln_ = register_module("final_ln", layer_norm(options.hidden));
  if (options.embedding_norm) embedding_ln_ = register_module("embedding_ln", layer_norm(options.hidden));
  reset_parameters();
}

void SASRecImpl::reset_parameters() {
  torch::NoGradGuard no_grad;
  for (auto& named : named_parameters()) {
    auto& p = named.value();
    if (options_.init == Init::Xavier) {
      if (p.dim() >= 2) torch::nn::init::xavier_normal_(p);
    } else if (p.dim() >= 2) {
      torch::nn::init::normal_(p, 0.0, options_.init_std);
    } else if (named.key().size() >= 4 && named.key().compare(named.key().size() - 4, 4, "bias") == 0) {
      p.zero_();  // BERT's init; LayerNorm weights keep 1
    }
  }
  zero_padding();
}

void SASRecImpl::zero_padding() {
  torch::NoGradGuard no_grad;
  item_->weight[0].zero_();
}

Packing pack_sequences(const torch::Tensor& seq, int64_t maxlen) {
  TORCH_CHECK(seq.dim() == 2 && seq.scalar_type() == torch::kInt64, "seq must be [B,T] int64");
  const int64_t B = seq.size(0), T = seq.size(1);
  TORCH_CHECK(T >= 1 && T <= maxlen, "sequence width ", T, " outside 1..maxlen=", maxlen);
  Packing p;
  p.batch = B;
  p.width = T;
  auto flat = seq.reshape({-1});
  auto is_item = flat != 0;
  p.index = is_item.nonzero().squeeze(1);                                      // [N]
  p.items = flat.index_select(0, p.index);                                     // [N]
  p.positions = p.index.remainder(T) + (maxlen - T);                           // column t -> P[maxlen - T + t]
  p.sequence = p.index.div(T, "floor");                                        // [N]
  auto lengths = is_item.view({B, T}).sum(1).cpu();                            // [B]
  p.offsets = torch::cat({torch::zeros({1}, lengths.options()), lengths.cumsum(0)});  // [B+1]
  return p;
}

torch::Tensor SASRecImpl::embed(const Packing& packing, const torch::Tensor& item_rows) {
  auto items = item_rows.defined() ? torch::embedding(item_rows, packing.items) : item_->forward(packing.items);
  auto positions = position_->forward(packing.positions);
  auto x = embedding_ln_ ? embedding_ln_->forward(items + positions)  // [N,D]
                         : items * std::sqrt(static_cast<double>(options_.hidden)) + positions;
  return dropout(x, options_.dropout, is_training(), *dropout_stream_);
}

torch::Tensor SASRecImpl::forward_packed(const Packing& packing, const torch::Tensor& users,
                                         const torch::Tensor& item_rows) {
  auto x = embed(packing, item_rows);  // [N,D]
  for (const auto& block : *blocks_) x = block->as<Block>()->forward(x, packing);
  x = final_ln_->forward(x);  // [N,D]
  if (user_) {
    TORCH_CHECK(users.defined() && users.size(0) == packing.batch, "user_embedding needs users [B]");
    x = x + user_->forward(users).index_select(0, packing.sequence);
  }
  return x;
}

torch::Tensor SASRecImpl::forward(const torch::Tensor& seq, const torch::Tensor& users) {
  const Packing packing = pack_sequences(seq, options_.maxlen);
  auto x = forward_packed(packing, users);  // [N,D]
  return torch::zeros({packing.batch * packing.width, x.size(1)}, x.options())
      .index_copy(0, packing.index, x)
      .view({packing.batch, packing.width, x.size(1)});
}

}  // namespace sasrec
