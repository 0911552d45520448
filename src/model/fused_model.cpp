// fused_model.cpp: the fused training step (see fused_model.h).
//
// Layout of one step, N packed tokens, D hidden, F ffn width, L blocks:
//   arena     every activation the backward needs, [N,.] buffers whose rows
//             are the tokens, so the runs of different threads write
//             disjoint rows of the same buffers
//   grads     one flat buffer for the gradients of the blocks and the layer
//             norms (the parameters' .grad() are views of it), and one more
//             per extra run, added in at the end
//   tables    the item, position and user tables' gradients are scattered
//             after the runs, each thread a range of the tables' rows, tokens
//             in order (no partial tables, the same sums for any thread count)
#include "sasrec/fused_model.h"

#include <ATen/Parallel.h>

#include <omp.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cmath>
#include <cstring>
#include <exception>
#include <limits>
#include <mutex>
#include <thread>
#include <vector>

#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#endif

#include "sasrec/dropout.h"
#include "sasrec/error.h"
#include "sasrec/fused_layers.h"

namespace sasrec {

using fused::gemm;
using fused::kRowsAhead;

std::string fused_unsupported(const Config& config, torch::Device device) {
  if (!device.is_cpu()) return "the fused step runs on the CPU and this run is on " + device.str();
  if (config.runtime.precision != Precision::Fp32) return "the fused step is float32 and runtime.precision is bf16";
  if (config.runtime.cuda_graphs) return "runtime.cuda_graphs captures the autograd step";
  if (config.runtime.attention != AttentionKernel::Auto && config.runtime.attention != AttentionKernel::Fused)
    return detail::cat("runtime.attention is ", attention_name(config.runtime.attention),
                       " and the fused step has its own packed attention");
  return "";
}

namespace {

using Clock = std::chrono::steady_clock;
constexpr float kLayerNormEps = 1e-8f;  // model.cpp's
constexpr float kNegInf = -std::numeric_limits<float>::infinity();

// The threads of one parallel region waiting for each other by spinning
// (the CPU's pause, then yielding the core to whatever else wants it), never
// by sleeping: a phase of a small step lasts less than waking a sleeping
// thread (a futex and, in a VM, a halted vCPU). One per step, not reused
// across regions.
class SpinBarrier {
 public:
  // Every thread of the region first, with the region's thread count.
  void join(int threads) { threads_.store(threads, std::memory_order_relaxed); }
  void wait() {
    const int generation = generation_.load(std::memory_order_acquire);
    if (arrived_.fetch_add(1, std::memory_order_acq_rel) + 1 == threads_.load(std::memory_order_relaxed)) {
      arrived_.store(0, std::memory_order_relaxed);
      generation_.store(generation + 1, std::memory_order_release);
      return;
    }
    for (int spins = 0; generation_.load(std::memory_order_acquire) == generation; ++spins) relax(spins);
  }
  // The end of the region: the others leave at once, the master only once they all have, so that it
  // arrives last at OpenMP's closing barrier and does not go to sleep there.
  void leave_last(bool master) {
    if (!master) {
      left_.fetch_add(1, std::memory_order_release);
      return;
    }
    for (int spins = 0; left_.load(std::memory_order_acquire) + 1 < threads_.load(std::memory_order_relaxed); ++spins)
      relax(spins);
  }

 private:
  static void relax(int spins) {
#if defined(__x86_64__) || defined(__i386__)
    if (spins < 2048) {
      _mm_pause();
      return;
    }
#endif
    (void)spins;
    std::this_thread::yield();
  }
  std::atomic<int> threads_{1}, arrived_{0}, generation_{0}, left_{0};
};

const float* cf(const torch::Tensor& t) { return t.data_ptr<float>(); }
const int64_t* ci(const torch::Tensor& t) { return t.defined() ? t.data_ptr<int64_t>() : nullptr; }

// The parameters of one block, and where their gradients sit in the flat buffer.
struct BlockParams {
  torch::Tensor ln_a_w, ln_a_b, wq, bq, wk, wv, bv, wo, bo, ln_f_w, ln_f_b, w1, b1, w2, b2;
};
struct BlockGrads {  // offsets into the flat gradient buffer; wq, wk, wv back to back as [3D,D]
  int64_t wqkv = 0, bq = 0, bv = 0, wo = -1, bo = -1, ln_a_w = 0, ln_a_b = 0, ln_f_w = 0, ln_f_b = 0;
  int64_t w1 = 0, b1 = 0, w2 = 0, b2 = 0;
};
// A block's saved activations (rows = tokens).
struct BlockActs {
  float *in, *a, *r1, *b, *r2;               // [N,D] input, LN outputs and residual sums (see block_forward)
  float *mean_a, *rstd_a, *mean_f, *rstd_f;  // [N]
  float* qkv;                                // [N,3D]
  float *probs, *weights;                    // [sum over sequences of H n^2]
  float *heads, *att;                        // [N,D] attention core output, attention output (before the residual)
  float *u, *hd;                             // [N,F] FFN pre-activation, activation after dropout
  uint8_t *keep_o, *keep_f1, *keep_f2;       // dropout masks of W_O's output [N,D], the activation [N,F], the FFN [N,D]
  uint64_t key_att = 0, key_o = 0, key_f1 = 0, key_f2 = 0;
};

// One thread's run: sequences [b0,b1), rows [r0,r1).
struct Run {
  int64_t b0 = 0, b1 = 0, r0 = 0, r1 = 0;
  int64_t rows() const { return r1 - r0; }
};

}  // namespace

struct FusedSASRec::Impl {
  SASRec model;
  SASRecOptions o;
  LossKind loss;
  int64_t D = 0, F = 0, H = 0, L = 0;
  fused::Act act = fused::Act::Relu;

  torch::Tensor item_w, pos_w, user_w, final_w, final_b, emb_w, emb_b;
  std::vector<BlockParams> blocks;
  std::vector<BlockGrads> block_grads;
  int64_t g_final_w = 0, g_final_b = 0, g_emb_w = -1, g_emb_b = -1, grad_size = 0;
  torch::Tensor grad_flat;                                          // [grad_size] the blocks' and norms' gradients
  std::vector<std::pair<torch::Tensor, torch::Tensor>> grad_views;  // (parameter, its view of grad_flat)
  torch::Tensor pos_grad, user_grad, item_grad;  // dense tables' gradients (item_grad: when table is M)
  std::vector<std::vector<float>> partials;      // runs 1.. : their copy of grad_flat
  std::vector<float> wqkv_cat;                   // [L][3D*D + 3D] Wq;Wk;Wv and bq;0;bv of each block

