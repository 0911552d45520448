// attention.cpp: fused causal self-attention on packed sequences (see attention.h).
#include "sasrec/attention.h"

#include <ATen/Parallel.h>
#include <cblas.h>

#include <cmath>
#include <vector>

#include "sasrec/dropout.h"

namespace sasrec {
namespace {

// Where each (sequence, head) lives: rows of the [N,D] inputs and its n x n
// block in the flat buffers of weights (and in the dropout stream).
struct Layout {
  int64_t B = 0, D = 0, H = 0, dh = 0;
  float scale = 0;
  std::vector<int64_t> row;    // [B+1] first row of sequence b
  std::vector<int64_t> block;  // [B+1] first weight of sequence b (H blocks of n*n each)

  Layout(const torch::Tensor& offsets, int64_t d, int64_t heads)
      : B(offsets.numel() - 1), D(d), H(heads), dh(d / heads) {
    scale = static_cast<float>(1.0 / std::sqrt(static_cast<double>(dh)));
    auto o = offsets.contiguous();
    const int64_t* p = o.data_ptr<int64_t>();
    row.assign(p, p + B + 1);
    block.assign(B + 1, 0);
    for (int64_t b = 0; b < B; ++b) {
      const int64_t n = row[b + 1] - row[b];
      block[b + 1] = block[b] + H * n * n;
    }
  }
  int64_t length(int64_t b) const { return row[b + 1] - row[b]; }
};

void gemm(bool trans_a, bool trans_b, int64_t m, int64_t n, int64_t k, float alpha, const float* a, int64_t lda,
          const float* b, int64_t ldb, float* c, int64_t ldc) {
  cblas_sgemm(CblasRowMajor, trans_a ? CblasTrans : CblasNoTrans, trans_b ? CblasTrans : CblasNoTrans,
              static_cast<int>(m), static_cast<int>(n), static_cast<int>(k), alpha, a, static_cast<int>(lda), b,
              static_cast<int>(ldb), 0.0f, c, static_cast<int>(ldc));
}

// Causal softmax of the scores S [n,n] in place: row i over columns 0..i, 0 after.
void causal_softmax(float* S, int64_t n) {
  for (int64_t i = 0; i < n; ++i) {
    float* row = S + i * n;
    float top = row[0];
    for (int64_t j = 1; j <= i; ++j) top = std::max(top, row[j]);
    float sum = 0;
    for (int64_t j = 0; j <= i; ++j) sum += (row[j] = std::exp(row[j] - top));
    const float inv = 1.0f / sum;
    for (int64_t j = 0; j <= i; ++j) row[j] *= inv;
    for (int64_t j = i + 1; j < n; ++j) row[j] = 0;
  }
}

// Multiplies a block of `count` weights starting at stream element `first` by the dropout mask.
void apply_dropout(float* x, int64_t count, int64_t first, uint64_t key, uint32_t threshold, float scale) {
  for (int64_t e = 0; e < count; ++e) x[e] = dropout_keeps(key, first + e, threshold) ? x[e] * scale : 0.0f;
}

class PackedCausalAttention : public torch::autograd::Function<PackedCausalAttention> {
 public:
  static torch::Tensor forward(torch::autograd::AutogradContext* ctx, const torch::Tensor& q_in,
                               const torch::Tensor& k_in, const torch::Tensor& v_in, const torch::Tensor& offsets,
                               int64_t heads, double p, int64_t key) {
    auto q = q_in.contiguous(), k = k_in.contiguous(), v = v_in.contiguous();
    const Layout L(offsets, q.size(1), heads);
    const bool dropout = p > 0;
    const uint32_t threshold = dropout_threshold(p);
    const float keep_scale = dropout ? static_cast<float>(1.0 / (1.0 - p)) : 1.0f;
    auto probs = torch::empty({L.block[L.B]}, q.options());     // softmax, before dropout
    auto weights = dropout ? torch::empty_like(probs) : probs;  // after dropout
    auto out = torch::empty_like(q);
    const float *Q = q.data_ptr<float>(), *K = k.data_ptr<float>(), *V = v.data_ptr<float>();
    float *P = probs.data_ptr<float>(), *W = weights.data_ptr<float>(), *O = out.data_ptr<float>();
    at::parallel_for(0, L.B * L.H, 1, [&](int64_t begin, int64_t end) {
      for (int64_t bh = begin; bh < end; ++bh) {
        const int64_t b = bh / L.H, h = bh % L.H, n = L.length(b);
        if (n == 0) continue;
        const int64_t x = L.row[b] * L.D + h * L.dh, w = L.block[b] + h * n * n;
        gemm(false, true, n, n, L.dh, L.scale, Q + x, L.D, K + x, L.D, P + w, n);  // S = Q K^T / sqrt(dh)
        causal_softmax(P + w, n);
        if (dropout) {
          std::copy(P + w, P + w + n * n, W + w);
          apply_dropout(W + w, n * n, w, static_cast<uint64_t>(key), threshold, keep_scale);
        }
        gemm(false, false, n, L.dh, n, 1.0f, W + w, n, V + x, L.D, O + x, L.D);  // O = W V
      }
    });
    ctx->save_for_backward({q, k, v, probs, weights, offsets});
    ctx->saved_data["heads"] = heads;
    ctx->saved_data["p"] = p;
    ctx->saved_data["key"] = key;
    return out;
  }

