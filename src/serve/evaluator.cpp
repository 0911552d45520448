// evaluator.cpp: full-catalog and sampled ranking (see evaluator.h).
#include "sasrec/evaluator.h"

#include <ATen/Parallel.h>
#include <cblas.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <limits>

#include "sasrec/error.h"
#include "sasrec/rng.h"
#include "sasrec/sampler.h"

namespace sasrec {
namespace {
constexpr uint64_t kEvalStream = 0xe7a1ull;
constexpr float kNegInf = -std::numeric_limits<float>::infinity();

// A target whose own score is NaN or +-Inf: below every candidate.
void place_nonfinite_targets(const float* target, const std::vector<int64_t>& candidates,
                             std::vector<TargetRank>& out) {
  for (size_t r = 0; r < out.size(); ++r)
    if (!std::isfinite(target[r])) out[r] = TargetRank{candidates[r], 0, true};
}

// Candidates of each row: the rows of w (items 0..I) less the masked ones (the padding among them).
std::vector<int64_t> candidate_counts(int64_t rows_of_w, const std::vector<std::vector<int32_t>>& masked) {
  std::vector<int64_t> out(masked.size());
  for (size_t r = 0; r < masked.size(); ++r) out[r] = rows_of_w - static_cast<int64_t>(masked[r].size());
  return out;
}

}  // namespace

// Full-catalog places on CPU: scores are made block by block with BLAS into
// a buffer that stays in cache and counted while there (s <= t and s == t
// in one pass: higher = not <=, so a NaN counts above the target), the
// items of masked[r] subtracted by a cursor, so no [users x items] score
// matrix or comparison mask is ever stored. A score can overflow to Inf
// only where |h_r| * max_i |w_i| nears FLT_MAX (Cauchy-Schwarz bounds every
// partial sum of the dot product); only such rows, or all when w itself is
// not finite, are searched for non-finite scores element by element.
std::vector<TargetRank> full_ranks_blocked(const torch::Tensor& h, const torch::Tensor& w,
                                           const torch::Tensor& target_score,
                                           const std::vector<std::vector<int32_t>>& masked) {
  constexpr int64_t kRows = kScoreBlockRows, kCols = kScoreBlockCols;
  SASREC_CHECK(h.is_cpu() && w.is_cpu() && h.scalar_type() == torch::kFloat32 && w.scalar_type() == torch::kFloat32 &&
                   h.is_contiguous() && w.is_contiguous() && target_score.is_contiguous(),
               "full_ranks_blocked takes contiguous CPU float32 tensors");
  const int64_t n = h.size(0), D = h.size(1), items = w.size(0);
  SASREC_CHECK(static_cast<int64_t>(masked.size()) == n && target_score.numel() == n,
               "one masked list and target per row");
  const float *H = h.data_ptr<float>(), *W = w.data_ptr<float>(), *tgt = target_score.data_ptr<float>();
  std::vector<TargetRank> out(n);
  std::vector<char> search(n, 1);  // rows whose scores might not all be finite
  {
    // Plain loops: this runs for every chunk of users, over the whole table.
    auto squared_norm = [D](const float* x) {
      double q = 0;
      for (int64_t d = 0; d < D; ++d) q += static_cast<double>(x[d]) * x[d];
      return q;
    };
    double w_max = 0;
    bool w_finite = true;
    for (int64_t i = 0; i < items; ++i) {
      const double q = squared_norm(W + i * D);
      w_finite = w_finite && std::isfinite(q);
      w_max = std::max(w_max, q);
    }
    const double limit = 0.5 * std::numeric_limits<float>::max();
    for (int64_t r = 0; r < n; ++r)
      search[r] = !(w_finite && std::sqrt(squared_norm(H + r * D)) * std::sqrt(w_max) < limit);
  }
  at::parallel_for(0, (n + kRows - 1) / kRows, 1, [&](int64_t begin, int64_t end) {
    std::vector<float> block(kRows * kCols);
    for (int64_t rb = begin; rb < end; ++rb) {
      const int64_t r0 = rb * kRows, rows = std::min(kRows, n - r0);
      std::vector<size_t> cursor(rows, 0);  // next masked item of each row
      for (int64_t c0 = 0; c0 < items; c0 += kCols) {
        const int64_t cols = std::min(kCols, items - c0);
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, static_cast<int>(rows), static_cast<int>(cols),
                    static_cast<int>(D), 1.0f, H + r0 * D, static_cast<int>(D), W + c0 * D, static_cast<int>(D), 0.0f,
                    block.data(), static_cast<int>(cols));
        for (int64_t r = 0; r < rows; ++r) {
          const float t = tgt[r0 + r];
          const float* s = block.data() + r * cols;
          // int32 counts (a block has at most kCols): the loop vectorizes without widening.
          int32_t at_most = 0, equal = 0;
          for (int64_t j = 0; j < cols; ++j) {
            at_most += s[j] <= t;
            equal += s[j] == t;
          }
          int64_t higher = cols - at_most;
          const auto& m = masked[r0 + r];
          for (size_t& k = cursor[r]; k < m.size() && m[k] < c0 + cols; ++k) {
            const float x = s[m[k] - c0];
            higher -= !(x <= t);
            equal -= x == t;
          }
          TargetRank& o = out[r0 + r];
          o.higher += higher;
          o.ties += equal;
          if (search[r0 + r] && !o.nonfinite)
            for (int64_t j = c0 == 0 ? 1 : 0; j < cols; ++j) o.nonfinite = o.nonfinite || !std::isfinite(s[j]);
        }
      }
    }
  });
  place_nonfinite_targets(tgt, candidate_counts(items, masked), out);
  return out;
}