  // The step's arena and its views.
  std::vector<float> arena;
  std::vector<uint8_t> masks;  // dropout masks (0 / 1 bytes), kept for backward
  uint8_t* keep_emb = nullptr;
  std::vector<BlockActs> acts;
  float *emb_in = nullptr, *emb_mean = nullptr, *emb_rstd = nullptr, *out = nullptr, *final_mean = nullptr,
        *final_rstd = nullptr, *feat = nullptr;
  float *g = nullptr, *t1 = nullptr, *t2 = nullptr, *t3 = nullptr, *t4 = nullptr, *dqkv = nullptr, *dffn = nullptr;
  float *dfeat = nullptr, *demb = nullptr, *coef = nullptr, *logits = nullptr, *shared_rows = nullptr,
        *dshared = nullptr, *att_scratch = nullptr;
  int64_t coef_width = 0, scratch_per_run = 0;
  std::vector<int64_t> row, block;  // [B+1] token rows and attention weight offsets of each sequence
  std::vector<Run> runs;
  std::vector<double> run_loss;
  uint64_t key_emb = 0;
  bool dropout = false;
  uint32_t threshold = 0;
  float keep_scale = 1;

  // This step's inputs, as raw pointers.
  const int64_t *items = nullptr, *positions = nullptr, *seq_of = nullptr, *pos = nullptr, *neg = nullptr,
                *shared = nullptr, *users = nullptr;
  const float *table = nullptr, *pos_log_q = nullptr, *shared_log_q = nullptr;
  const int64_t* table_rows = nullptr;  // row r of the batch's table is table[table_rows[r]] (null: table[r])
  // sampled_softmax: the shared negatives' (id, column) sorted, to find a target's accidental hits.
  std::vector<std::pair<int64_t, int64_t>> shared_sorted;
  int64_t N = 0, B = 0, R = 0, K = 0, k_neg = 0;
  double beta = 1, scale = 1;

  Impl(SASRec m, LossKind l) : model(std::move(m)), o(model->options()), loss(l) {
    D = o.hidden, F = o.ffn_hidden > 0 ? o.ffn_hidden : o.hidden, H = o.heads, L = o.blocks;
    act = o.activation == Activation::Gelu ? fused::Act::Gelu : fused::Act::Relu;
    auto params = model->named_parameters();
    int64_t bound = 0;
    auto get = [&](const std::string& name) {
      auto* p = params.find(name);
      SASREC_CHECK(p != nullptr, "FusedSASRec: the model has no parameter ", name);
      SASREC_CHECK(p->device().is_cpu() && p->scalar_type() == torch::kFloat32 && p->is_contiguous(),
                   "FusedSASRec: ", name, " must be a contiguous float32 CPU tensor");
      ++bound;
      return *p;
    };
    item_w = get("item.weight"), pos_w = get("position.weight");
    if (o.user_embedding) user_w = get("user.weight");
    final_w = get("final_ln.weight"), final_b = get("final_ln.bias");
    if (o.embedding_norm) emb_w = get("embedding_ln.weight"), emb_b = get("embedding_ln.bias");
    auto reserve = [&](int64_t n) {
      const int64_t at = grad_size;
      grad_size += n;
      return at;
    };
    for (int64_t l = 0; l < L; ++l) {
      const std::string b = "blocks." + std::to_string(l) + ".";
      BlockParams p;
      BlockGrads gr;
      p.ln_a_w = get(b + "ln_attn.weight"), p.ln_a_b = get(b + "ln_attn.bias");
      p.wq = get(b + "attn.q.weight"), p.bq = get(b + "attn.q.bias"), p.wk = get(b + "attn.k.weight");
      p.wv = get(b + "attn.v.weight"), p.bv = get(b + "attn.v.bias");
      if (o.attention_output) p.wo = get(b + "attn.o.weight"), p.bo = get(b + "attn.o.bias");
      p.ln_f_w = get(b + "ln_ffn.weight"), p.ln_f_b = get(b + "ln_ffn.bias");
      p.w1 = get(b + "ffn.w1.weight"), p.b1 = get(b + "ffn.w1.bias");
      p.w2 = get(b + "ffn.w2.weight"), p.b2 = get(b + "ffn.w2.bias");
      gr.wqkv = reserve(3 * D * D), gr.bq = reserve(D), gr.bv = reserve(D);
      if (o.attention_output) gr.wo = reserve(D * D), gr.bo = reserve(D);
      gr.ln_a_w = reserve(D), gr.ln_a_b = reserve(D), gr.ln_f_w = reserve(D), gr.ln_f_b = reserve(D);
      gr.w1 = reserve(F * D), gr.b1 = reserve(F), gr.w2 = reserve(D * F), gr.b2 = reserve(D);
      blocks.push_back(p);
      block_grads.push_back(gr);
    }
    g_final_w = reserve(D), g_final_b = reserve(D);
    if (o.embedding_norm) g_emb_w = reserve(D), g_emb_b = reserve(D);
    SASREC_CHECK(bound == static_cast<int64_t>(params.size()), "FusedSASRec: the model has ", params.size(),
                 " parameters, of which the fused step knows ", bound);
    grad_flat = torch::zeros({grad_size});
    auto view = [&](const torch::Tensor& p, int64_t at) {
      grad_views.emplace_back(p, grad_flat.narrow(0, at, p.numel()).view(p.sizes()));
    };
    for (int64_t l = 0; l < L; ++l) {
      const auto& p = blocks[l];
      const auto& gr = block_grads[l];
      view(p.wq, gr.wqkv), view(p.wk, gr.wqkv + D * D), view(p.wv, gr.wqkv + 2 * D * D);
      view(p.bq, gr.bq), view(p.bv, gr.bv);
      if (o.attention_output) view(p.wo, gr.wo), view(p.bo, gr.bo);
      view(p.ln_a_w, gr.ln_a_w), view(p.ln_a_b, gr.ln_a_b), view(p.ln_f_w, gr.ln_f_w), view(p.ln_f_b, gr.ln_f_b);
      view(p.w1, gr.w1), view(p.b1, gr.b1), view(p.w2, gr.w2), view(p.b2, gr.b2);
    }
    view(final_w, g_final_w), view(final_b, g_final_b);
    if (o.embedding_norm) view(emb_w, g_emb_w), view(emb_b, g_emb_b);
    pos_grad = torch::zeros_like(pos_w);
    if (o.user_embedding) user_grad = torch::zeros_like(user_w);
    wqkv_cat.resize(L * (3 * D * D + 3 * D));
  }

  // Cuts the sequences into at most `threads` runs of about equal cost
  // (per token: projections and FFN; per sequence: n^2 attention).
  void plan_runs(int64_t threads) {
    std::vector<double> cost(B);
    double total = 0;
    for (int64_t b = 0; b < B; ++b) {
      const double n = static_cast<double>(row[b + 1] - row[b]);
      total += cost[b] = n * (1.0 + n * static_cast<double>(H) / (4.0 * static_cast<double>(3 * D + 2 * F)));
    }
    runs.clear();
    Run r;
    double acc = 0;
    for (int64_t b = 0; b < B; ++b) {
      acc += cost[b];
      const bool cut = acc >= total * static_cast<double>(runs.size() + 1) / static_cast<double>(threads);
      if ((cut || b + 1 == B) && row[b + 1] > row[r.b0]) {
        r.b1 = b + 1, r.r0 = row[r.b0], r.r1 = row[b + 1];
        runs.push_back(r);
        r = Run{};
        r.b0 = b + 1;
      }
    }
    if (runs.empty()) runs.push_back(Run{0, B, 0, N});
    runs.back().b1 = B;  // trailing empty sequences
  }

