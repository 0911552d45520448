// bench/layer_speed.cpp: the fused step's attention and LayerNorm kernels
// (fused_layers.h) alone, on batches shaped like a real log's.
//
//   build/layer_speed LOG.txt [REPEATS] [HIDDEN]
//
// LOG.txt is a research-format log (a user id, then the user's items in
// order: ../shared/data/Beauty.txt). Batches of 128 sequences are drawn from
// its users' training lengths (items less the 3 held out by leave-one-out
// and the last target, capped at 50: on Beauty 733 tokens a batch), random
// activations, dropout 0.5. Prints microseconds a batch for each kernel:
// the fastest of REPEATS passes over 40 batches, which on a shared machine
// is steadier than a mean. Alternate two builds to compare them.
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <random>
#include <sstream>
#include <string>
#include <vector>

#include "sasrec/dropout_bits.h"
#include "sasrec/fused_layers.h"

namespace {

using Clock = std::chrono::steady_clock;
constexpr int64_t kBatch = 128, kMaxlen = 50, kBatches = 40;

std::vector<int64_t> training_lengths(const char* path) {
  std::ifstream in(path);
  if (!in) {
    std::fprintf(stderr, "layer_speed: cannot read %s\n", path);
    std::exit(2);
  }
  std::vector<int64_t> lengths;
  std::string line, token;
  while (std::getline(in, line)) {
    std::istringstream fields(line);
    int64_t n = -1;  // the user id
    while (fields >> token) ++n;
    if (n > 0) lengths.push_back(std::clamp<int64_t>(n - 3, 1, kMaxlen));
  }
  if (lengths.empty()) {
    std::fprintf(stderr, "layer_speed: %s has no user with items\n", path);
    std::exit(2);
  }
  return lengths;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc < 2) {
    std::fprintf(stderr, "usage: layer_speed LOG.txt [REPEATS] [HIDDEN]\n");
    return 2;
  }
  const auto lengths = training_lengths(argv[1]);
  const int repeats = argc > 2 ? std::max(1, std::atoi(argv[2])) : 15;
  const int64_t D = argc > 3 ? std::max(1, std::atoi(argv[3])) : 50;
  std::mt19937_64 rng(1);
  std::vector<std::vector<int64_t>> rows(kBatches), blocks(kBatches);
  for (int64_t t = 0; t < kBatches; ++t) {
    rows[t] = {0}, blocks[t] = {0};
    for (int64_t b = 0; b < kBatch; ++b) {
      const int64_t n = lengths[rng() % lengths.size()];
      rows[t].push_back(rows[t].back() + n);
      blocks[t].push_back(blocks[t].back() + n * n);
    }
  }
  const int64_t N = kBatch * kMaxlen;
  std::normal_distribution<float> normal;
  auto random = [&](int64_t n, float s) {
    std::vector<float> v(n);
    for (auto& x : v) x = s * normal(rng);
    return v;
  };
  auto qkv = random(N * 3 * D, 0.3f), dout = random(N * D, 1.0f), x = random(N * D, 1.0f);
  std::vector<float> probs(kBatch * kMaxlen * kMaxlen), weights(probs.size()), out(N * D), dqkv(N * 3 * D),
      scratch(kMaxlen * kMaxlen), y(N * D), mean(N), rstd(N), dx(N * D), dgamma(D), dbeta(D);
  const std::vector<float> gamma(D, 1.0f), beta(D, 0.1f);

  double best[4] = {1e30, 1e30, 1e30, 1e30};
  int64_t tokens = 0;
  for (int r = 0; r < repeats; ++r) {
    double pass[4] = {0, 0, 0, 0};
    tokens = 0;
    for (int64_t t = 0; t < kBatches; ++t) {
      sasrec::fused::AttentionShape s;
      s.row = rows[t].data(), s.block = blocks[t].data(), s.heads = 1, s.dh = D;
      s.dropout = true, s.key = 77 + static_cast<uint64_t>(t), s.threshold = sasrec::dropout_threshold(0.5);
      s.keep_scale = 2.0f;
      const int64_t n = rows[t][kBatch];
      tokens += n;
      const float *q = qkv.data(), *k = q + D, *v = q + 2 * D;
      const auto t0 = Clock::now();
      sasrec::fused::attention_forward(s, 0, kBatch, q, k, v, 3 * D, probs.data(), weights.data(), out.data(), D);
      const auto t1 = Clock::now();
      sasrec::fused::attention_backward(s, 0, kBatch, q, k, v, 3 * D, probs.data(), weights.data(), dout.data(), D,
                                        dqkv.data(), dqkv.data() + D, dqkv.data() + 2 * D, scratch.data());
      const auto t2 = Clock::now();
      sasrec::fused::layer_norm_forward(x.data(), gamma.data(), beta.data(), n, D, 1e-8f, y.data(), mean.data(),
                                        rstd.data());
      const auto t3 = Clock::now();
      sasrec::fused::layer_norm_backward(dout.data(), x.data(), mean.data(), rstd.data(), gamma.data(), n, D, dx.data(),
                                         false, dgamma.data(), dbeta.data());
      const auto t4 = Clock::now();
      const Clock::time_point at[] = {t0, t1, t2, t3, t4};
      for (int i = 0; i < 4; ++i) pass[i] += std::chrono::duration<double>(at[i + 1] - at[i]).count();
    }
    for (int i = 0; i < 4; ++i) best[i] = std::min(best[i], pass[i]);
  }
  double check = 0;  // the outputs, so that nothing is optimized away
  for (float v : dqkv) check += v;
  for (float v : dx) check += v;
  std::printf("hidden %lld, %lld tokens a batch, fastest of %d passes, us a batch: attention forward %.1f, "
              "backward %.1f; layernorm forward %.1f, backward %.1f (checksum %.6g)\n",
              static_cast<long long>(D), static_cast<long long>(tokens / kBatches), repeats,
              best[0] / kBatches * 1e6, best[1] / kBatches * 1e6, best[2] / kBatches * 1e6,
              best[3] / kBatches * 1e6, check);
  return 0;
}
