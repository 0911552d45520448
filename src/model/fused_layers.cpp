// fused_layers.cpp: the explicit layers on CPU (see fused_layers.h).
#include "sasrec/fused_layers.h"

#include <cblas.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <vector>

#include "sasrec/dropout_bits.h"

namespace sasrec::fused {
namespace {

// Sequences at least this long take BLAS for their attention products;
// shorter ones loops. OpenBLAS's small-matrix kernels win from 4 items on
// (bench/layer_speed on Beauty's lengths, hidden 50: from 16 on, forward 83
// and backward 104 us a batch; from 4 on, 76 and 87; from 1 on, 78 and 92).
constexpr int64_t kBlasFrom = 4;
constexpr float kNegInf = -std::numeric_limits<float>::infinity();

// LayerNorm's rows taken together for their statistics (layer_norm_forward).
constexpr int64_t kRowGroup = 16;

// Eight lanes' sums added as a tree (independent adds, not a chain).
inline float tree8(const float* acc) {
  return ((acc[0] + acc[4]) + (acc[1] + acc[5])) + ((acc[2] + acc[6]) + (acc[3] + acc[7]));
}

// a . b on eight independent sums (the loop vectorizes); inline, so that the kernels' clones inline it.
inline float dot8(const float* a, const float* b, int64_t n) {
  float acc[8] = {0, 0, 0, 0, 0, 0, 0, 0};
  int64_t i = 0;
  for (; i + 8 <= n; i += 8)
    for (int l = 0; l < 8; ++l) acc[l] += a[i + l] * b[i + l];
  float tail = 0;
  for (; i < n; ++i) tail += a[i] * b[i];
  return tree8(acc) + tail;
}

inline void axpy_inline(float alpha, const float* __restrict x, float* __restrict y, int64_t n) {
  for (int64_t i = 0; i < n; ++i) y[i] += alpha * x[i];
}

}  // namespace

void gemm(bool trans_a, bool trans_b, int64_t m, int64_t n, int64_t k, float alpha, const float* a, int64_t lda,
          const float* b, int64_t ldb, float beta, float* c, int64_t ldc) {
  if (m == 0 || n == 0) return;
  cblas_sgemm(CblasRowMajor, trans_a ? CblasTrans : CblasNoTrans, trans_b ? CblasTrans : CblasNoTrans,
              static_cast<int>(m), static_cast<int>(n), static_cast<int>(k), alpha, a, static_cast<int>(lda), b,
              static_cast<int>(ldb), beta, c, static_cast<int>(ldc));
}

SASREC_CLONES float dot(const float* a, const float* b, int64_t n) { return dot8(a, b, n); }

SASREC_CLONES void axpy(float alpha, const float* x, float* y, int64_t n) { axpy_inline(alpha, x, y, n); }

SASREC_CLONES void linear_forward(const float* x, int64_t ldx, const float* w, const float* bias, int64_t n, int64_t in,
                                  int64_t out, float* y, int64_t ldy) {
  if (!bias) {
    gemm(false, true, n, out, in, 1.0f, x, ldx, w, in, 0.0f, y, ldy);
    return;
  }
  // The bias first and the product added to it: OpenBLAS clears C when beta is 0 (a memset of y,
  // most of the 2.8% memset of a Beauty step) and the bias would be a second pass over y.
  for (int64_t r = 0; r < n; ++r) {  // a loop, not memcpy: a call per row of 50 floats cost more than the memset
    float* row = y + r * ldy;
    for (int64_t j = 0; j < out; ++j) row[j] = bias[j];
  }
  gemm(false, true, n, out, in, 1.0f, x, ldx, w, in, 1.0f, y, ldy);
}

namespace {

// x's floats up to a multiple of 8 added on eight lanes into acc (the loop
// vectorizes); returns where the tail starts.
inline int64_t add_lanes(const float* x, int64_t n, float* acc) {
  int64_t i = 0;
  for (; i + 8 <= n; i += 8)
    for (int l = 0; l < 8; ++l) acc[l] += x[i + l];
  return i;
}
// Sum of n floats on eight lanes, the lanes added in double.
inline double sum_lanes(const float* x, int64_t n) {
  float acc[8] = {0, 0, 0, 0, 0, 0, 0, 0};
  double s = 0;
  for (int64_t i = add_lanes(x, n, acc); i < n; ++i) s += x[i];
  for (float a : acc) s += a;
  return s;
}
// The same in float, the lanes added as a tree: a LayerNorm row's mean, where
// adding the lanes one by one in double was a chain of dependent adds longer
// than the row's own arithmetic (d = 50: a third of the time).
inline float sum8(const float* x, int64_t n) {
  float acc[8] = {0, 0, 0, 0, 0, 0, 0, 0};
  float tail = 0;
  for (int64_t i = add_lanes(x, n, acc); i < n; ++i) tail += x[i];
  return tree8(acc) + tail;
}

// Column sums over many rows: float rows added in blocks of kBlock (vectorized across the columns),
// each block's sums added in double.
constexpr int64_t kBlock = 64;
struct ColumnSums {
  std::vector<float> part;
  std::vector<double> total;
  int64_t rows = 0;
  explicit ColumnSums(int64_t cols) : part(cols, 0.0f), total(cols, 0.0) {}
  void flush() {
    for (size_t j = 0; j < part.size(); ++j) total[j] += part[j], part[j] = 0;
  }
  void row_done() {
    if (++rows % kBlock == 0) flush();
  }
  void write(float* out) {
    flush();
    for (size_t j = 0; j < total.size(); ++j) out[j] = static_cast<float>(total[j]);
  }
};

}  // namespace

SASREC_CLONES void column_sums(const float* dy, int64_t ld, int64_t n, int64_t cols, float* dbias) {
  ColumnSums acc(cols);
  float* part = acc.part.data();
  for (int64_t r = 0; r < n; ++r) {
    const float* row = dy + r * ld;
    for (int64_t j = 0; j < cols; ++j) part[j] += row[j];
    acc.row_done();
  }
  acc.write(dbias);
}

SASREC_CLONES void layer_norm_forward(const float* x, const float* gamma, const float* beta, int64_t n, int64_t d,
                                      float eps, float* y, float* mean, float* rstd) {
  // Rows in groups of kRowGroup, each step of a row's statistics done for the whole group before the
  // next: the divisions and square roots then vectorize across the rows, where one row's chain (its
  // sum, a division, the squares' sum, a square root and a division) kept them serial and was most
  // of a Beauty row's time (d = 50). The same operations on each row, so the same floats.
  const float fd = static_cast<float>(d);
  for (int64_t r0 = 0; r0 < n; r0 += kRowGroup) {
    const int64_t rows = std::min(kRowGroup, n - r0);
    float* m = mean + r0;
    float* s = rstd + r0;
    for (int64_t r = 0; r < rows; ++r) m[r] = sum8(x + (r0 + r) * d, d);
    for (int64_t r = 0; r < rows; ++r) m[r] /= fd;
    for (int64_t r = 0; r < rows; ++r) {
      const float* xr = x + (r0 + r) * d;
      const float mr = m[r];
      float acc[8] = {0, 0, 0, 0, 0, 0, 0, 0};
      int64_t j = 0;
      for (; j + 8 <= d; j += 8)
        for (int l = 0; l < 8; ++l) acc[l] += (xr[j + l] - mr) * (xr[j + l] - mr);
      float tail = 0;
      for (; j < d; ++j) tail += (xr[j] - mr) * (xr[j] - mr);
      s[r] = tree8(acc) + tail;
    }
    for (int64_t r = 0; r < rows; ++r) s[r] = 1.0f / std::sqrt(s[r] / fd + eps);
    for (int64_t r = 0; r < rows; ++r) {
      const float *xr = x + (r0 + r) * d, mr = m[r], sr = s[r];
      float* yr = y + (r0 + r) * d;
      for (int64_t j = 0; j < d; ++j) yr[j] = (xr[j] - mr) * sr * gamma[j] + beta[j];
    }
  }
}

SASREC_CLONES void layer_norm_backward(const float* dy, const float* x, const float* mean, const float* rstd,
                                       const float* gamma, int64_t n, int64_t d, float* dx, bool accumulate,
                                       float* dgamma, float* dbeta) {
  ColumnSums dg(d), db(d);
  std::vector<float> xhat(d), g(d);
  float *pg = dg.part.data(), *pb = db.part.data(), *xh = xhat.data(), *gg = g.data();
  for (int64_t r = 0; r < n; ++r) {
    const float *xr = x + r * d, *dyr = dy + r * d;
    const float m = mean[r], s = rstd[r];
    // xhat, g = dy gamma, the column sums, and the row's sums of g and g xhat on eight lanes, in one pass.
    float sg[8] = {0, 0, 0, 0, 0, 0, 0, 0}, sgx[8] = {0, 0, 0, 0, 0, 0, 0, 0};
    auto element = [&](int64_t j, float& acc_g, float& acc_gx) {
      xh[j] = (xr[j] - m) * s;
      gg[j] = dyr[j] * gamma[j];
      pg[j] += dyr[j] * xh[j];
      pb[j] += dyr[j];
      acc_g += gg[j], acc_gx += gg[j] * xh[j];
    };
    int64_t j = 0;
    for (; j + 8 <= d; j += 8)
      for (int l = 0; l < 8; ++l) element(j + l, sg[l], sgx[l]);
    float tg = 0, tgx = 0;
    for (; j < d; ++j) element(j, tg, tgx);
    const float fd = static_cast<float>(d);
    const float a = (tree8(sg) + tg) / fd, b = (tree8(sgx) + tgx) / fd;  // means of g and of g * xhat
    float* dxr = dx + r * d;
    if (accumulate)
      for (int64_t j = 0; j < d; ++j) dxr[j] += s * (gg[j] - a - xh[j] * b);
    else
      for (int64_t j = 0; j < d; ++j) dxr[j] = s * (gg[j] - a - xh[j] * b);
    dg.row_done(), db.row_done();
  }
  dg.write(dgamma), db.write(dbeta);
}

SASREC_CLONES void dropout_apply(float* x, int64_t count, int64_t first, uint64_t key, uint32_t threshold, float scale,
                                 uint8_t* keep_out) {
  // dropout_keeps: element e keeps 16 bits of the hash of word e / 4, bits 16 * (e % 4) on. After the
  // elements up to a word boundary, blocks of kWords words are hashed in one loop (64-bit lanes), their
  // 16-bit pieces laid out in element order, and applied in a second loop: both vectorize, where a hash
  // per four elements in one loop did not (its share of a Beauty step's CPU time 5.4% -> 1.6%,
  // docs/results.md).
  // Kept or not as arithmetic on bits (a select that GCC turns into a branch is mispredicted half the
  // time at p = 0.5, which costs more than the hash).
  auto word = [&](int64_t w) { return splitmix64(key ^ (static_cast<uint64_t>(w) * 0x9E3779B97F4A7C15ull)); };
  uint32_t scale_bits;
  std::memcpy(&scale_bits, &scale, sizeof scale_bits);
  auto kept_of = [&](uint32_t bits) { return (bits - threshold) >> 31; };  // 1 when bits < threshold (< 2^17)
  auto factor_of = [&](uint32_t kept) {  // scale or 0.0f
    const uint32_t f = scale_bits & (0u - kept);
    float factor;
    std::memcpy(&factor, &f, sizeof factor);
    return factor;
  };
  int64_t i = 0;
  for (; i < count && (first + i) % 4 != 0; ++i) {
    const uint32_t kept = kept_of(static_cast<uint32_t>((word((first + i) / 4) >> (16 * ((first + i) % 4))) & 0xFFFF));
    x[i] *= factor_of(kept);
    if (keep_out) keep_out[i] = static_cast<uint8_t>(kept);
  }
  constexpr int64_t kWords = 64;
  uint64_t h[kWords];
  uint16_t bits[4 * kWords];
  for (; i < count; i += 4 * kWords) {
    const int64_t n = std::min(4 * kWords, count - i), words = (n + 3) / 4, w0 = (first + i) / 4;
    for (int64_t k = 0; k < words; ++k) h[k] = word(w0 + k);
    for (int64_t k = 0; k < words; ++k)
      for (int l = 0; l < 4; ++l) bits[4 * k + l] = static_cast<uint16_t>(h[k] >> (16 * l));
    float* xi = x + i;
    if (keep_out) {  // two loops, so that neither tests keep_out per element
      uint8_t* ki = keep_out + i;
      for (int64_t j = 0; j < n; ++j) {
        const uint32_t kept = kept_of(bits[j]);
        xi[j] *= factor_of(kept);
        ki[j] = static_cast<uint8_t>(kept);
      }
    } else {
      for (int64_t j = 0; j < n; ++j) xi[j] *= factor_of(kept_of(bits[j]));
    }
  }
}

SASREC_CLONES void dropout_replay(float* x, const uint8_t* keep, int64_t count, float scale) {
  for (int64_t i = 0; i < count; ++i) x[i] *= static_cast<float>(keep[i]) * scale;
}

SASREC_CLONES void activation_forward(Act act, const float* u, float* a, int64_t n) {
  if (act == Act::Relu) {
    for (int64_t i = 0; i < n; ++i) a[i] = std::max(u[i], 0.0f);
    return;
  }
  for (int64_t i = 0; i < n; ++i) a[i] = 0.5f * u[i] * (1.0f + std::erf(u[i] * static_cast<float>(M_SQRT1_2)));
}

SASREC_CLONES void activation_backward(Act act, const float* u, const float* da, float* du, int64_t n) {
  if (act == Act::Relu) {
    for (int64_t i = 0; i < n; ++i) {  // da where u > 0, else 0, on bits: GCC makes a branch of the select
      uint32_t ub, db;
      std::memcpy(&ub, u + i, sizeof ub);
      std::memcpy(&db, da + i, sizeof db);
      const uint32_t positive = ((0u - ub) & ~ub) >> 31;  // u's bits as int32 > 0, i.e. u > 0
      db &= 0u - positive;
      std::memcpy(du + i, &db, sizeof db);
    }
    return;
  }
  // d/du [u Phi(u)] = Phi(u) + u phi(u)
  const float inv_sqrt_2pi = static_cast<float>(0.5 * M_2_SQRTPI * M_SQRT1_2);
  for (int64_t i = 0; i < n; ++i) {
    const float cdf = 0.5f * (1.0f + std::erf(u[i] * static_cast<float>(M_SQRT1_2)));
    const float pdf = inv_sqrt_2pi * std::exp(-0.5f * u[i] * u[i]);
    du[i] = da[i] * (cdf + u[i] * pdf);
  }
}

double softplus(double x) { return x > 20 ? x : std::log1p(std::exp(x)); }
double sigmoid(double x) {
  if (x > 20) return 1.0;  // softplus's threshold: its gradient is 1 there
  const double z = std::exp(x);
  return z / (z + 1);
}

namespace {

// exp(x) for x <= 0 as Cephes' expf (2^n times a degree-6 polynomial on
// [-ln2/2, ln2/2], within 2 ulp), in arithmetic only, so that loops over it
// vectorize (std::exp is a call per element); below -87.3 (and -inf) 0.
inline float exp_nonpositive(float x) {
  const float c = std::max(x, -87.3f);
  const float fx = c * 1.44269504088896341f + 0.5f;
  int32_t n = static_cast<int32_t>(fx);
  n -= static_cast<int32_t>(static_cast<float>(n) > fx);  // floor
  const float fn = static_cast<float>(n);
  const float r = (c - fn * 0.693359375f) + fn * 2.12194440e-4f;
  float y = 1.9875691500e-4f;
  y = y * r + 1.3981999507e-3f;
  y = y * r + 8.3334519073e-3f;
  y = y * r + 4.1665795894e-2f;
  y = y * r + 1.6666665459e-1f;
  y = y * r + 5.0000001201e-1f;
  y = y * r * r + r + 1.0f;
  uint32_t bits = static_cast<uint32_t>(n + 127) << 23;
  float two_n;
  std::memcpy(&two_n, &bits, sizeof two_n);
  const float e = y * two_n;  // computed in any case, then masked: the loop has no control flow
  uint32_t eb;
  std::memcpy(&eb, &e, sizeof eb);
  eb &= 0u - static_cast<uint32_t>(x >= -87.3f);
  float out;
  std::memcpy(&out, &eb, sizeof out);
  return out;
}

}  // namespace

namespace {
inline double exp_shifted_sum_inline(float* x, int64_t n, float shift) {
  for (int64_t i = 0; i < n; ++i) x[i] = exp_nonpositive(x[i] - shift);
  return sum_lanes(x, n);
}
}  // namespace

SASREC_CLONES double exp_shifted_sum(float* x, int64_t n, float shift) { return exp_shifted_sum_inline(x, n, shift); }

SASREC_CLONES float max_of(const float* x, int64_t n) {
  float acc[8];
  std::fill(acc, acc + 8, x[0]);
  int64_t i = 0;
  for (; i + 8 <= n; i += 8)
    for (int l = 0; l < 8; ++l) acc[l] = std::max(acc[l], x[i + l]);
  float top = x[0];
  for (; i < n; ++i) top = std::max(top, x[i]);
  for (float a : acc) top = std::max(top, a);
  return top;
}

SASREC_CLONES void scale(float* x, int64_t n, float a) {
  for (int64_t i = 0; i < n; ++i) x[i] *= a;
}

namespace {

// Causal softmax of S [n,n] in place: row i over columns 0..i, 0 after. The
// exponentials are one loop over the whole block (each row less its maximum
// first, the columns after i set to -inf, whose exponential is 0), so that
// they vectorize where the rows are a few elements long: most of a Beauty
// batch's sequences are under 8 items.
inline void causal_softmax(float* S, int64_t n) {
  for (int64_t i = 0; i < n; ++i) {
    float* row = S + i * n;
    float top = row[0];
    for (int64_t j = 1; j <= i; ++j) top = std::max(top, row[j]);
    for (int64_t j = 0; j <= i; ++j) row[j] -= top;
    for (int64_t j = i + 1; j < n; ++j) row[j] = kNegInf;
  }
  for (int64_t e = 0; e < n * n; ++e) S[e] = exp_nonpositive(S[e]);
  for (int64_t i = 0; i < n; ++i) {
    float* row = S + i * n;
    const float inv = static_cast<float>(1.0 / sum_lanes(row, i + 1));
    for (int64_t j = 0; j <= i; ++j) row[j] *= inv;
  }
}

}  // namespace

SASREC_CLONES void attention_forward(const AttentionShape& s, int64_t b0, int64_t b1, const float* q, const float* k,
                                     const float* v, int64_t ld, float* probs, float* weights, float* out,
                                     int64_t ldo) {
  const int64_t dh = s.dh;
  const float scale = static_cast<float>(1.0 / std::sqrt(static_cast<double>(dh)));
  for (int64_t b = b0; b < b1; ++b) {
    const int64_t n = s.row[b + 1] - s.row[b], r = s.row[b];
    for (int64_t h = 0; h < s.heads && n > 0; ++h) {
      const float *Q = q + r * ld + h * dh, *K = k + r * ld + h * dh, *V = v + r * ld + h * dh;
      float* O = out + r * ldo + h * dh;
      const int64_t at = s.block[b] + h * n * n;
      float *P = probs + at, *W = weights + at;
      if (n >= kBlasFrom) {
        gemm(false, true, n, n, dh, scale, Q, ld, K, ld, 0.0f, P, n);  // S = Q K^T / sqrt(dh)
      } else {
        for (int64_t i = 0; i < n; ++i)
          for (int64_t j = 0; j <= i; ++j) P[i * n + j] = scale * dot8(Q + i * ld, K + j * ld, dh);
      }
      causal_softmax(P, n);
      if (s.dropout) {
        std::memcpy(W, P, sizeof(float) * n * n);
        dropout_apply(W, n * n, at, s.key, s.threshold, s.keep_scale);
      }
      const float* Wt = s.dropout ? W : P;
      if (n >= kBlasFrom) {
        gemm(false, false, n, dh, n, 1.0f, Wt, n, V, ld, 0.0f, O, ldo);  // O = W V
      } else {
        for (int64_t i = 0; i < n; ++i) {
          float* o = O + i * ldo;
          std::fill(o, o + dh, 0.0f);
          for (int64_t j = 0; j <= i; ++j) axpy_inline(Wt[i * n + j], V + j * ld, o, dh);
        }
      }
    }
  }
}

SASREC_CLONES void attention_backward(const AttentionShape& s, int64_t b0, int64_t b1, const float* q, const float* k,
                                      const float* v, int64_t ld, const float* probs, const float* weights,
                                      const float* dout, int64_t ldo, float* dq, float* dk, float* dv, float* scratch) {
  const int64_t dh = s.dh;
  const float scale = static_cast<float>(1.0 / std::sqrt(static_cast<double>(dh)));
  for (int64_t b = b0; b < b1; ++b) {
    const int64_t n = s.row[b + 1] - s.row[b], r = s.row[b];
    for (int64_t h = 0; h < s.heads && n > 0; ++h) {
      const int64_t x = r * ld + h * dh;
      const float *Q = q + x, *K = k + x, *V = v + x, *dO = dout + r * ldo + h * dh;
      float *dQ = dq + x, *dK = dk + x, *dV = dv + x, *dS = scratch;
      const int64_t at = s.block[b] + h * n * n;
      const float *P = probs + at, *W = s.dropout ? weights + at : probs + at;
      const bool blas = n >= kBlasFrom;
      if (blas) {
        gemm(false, true, n, n, dh, 1.0f, dO, ldo, V, ld, 0.0f, dS, n);  // dW = dO V^T
        gemm(true, false, n, dh, n, 1.0f, W, n, dO, ldo, 0.0f, dV, ld);  // dV = W^T dO
      } else {
        for (int64_t i = 0; i < n; ++i) {
          for (int64_t j = 0; j <= i; ++j) dS[i * n + j] = dot8(dO + i * ldo, V + j * ld, dh);
          for (int64_t j = i + 1; j < n; ++j) dS[i * n + j] = 0;
        }
        for (int64_t j = 0; j < n; ++j) std::fill(dV + j * ld, dV + j * ld + dh, 0.0f);
        for (int64_t i = 0; i < n; ++i)
          for (int64_t j = 0; j <= i; ++j) axpy_inline(W[i * n + j], dO + i * ldo, dV + j * ld, dh);
      }
      if (s.dropout) {
        // dP = dW * mask / (1-p). The mask is where the weights after dropout are not 0: the softmax is
        // positive where it counts (below the diagonal; 0 there, or underflowed, gives dS 0 anyway).
        uint32_t scale_bits;
        std::memcpy(&scale_bits, &s.keep_scale, sizeof scale_bits);
        for (int64_t e = 0; e < n * n; ++e) {
          uint32_t wb;
          std::memcpy(&wb, W + e, sizeof wb);
          const uint32_t f = scale_bits & (0u - ((0u - wb) >> 31));  // scale where W > 0, else 0.0f
          float factor;
          std::memcpy(&factor, &f, sizeof factor);
          dS[e] *= factor;
        }
      }
      for (int64_t i = 0; i < n; ++i) {  // softmax backward: dS = P * (dP - rowsum(dP * P))
        const float* prow = P + i * n;
        float* drow = dS + i * n;
        float dotp = 0;
        for (int64_t j = 0; j <= i; ++j) dotp += drow[j] * prow[j];
        for (int64_t j = 0; j < n; ++j) drow[j] = prow[j] * (drow[j] - dotp);
      }
      if (blas) {
        gemm(false, false, n, dh, n, scale, dS, n, K, ld, 0.0f, dQ, ld);  // dQ = dS K / sqrt(dh)
        gemm(true, false, n, dh, n, scale, dS, n, Q, ld, 0.0f, dK, ld);   // dK = dS^T Q / sqrt(dh)
      } else {
        for (int64_t i = 0; i < n; ++i) {
          std::fill(dQ + i * ld, dQ + i * ld + dh, 0.0f);
          std::fill(dK + i * ld, dK + i * ld + dh, 0.0f);
        }
        for (int64_t i = 0; i < n; ++i)
          for (int64_t j = 0; j <= i; ++j) {
            const float g = scale * dS[i * n + j];
            axpy_inline(g, K + j * ld, dQ + i * ld, dh);
            axpy_inline(g, Q + i * ld, dK + j * ld, dh);
          }
      }
    }
  }
}

}  // namespace sasrec::fused