// The same rule with tensor ops: masked scores become -inf (never above a
// finite target, never equal to it), the non-finite search looks at every
// score of items 1..I before that.
std::vector<TargetRank> full_ranks_tensor_ops(const torch::Tensor& h, const torch::Tensor& w,
                                              const torch::Tensor& target_score,
                                              const std::vector<std::vector<int32_t>>& masked, int64_t memory_mb) {
  const int64_t n = h.size(0), items = w.size(0);
  const auto device = h.device();
  std::vector<int64_t> mask_rows, mask_cols;
  for (int64_t r = 0; r < n; ++r)
    for (int32_t c : masked[r]) mask_rows.push_back(r), mask_cols.push_back(c);
  auto rows = torch::tensor(mask_rows, torch::kInt64);
  auto cols = torch::tensor(mask_cols, torch::kInt64);
  const int64_t budget = memory_mb * (1 << 20) / (4 * std::max<int64_t>(1, n));
  const int64_t chunk = std::max<int64_t>(1, std::min<int64_t>(items, budget));
  const auto counts = torch::TensorOptions().dtype(torch::kInt64).device(device);
  auto higher = torch::zeros({n}, counts), ties = torch::zeros({n}, counts);
  auto nonfinite = torch::zeros({n}, counts.dtype(torch::kBool));
  const auto t = target_score.unsqueeze(1);  // [n,1]
  for (int64_t c0 = 0; c0 < items; c0 += chunk) {
    const int64_t c1 = std::min(items, c0 + chunk);
    auto scores = torch::matmul(h, w.slice(0, c0, c1).t());  // [n, c1-c0]
    auto real = c0 == 0 ? scores.slice(1, 1) : scores;       // item 0 is padding
    nonfinite = nonfinite.logical_or(torch::isfinite(real).logical_not().any(1));
    auto in = (cols >= c0) & (cols < c1);
    if (in.any().item<bool>()) {
      auto r = rows.masked_select(in).to(device);
      auto c = (cols.masked_select(in) - c0).to(device);
      scores.index_put_({r, c}, torch::full({}, kNegInf, scores.options()));
    }
    higher += (scores <= t).logical_not().sum(1);
    ties += (scores == t).sum(1);
  }
  auto hc = higher.cpu(), tc = ties.cpu(), nc = nonfinite.cpu(), target = target_score.to(torch::kCPU).contiguous();
  std::vector<TargetRank> out(n);
  for (int64_t r = 0; r < n; ++r)
    out[r] = TargetRank{hc.data_ptr<int64_t>()[r], tc.data_ptr<int64_t>()[r], nc.data_ptr<bool>()[r]};
  place_nonfinite_targets(target.data_ptr<float>(), candidate_counts(items, masked), out);
  return out;
}