  // Carves the arena for N tokens (grows once, then reused).
  void plan_arena() {
    const int64_t att = block[B];
    const bool ce = loss == LossKind::Ce;
    int64_t max_n = 1;
    for (int64_t b = 0; b < B; ++b) max_n = std::max(max_n, row[b + 1] - row[b]);
    scratch_per_run = max_n * max_n;
    coef_width = loss == LossKind::Bce              ? 2
                 : loss == LossKind::Gbce           ? 1 + k_neg
                 : loss == LossKind::SampledSoftmax ? 1
                                                    : 0;
    struct Slot {
      float** at;
      int64_t size;
    };
    std::vector<Slot> slots;
    acts.assign(L, BlockActs{});
    const bool post = o.norm == Norm::Post;
    for (auto& a : acts) {
      for (float** p : {&a.in, &a.a, &a.r1, &a.b, &a.heads, &a.att}) slots.push_back({p, N * D});
      if (post) slots.push_back({&a.r2, N * D});
      for (float** p : {&a.mean_a, &a.rstd_a, &a.mean_f, &a.rstd_f}) slots.push_back({p, N});
      slots.push_back({&a.qkv, 3 * N * D});
      slots.push_back({&a.probs, att});
      if (dropout) slots.push_back({&a.weights, att});
      slots.push_back({&a.u, N * F});
      slots.push_back({&a.hd, N * F});
    }
    for (float** p : {&emb_in, &out, &feat, &g, &t1, &t2, &t3, &t4, &dfeat, &demb}) slots.push_back({p, N * D});
    for (float** p : {&emb_mean, &emb_rstd, &final_mean, &final_rstd}) slots.push_back({p, N});
    slots.push_back({&dqkv, 3 * N * D});
    slots.push_back({&dffn, N * F});
    slots.push_back({&coef, N * coef_width});
    slots.push_back({&att_scratch, static_cast<int64_t>(runs.size()) * scratch_per_run});
    if (ce) slots.push_back({&logits, N * (R - 1)});
    if (loss == LossKind::SampledSoftmax) {
      slots.push_back({&logits, N * K});
      slots.push_back({&shared_rows, K * D});
      slots.push_back({&dshared, static_cast<int64_t>(runs.size()) * K * D});
    }
    int64_t total = 0;
    for (const auto& s : slots) total += (s.size + 15) / 16 * 16;  // 64-byte aligned starts
    if (static_cast<int64_t>(arena.size()) < total) arena.resize(total);
    int64_t at = 0;
    for (const auto& s : slots) {
      *s.at = arena.data() + at;
      at += (s.size + 15) / 16 * 16;
    }
    if (!dropout)
      for (auto& a : acts) a.weights = a.probs;
    // Dropout masks: the embedding's, and per block W_O's, the activation's and the FFN output's.
    if (!dropout) return;
    const int64_t per_block = N * D * (o.attention_output ? 2 : 1) + N * F;
    if (static_cast<int64_t>(masks.size()) < N * D + L * per_block) masks.resize(N * D + L * per_block);
    uint8_t* m = masks.data();
    keep_emb = m, m += N * D;
    for (auto& a : acts) {
      if (o.attention_output) a.keep_o = m, m += N * D;
      a.keep_f1 = m, m += N * F;
      a.keep_f2 = m, m += N * D;
    }
  }

  float* grads_of(size_t run) { return run == 0 ? grad_flat.data_ptr<float>() : partials[run - 1].data(); }
  // Row r of the batch's item table.
  const float* row_of(int64_t r) const { return table + (table_rows ? table_rows[r] : r) * D; }

  // ---- forward ------------------------------------------------------------------
  void embed(const Run& r) {
    const int64_t m = r.rows();
    const float* P = cf(pos_w);
    const float s = static_cast<float>(std::sqrt(static_cast<double>(D)));
    float* x = acts[0].in + r.r0 * D;
    for (int64_t n = r.r0; n < r.r1; ++n) {
      if (n + kRowsAhead < r.r1) fused::prefetch(row_of(items[n + kRowsAhead]), D);
      const float *e = row_of(items[n]), *p = P + positions[n] * D;
      float* y = (o.embedding_norm ? emb_in : acts[0].in) + n * D;
      if (o.embedding_norm)
        for (int64_t j = 0; j < D; ++j) y[j] = e[j] + p[j];
      else
        for (int64_t j = 0; j < D; ++j) y[j] = e[j] * s + p[j];
    }
    if (o.embedding_norm)
      fused::layer_norm_forward(emb_in + r.r0 * D, cf(emb_w), cf(emb_b), m, D, kLayerNormEps, x, emb_mean + r.r0,
                                emb_rstd + r.r0);
    if (dropout) fused::dropout_apply(x, m * D, r.r0 * D, key_emb, threshold, keep_scale, keep_emb + r.r0 * D);
  }

  fused::AttentionShape attention_shape(const BlockActs& a) const {
    fused::AttentionShape s;
    s.row = row.data(), s.block = block.data(), s.heads = H, s.dh = D / H;
    s.dropout = dropout, s.key = a.key_att, s.threshold = threshold, s.keep_scale = keep_scale;
    return s;
  }

  // Attention of the rows: queries from q_in, keys and values from kv_in
  // (the same pointer: one [3D,D] product) -> a.att.
  void attention_forward(int64_t l, const Run& r, const float* q_in, const float* kv_in) {
    auto& a = acts[l];
    const auto& p = blocks[l];
    const int64_t m = r.rows();
    const float* wcat = wqkv_cat.data() + l * (3 * D * D + 3 * D);
    const float* bcat = wcat + 3 * D * D;
    float* qkv = a.qkv + r.r0 * 3 * D;
    if (q_in == kv_in) {
      fused::linear_forward(q_in, D, wcat, bcat, m, D, 3 * D, qkv, 3 * D);
    } else {
      fused::linear_forward(q_in, D, wcat, bcat, m, D, D, qkv, 3 * D);
      fused::linear_forward(kv_in, D, wcat + D * D, bcat + D, m, D, 2 * D, qkv + D, 3 * D);
    }
    // The kernel indexes the whole batch's rows: shift the pointers back to row 0.
    const float* base = a.qkv;
    fused::attention_forward(attention_shape(a), r.b0, r.b1, base, base + D, base + 2 * D, 3 * D, a.probs, a.weights,
                             a.heads, D);
    if (!o.attention_output) {
      std::memcpy(a.att + r.r0 * D, a.heads + r.r0 * D, sizeof(float) * m * D);
      return;
    }
    fused::linear_forward(a.heads + r.r0 * D, D, cf(p.wo), cf(p.bo), m, D, D, a.att + r.r0 * D, D);
    if (dropout)
      fused::dropout_apply(a.att + r.r0 * D, m * D, r.r0 * D, a.key_o, threshold, keep_scale, a.keep_o + r.r0 * D);
  }

