// fused_layers.h: SASRec's layers as explicit forward and backward functions
// on contiguous float32 buffers (llm.c's train_gpt2.c style), for the fused
// training step (fused_model.h).
//
// Every function works on a range of rows (packed tokens, row-major, row
// stride given) and raw pointers, calls no Torch op (and allocates at most a
// row's worth of scratch),
// so a step is a few loops and BLAS calls instead of hundreds of tensor ops,
// and the row ranges of different threads never overlap. Dropout masks are
// the counter-based ones of dropout_bits.h, element for element the masks
// the tensor path draws (regenerated in backward, not stored). The CPU
// implementations are in fused_layers.cpp; CUDA kernels would take the same
// arguments. This file owns the arithmetic, not the model's layout.
#pragma once

#include <cstdint>

// SASREC_CLONES before a function compiles it three times, for x86-64-v4
// (AVX-512), x86-64-v3 (AVX2 + FMA) and the baseline, the best the CPU has
// chosen when the program loads: the layers' loops (BLAS picks its own
// kernels). GCC on x86-64.
// SASREC_CLONES_256 stops at AVX2, for loops bound by square roots and
// divisions: 512-bit lanes do them no faster an element on Intel's cores
// (by their published throughputs) and 2.5x slower on the AMD EPYC of
// docs/results.md (Adam's pass over 605k elements: 0.52 ms in zmm, 0.20 ms
// in ymm).
#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__)
#define SASREC_CLONES __attribute__((target_clones("arch=x86-64-v4", "arch=x86-64-v3", "default")))
#define SASREC_CLONES_256 __attribute__((target_clones("arch=x86-64-v3", "default")))
#else
#define SASREC_CLONES
#define SASREC_CLONES_256
#endif

namespace sasrec::fused {

// C[m,n] = alpha op(A) op(B) + beta C, row-major, through the BLAS Torch uses.
void gemm(bool trans_a, bool trans_b, int64_t m, int64_t n, int64_t k, float alpha, const float* a, int64_t lda,
          const float* b, int64_t ldb, float beta, float* c, int64_t ldc);

// y = x W^T + bias for rows x [n,in] (stride ldx), W [out,in], bias [out] or
// null -> y [n,out] (stride ldy).
void linear_forward(const float* x, int64_t ldx, const float* w, const float* bias, int64_t n, int64_t in, int64_t out,
                    float* y, int64_t ldy);

// Column sums of dy [n,cols] (stride ld) into dbias [cols] (overwritten).
void column_sums(const float* dy, int64_t ld, int64_t n, int64_t cols, float* dbias);

// LayerNorm over rows of width d (stride d): y = (x - mean) rstd gamma + beta,
// rstd = 1/sqrt(var + eps), var biased; mean and rstd [n] kept for backward.
void layer_norm_forward(const float* x, const float* gamma, const float* beta, int64_t n, int64_t d, float eps,
                        float* y, float* mean, float* rstd);
// From dy [n,d]: dx (overwritten, or added to when `accumulate`), and the
// rows' dgamma and dbeta [d] (overwritten).
void layer_norm_backward(const float* dy, const float* x, const float* mean, const float* rstd, const float* gamma,
                         int64_t n, int64_t d, float* dx, bool accumulate, float* dgamma, float* dbeta);

// x[i] = x[i] * keep(key, first + i) / (1 - p), i < count: inverted dropout
// with the mask of dropout_bits.h; `keep` (when given) gets the mask as 0 / 1
// bytes for the backward pass (dropout_replay). `threshold` =
// dropout_threshold(p), `scale` = 1/(1-p).
void dropout_apply(float* x, int64_t count, int64_t first, uint64_t key, uint32_t threshold, float scale,
                   uint8_t* keep = nullptr);
// x[i] = x[i] * keep[i] * scale: dropout's backward from the saved mask.
void dropout_replay(float* x, const uint8_t* keep, int64_t count, float scale);

enum class Act { Relu, Gelu };
// a = act(u), n elements.
void activation_forward(Act act, const float* u, float* a, int64_t n);
// du = da * act'(u) (du may be da).
void activation_backward(Act act, const float* u, const float* da, float* du, int64_t n);

// Causal attention over packed sequences b in [b0,b1): sequence b is rows
// row[b]..row[b+1] of q, k, v (stride ld; heads are the column groups of
// width dh), its weights the H blocks of n x n floats at block[b] in
// `probs` (softmax) and `weights` (after dropout; may be probs when p = 0),
// the dropout stream's element index the same offset. out [rows, H dh]
// (stride ldo). The scores are scaled by 1/sqrt(dh).
struct AttentionShape {
  const int64_t* row = nullptr;    // [B+1]
  const int64_t* block = nullptr;  // [B+1]
  int64_t heads = 1, dh = 0;
  uint64_t key = 0;  // dropout stream (used when dropout)
  bool dropout = false;
  uint32_t threshold = 0;
  float keep_scale = 1;
};
void attention_forward(const AttentionShape& s, int64_t b0, int64_t b1, const float* q, const float* k, const float* v,
                       int64_t ld, float* probs, float* weights, float* out, int64_t ldo);
// dout [rows,H dh] (stride ldo) -> dq, dk, dv (stride ld, overwritten);
// `scratch` holds at least n*n floats for the longest sequence.
void attention_backward(const AttentionShape& s, int64_t b0, int64_t b1, const float* q, const float* k, const float* v,
                        int64_t ld, const float* probs, const float* weights, const float* dout, int64_t ldo, float* dq,
                        float* dk, float* dv, float* scratch);

// a . b over n floats.
float dot(const float* a, const float* b, int64_t n);
// y += alpha x over n floats.
void axpy(float alpha, const float* x, float* y, int64_t n);

// log(1 + exp(x)) and its derivative sigmoid(x), as torch's softplus (x > 20: x).
double softplus(double x);
double sigmoid(double x);

// In place over n floats: x[i] = exp(x[i] - shift); returns their sum. -inf gives 0.
double exp_shifted_sum(float* x, int64_t n, float shift);
// The largest of n >= 1 floats; x[i] *= a over n floats.
float max_of(const float* x, int64_t n);
void scale(float* x, int64_t n, float a);

// Every cache line of the n floats at `x` asked for ahead of their use (to be
// written too, ForWrite): rows of a table read in place by id, which wait on
// L3 or memory otherwise. No effect on any value. Loops over ids prefetch the
// row kRowsAhead ids on: after Adam's pass over the table and its moments,
// Beauty's 2.4 MB table is past L2, and a 1M-item one is in memory.
inline constexpr int64_t kRowsAhead = 8;
template <bool ForWrite = false>
inline void prefetch(const float* x, int64_t n) {
  const char* p = reinterpret_cast<const char*>(x);
  const int64_t bytes = n * static_cast<int64_t>(sizeof(float));
  for (int64_t b = 0; b < bytes; b += 64) __builtin_prefetch(p + b, ForWrite);
  __builtin_prefetch(p + bytes - 1, ForWrite);
}

}  // namespace sasrec::fused
