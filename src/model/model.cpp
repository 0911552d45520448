// model.cpp: the SASRec network (see model.h for the equations).
#include "sasrec/model.h"

#include <ATen/CPUGeneratorImpl.h>
#include <ATen/Parallel.h>

#include <algorithm>
#include <cmath>
#include <limits>

#include "sasrec/attention.h"
#include "sasrec/error.h"
#include "sasrec/rng.h"
#include "sasrec/torch_compat.h"

namespace sasrec {
namespace {
constexpr double kLayerNormEps = 1e-8;  // as the authors' code and the PyTorch port

torch::nn::LayerNorm layer_norm(int64_t hidden) {
  return torch::nn::LayerNorm(torch::nn::LayerNormOptions({hidden}).eps(kLayerNormEps));
}

// A table whose floats loops may write in place through data_ptr.
bool host_float32(const torch::Tensor& w) {
  return w.is_cpu() && w.scalar_type() == torch::kFloat32 && w.is_contiguous();
}
}  // namespace

SASRecOptions SASRecOptions::from(const ModelConfig& m, int64_t num_items, int64_t num_users) {
  SASRecOptions o;
  static_cast<ModelConfig&>(o) = m;
  o.num_items = num_items;
  o.num_users = num_users;
  return o;
}

SASRecOptions SASRecOptions::from(const Config& c, int64_t num_items, int64_t num_users) {
  SASRecOptions o = from(c.model, num_items, num_users);
  o.attention = c.runtime.attention;
  o.precision = c.runtime.precision;
  return o;
}

torch::Tensor attention_allowed(const torch::Tensor& seq) {
  const int64_t T = seq.size(1);
  auto opts = torch::TensorOptions().dtype(torch::kBool).device(seq.device());
  auto causal = torch::ones({T, T}, opts).tril();       // [T,T] j <= i
  auto self = torch::eye(T, opts);                      // [T,T] j == i
  auto key_is_item = (seq != 0).unsqueeze(1);           // [B,1,T]
  return (causal & (key_is_item | self)).unsqueeze(1);  // [B,1,T,T]
}

torch::Tensor attention_mask(const torch::Tensor& seq) {
  auto allowed = attention_allowed(seq);
  auto mask = torch::zeros(allowed.sizes(), torch::TensorOptions().dtype(torch::kFloat32).device(seq.device()));
  return mask.masked_fill_(allowed.logical_not(), -std::numeric_limits<float>::infinity());
}

AttentionImpl::AttentionImpl(int64_t hidden, int64_t heads, double dropout, bool output,
                             std::shared_ptr<DropoutStream> stream, AttentionKernel kernel)
    : heads_(heads), kernel_(kernel), dropout_(dropout), stream_(std::move(stream)) {
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

AttentionKernel AttentionImpl::kernel_for(const torch::Tensor& q) const {
  if (kernel_ != AttentionKernel::Auto) return kernel_;
  if (q.device().is_cpu() && q.scalar_type() == torch::kFloat32) return AttentionKernel::Fused;
  return compat::kHasSdpa ? AttentionKernel::Sdpa : AttentionKernel::Tensor;
}

torch::Tensor AttentionImpl::attend(const torch::Tensor& q_in, const torch::Tensor& kv_in, const Packing& packing) {
  auto q = q_->forward(q_in), k = k_->forward(kv_in), v = v_->forward(kv_in);  // [N,D]
  const double p = is_training() ? dropout_ : 0.0;
  const AttentionKernel kernel = kernel_for(q);
  if (kernel == AttentionKernel::Fused)
    return packed_causal_attention(q, k, v, packing.offsets, heads_, p, p > 0 ? stream_->next_key() : 0);
  // SDPA and tensor ops: scatter to the padded batch [B,T,D], attend, gather back.
  const int64_t B = packing.batch, T = packing.width, D = q.size(1);
  auto padded = [&](const torch::Tensor& x) {
    return torch::zeros({B * T, D}, x.options()).index_copy(0, packing.index, x).view({B, T, D});
  };
  auto is_item = torch::zeros({B * T}, q.options().dtype(torch::kBool)).index_fill(0, packing.index, true).view({B, T});
  torch::Tensor out;  // [B,T,D]
  if (kernel == AttentionKernel::Sdpa) {
    auto heads = [&](const torch::Tensor& x) { return padded(x).view({B, T, heads_, D / heads_}).transpose(1, 2); };
    out = compat::scaled_dot_product_attention(heads(q), heads(k), heads(v), attention_allowed(is_item), p)
              .transpose(1, 2)
              .reshape({B, T, D});
  } else {
    torch::Tensor drop;
    if (p > 0) drop = torch::empty({B, heads_, T, T}, q.options()).bernoulli_(1.0 - p).div_(1.0 - p);
    out = causal_attention_reference(padded(q), padded(k), padded(v), attention_mask(is_item).to(q.scalar_type()),
                                     heads_, drop);
  }
  return out.reshape({B * T, D}).index_select(0, packing.index);
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
  attn_ = register_module("attn", Attention(o.hidden, o.heads, o.dropout, o.attention_output, stream, o.attention));
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
  SASREC_CHECK(!options.sharded() ||
                   (options.item_begin >= 0 && options.item_begin + options.item_rows <= options.num_items + 1),
               "item rows [", options.item_begin, ", +", options.item_rows, ") outside the ", options.num_items + 1,
               "-row table");
  // M arrives uninitialised (reset_parameters draws it by rows), so its size takes no draws from the generator.
  const int64_t rows = options.table_rows();
  item_ = register_module(
      "item", torch::nn::Embedding(
                  torch::nn::EmbeddingOptions(rows, options.hidden)._weight(torch::empty({rows, options.hidden}))));
  position_ = register_module("position", torch::nn::Embedding(options.maxlen, options.hidden));
  if (options.user_embedding) {
    SASREC_CHECK(options.num_users >= 1, "user_embedding needs the user count");
    user_ = register_module("user", torch::nn::Embedding(options.num_users, options.hidden));
  }
  blocks_ = register_module("blocks", torch::nn::ModuleList());
  for (int64_t b = 0; b < options.blocks; ++b) blocks_->push_back(Block(options, dropout_stream_));
  final_ln_ = register_module("final_ln", layer_norm(options.hidden));
  if (options.embedding_norm) embedding_ln_ = register_module("embedding_ln", layer_norm(options.hidden));
  // The module matches the one statement of its shapes, name by name.
  const auto shapes = parameter_shapes(options);
  const auto named = named_parameters();
  SASREC_CHECK(named.size() == shapes.size(), named.size(), " parameters built, ", shapes.size(), " declared");
  for (size_t i = 0; i < shapes.size(); ++i)
    SASREC_CHECK(named[i].key() == shapes[i].name && named[i].value().sizes().vec() == shapes[i].shape, "parameter ", i,
                 " is ", named[i].key(), " ", named[i].value().sizes(), ", declared ", shapes[i].name);
  reset_parameters();
}

std::vector<ParameterShape> parameter_shapes(const SASRecOptions& o) {
  const int64_t d = o.hidden, f = o.ffn_hidden > 0 ? o.ffn_hidden : o.hidden;
  std::vector<ParameterShape> out{{"item.weight", {o.table_rows(), d}}, {"position.weight", {o.maxlen, d}}};
  if (o.user_embedding) out.push_back({"user.weight", {o.num_users, d}});
  for (int64_t b = 0; b < o.blocks; ++b) {
    const std::string p = "blocks." + std::to_string(b) + ".";
    auto add = [&](const std::string& name, std::vector<int64_t> shape) {
      out.push_back({p + name, std::move(shape)});
    };
    add("ln_attn.weight", {d}), add("ln_attn.bias", {d});
    add("attn.q.weight", {d, d}), add("attn.q.bias", {d});
    add("attn.k.weight", {d, d});  // no key bias (model.h)
    add("attn.v.weight", {d, d}), add("attn.v.bias", {d});
    if (o.attention_output) add("attn.o.weight", {d, d}), add("attn.o.bias", {d});
    add("ln_ffn.weight", {d}), add("ln_ffn.bias", {d});
    add("ffn.w1.weight", {f, d}), add("ffn.w1.bias", {f});
    add("ffn.w2.weight", {d, f}), add("ffn.w2.bias", {d});
  }
  out.push_back({"final_ln.weight", {d}});
  out.push_back({"final_ln.bias", {d}});
  if (o.embedding_norm) out.push_back({"embedding_ln.weight", {d}}), out.push_back({"embedding_ln.bias", {d}});
  return out;
}

void SASRecImpl::reset_parameters() {
  torch::NoGradGuard no_grad;
  for (auto& named : named_parameters()) {
    auto& p = named.value();
    if (p.is_same(item_->weight)) {
      // xavier_normal_'s std for the whole [I+1, d] table, whichever rows this module holds.
      const double rows = static_cast<double>(options_.num_items + 1), d = static_cast<double>(options_.hidden);
      const double std = options_.init == Init::Xavier ? std::sqrt(2.0 / (rows + d)) : options_.init_std;
      init_item_rows(p, options_.item_begin, options_.num_items + 1, std,
                     at::detail::getDefaultCPUGenerator().current_seed());
    } else if (options_.init == Init::Xavier) {
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
  auto& w = item_->weight;
  if (options_.item_begin != 0 || w.size(0) == 0) return;
  if (host_float32(w)) {
    std::fill_n(w.data_ptr<float>(), w.size(1), 0.0f);  // every step: `w[0].zero_()` took 0.010 ms
  } else {
    w[0].zero_();
  }
}

void init_item_rows(torch::Tensor& w, int64_t begin, int64_t total_rows, double std, uint64_t seed) {
  constexpr int64_t kBlock = 4096;
  constexpr uint64_t kItemInitStream = 0x17e3ull;
  const int64_t n = w.size(0), d = w.size(1);
  SASREC_CHECK(begin >= 0 && begin + n <= total_rows, "init_item_rows: rows [", begin, ", ", begin + n, ") of ",
               total_rows);
  // Drawn in place on a CPU float32 table; elsewhere on the host, then copied.
  const bool in_place = host_float32(w);
  auto host = in_place ? w : torch::empty({n, d}, torch::kFloat32);
  float* out = host.data_ptr<float>();
  const int64_t first = begin / kBlock, last = (begin + n + kBlock - 1) / kBlock;  // blocks [first, last)
  at::parallel_for(first, last, 1, [&](int64_t b0, int64_t b1) {
    std::vector<float> block;
    for (int64_t b = b0; b < b1; ++b) {
      const int64_t r0 = b * kBlock, r1 = std::min(total_rows, r0 + kBlock);
      block.resize(static_cast<size_t>((r1 - r0) * d));
      Rng rng(mix_seed({seed, kItemInitStream, static_cast<uint64_t>(b)}));
      for (size_t i = 0; i < block.size(); i += 2) {                // Box-Muller: two normals from two uniforms
        const double u1 = 1.0 - rng.uniform(), u2 = rng.uniform();  // u1 in (0, 1]
        const double radius = std * std::sqrt(-2.0 * std::log(u1)), angle = 2.0 * M_PI * u2;
        block[i] = static_cast<float>(radius * std::cos(angle));
        if (i + 1 < block.size()) block[i + 1] = static_cast<float>(radius * std::sin(angle));
      }
      const int64_t lo = std::max(r0, begin), hi = std::min(r1, begin + n);  // the block's rows this module holds
      if (lo < hi) std::copy(block.data() + (lo - r0) * d, block.data() + (hi - r0) * d, out + (lo - begin) * d);
    }
  });
  if (!in_place) w.copy_(host);
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
  {
    // runtime.precision bf16: the blocks under autocast (their matrix
    // products in bf16), parameters, the final LayerNorm and all after it fp32.
    const compat::AutocastGuard autocast(x.device().type(), torch::kBFloat16, options_.precision == Precision::Bf16);
    for (const auto& block : *blocks_) x = block->as<Block>()->forward(x, packing);
  }
  x = final_ln_->forward(x.to(torch::kFloat32));  // [N,D]
  if (user_) {
    TORCH_CHECK(users.defined() && users.size(0) == packing.batch, "user_embedding needs users [B]");
    x = x + user_->forward(users).index_select(0, packing.sequence);
  }
  return x;
}

torch::Tensor SASRecImpl::forward(const torch::Tensor& seq, const torch::Tensor& users) {
  const Packing packing = pack_sequences(seq, options_.maxlen);
  return unpack_rows(packing, forward_packed(packing, users));
}

}  // namespace sasrec