  // FFN of the rows x -> y (both [rows,D], y may not be x).
  void ffn_forward(int64_t l, const Run& r, const float* x, float* y) {
    auto& a = acts[l];
    const auto& p = blocks[l];
    const int64_t m = r.rows();
    float *u = a.u + r.r0 * F, *hd = a.hd + r.r0 * F;
    fused::linear_forward(x, D, cf(p.w1), cf(p.b1), m, D, F, u, F);
    fused::activation_forward(act, u, hd, m * F);
    if (dropout) fused::dropout_apply(hd, m * F, r.r0 * F, a.key_f1, threshold, keep_scale, a.keep_f1 + r.r0 * F);
    fused::linear_forward(hd, F, cf(p.w2), cf(p.b2), m, F, D, y, D);
    if (dropout) fused::dropout_apply(y, m * D, r.r0 * D, a.key_f2, threshold, keep_scale, a.keep_f2 + r.r0 * D);
  }

  static void add(const float* x, const float* y, float* z, int64_t n) {
    for (int64_t i = 0; i < n; ++i) z[i] = x[i] + y[i];
  }

  void block_forward(int64_t l, const Run& r) {
    auto& a = acts[l];
    const auto& p = blocks[l];
    const int64_t m = r.rows(), at = r.r0 * D;
    float* next = (l + 1 < L ? acts[l + 1].in : out) + at;
    float* f = t1 + at;
    const float* x = a.in + at;
    auto ln = [&](const float* in, const torch::Tensor& w, const torch::Tensor& b, float* y, float* mean, float* rstd) {
      fused::layer_norm_forward(in, cf(w), cf(b), m, D, kLayerNormEps, y, mean + r.r0, rstd + r.r0);
    };
    switch (o.norm) {
      case Norm::Pre:  // h = LN_a(x); y = x + SA(h); g = LN_f(y); out = y + FFN(g)
        ln(x, p.ln_a_w, p.ln_a_b, a.a + at, a.mean_a, a.rstd_a);
        attention_forward(l, r, a.a + at, a.a + at);
        add(x, a.att + at, a.r1 + at, m * D);
        ln(a.r1 + at, p.ln_f_w, p.ln_f_b, a.b + at, a.mean_f, a.rstd_f);
        ffn_forward(l, r, a.b + at, f);
        add(a.r1 + at, f, next, m * D);
        break;
      case Norm::Paper:  // q = LN_a(x); y = q + SA(q, x); z = LN_f(y); out = z + FFN(z)
        ln(x, p.ln_a_w, p.ln_a_b, a.a + at, a.mean_a, a.rstd_a);
        attention_forward(l, r, a.a + at, x);
        add(a.a + at, a.att + at, a.r1 + at, m * D);
        ln(a.r1 + at, p.ln_f_w, p.ln_f_b, a.b + at, a.mean_f, a.rstd_f);
        ffn_forward(l, r, a.b + at, f);
        add(a.b + at, f, next, m * D);
        break;
      case Norm::Post:  // s1 = x + SA(x); y = LN_a(s1); s2 = y + FFN(y); out = LN_f(s2)
        attention_forward(l, r, x, x);
        add(x, a.att + at, a.r1 + at, m * D);
        ln(a.r1 + at, p.ln_a_w, p.ln_a_b, a.a + at, a.mean_a, a.rstd_a);
        ffn_forward(l, r, a.a + at, f);
        add(a.a + at, f, a.r2 + at, m * D);
        ln(a.r2 + at, p.ln_f_w, p.ln_f_b, next, a.mean_f, a.rstd_f);
        break;
    }
  }

  void final_forward(const Run& r) {
    const int64_t m = r.rows(), at = r.r0 * D;
    fused::layer_norm_forward(out + at, cf(final_w), cf(final_b), m, D, kLayerNormEps, feat + at, final_mean + r.r0,
                              final_rstd + r.r0);
    if (!o.user_embedding) return;
    const float* U = cf(user_w);
    for (int64_t n = r.r0; n < r.r1; ++n) fused::axpy(1.0f, U + users[seq_of[n]] * D, feat + n * D, D);
  }

  // ---- losses: each run's rows -> its loss sum, dfeat (d scale*loss / d feat) and the coefficients
  // the table scatter needs ------------------------------------------------------------
  double loss_rows(const Run& r, size_t run) {
    switch (loss) {
      case LossKind::Bce: return bce_rows(r);
      case LossKind::Gbce: return gbce_rows(r);
      case LossKind::SampledSoftmax: return sampled_rows(r, run);
      case LossKind::Ce: return ce_rows(r);
    }
    return 0;
  }

  // bce is gbce with one negative, beta 1 and no hit removed: one loop, so the two compute
  // the same floats where they are the same function (test_train checks it).
  double bce_rows(const Run& r) { return binary_rows(r, 1, 1.0, false); }
  double gbce_rows(const Run& r) { return binary_rows(r, k_neg, beta, true); }

  // beta softplus(-s(pos)) + sum over the k negatives of softplus(s(neg)), a negative equal to
  // its target (an accidental hit) dropped when `drop_hits`.
  double binary_rows(const Run& r, int64_t k, double b, bool drop_hits) {
    double sum = 0;
    const int64_t w = 1 + k;
    for (int64_t n = r.r0; n < r.r1; ++n) {
      if (n + kRowsAhead < r.r1) {
        fused::prefetch(row_of(pos[n + kRowsAhead]), D);
        for (int64_t q = 0; q < k; ++q) fused::prefetch(row_of(neg[(n + kRowsAhead) * k + q]), D);
      }
      const float* h = feat + n * D;
      float* c = coef + n * w;
      float* dh = dfeat + n * D;
      const float* tp = row_of(pos[n]);
      const double s0 = fused::dot(h, tp, D);
      sum += b * fused::softplus(-s0);
      c[0] = static_cast<float>(-b * fused::sigmoid(-s0) * scale);
      for (int64_t j = 0; j < D; ++j) dh[j] = c[0] * tp[j];
      for (int64_t q = 0; q < k; ++q) {
        const int64_t id = neg[n * k + q];
        if (drop_hits && id == pos[n]) {
          c[1 + q] = 0;
          continue;
        }
        const float* tn = row_of(id);
        const double s = fused::dot(h, tn, D);
        sum += fused::softplus(s);
        c[1 + q] = static_cast<float>(fused::sigmoid(s) * scale);
        fused::axpy(c[1 + q], tn, dh, D);
      }
    }
    return sum;
  }