std::vector<TargetRank> sampled_ranks(const torch::Tensor& target_score, const torch::Tensor& neg_score) {
  const int64_t n = neg_score.size(0), k = neg_score.size(1);
  const auto t = target_score.unsqueeze(1);  // [n,1]
  auto higher = (neg_score <= t).logical_not().sum(1).cpu();
  auto ties = (neg_score == t).sum(1).cpu();
  auto nonfinite = torch::isfinite(neg_score).logical_not().any(1).cpu();
  auto target = target_score.to(torch::kCPU).contiguous();
  std::vector<TargetRank> out(n);
  for (int64_t r = 0; r < n; ++r)
    out[r] = TargetRank{higher.data_ptr<int64_t>()[r], ties.data_ptr<int64_t>()[r], nonfinite.data_ptr<bool>()[r]};
  place_nonfinite_targets(target.data_ptr<float>(), std::vector<int64_t>(n, k), out);
  return out;
}

Evaluator::Evaluator(const SplitData& data, const EvalConfig& config, uint64_t seed, Communicator& comm,
                     ItemShard* shard)
    : data_(data), config_(config), seed_(seed), comm_(comm), shard_(shard) {
  // eval.max_users: keep each user's cases with probability max_users / (all
  // users with a case), decided by a hash of its global index, so every rank
  // count evaluates the same users.
  for (Holdout split : {Holdout::Valid, Holdout::Test}) {
    const auto& cases = data_.cases(split);
    int64_t users = 0;
    for (size_t i = 0; i < cases.size(); ++i) users += i == 0 || cases[i].user != cases[i - 1].user;
    const int64_t total = comm_.allreduce_sum(users);
    const double keep = config_.max_users > 0 && total > config_.max_users
                            ? static_cast<double>(config_.max_users) / static_cast<double>(total)
                            : 1.0;
    for (const EvalCase& c : cases) {
      if (keep < 1.0) {
        Rng rng(mix_seed({seed_, static_cast<uint64_t>(data_.global_user(c.user)), kEvalStream, 1}));
        if (rng.uniform() >= keep) continue;
      }
      cases_[static_cast<int>(split)].push_back(c);
    }
  }
}

std::vector<std::vector<TargetRank>> Evaluator::chunk_ranks(SASRec& model, Holdout split,
                                                            const std::vector<EvalCase>& cases) {
  const int64_t n = static_cast<int64_t>(cases.size());
  const int64_t maxlen = model->options().maxlen;
  const auto device = model->item_weight().device();

  // Inputs: the history before the target, the last maxlen of it, left-padded.
  int64_t width = 1;
  for (const EvalCase& c : cases) width = std::max(width, std::min(maxlen, c.target));
  auto seq = torch::zeros({n, width}, torch::kInt64);
  auto target = torch::empty({n}, torch::kInt64);
  std::vector<int64_t> global_ids(n);
  std::vector<std::vector<int32_t>> masked(n);  // items not ranked in the full protocol, sorted, unique
  int64_t* s = seq.data_ptr<int64_t>();
  for (int64_t r = 0; r < n; ++r) {
    const ItemSpan full = data_.full(cases[r].user);
    const int64_t hist = cases[r].target;
    left_pad_last(full.data, hist, width, s + r * width);
    target[r] = full.data[hist];
    global_ids[r] = data_.global_user(cases[r].user);
    // The history, the padding item and the target (compared, not counted against itself).
    auto& m = masked[r];
    m.assign(full.data, full.data + hist + 1);
    m.push_back(0);
    std::sort(m.begin(), m.end());
    m.erase(std::unique(m.begin(), m.end()), m.end());
  }

  // The sampled protocol's negatives, drawn before the network runs (a sharded table fetches them with the rest).
  const bool sampled =
      std::find(config_.protocols.begin(), config_.protocols.end(), Protocol::Sampled) != config_.protocols.end();
  const torch::Tensor negs = sampled ? sampled_negatives(split, cases, global_ids) : torch::Tensor();

  torch::NoGradGuard no_grad;
  const auto users = torch::tensor(global_ids, torch::kInt64).to(device);
  torch::Tensor h, target_rows, neg_rows;  // [n,D], [n,D], [n,k,D]
  if (!shard_) {
    h = model->forward(seq.to(device), users).select(1, width - 1);
    target_rows = model->item_weight().index_select(0, target.to(device));
    if (sampled) neg_rows = model->item_weight().index_select(0, negs.view(-1).to(device)).view({n, negs.size(1), -1});
  } else {
    // Sharded: the rows the network and the targets need, from their owners (item_shard.h), in one fetch.
    const int64_t d = model->options().hidden;
    Packing packing;
    if (n > 0) packing = pack_sequences(seq.to(device), maxlen);
    auto target_at = target.to(device), negs_at = sampled ? negs.to(device) : torch::Tensor();
    std::vector<torch::Tensor*> parts;
    if (n > 0) parts = {&packing.items, &target_at, &negs_at};
    const ItemRows rows = shard_->fetch(model->item_weight(), parts, /*requires_grad=*/false);
    if (n > 0) {
      h = unpack_rows(packing, model->forward_packed(packing, users, rows.table)).select(1, packing.width - 1);
      target_rows = rows.table.index_select(0, target_at);
      if (sampled) neg_rows = rows.table.index_select(0, negs_at.reshape(-1)).view({n, negs.size(1), d});
    } else {
      h = torch::empty({0, d}, rows.table.options());
      target_rows = h;
      if (sampled) neg_rows = torch::empty({0, negs.size(1), d}, rows.table.options());
    }
  }
  auto target_score = (h * target_rows).sum(-1);  // [n]

  std::vector<std::vector<TargetRank>> out;
  for (const auto& protocol : config_.protocols) {
    if (protocol == Protocol::Sampled) {
      out.push_back(sampled_ranks(target_score, (h.unsqueeze(1) * neg_rows).sum(-1)));  // [n,k] scores
    } else if (shard_) {
      out.push_back(sharded_full_ranks(model, h, target_score, masked));
    } else {
      out.push_back(full_ranks(h, model->item_weight(), target_score, masked, device));
    }
  }
  return out;
}