  static torch::autograd::variable_list backward(torch::autograd::AutogradContext* ctx,
                                                 torch::autograd::variable_list grad_out) {
    const auto saved = ctx->get_saved_variables();
    const auto &q = saved[0], &k = saved[1], &v = saved[2], &probs = saved[3], &weights = saved[4];
    const Layout L(saved[5], q.size(1), ctx->saved_data["heads"].toInt());
    const double p = ctx->saved_data["p"].toDouble();
    const uint64_t key = static_cast<uint64_t>(ctx->saved_data["key"].toInt());
    const uint32_t threshold = dropout_threshold(p);
    const float keep_scale = p > 0 ? static_cast<float>(1.0 / (1.0 - p)) : 1.0f;
    auto dout = grad_out[0].contiguous();
    auto dq = torch::empty_like(q), dk = torch::empty_like(k), dv = torch::empty_like(v);
    const float *Q = q.data_ptr<float>(), *K = k.data_ptr<float>(), *V = v.data_ptr<float>();
    const float *P = probs.data_ptr<float>(), *W = weights.data_ptr<float>(), *dO = dout.data_ptr<float>();
    float *dQ = dq.data_ptr<float>(), *dK = dk.data_ptr<float>(), *dV = dv.data_ptr<float>();
    at::parallel_for(0, L.B * L.H, 1, [&](int64_t begin, int64_t end) {
      std::vector<float> dS;
      for (int64_t bh = begin; bh < end; ++bh) {
        const int64_t b = bh / L.H, h = bh % L.H, n = L.length(b);
        if (n == 0) continue;
        const int64_t x = L.row[b] * L.D + h * L.dh, w = L.block[b] + h * n * n;
        dS.resize(n * n);
        gemm(false, true, n, n, L.dh, 1.0f, dO + x, L.D, V + x, L.D, dS.data(), n);  // dW = dO V^T
        gemm(true, false, n, L.dh, n, 1.0f, W + w, n, dO + x, L.D, dV + x, L.D);     // dV = W^T dO
        if (p > 0) apply_dropout(dS.data(), n * n, w, key, threshold, keep_scale);   // dP = dW * mask
        for (int64_t i = 0; i < n; ++i) {  // softmax backward: dS = P * (dP - rowsum(dP * P))
          const float* prow = P + w + i * n;
          float* drow = dS.data() + i * n;
          float dot = 0;
          for (int64_t j = 0; j <= i; ++j) dot += drow[j] * prow[j];
          for (int64_t j = 0; j < n; ++j) drow[j] = prow[j] * (drow[j] - dot);
        }
        gemm(false, false, n, L.dh, n, L.scale, dS.data(), n, K + x, L.D, dQ + x, L.D);  // dQ = dS K / sqrt(dh)
        gemm(true, false, n, L.dh, n, L.scale, dS.data(), n, Q + x, L.D, dK + x, L.D);   // dK = dS^T Q / sqrt(dh)
      }
    });
    return {dq, dk, dv, torch::Tensor(), torch::Tensor(), torch::Tensor(), torch::Tensor()};
  }
};

}  // namespace

torch::Tensor packed_causal_attention(const torch::Tensor& q, const torch::Tensor& k, const torch::Tensor& v,
                                      const torch::Tensor& offsets, int64_t heads, double p, uint64_t key) {
  TORCH_CHECK(q.device().is_cpu() && q.scalar_type() == torch::kFloat32, "packed_causal_attention: float32 CPU");
  TORCH_CHECK(q.dim() == 2 && q.sizes() == k.sizes() && q.sizes() == v.sizes(), "packed_causal_attention: [N,D]");
  TORCH_CHECK(heads >= 1 && q.size(1) % heads == 0, "packed_causal_attention: heads must divide D");
  TORCH_CHECK(offsets.device().is_cpu() && offsets.scalar_type() == torch::kInt64 && offsets.dim() == 1 &&
                  offsets.numel() >= 1 && offsets[0].item<int64_t>() == 0 && offsets[-1].item<int64_t>() == q.size(0),
              "packed_causal_attention: offsets [B+1] int64 CPU from 0 to N");
  TORCH_CHECK(p >= 0 && p < 1, "packed_causal_attention: dropout must be in [0,1)");
  return PackedCausalAttention::apply(q, k, v, offsets, heads, p, static_cast<int64_t>(key));
}

torch::Tensor causal_attention_reference(const torch::Tensor& q_in, const torch::Tensor& k_in,
                                         const torch::Tensor& v_in, const torch::Tensor& additive_mask, int64_t heads,
                                         const torch::Tensor& drop) {
  const int64_t B = q_in.size(0), T = q_in.size(1), D = q_in.size(2), dh = D / heads;
  auto split = [&](const torch::Tensor& x) { return x.view({B, T, heads, dh}).transpose(1, 2); };  // [B,H,T,dh]
  auto q = split(q_in), k = split(k_in), v = split(v_in);
  auto scores = torch::matmul(q, k.transpose(-2, -1)) / std::sqrt(static_cast<double>(dh)) + additive_mask;
  auto weights = torch::softmax(scores, -1);  // [B,H,T,T]
  if (drop.defined()) weights = weights * drop;
  return torch::matmul(weights, v).transpose(1, 2).reshape({B, T, D});  // [B,T,D]
}

torch::Tensor packed_attention_dropout_mask(const torch::Tensor& offsets, int64_t heads, int64_t width, double p,
                                            uint64_t key) {
  const Layout L(offsets, /*d=*/heads, heads);  // block offsets depend on the heads only
  auto mask = torch::ones({L.B, heads, width, width});
  auto m = mask.accessor<float, 4>();
  const uint32_t threshold = dropout_threshold(p);
  const float scale = static_cast<float>(1.0 / (1.0 - p));
  for (int64_t b = 0; b < L.B; ++b) {
    const int64_t n = L.length(b), pad = width - n;
    for (int64_t h = 0; h < heads; ++h)
      for (int64_t i = 0; i < n; ++i)
        for (int64_t j = 0; j < n; ++j)
          m[b][h][pad + i][pad + j] = dropout_keeps(key, L.block[b] + h * n * n + i * n + j, threshold) ? scale : 0.0f;
  }
  return mask;
}

}  // namespace sasrec