  double sampled_rows(const Run& r, size_t run) {
    const int64_t m = r.rows();
    float* lg = logits + r.r0 * K;
    gemm(false, true, m, K, D, 1.0f, feat + r.r0 * D, D, shared_rows, D, 0.0f, lg, K);  // [m,K]
    double sum = 0;
    for (int64_t n = r.r0; n < r.r1; ++n) {
      if (n + kRowsAhead < r.r1) fused::prefetch(row_of(pos[n + kRowsAhead]), D);
      float* row_l = logits + n * K;
      const float* tp = row_of(pos[n]);
      float sp = fused::dot(feat + n * D, tp, D);
      if (pos_log_q) sp -= pos_log_q[n];
      if (shared_log_q)
        for (int64_t q = 0; q < K; ++q) row_l[q] -= shared_log_q[q];
      // Accidental hits (shared negatives equal to the target) looked up, not compared column by column:
      // that loop, with the maximum in it, was 1.7 ms of a 16.5 ms step at 1M items, K = 256 (docs/results.md).
      for (auto hit = std::lower_bound(shared_sorted.begin(), shared_sorted.end(), std::make_pair(pos[n], int64_t{0}));
           hit != shared_sorted.end() && hit->first == pos[n]; ++hit)
        row_l[hit->second] = kNegInf;
      const float top = std::max(sp, fused::max_of(row_l, K));
      const double e_pos = std::exp(static_cast<double>(sp - top));
      const double total = e_pos + fused::exp_shifted_sum(row_l, K, top);
      sum += std::log(total) + top - sp;
      fused::scale(row_l, K, static_cast<float>(scale / total));  // d/dlogit = softmax * scale
      const float cp = static_cast<float>((e_pos / total - 1.0) * scale);
      coef[n] = cp;
      float* dh = dfeat + n * D;
      for (int64_t j = 0; j < D; ++j) dh[j] = cp * tp[j];
    }
    gemm(false, false, m, D, K, 1.0f, lg, K, shared_rows, D, 1.0f, dfeat + r.r0 * D, D);          // dh += dL S
    gemm(true, false, K, D, m, 1.0f, lg, K, feat + r.r0 * D, D, 0.0f, dshared + run * K * D, D);  // dS = dL^T h
    return sum;
  }

  // Full softmax over items 1..I: the rows' logits [m,I] against M[1:], then
  // their softmax (times scale, minus scale at the target) in place, and dh.
  double ce_rows(const Run& r) {
    const int64_t m = r.rows(), I = R - 1;
    float* lg = logits + r.r0 * I;
    const float* items_w = table + D;  // rows 1..I
    gemm(false, true, m, I, D, 1.0f, feat + r.r0 * D, D, items_w, D, 0.0f, lg, I);
    double sum = 0;
    for (int64_t n = r.r0; n < r.r1; ++n) {
      float* row_l = logits + n * I;
      const float top = fused::max_of(row_l, I);
      const float target = row_l[pos[n] - 1];
      const double total = fused::exp_shifted_sum(row_l, I, top);
      sum += std::log(total) + top - target;
      fused::scale(row_l, I, static_cast<float>(scale / total));
      row_l[pos[n] - 1] -= static_cast<float>(scale);
    }
    gemm(false, false, m, D, I, 1.0f, lg, I, items_w, D, 0.0f, dfeat + r.r0 * D, D);  // dh = dL M[1:]
    return sum;
  }

  // ---- backward ------------------------------------------------------------------
  // Gradient w.r.t. the attention's inputs from da (rows): dq_in (and dkv_in
  // when the inputs differ) overwritten, or added to when `accumulate`.
  void attention_backward(int64_t l, const Run& r, float* grads, const float* da, const float* q_in, const float* kv_in,
                          float* dq_in, float* dkv_in, bool accumulate) {
    auto& a = acts[l];
    const auto& p = blocks[l];
    const auto& gr = block_grads[l];
    const int64_t m = r.rows(), at = r.r0 * D;
    const float* dheads = da;
    if (o.attention_output) {
      float* dout = t3 + at;
      std::memcpy(dout, da, sizeof(float) * m * D);
      if (dropout) fused::dropout_replay(dout, a.keep_o + at, m * D, keep_scale);
      fused::column_sums(dout, D, m, D, grads + gr.bo);
      gemm(true, false, D, D, m, 1.0f, dout, D, a.heads + at, D, 0.0f, grads + gr.wo, D);  // dWo = do^T heads
      gemm(false, false, m, D, D, 1.0f, dout, D, cf(p.wo), D, 0.0f, t4 + at, D);           // dheads = do Wo
      dheads = t4 + at;
    }
    const float* base = a.qkv;
    float* dbase = dqkv;
    // The kernel reads rows by the sequences' global offsets: dout is shifted back to row 0.
    fused::attention_backward(attention_shape(a), r.b0, r.b1, base, base + D, base + 2 * D, 3 * D, a.probs, a.weights,
                              dheads - at, D, dbase, dbase + D, dbase + 2 * D,
                              att_scratch + static_cast<int64_t>(&r - runs.data()) * scratch_per_run);
    const float* dq = dqkv + r.r0 * 3 * D;
    fused::column_sums(dq, 3 * D, m, D, grads + gr.bq);
    fused::column_sums(dq + 2 * D, 3 * D, m, D, grads + gr.bv);
    const float* wcat = wqkv_cat.data() + l * (3 * D * D + 3 * D);
    const float beta_acc = accumulate ? 1.0f : 0.0f;
    if (q_in == kv_in) {
      gemm(true, false, 3 * D, D, m, 1.0f, dq, 3 * D, q_in, D, 0.0f, grads + gr.wqkv, D);  // dWqkv = dQKV^T x
      gemm(false, false, m, D, 3 * D, 1.0f, dq, 3 * D, wcat, D, beta_acc, dq_in, D);       // dx = dQKV Wqkv
    } else {
      gemm(true, false, D, D, m, 1.0f, dq, 3 * D, q_in, D, 0.0f, grads + gr.wqkv, D);
      gemm(true, false, 2 * D, D, m, 1.0f, dq + D, 3 * D, kv_in, D, 0.0f, grads + gr.wqkv + D * D, D);
      gemm(false, false, m, D, D, 1.0f, dq, 3 * D, wcat, D, beta_acc, dq_in, D);
      gemm(false, false, m, D, 2 * D, 1.0f, dq + D, 3 * D, wcat + D * D, D, beta_acc, dkv_in, D);
    }
  }