torch::Tensor Evaluator::sampled_negatives(Holdout split, const std::vector<EvalCase>& cases,
                                           const std::vector<int64_t>& global_ids) const {
  const bool test = split == Holdout::Test;
  const bool time_split = data_.options().kind == SplitKind::Time;
  const int64_t n = static_cast<int64_t>(cases.size()), k = config_.sampled_negatives;
  auto negs = torch::empty({n, k}, torch::kInt64);
  std::vector<int32_t> seen;
  for (int64_t r = 0; r < n; ++r) {
    const int64_t u = cases[r].user;
    const ItemSpan exclude = config_.sampled_exclude == SampledExclude::Train ? data_.train(u) : data_.full(u);
    seen.assign(exclude.begin(), exclude.end());
    std::sort(seen.begin(), seen.end());
    seen.erase(std::unique(seen.begin(), seen.end()), seen.end());
    // A user has one case a split under leave_one_out; under time the target's position tells them apart.
    const uint64_t stream = test ? 3u : 2u, at = static_cast<uint64_t>(cases[r].target);
    Rng rng(time_split ? mix_seed({seed_, static_cast<uint64_t>(global_ids[r]), kEvalStream, stream, at})
                       : mix_seed({seed_, static_cast<uint64_t>(global_ids[r]), kEvalStream, stream}));
    sample_negatives(rng, data_.num_items(), seen, k, negs.data_ptr<int64_t>() + r * k);
  }
  return negs;
}

std::vector<TargetRank> Evaluator::full_ranks(const torch::Tensor& h, const torch::Tensor& w,
                                              const torch::Tensor& target_score,
                                              const std::vector<std::vector<int32_t>>& masked,
                                              torch::Device device) const {
  // eval.scorer: the blocked count on CPU, chunked tensor ops (the device path) elsewhere or when asked.
  const bool blocked = config_.scorer == Scorer::Blocked || (config_.scorer == Scorer::Auto && device.is_cpu());
  if (blocked) return full_ranks_blocked(h.contiguous(), w.contiguous(), target_score.contiguous(), masked);
  return full_ranks_tensor_ops(h, w, target_score, masked, config_.memory_mb);
}

