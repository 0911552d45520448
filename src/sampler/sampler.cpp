// sampler.cpp: batch construction and the worker threads behind it.
#include "sasrec/sampler.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <numeric>

#include "sasrec/error.h"
#include "sasrec/rng.h"

namespace sasrec {

void sample_negatives(Rng& rng, int64_t num_items, const std::vector<int32_t>& history_sorted, int64_t n,
                      int64_t* out) {
  const auto in_history = [&](int64_t item) {
    return std::binary_search(history_sorted.begin(), history_sorted.end(), static_cast<int32_t>(item));
  };
  if (static_cast<int64_t>(history_sorted.size()) * 10 < num_items * 9) {
    // Rejection: under 90% of the catalog in the history, 1000 tries all
    // landing in it have probability below 0.9^1000 = 2e-46.
    for (int64_t i = 0; i < n; ++i) {
      int64_t item = rng.between(1, num_items);
      for (int tries = 0; tries < 1000 && in_history(item); ++tries) item = rng.between(1, num_items);
      out[i] = item;
    }
    return;
  }
  // Nearly everything seen (small catalogs): rejection would spin, so draw
  // from the items left.
  std::vector<int32_t> left;
  for (int64_t item = 1; item <= num_items; ++item)
    if (!in_history(item)) left.push_back(static_cast<int32_t>(item));
  for (int64_t i = 0; i < n; ++i) out[i] = left.empty() ? rng.between(1, num_items) : left[rng.below(left.size())];
}

AliasTable::AliasTable(const std::vector<int64_t>& weights) : threshold_(weights.size()), alias_(weights.size()) {
  const int64_t n = static_cast<int64_t>(weights.size());
  SASREC_CHECK(n >= 1 && n <= std::numeric_limits<int32_t>::max(), "alias table of ", n, " entries");
  for (int64_t w : weights) {
    SASREC_CHECK(w >= 0, "negative weight ", w);
    total_ += w;
  }
  SASREC_CHECK(total_ > 0 && total_ <= std::numeric_limits<int64_t>::max() / n, "alias table: weights sum to ", total_,
               " over ", n, " entries");
  // Vose: every slot holds mass total_ (weights scaled by n); a light slot is
  // topped up from a heavy one, which becomes its alias. Integers, so the
  // leftover slots hold exactly total_ and nothing is lost to rounding.
  std::vector<int64_t> small, large;
  for (int64_t i = 0; i < n; ++i) {
    threshold_[i] = weights[i] * n;
    alias_[i] = static_cast<int32_t>(i);
    (threshold_[i] < total_ ? small : large).push_back(i);
  }
  while (!small.empty() && !large.empty()) {
    const int64_t s = small.back(), l = large.back();
    small.pop_back();
    alias_[s] = static_cast<int32_t>(l);
    threshold_[l] -= total_ - threshold_[s];
    if (threshold_[l] < total_) {
      large.pop_back();
      small.push_back(l);
    }
  }
  SASREC_CHECK(small.empty(), "alias table construction left ", small.size(), " light slots");
}

int64_t AliasTable::draw(Rng& rng) const {
  const int64_t slot = static_cast<int64_t>(rng.below(alias_.size()));
  return static_cast<int64_t>(rng.below(static_cast<uint64_t>(total_))) < threshold_[slot] ? slot : alias_[slot];
}

torch::Tensor log_expected_counts(const std::vector<int64_t>& counts, int64_t k) {
  double total = 0;
  for (int64_t c : counts) total += static_cast<double>(c);
  SASREC_CHECK(total > 0 && k >= 1, "log_expected_counts: ", total, " interactions, k ", k);
  auto out = torch::empty({static_cast<int64_t>(counts.size())}, torch::kFloat32);
  float* o = out.data_ptr<float>();
  for (size_t i = 0; i < counts.size(); ++i)
    o[i] = static_cast<float>(std::log(static_cast<double>(k) * static_cast<double>(counts[i]) / total));
  return out;
}

Sampler::Sampler(const SplitData& data, SamplerOptions options) : data_(data), opt_(options) {
  SASREC_CHECK(opt_.batch_size >= 1 && opt_.maxlen >= 1 && opt_.threads >= 1 && opt_.prefetch >= 1);
  SASREC_CHECK(opt_.negatives_per_target >= 0 && !(opt_.negatives_per_target > 0 && opt_.per_position_negatives),
               "negatives_per_target ", opt_.negatives_per_target, " with per_position_negatives: one or the other");
  if (!opt_.proposal_counts.empty()) {
    SASREC_CHECK(static_cast<int64_t>(opt_.proposal_counts.size()) == data_.num_items() + 1, "popularity proposal of ",
                 opt_.proposal_counts.size(), " counts for ", data_.num_items(), " items");
    SASREC_CHECK(opt_.proposal_counts[0] == 0, "the padding item 0 has a proposal weight");
    proposal_ = std::make_unique<AliasTable>(opt_.proposal_counts);
    log_kq_ = log_expected_counts(opt_.proposal_counts, std::max<int64_t>(1, opt_.shared_negatives));
    std::vector<int64_t>().swap(opt_.proposal_counts);  // the table has what it needs
  }
  const int64_t users = static_cast<int64_t>(data_.trainable_users().size());
  steps_ = opt_.steps_per_epoch > 0 ? opt_.steps_per_epoch : steps_for_epoch(users, opt_.batch_size, 1);
}

Sampler::~Sampler() { stop(); }

void Sampler::stop() {
  stopping_ = true;
  for (auto& q : queues_) {
    std::lock_guard<std::mutex> lock(q->mu);
    q->cv.notify_all();
  }
  for (auto& t : workers_) t.join();
  workers_.clear();
  queues_.clear();
  stopping_ = false;
}

void Sampler::start_epoch(int64_t epoch, int64_t first) {
  SASREC_CHECK(first >= 0 && first <= steps_, "batch ", first, " of an epoch of ", steps_);
  stop();
  epoch_ = epoch;
  first_ = next_index_ = first;
  order_ = data_.trainable_users();
  Rng rng(mix_seed({opt_.seed, static_cast<uint64_t>(opt_.rank), static_cast<uint64_t>(epoch), 0x0eull}));
  auto shuffle = [&rng](auto& v) {  // Fisher-Yates
    for (int64_t i = static_cast<int64_t>(v.size()) - 1; i > 0; --i) std::swap(v[i], v[rng.below(i + 1)]);
  };
  shuffle(order_);
  // Length buckets: within windows of length_buckets batches, users sorted by
  // length, so a batch holds sequences of similar length and is trimmed to
  // little padding; the batches are then visited in a shuffled order.
  slot_.resize(steps_);
  std::iota(slot_.begin(), slot_.end(), 0);
  if (opt_.length_buckets > 1) {
    const int64_t n = static_cast<int64_t>(order_.size());
    const int64_t window = std::max<int64_t>(1, opt_.length_buckets * n / steps_);
    auto longer = [this](int64_t a, int64_t b) { return data_.train(a).size > data_.train(b).size; };
    for (int64_t w = 0; w < n; w += window)
      std::stable_sort(order_.begin() + w, order_.begin() + std::min(n, w + window), longer);
    shuffle(slot_);
  }
  for (int w = 0; w < opt_.threads; ++w) queues_.push_back(std::make_unique<Queue>());
  for (int w = 0; w < opt_.threads; ++w) workers_.emplace_back([this, w] { work(w); });
}

void Sampler::work(int worker) {
  Queue& q = *queues_[worker];
  // Batches b with b % threads == worker, from the epoch's first batch on (next() reads them so).
  const int64_t T = opt_.threads;
  for (int64_t b = first_ + ((worker - first_) % T + T) % T; b < steps_; b += T) {
    Batch batch = build(epoch_, b);
    if (opt_.stage) batch.inputs = stage_inputs(batch, opt_.maxlen, opt_.pin_memory);
    std::unique_lock<std::mutex> lock(q.mu);
    q.cv.wait(lock, [&] { return stopping_ || static_cast<int>(q.items.size()) < opt_.prefetch; });
    if (stopping_) return;
    q.items.push_back(std::move(batch));
    q.cv.notify_all();
  }
}

Batch Sampler::next() {
  SASREC_CHECK(epoch_ >= 0 && next_index_ < steps_, "next() past the end of epoch ", epoch_);
  Queue& q = *queues_[next_index_ % opt_.threads];
  std::unique_lock<std::mutex> lock(q.mu);
  q.cv.wait(lock, [&] { return !q.items.empty(); });
  Batch b = std::move(q.items.front());
  q.items.pop_front();
  // Wake the worker only once its queue is half empty: it then builds several batches in one go.
  // Woken after every batch, it preempted the training thread each step on a busy machine
  // (waiting for the sampler was 1 ms of a 5 ms fused step, its own work 0.2 ms; docs/results.md).
  if (static_cast<int>(q.items.size()) <= opt_.prefetch / 2) q.cv.notify_all();
  ++next_index_;
  return b;
}

Batch Sampler::build(int64_t epoch, int64_t index) const {
  // The epoch order is cut into steps_ nearly equal runs: batch b takes
  // positions [b*n/S, (b+1)*n/S), so every user comes once per epoch. In a
  // data-parallel run S comes from the global user count and a rank with
  // few users may get an empty batch (it still joins the step's collectives).
  const int64_t n_users = static_cast<int64_t>(order_.size());
  const int64_t slot = slot_[index];
  const int64_t first = slot * n_users / steps_;
  const int64_t rows = (slot + 1) * n_users / steps_ - first;

  int64_t width = 1;
  std::vector<int64_t> users(rows);
  for (int64_t r = 0; r < rows; ++r) {
    users[r] = order_[first + r];
    width = std::max(width, std::min<int64_t>(opt_.maxlen, data_.train(users[r]).size - 1));
  }

  Batch b;
  b.epoch = epoch;
  b.index = index;
  b.seq = torch::zeros({rows, width}, torch::kInt64);
  b.pos = torch::zeros({rows, width}, torch::kInt64);
  // k negatives per target position: bce 1 ([B,T]), gbce negatives_per_target ([B,T,k]).
  const int64_t k = opt_.per_position_negatives ? 1 : opt_.negatives_per_target;
  if (opt_.per_position_negatives) b.neg = torch::zeros({rows, width}, torch::kInt64);
  if (opt_.negatives_per_target > 0) b.neg = torch::zeros({rows, width, k}, torch::kInt64);
  b.users = torch::empty({rows}, torch::kInt64);
  int64_t* seq = b.seq.data_ptr<int64_t>();
  int64_t* pos = b.pos.data_ptr<int64_t>();
  int64_t* neg = b.neg.defined() ? b.neg.data_ptr<int64_t>() : nullptr;
  int64_t* user_out = b.users.data_ptr<int64_t>();

  Rng rng(mix_seed({opt_.seed, static_cast<uint64_t>(opt_.rank), static_cast<uint64_t>(epoch),
                    static_cast<uint64_t>(index), 0xbaull}));
  std::vector<int32_t> history;
  for (int64_t r = 0; r < rows; ++r) {
    const ItemSpan s = data_.train(users[r]);
    user_out[r] = data_.global_user(users[r]);
    // Inputs s[0..L-2] -> targets s[1..L-1]; keep the last `len` pairs.
    const int64_t len = std::min<int64_t>(width, s.size - 1);
    const int64_t off = width - len;
    for (int64_t t = 0; t < len; ++t) {
      seq[r * width + off + t] = s.data[s.size - 1 - len + t];
      pos[r * width + off + t] = s.data[s.size - len + t];
    }
    b.targets += len;
    if (neg) {
      history.assign(s.begin(), s.end());
      std::sort(history.begin(), history.end());
      sample_negatives(rng, data_.num_items(), history, len * k, neg + (r * width + off) * k);
    }
  }
  if (opt_.shared_negatives > 0) {
    b.shared = torch::empty({opt_.shared_negatives}, torch::kInt64);
    int64_t* out = b.shared.data_ptr<int64_t>();
    if (proposal_) {
      for (int64_t k = 0; k < opt_.shared_negatives; ++k) out[k] = proposal_->draw(rng);
      b.shared_log_q = log_kq_.index_select(0, b.shared);
    } else {
      for (int64_t k = 0; k < opt_.shared_negatives; ++k) out[k] = rng.between(1, data_.num_items());
    }
  }
  return b;
}

int64_t steps_for_epoch(int64_t trainable_users, int64_t batch_size, int world_size) {
  const int64_t per_step = batch_size * world_size;
  return std::max<int64_t>(1, (trainable_users + per_step - 1) / per_step);
}

}  // namespace sasrec