  // dx (rows, overwritten or added to) from dy, the gradient at the FFN's output; x its input.
  void ffn_backward(int64_t l, const Run& r, float* grads, const float* dy, const float* x, float* dx,
                    bool accumulate) {
    auto& a = acts[l];
    const auto& p = blocks[l];
    const auto& gr = block_grads[l];
    const int64_t m = r.rows(), at = r.r0 * D;
    float* dv = t3 + at;
    std::memcpy(dv, dy, sizeof(float) * m * D);
    if (dropout) fused::dropout_replay(dv, a.keep_f2 + at, m * D, keep_scale);
    fused::column_sums(dv, D, m, D, grads + gr.b2);
    float *hd = a.hd + r.r0 * F, *dh = dffn + r.r0 * F;
    gemm(true, false, D, F, m, 1.0f, dv, D, hd, F, 0.0f, grads + gr.w2, F);  // dW2 = dv^T hd
    gemm(false, false, m, F, D, 1.0f, dv, D, cf(p.w2), F, 0.0f, dh, F);      // dhd = dv W2
    if (dropout) fused::dropout_replay(dh, a.keep_f1 + r.r0 * F, m * F, keep_scale);
    fused::activation_backward(act, a.u + r.r0 * F, dh, dh, m * F);
    fused::column_sums(dh, F, m, F, grads + gr.b1);
    gemm(true, false, F, D, m, 1.0f, dh, F, x, D, 0.0f, grads + gr.w1, D);                   // dW1 = du^T x
    gemm(false, false, m, D, F, 1.0f, dh, F, cf(p.w1), D, accumulate ? 1.0f : 0.0f, dx, D);  // dx = du W1
  }

  // The gradient at block l's output (g, rows) -> at its input (g, in place).
  void block_backward(int64_t l, const Run& r, float* grads) {
    auto& a = acts[l];
    const auto& p = blocks[l];
    const auto& gr = block_grads[l];
    const int64_t m = r.rows(), at = r.r0 * D;
    float *dx = g + at, *u1 = t1 + at, *u2 = t2 + at;
    const float* x = a.in + at;
    auto ln_back = [&](const float* dy, const float* in, const float* mean, const float* rstd, const torch::Tensor& w,
                       int64_t gw, int64_t gb, float* out, bool acc) {
      fused::layer_norm_backward(dy, in, mean + r.r0, rstd + r.r0, cf(w), m, D, out, acc, grads + gw, grads + gb);
    };
    switch (o.norm) {
      case Norm::Pre:  // dx holds d out: d y = d out + LN_f'(FFN'(d out)); dx = d y + LN_a'(SA'(d y))
        ffn_backward(l, r, grads, dx, a.b + at, u1, false);
        ln_back(u1, a.r1 + at, a.mean_f, a.rstd_f, p.ln_f_w, gr.ln_f_w, gr.ln_f_b, dx, true);
        attention_backward(l, r, grads, dx, a.a + at, a.a + at, u1, u1, false);
        ln_back(u1, x, a.mean_a, a.rstd_a, p.ln_a_w, gr.ln_a_w, gr.ln_a_b, dx, true);
        break;
      case Norm::Paper:  // d z = d out + FFN'(d out); d y = LN_f'(d z); dx = LN_a'(d y + SA_q'(d y)) + SA_kv'(d y)
        ffn_backward(l, r, grads, dx, a.b + at, dx, true);
        ln_back(dx, a.r1 + at, a.mean_f, a.rstd_f, p.ln_f_w, gr.ln_f_w, gr.ln_f_b, u1, false);
        attention_backward(l, r, grads, u1, a.a + at, x, u2, dx, false);  // u2 = dq_in, dx = dkv_in
        fused::axpy(1.0f, u1, u2, m * D);                                 // u2 = d y + dq_in (the residual)
        ln_back(u2, x, a.mean_a, a.rstd_a, p.ln_a_w, gr.ln_a_w, gr.ln_a_b, dx, true);
        break;
      case Norm::Post:  // d s2 = LN_f'(d out); d y = d s2 + FFN'(d s2); d s1 = LN_a'(d y); dx = d s1 + SA'(d s1)
        ln_back(dx, a.r2 + at, a.mean_f, a.rstd_f, p.ln_f_w, gr.ln_f_w, gr.ln_f_b, u1, false);
        ffn_backward(l, r, grads, u1, a.a + at, u1, true);
        ln_back(u1, a.r1 + at, a.mean_a, a.rstd_a, p.ln_a_w, gr.ln_a_w, gr.ln_a_b, dx, false);
        attention_backward(l, r, grads, dx, x, x, dx, dx, true);
        break;
    }
  }

  void run_backward(const Run& r, float* grads) {
    const int64_t m = r.rows(), at = r.r0 * D;
    // Final LayerNorm: d out from d feat (the user vector's gradient is d feat itself, scattered later).
    fused::layer_norm_backward(dfeat + at, out + at, final_mean + r.r0, final_rstd + r.r0, cf(final_w), m, D, g + at,
                               false, grads + g_final_w, grads + g_final_b);
    for (int64_t l = L - 1; l >= 0; --l) block_backward(l, r, grads);
    // Embedding: g is d x0; demb the gradient w.r.t. the item row (times the scale sqrt(d) when no LN).
    if (dropout) fused::dropout_replay(g + at, keep_emb + at, m * D, keep_scale);
    if (o.embedding_norm)
      fused::layer_norm_backward(g + at, emb_in + at, emb_mean + r.r0, emb_rstd + r.r0, cf(emb_w), m, D, demb + at,
                                 false, grads + g_emb_w, grads + g_emb_b);
    else
      std::memcpy(demb + at, g + at, sizeof(float) * m * D);
  }

