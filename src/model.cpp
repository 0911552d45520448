// model.cpp: the SASRec network (see model.h for the equations).
#include "sasrec/model.h"

#include <cmath>
#include <limits>

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
  o.num_items = num_items;
  o.num_users = num_users;
  o.hidden = m.hidden;
  o.blocks = m.blocks;
  o.heads = m.heads;
  o.maxlen = m.maxlen;
  o.dropout = m.dropout;
  o.norm = m.norm;
  o.user_embedding = m.user_embedding;
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

AttentionImpl::AttentionImpl(int64_t hidden, int64_t heads, double dropout, std::shared_ptr<DropoutStream> stream)
    : heads_(heads), dropout_(dropout), stream_(std::move(stream)) {
  SASREC_CHECK(hidden % heads == 0, "heads must divide hidden");
  q_ = register_module("q", torch::nn::Linear(hidden, hidden));
  // No key bias: q.(k + b) shifts every score of a query row by the same
  // q.b, which softmax ignores. Its true gradient is 0, and Adam would turn
  // the float noise in it into full-size steps.
  k_ = register_module("k", torch::nn::Linear(torch::nn::LinearOptions(hidden, hidden).bias(false)));
  v_ = register_module("v", torch::nn::Linear(hidden, hidden));
}

torch::Tensor AttentionImpl::forward(const torch::Tensor& q_in, const torch::Tensor& kv_in, const torch::Tensor& mask) {
  const int64_t B = q_in.size(0), T = q_in.size(1), D = q_in.size(2), dh = D / heads_;
  auto split = [&](const torch::Tensor& x) { return x.view({B, T, heads_, dh}).transpose(1, 2); };  // [B,H,T,dh]
  auto q = split(q_->forward(q_in));
  auto k = split(k_->forward(kv_in));
  auto v = split(v_->forward(kv_in));
  auto scores = torch::matmul(q, k.transpose(-2, -1)) / std::sqrt(static_cast<double>(dh)) + mask;  // [B,H,T,T]
  auto weights = dropout(torch::softmax(scores, -1), dropout_, is_training(), *stream_);
  return torch::matmul(weights, v).transpose(1, 2).reshape({B, T, D});  // [B,T,D]
}

FeedForwardImpl::FeedForwardImpl(int64_t hidden, double dropout, std::shared_ptr<DropoutStream> stream)
    : dropout_(dropout), stream_(std::move(stream)) {
  w1_ = register_module("w1", torch::nn::Linear(hidden, hidden));
  w2_ = register_module("w2", torch::nn::Linear(hidden, hidden));
}

torch::Tensor FeedForwardImpl::forward(const torch::Tensor& x) {
  auto h = dropout(torch::relu(w1_->forward(x)), dropout_, is_training(), *stream_);
  return dropout(w2_->forward(h), dropout_, is_training(), *stream_);
}

BlockImpl::BlockImpl(int64_t hidden, int64_t heads, double dropout, Norm norm, std::shared_ptr<DropoutStream> stream)
    : norm_(norm) {
  ln_attn_ = register_module("ln_attn", layer_norm(hidden));
  attn_ = register_module("attn", Attention(hidden, heads, dropout, stream));
  ln_ffn_ = register_module("ln_ffn", layer_norm(hidden));
  ffn_ = register_module("ffn", FeedForward(hidden, dropout, stream));
}

torch::Tensor BlockImpl::forward(const torch::Tensor& x, const torch::Tensor& mask) {
  switch (norm_) {
    case Norm::Pre: {  // x + SA(LN x), then x + FFN(LN x)
      auto h = ln_attn_->forward(x);
      auto y = x + attn_->forward(h, h, mask);
      return y + ffn_->forward(ln_ffn_->forward(y));
    }
    case Norm::Paper: {  // the authors' code: LN on the query only; residual from the normalized input
      auto q = ln_attn_->forward(x);
      auto y = q + attn_->forward(q, x, mask);
      auto z = ln_ffn_->forward(y);
      return z + ffn_->forward(z);
    }
    case Norm::Post: {  // LN(x + SA(x)), then LN(x + FFN(x))
      auto y = ln_attn_->forward(x + attn_->forward(x, x, mask));
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
    blocks_->push_back(Block(options.hidden, options.heads, options.dropout, options.norm, dropout_stream_));
  final_ln_ = register_module("final_ln", layer_norm(options.hidden));
  reset_parameters();
}

void SASRecImpl::reset_parameters() {
  torch::NoGradGuard no_grad;
  for (auto& p : parameters())
    if (p.dim() >= 2) torch::nn::init::xavier_normal_(p);
  zero_padding();
}

void SASRecImpl::zero_padding() {
  torch::NoGradGuard no_grad;
  item_->weight[0].zero_();
}

torch::Tensor SASRecImpl::forward(const torch::Tensor& seq, const torch::Tensor& users) {
  TORCH_CHECK(seq.dim() == 2 && seq.scalar_type() == torch::kInt64, "seq must be [B,T] int64");
  const int64_t T = seq.size(1);
  TORCH_CHECK(T >= 1 && T <= options_.maxlen, "sequence width ", T, " outside 1..maxlen=", options_.maxlen);
  auto keep = (seq != 0).unsqueeze(-1).to(torch::kFloat32);  // [B,T,1]
  // Positions counted from the right: column t of a width-T batch is P[maxlen - T + t].
  auto positions = torch::arange(options_.maxlen - T, options_.maxlen, seq.options());  // [T]
  auto x = item_->forward(seq) * std::sqrt(static_cast<double>(options_.hidden)) +
           position_->forward(positions).unsqueeze(0);  // [B,T,D]
  x = dropout(x, options_.dropout, is_training(), *dropout_stream_) * keep;
  auto mask = attention_mask(seq);  // [B,1,T,T]
  for (const auto& block : *blocks_) x = block->as<Block>()->forward(x, mask) * keep;
  x = final_ln_->forward(x);  // [B,T,D]
  if (user_) {
    TORCH_CHECK(users.defined() && users.size(0) == seq.size(0), "user_embedding needs users [B]");
    x = x + user_->forward(users).unsqueeze(1);
  }
  return x;
}

}  // namespace sasrec