std::vector<TargetRank> Evaluator::sharded_full_ranks(SASRec& model, const torch::Tensor& h,
                                                      const torch::Tensor& target_score,
                                                      const std::vector<std::vector<int32_t>>& masked) {
  // Every rank's cases (their vectors, target scores and masked items) to
  // every rank; each counts them against its own block of the table; the
  // counts add up over blocks (a NaN candidate counts above the target, a
  // non-finite target below all of a block's candidates), so one sum gives
  // the ranks a whole table would.
  const auto device = h.device();
  std::vector<int64_t> lengths;
  std::vector<int64_t> flat;
  for (const auto& m : masked)
    lengths.push_back(static_cast<int64_t>(m.size())), flat.insert(flat.end(), m.begin(), m.end());
  const int64_t n = h.size(0);
  auto counts = comm_.allgather(torch::tensor({n}, torch::kInt64));
  auto all_h = comm_.allgather(h.contiguous());
  auto all_scores = comm_.allgather(target_score.contiguous());
  auto all_lengths = comm_.allgather(torch::tensor(lengths, torch::kInt64)).contiguous();
  auto all_flat = comm_.allgather(torch::tensor(flat, torch::kInt64)).contiguous();
  // The masked items of every case that fall in this rank's block, as local rows.
  const int64_t begin = shard_->begin(), end = begin + shard_->size(), total = all_h.size(0);
  std::vector<std::vector<int32_t>> local(total);
  const int64_t* len = all_lengths.data_ptr<int64_t>();
  const int64_t* item = all_flat.data_ptr<int64_t>();
  for (int64_t c = 0, at = 0; c < total; at += len[c], ++c)
    for (int64_t j = at; j < at + len[c]; ++j)
      if (item[j] >= begin && item[j] < end) local[c].push_back(static_cast<int32_t>(item[j] - begin));
  const auto block = full_ranks(all_h, model->item_weight(), all_scores, local, device);
  auto summed = torch::empty({total, 3}, torch::kInt64);
  for (int64_t c = 0; c < total; ++c) {
    summed[c][0] = block[c].higher, summed[c][1] = block[c].ties, summed[c][2] = block[c].nonfinite ? 1 : 0;
  }
  comm_.allreduce_sum(summed);
  int64_t first = 0;  // this rank's cases start after those of the ranks before it
  for (int r = 0; r < comm_.rank(); ++r) first += counts[r].item<int64_t>();
  std::vector<TargetRank> out(n);
  const int64_t* s = summed.data_ptr<int64_t>();
  for (int64_t c = 0; c < n; ++c)
    out[c] = TargetRank{s[(first + c) * 3], s[(first + c) * 3 + 1], s[(first + c) * 3 + 2] > 0};
  return out;
}

std::vector<std::vector<TargetRank>> Evaluator::all_ranks(SASRec& model, Holdout split) {
  const bool was_training = model->is_training();
  model->eval();
  const auto& cases = cases_[static_cast<int>(split)];
  std::vector<std::vector<TargetRank>> out(config_.protocols.size());
  // A sharded table scores every chunk on every rank: all ranks go through as many chunks as the rank with most.
  int64_t chunks = (static_cast<int64_t>(cases.size()) + config_.batch_users - 1) / config_.batch_users;
  if (shard_) chunks = comm_.allgather(torch::tensor({chunks}, torch::kInt64)).max().item<int64_t>();
  for (int64_t k = 0; k < chunks; ++k) {
    const size_t i = std::min(cases.size(), static_cast<size_t>(k * config_.batch_users));
    std::vector<EvalCase> chunk(cases.begin() + i, cases.begin() + std::min(cases.size(), i + config_.batch_users));
    auto r = chunk_ranks(model, split, chunk);
    for (size_t p = 0; p < out.size(); ++p) out[p].insert(out[p].end(), r[p].begin(), r[p].end());
  }
  model->train(was_training);
  return out;
}

std::vector<TargetRank> Evaluator::ranks(SASRec& model, const std::string& split, Protocol protocol) {
  auto it = std::find(config_.protocols.begin(), config_.protocols.end(), protocol);
  SASREC_CHECK(it != config_.protocols.end(), "protocol ", protocol_name(protocol), " is not configured");
  return all_ranks(model, parse_holdout(split))[it - config_.protocols.begin()];
}

std::vector<EvalResult> Evaluator::evaluate(SASRec& model, const std::string& split) {
  const auto start = std::chrono::steady_clock::now();
  auto ranks = all_ranks(model, parse_holdout(split));
  std::vector<EvalResult> results;
  for (size_t p = 0; p < config_.protocols.size(); ++p) {
    EvalResult r{split, protocol_name(config_.protocols[p]), RankMetrics(config_.ks), 0};
    for (const TargetRank& rank : ranks[p]) r.metrics.add(rank);
    comm_.allreduce_sum(r.metrics.sums());
    results.push_back(std::move(r));
  }
  const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  for (auto& r : results) {
    r.seconds = seconds;
    r.users_per_s = static_cast<double>(r.metrics.count()) / std::max(1e-9, seconds);
  }
  return results;
}

}  // namespace sasrec