  // The tables' gradients, part `part` of `parts`: of each table the rows in
  // that part's range, from every token in order (so the same sums for any
  // number of parts). By rows, not columns: a row of 50 floats is not a
  // whole number of cache lines, and column slices of it written by two
  // threads made every row's middle line bounce between their cores (the
  // scatter took 4.7x its one-thread CPU time on two, docs/results.md).
  void scatter_tables(int64_t part, int64_t parts, float* dT) {
    auto range = [&](int64_t rows) { return std::pair<int64_t, int64_t>{rows * part / parts, rows * (part + 1) / parts}; };
    const auto [t0, t1] = range(R);
    const auto [p0, p1] = range(pos_w.size(0));
    float* dP = pos_grad.data_ptr<float>();
    std::fill(dP + p0 * D, dP + p1 * D, 0.0f);
    if (loss != LossKind::Ce) std::fill(dT + t0 * D, dT + t1 * D, 0.0f);
    auto mine = [](int64_t id, int64_t lo, int64_t hi) { return id >= lo && id < hi; };
    const float s = o.embedding_norm ? 1.0f : static_cast<float>(std::sqrt(static_cast<double>(D)));
    for (int64_t n = 0; n < N; ++n) {
      const float* de = demb + n * D;
      if (mine(items[n], t0, t1)) {
        float* t = dT + items[n] * D;
        for (int64_t j = 0; j < D; ++j) t[j] += s * de[j];
      }
      if (mine(positions[n], p0, p1)) {
        float* pp = dP + positions[n] * D;
        for (int64_t j = 0; j < D; ++j) pp[j] += de[j];
      }
    }
    auto add_row = [&](int64_t id, float c, const float* h) {
      if (!mine(id, t0, t1)) return;
      float* t = dT + id * D;
      for (int64_t j = 0; j < D; ++j) t[j] += c * h[j];
    };
    for (int64_t n = 0; n < N; ++n) {
      const float* h = feat + n * D;
      switch (loss) {
        case LossKind::Bce:
        case LossKind::Gbce: {
          const int64_t k = loss == LossKind::Bce ? 1 : k_neg;
          const float* c = coef + n * (1 + k);
          add_row(pos[n], c[0], h);
          for (int64_t q = 0; q < k; ++q)
            if (c[1 + q] != 0.0f) add_row(neg[n * k + q], c[1 + q], h);
          break;
        }
        case LossKind::SampledSoftmax: add_row(pos[n], coef[n], h); break;
        case LossKind::Ce: break;
      }
    }
    if (loss == LossKind::SampledSoftmax)
      for (size_t run = 0; run < runs.size(); ++run)
        for (int64_t q = 0; q < K; ++q) add_row(shared[q], 1.0f, dshared + run * K * D + q * D);
    if (o.user_embedding) {
      const auto [u0, u1] = range(user_w.size(0));
      float* dU = user_grad.data_ptr<float>();
      std::fill(dU + u0 * D, dU + u1 * D, 0.0f);
      for (int64_t n = 0; n < N; ++n) {
        if (!mine(users[seq_of[n]], u0, u1)) continue;
        float* u = dU + users[seq_of[n]] * D;
        const float* d = dfeat + n * D;
        for (int64_t j = 0; j < D; ++j) u[j] += d[j];
      }
    }
  }
};

FusedSASRec::FusedSASRec(SASRec model, LossKind loss) : impl_(std::make_unique<Impl>(std::move(model), loss)) {}
FusedSASRec::~FusedSASRec() = default;

FusedSASRec::Result FusedSASRec::forward_backward(const Packing& packing, const torch::Tensor& users,
                                                  const torch::Tensor& table, const torch::Tensor& pos,
                                                  const torch::Tensor& neg, const torch::Tensor& shared,
                                                  const SampledTerms& terms, double scale, const torch::Tensor& rows) {
  const auto start = Clock::now();
  Impl& s = *impl_;
  const int64_t D = s.D;
  auto is_ids = [](const torch::Tensor& t, int64_t dims) {
    return t.defined() && t.device().is_cpu() && t.scalar_type() == torch::kInt64 && t.is_contiguous() &&
           t.dim() == dims;
  };
  SASREC_CHECK(is_ids(packing.items, 1) && is_ids(packing.positions, 1) && is_ids(packing.offsets, 1) &&
                   is_ids(packing.sequence, 1),
               "FusedSASRec: the packing must be contiguous int64 CPU tensors");
  SASREC_CHECK(table.defined() && table.device().is_cpu() && table.scalar_type() == torch::kFloat32 &&
                   table.is_contiguous() && table.dim() == 2 && table.size(1) == D,
               "FusedSASRec: table must be a contiguous float32 CPU [R,", D, "] tensor");
  s.N = packing.items.size(0), s.B = packing.offsets.size(0) - 1, s.R = table.size(0);
  s.table_rows = nullptr;
  if (rows.defined()) {  // the batch's table is M[rows], read in place
    SASREC_CHECK(is_ids(rows, 1) && rows.size(0) >= 1 && table.is_same(s.item_w) && s.loss != LossKind::Ce,
                 "FusedSASRec: rows must be [U] int64 ids into M, passed as the table (not with ce)");
    s.table_rows = ci(rows);
    for (int64_t r = 0; r < rows.size(0); ++r)
      SASREC_CHECK(s.table_rows[r] >= 0 && s.table_rows[r] < s.R, "FusedSASRec: row id ", s.table_rows[r],
                   " outside M's ", s.R, " rows");
    s.R = rows.size(0);
  }
  SASREC_CHECK(s.N >= 1 && is_ids(pos, 1) && pos.size(0) == s.N, "FusedSASRec: pos must be [N] int64");
  s.items = ci(packing.items), s.positions = ci(packing.positions), s.seq_of = ci(packing.sequence);
  s.pos = ci(pos), s.neg = nullptr, s.shared = nullptr, s.users = nullptr;
  s.table = table.data_ptr<float>();
  s.scale = scale, s.beta = terms.gbce_beta, s.K = 0, s.k_neg = 0;
  s.pos_log_q = s.shared_log_q = nullptr;
  switch (s.loss) {
    case LossKind::Bce:
      SASREC_CHECK(is_ids(neg, 1) && neg.size(0) == s.N, "FusedSASRec: bce needs neg [N]");
      s.neg = ci(neg);
      break;
    case LossKind::Gbce:
      SASREC_CHECK(is_ids(neg, 2) && neg.size(0) == s.N, "FusedSASRec: gbce needs neg [N,k]");
      SASREC_CHECK(!terms.pos_log_q.defined(), "gbce takes uniform negatives, without log-Q");
      s.neg = ci(neg), s.k_neg = neg.size(1);
      break;
    case LossKind::SampledSoftmax:
      SASREC_CHECK(is_ids(shared, 1) && shared.size(0) >= 1, "FusedSASRec: sampled_softmax needs shared [K]");
      s.shared = ci(shared), s.K = shared.size(0);
      s.shared_sorted.resize(static_cast<size_t>(s.K));
      for (int64_t q = 0; q < s.K; ++q) s.shared_sorted[static_cast<size_t>(q)] = {s.shared[q], q};
      std::sort(s.shared_sorted.begin(), s.shared_sorted.end());
      if (terms.pos_log_q.defined()) {
        SASREC_CHECK(terms.shared_log_q.defined() && terms.pos_log_q.is_contiguous() &&
                         terms.shared_log_q.is_contiguous() && terms.pos_log_q.scalar_type() == torch::kFloat32 &&
                         terms.shared_log_q.scalar_type() == torch::kFloat32 && terms.pos_log_q.numel() == s.N &&
                         terms.shared_log_q.numel() == s.K,
                     "FusedSASRec: log-Q needs float32 pos_log_q [N] and shared_log_q [K]");
        s.pos_log_q = terms.pos_log_q.data_ptr<float>(), s.shared_log_q = terms.shared_log_q.data_ptr<float>();
      }
      break;
    case LossKind::Ce:
      SASREC_CHECK(table.is_same(s.item_w), "FusedSASRec: ce reads the whole item table: pass M itself");
      break;
  }
  if (s.o.user_embedding) {
    SASREC_CHECK(is_ids(users, 1) && users.size(0) == s.B, "FusedSASRec: user_embedding needs users [B]");
    s.users = ci(users);
  }
  // Dropout keys in the module's order: embedding, then per block attention, W_O, FFN activation, FFN output.
  s.dropout = s.model->is_training() && s.o.dropout > 0;
  s.threshold = dropout_threshold(s.o.dropout);
  s.keep_scale = s.dropout ? static_cast<float>(1.0 / (1.0 - s.o.dropout)) : 1.0f;
  DropoutStream& stream = s.model->dropout_stream();
  // The layout: rows and attention blocks of each sequence, the runs, the arena.
  const int64_t* off = ci(packing.offsets);
  SASREC_CHECK(off[0] == 0 && off[s.B] == s.N, "FusedSASRec: offsets must run from 0 to N");
  s.row.assign(off, off + s.B + 1);
  s.block.assign(s.B + 1, 0);
  for (int64_t b = 0; b < s.B; ++b)
    s.block[b + 1] = s.block[b] + s.H * (s.row[b + 1] - s.row[b]) * (s.row[b + 1] - s.row[b]);
  s.plan_runs(std::max(1, at::get_num_threads()));
  s.plan_arena();
  if (s.dropout) {
    s.key_emb = stream.next_key();
    for (auto& a : s.acts) {
      a.key_att = stream.next_key();
      if (s.o.attention_output) a.key_o = stream.next_key();
      a.key_f1 = stream.next_key();
      a.key_f2 = stream.next_key();
    }
  }
  for (int64_t l = 0; l < s.L; ++l) {  // [Wq;Wk;Wv] and [bq;0;bv] of each block, for one [3D,D] product
    float* w = s.wqkv_cat.data() + l * (3 * D * D + 3 * D);
    const auto& p = s.blocks[l];
    std::memcpy(w, cf(p.wq), sizeof(float) * D * D);
    std::memcpy(w + D * D, cf(p.wk), sizeof(float) * D * D);
    std::memcpy(w + 2 * D * D, cf(p.wv), sizeof(float) * D * D);
    std::memcpy(w + 3 * D * D, cf(p.bq), sizeof(float) * D);
    std::fill(w + 3 * D * D + D, w + 3 * D * D + 2 * D, 0.0f);
    std::memcpy(w + 3 * D * D + 2 * D, cf(p.bv), sizeof(float) * D);
  }
  if (s.loss == LossKind::SampledSoftmax)
    for (int64_t q = 0; q < s.K; ++q) {
      if (q + kRowsAhead < s.K) fused::prefetch(s.row_of(s.shared[q + kRowsAhead]), D);
      std::memcpy(s.shared_rows + q * D, s.row_of(s.shared[q]), sizeof(float) * D);
    }
  const size_t runs = s.runs.size();
  s.partials.resize(runs - 1);
  for (auto& p : s.partials) p.resize(s.grad_size);
  s.run_loss.assign(runs, 0.0);

  // The item table's gradient: M's own dense buffer, or a new one for a batch-local table.
  torch::Tensor table_grad;
  if (s.table_rows) {
    table_grad = torch::empty({s.R, D}, table.options());
  } else if (table.is_same(s.item_w)) {
    if (!s.item_grad.defined()) s.item_grad = torch::zeros_like(s.item_w);
    table_grad = s.item_grad;
  } else {
    table_grad = torch::empty_like(table);
  }
  float* dT = table_grad.data_ptr<float>();

  Result result;
  const bool ce = s.loss == LossKind::Ce;
  auto forward = [&](size_t i) {
    const Run& r = s.runs[i];
    s.embed(r);
    for (int64_t l = 0; l < s.L; ++l) s.block_forward(l, r);
    s.final_forward(r);
    s.run_loss[i] = s.loss_rows(r, i);
    if (i == 0) result.forward_seconds = std::chrono::duration<double>(Clock::now() - start).count();
  };
  // One parallel region for the whole step: the runs (forward, loss, backward), then for ce the item
  // table's logits gradient, then the gradient sums and the tables' scatter, the phases apart by a
  // spinning barrier. Under OMP_WAIT_POLICY=passive an OpenMP barrier or a new region puts the
  // waiting thread to sleep, and waking it costs more than a phase of a small step (docs/results.md).
  std::vector<std::thread::id> ran_on(runs);
  SpinBarrier barrier;
  std::exception_ptr failure;
  std::mutex failure_mutex;
  auto guarded = [&](auto&& phase) {  // a thread that throws still reaches every barrier
    try {
      phase();
    } catch (...) {
      const std::lock_guard<std::mutex> lock(failure_mutex);
      if (!failure) failure = std::current_exception();
    }
  };
  const int64_t n = static_cast<int64_t>(runs);
#pragma omp parallel num_threads(static_cast<int>(runs))
  {
    const int64_t team = omp_get_num_threads(), me = omp_get_thread_num();
    barrier.join(static_cast<int>(team));
    guarded([&] {
      for (int64_t i = me; i < n; i += team) {
        ran_on[static_cast<size_t>(i)] = std::this_thread::get_id();
        forward(static_cast<size_t>(i));
        s.run_backward(s.runs[i], s.grads_of(static_cast<size_t>(i)));
      }
    });
    if (ce) {  // dM[1:] = dL^T h over all tokens, each slice a range of items; M[0] (padding) gets none
      barrier.wait();
      guarded([&] {
        const int64_t I = s.R - 1;
        if (me == 0) std::fill(dT, dT + D, 0.0f);
        for (int64_t t = me; t < n; t += team) {
          const int64_t i0 = I * t / n, i1 = I * (t + 1) / n;
          gemm(true, false, i1 - i0, D, s.N, 1.0f, s.logits + i0, I, s.feat, D, 0.0f, dT + (1 + i0) * D, D);
        }
      });
    }
    barrier.wait();
    guarded([&] {  // the runs' gradients summed in run order, and the tables, each slice a range of their rows
      float* total = s.grad_flat.data_ptr<float>();
      for (int64_t t = me; t < n; t += team) {
        const int64_t g0 = s.grad_size * t / n, g1 = s.grad_size * (t + 1) / n;
        for (const auto& p : s.partials)
          for (int64_t i = g0; i < g1; ++i) total[i] += p[i];
        s.scatter_tables(t, n, dT);
      }
    });
    barrier.leave_last(me == 0);  // the master ends the region last: it does not sleep in OpenMP's barrier
  }
  if (failure) std::rethrow_exception(failure);
  std::sort(ran_on.begin(), ran_on.end());
  result.threads = static_cast<int>(std::unique(ran_on.begin(), ran_on.end()) - ran_on.begin());
  for (double l : s.run_loss) result.loss_sum += l;

  for (auto& [p, grad] : s.grad_views) p.mutable_grad() = grad;
  s.pos_w.mutable_grad() = s.pos_grad;
  if (s.o.user_embedding) s.user_w.mutable_grad() = s.user_grad;
  if (s.table_rows) {
    result.rows_grad = table_grad;
  } else if (table.is_same(s.item_w)) {
    s.item_w.mutable_grad() = table_grad;
  } else {
    table.mutable_grad() = table_grad;
  }
  result.backward_seconds = std::chrono::duration<double>(Clock::now() - start).count() - result.forward_seconds;
  return result;
}

}  // namespace sasrec
