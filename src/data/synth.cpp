// synth.cpp: the planted-structure generator (model in synth.h): the model
// tables, per-user generation with its own RNG stream, the oracle and
// popularity evaluation, and the csv / h5 / in-memory sinks. The store's
// layout is StoreWriter's (store.h), not this file's.
//
// Generation runs in fixed-size batches of users (independent of the thread
// count); threads fill a batch in parallel, the calling thread consumes it in
// user order. Sums that feed the report are integers (hits, NDCG in fixed
// point), so results are bit-identical for any number of threads.
#include "sasrec/synth.h"

#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <functional>
#include <mutex>
#include <thread>

#include "sasrec/atomic_file.h"
#include "sasrec/error.h"

namespace sasrec {

using detail::cat;

namespace {

inline uint64_t splitmix64(uint64_t x) {
  x += 0x9E3779B97F4A7C15ull;
  x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9ull;
  x = (x ^ (x >> 27)) * 0x94D049BB133111EBull;
  return x ^ (x >> 31);
}

// A splitmix64 stream: counter-based, one per user (or per item for the tables).
class Rng {
 public:
  Rng(uint64_t seed, uint64_t stream, uint64_t salt) : s_(splitmix64(splitmix64(seed ^ salt) + stream)) {}
  uint64_t next() {
    s_ += 0x9E3779B97F4A7C15ull;
    uint64_t z = s_;
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
  }
  double uniform() { return static_cast<double>(next() >> 11) * 0x1.0p-53; }  // [0, 1)
  int64_t below(int64_t n) {                                                  // [0, n)
    return static_cast<int64_t>((static_cast<unsigned __int128>(next()) * static_cast<uint64_t>(n)) >> 64);
  }

 private:
  uint64_t s_;
};

constexpr uint64_t kSaltUser = 0x75736572;     // "user"
constexpr uint64_t kSaltSucc = 0x73756363;     // "succ"
constexpr uint64_t kSaltShuffle = 0x73687566;  // "shuf"
constexpr int64_t kBatchUsers = 1 << 14;       // fixed: the output must not depend on threads
constexpr double kFixedPoint = 4294967296.0;   // NDCG sums in 2^-32 units

int digits_of(int64_t v) {
  int d = 1;
  while (v >= 10) {
    v /= 10;
    ++d;
  }
  return d;
}

void parallel_for(int64_t n, int threads, const std::function<void(int64_t, int64_t)>& body) {
  threads = static_cast<int>(std::max<int64_t>(1, std::min<int64_t>(threads, n)));
  if (threads == 1) {
    body(0, n);
    return;
  }
  std::vector<std::thread> pool;
  std::exception_ptr error;
  std::mutex mu;
  for (int t = 0; t < threads; ++t) {
    int64_t b = n * t / threads, e = n * (t + 1) / threads;
    pool.emplace_back([&, b, e] {
      try {
        body(b, e);
      } catch (...) {
        std::lock_guard<std::mutex> lock(mu);
        if (!error) error = std::current_exception();
      }
    });
  }
  for (auto& th : pool) th.join();
  if (error) std::rethrow_exception(error);
}

}  // namespace

void SynthOptions::validate() {
  auto bad = [](const std::string& what) { SASREC_FAIL(Input, "sasrec_synth: ", what); };
  if (users < 1) bad(cat("--users ", users, ": need at least 1 user"));
  if (items < 2) bad(cat("--items ", items, ": need at least 2 items"));
  if (items > (1ll << 31) - 2) bad(cat("--items ", items, ": at most 2^31 - 2 items"));
  if (min_length < 2)
    bad(cat("--min-length ", min_length, ": the minimum length must be >= 2 (a history and a target)"));
  if (max_length < min_length) bad(cat("--max-length ", max_length, " is below --min-length ", min_length));
  if (min_length > items)
    bad(cat("--min-length ", min_length, " exceeds --items ", items, " (items do not repeat within a user)"));
  if (!(mean_length >= min_length)) bad(cat("--mean-length ", mean_length, " is below --min-length ", min_length));
  if (topics == 0) topics = std::clamp<int64_t>(items / 100, 1, 1000);
  if (topics < 1 || topics > items) bad(cat("--topics ", topics, ": must be in 1..items"));
  if (successors < 1 || successors >= items) bad(cat("--successors ", successors, ": must be in 1..items-1"));
  if (!(p_markov >= 0 && p_switch >= 0 && p_markov + p_switch <= 1))
    bad(cat("p_markov ", p_markov, " + p_switch ", p_switch, ": each >= 0 and together <= 1"));
  if (!(zipf >= 0)) bad(cat("--zipf ", zipf, ": must be >= 0"));
  if (threads <= 0) threads = static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
}

std::string SynthReport::to_json() const {
  char buf[768];
  std::snprintf(buf, sizeof buf,
                "{\"generator\":\"sasrec_synth\",\"version\":\"%s\",\"seed\":%llu,\"users\":%lld,\"items\":%lld,"
                "\"interactions\":%lld,\"topics\":%lld,\"eval\":\"last item per user, full ranking, history "
                "excluded\",\"oracle_hr10\":%.6f,\"oracle_ndcg10\":%.6f,\"popularity_hr10\":%.6f,"
                "\"popularity_ndcg10\":%.6f,\"seconds\":%.2f}",
                SASREC_VERSION, static_cast<unsigned long long>(seed), static_cast<long long>(users),
                static_cast<long long>(items), static_cast<long long>(interactions), static_cast<long long>(topics),
                oracle_hr10, oracle_ndcg10, popularity_hr10, popularity_ndcg10, seconds);
  return buf;
}

std::string synth_user_id(int64_t user, int64_t num_users) {
  return cat(
      'u', std::string(std::max(0, std::max(6, digits_of(std::max<int64_t>(0, num_users - 1))) - digits_of(user)), '0'),
      user);
}

std::string synth_item_id(int64_t item, int64_t num_items) {
  return cat('i', std::string(std::max(0, std::max(6, digits_of(num_items)) - digits_of(item)), '0'), item);
}

// ---- the model -------------------------------------------------------------------------------

SynthModel::SynthModel(SynthOptions options) : opt_(options) {
  opt_.validate();
  const int64_t I = opt_.items, T = opt_.topics, S = opt_.successors;
  small_size_ = I / T;
  auto build = [&](int64_t m, std::vector<double>* cdf, double* norm) {
    cdf->resize(m);
    double acc = 0;
    for (int64_t r = 0; r < m; ++r) (*cdf)[r] = acc += std::pow(static_cast<double>(r + 1), -opt_.zipf);
    *norm = acc;
    for (double& c : *cdf) c /= acc;
  };
  build(small_size_, &cdf_small_, &norm_small_);
  build(small_size_ + 1, &cdf_large_, &norm_large_);

  double wsum = 0;
  for (int64_t k = 0; k < S; ++k) wsum += 1.0 / (k + 1);
  for (int64_t k = 0; k < S; ++k) succ_weight_.push_back(1.0 / (k + 1) / wsum);

  successors_.resize(I * S);
  parallel_for(I, opt_.threads, [&](int64_t b, int64_t e) {
    for (int64_t idx = b; idx < e; ++idx) {
      const int32_t i = static_cast<int32_t>(idx + 1);
      const int64_t t = topic_of(i);
      const int32_t tb = topic_begin(t);
      const int64_t m = topic_begin(t + 1) - tb;
      Rng rng(opt_.seed, static_cast<uint64_t>(i), kSaltSucc);
      int32_t* row = successors_.data() + idx * S;
      for (int64_t k = 0; k < S; ++k) {
        int32_t y;
        do {
          y = (m - 1 >= S) ? static_cast<int32_t>(tb + rng.below(m)) : static_cast<int32_t>(1 + rng.below(I));
        } while (y == i || std::find(row, row + k, y) != row + k);
        row[k] = y;
      }
    }
  });
}

int32_t SynthModel::topic_begin(int64_t t) const {
  return static_cast<int32_t>(1 + (static_cast<__int128>(t) * opt_.items) / opt_.topics);
}

int64_t SynthModel::topic_of(int32_t item) const {
  int64_t t = (static_cast<__int128>(item - 1) * opt_.topics) / opt_.items;
  while (t + 1 < opt_.topics && topic_begin(t + 1) <= item) ++t;
  while (t > 0 && topic_begin(t) > item) --t;
  return t;
}

double SynthModel::zipf_weight(int64_t topic_size, int64_t rank) const {
  const double norm = topic_size == small_size_ ? norm_small_ : norm_large_;
  return std::pow(static_cast<double>(rank + 1), -opt_.zipf) / norm;
}

int64_t SynthModel::zipf_draw(int64_t topic_size, double u) const {
  const std::vector<double>& cdf = topic_size == small_size_ ? cdf_small_ : cdf_large_;
  int64_t r = std::upper_bound(cdf.begin(), cdf.end(), u) - cdf.begin();
  return std::min<int64_t>(r, topic_size - 1);
}

void SynthModel::generate(int64_t user, Sequence* out, bool with_oracle) const {
  const int64_t I = opt_.items, T = opt_.topics, S = opt_.successors;
  Rng rng(opt_.seed, static_cast<uint64_t>(user), kSaltUser);
  // The user's topic mix: two topics, weights a and 1 - a.
  int64_t mix_t[2];
  double mix_w[2];
  mix_t[0] = rng.below(T);
  mix_t[1] = T > 1 ? (mix_t[0] + 1 + rng.below(T - 1)) % T : mix_t[0];
  mix_w[0] = 0.5 + 0.4 * rng.uniform();
  mix_w[1] = 1.0 - mix_w[0];
  // Length: min_length + geometric extra with the requested mean.
  const double extra_mean = opt_.mean_length - opt_.min_length;
  int64_t len = opt_.min_length;
  if (extra_mean > 0) {
    const double q = extra_mean / (1.0 + extra_mean);  // P(one more)
    const double u = 1.0 - rng.uniform();              // (0, 1]
    len += static_cast<int64_t>(std::floor(std::log(u) / std::log(q)));
  }
  len = std::min<int64_t>({len, opt_.max_length, I});

  auto popular_in = [&](int64_t t) {
    const int32_t tb = topic_begin(t);
    return static_cast<int32_t>(tb + zipf_draw(topic_begin(t + 1) - tb, rng.uniform()));
  };
  auto mix_topic = [&] { return rng.uniform() < mix_w[0] ? mix_t[0] : mix_t[1]; };

  std::vector<int32_t>& seq = out->items;
  seq.clear();
  auto seen = [&](int32_t y) { return std::find(seq.begin(), seq.end(), y) != seq.end(); };
  for (int64_t pos = 0; pos < len; ++pos) {
    int32_t y = 0;
    for (int attempt = 0; attempt < 64; ++attempt) {
      if (pos == 0) {
        y = popular_in(mix_topic());
      } else {
        const int32_t p = seq.back();
        const double r = rng.uniform();
        if (r < opt_.p_markov) {
          double v = rng.uniform();
          int64_t k = 0;
          while (k + 1 < S && v >= succ_weight_[k]) v -= succ_weight_[k++];
          y = successors_[(p - 1) * S + k];
        } else if (r < opt_.p_markov + opt_.p_switch) {
          y = popular_in(mix_topic());
        } else {
          y = popular_in(topic_of(p));
        }
      }
      if (!seen(y)) break;
      y = 0;
    }
    if (y == 0) {  // rare: everything likely is already in the history
      y = static_cast<int32_t>(1 + rng.below(I));
      while (seen(y)) y = static_cast<int32_t>(y % I + 1);
    }
    seq.push_back(y);
  }
  std::vector<int64_t>& times = out->times;
  times.resize(len);
  int64_t t = 1500000000 + rng.below(30000000);
  for (int64_t pos = 0; pos < len; ++pos) {
    times[pos] = t;
    t += 1 + rng.below(3 * 86400);
  }
  out->oracle_rank = with_oracle && len >= 2 ? oracle_rank(seq, mix_t, mix_w) : 0;
}

// Rank (0-based, ties counted half) of the last item among all items not in
// the history, under the true next-item distribution given the history.
int64_t SynthModel::oracle_rank(const std::vector<int32_t>& seq, const int64_t* mix_t, const double* mix_w) const {
  const int64_t S = opt_.successors;
  const int32_t x = seq.back();
  const int32_t p = seq[seq.size() - 2];
  const int64_t tp = topic_of(p);
  // Coefficient of each topic's Zipf distribution in the mixture.
  std::pair<int64_t, double> coef[3];
  int nc = 0;
  auto add = [&](int64_t t, double c) {
    for (int j = 0; j < nc; ++j)
      if (coef[j].first == t) {
        coef[j].second += c;
        return;
      }
    coef[nc++] = {t, c};
  };
  add(tp, 1.0 - opt_.p_markov - opt_.p_switch);
  add(mix_t[0], opt_.p_switch * mix_w[0]);
  add(mix_t[1], opt_.p_switch * mix_w[1]);
  const int32_t* succ = successors_.data() + (p - 1) * S;
  auto base = [&](int32_t y) {
    const int64_t t = topic_of(y);
    for (int j = 0; j < nc; ++j)
      if (coef[j].first == t) {
        const int32_t tb = topic_begin(t);
        return coef[j].second * zipf_weight(topic_begin(t + 1) - tb, y - tb);
      }
    return 0.0;
  };
  auto full = [&](int32_t y) {
    double v = base(y);
    for (int64_t k = 0; k < S; ++k)
      if (succ[k] == y) v += opt_.p_markov * succ_weight_[k];
    return v;
  };
  const double thr = full(x);
  const int64_t hist = static_cast<int64_t>(seq.size()) - 1;
  if (thr <= 0) {  // the target came from the uniform fallback: all positive items rank above it
    int64_t positive = 0;
    for (int j = 0; j < nc; ++j)
      if (coef[j].second > 0) positive += topic_begin(coef[j].first + 1) - topic_begin(coef[j].first);
    for (int64_t k = 0; k < S; ++k)
      if (base(succ[k]) <= 0 && opt_.p_markov * succ_weight_[k] > 0) ++positive;
    for (int64_t h = 0; h < hist; ++h)
      if (full(seq[h]) > 0) --positive;
    const int64_t ties = opt_.items - hist - 1 - positive;  // zero-probability items besides the target
    return positive + std::max<int64_t>(0, ties) / 2;
  }
  int64_t greater = 0, equal = 0;
  for (int j = 0; j < nc; ++j) {
    const double c = coef[j].second;
    if (c <= 0) continue;
    const int32_t tb = topic_begin(coef[j].first);
    const int64_t m = topic_begin(coef[j].first + 1) - tb;
    auto first_rank = [&](auto pred) {  // first rank r with pred(value(r)) false; values decrease in r
      int64_t lo = 0, hi = m;
      while (lo < hi) {
        const int64_t mid = (lo + hi) / 2;
        if (pred(c * zipf_weight(m, mid)))
          lo = mid + 1;
        else
          hi = mid;
      }
      return lo;
    };
    const int64_t gt = first_rank([&](double v) { return v > thr; });
    const int64_t ge = first_rank([&](double v) { return v >= thr; });
    greater += gt;
    equal += ge - gt;
  }
  for (int64_t k = 0; k < S; ++k) {  // successors: replace the base value by the full one
    const double b = base(succ[k]), f = b + opt_.p_markov * succ_weight_[k];
    greater += (f > thr) - (b > thr);
    equal += (f == thr) - (b == thr);
  }
  for (int64_t h = 0; h <= hist; ++h) {  // the history and the target itself do not compete
    const double f = full(seq[h]);
    greater -= f > thr;
    equal -= f == thr;
  }
  return greater + std::max<int64_t>(0, equal) / 2;
}

// ---- the driver ---------------------------------------------------------------------------------

namespace {

double ndcg_at10(int64_t rank) { return rank < 10 ? 1.0 / std::log2(static_cast<double>(rank) + 2.0) : 0.0; }

// Runs the model over all users in batches; `sink(first_user, batch, batch_index)`
// gets each batch in order. Returns the report (both evaluations).
SynthReport run(const SynthModel& model,
                const std::function<void(int64_t, const std::vector<SynthModel::Sequence>&, int64_t)>& sink) {
  const auto t0 = std::chrono::steady_clock::now();
  const SynthOptions& opt = model.options();
  const int64_t U = opt.users, I = opt.items;
  std::vector<SynthModel::Sequence> batch;
  std::vector<int64_t> count(I + 1, 0);
  int64_t oracle_hits = 0, oracle_ndcg = 0, interactions = 0, evaluated = 0;
  for (int64_t b = 0, bi = 0; b < U; b += kBatchUsers, ++bi) {
    const int64_t n = std::min(kBatchUsers, U - b);
    batch.resize(n);
    parallel_for(n, opt.threads, [&](int64_t lo, int64_t hi) {
      for (int64_t j = lo; j < hi; ++j) model.generate(b + j, &batch[j], true);
    });
    for (const auto& s : batch) {
      interactions += static_cast<int64_t>(s.items.size());
      for (size_t k = 0; k + 1 < s.items.size(); ++k) ++count[s.items[k]];
      if (s.items.size() >= 2) {
        ++evaluated;
        oracle_hits += s.oracle_rank < 10;
        oracle_ndcg += std::llround(ndcg_at10(s.oracle_rank) * kFixedPoint);
      }
    }
    sink(b, batch, bi);
  }

  // Popularity: items by count over all but each user's last, ties by id.
  const int64_t K = std::min<int64_t>(I, 10 + opt.max_length);
  std::vector<int32_t> top(I);
  for (int64_t i = 0; i < I; ++i) top[i] = static_cast<int32_t>(i + 1);
  std::partial_sort(top.begin(), top.begin() + K, top.end(),
                    [&](int32_t a, int32_t c) { return count[a] != count[c] ? count[a] > count[c] : a < c; });
  top.resize(K);
  count = std::vector<int64_t>();
  std::atomic<int64_t> pop_hits{0}, pop_ndcg{0};
  for (int64_t b = 0; b < U; b += kBatchUsers) {
    const int64_t n = std::min(kBatchUsers, U - b);
    parallel_for(n, opt.threads, [&](int64_t lo, int64_t hi) {
      SynthModel::Sequence s;
      std::vector<int32_t> hist;
      int64_t hits = 0, ndcg = 0;
      for (int64_t j = lo; j < hi; ++j) {
        model.generate(b + j, &s, false);
        if (s.items.size() < 2) continue;
        hist.assign(s.items.begin(), s.items.end() - 1);
        std::sort(hist.begin(), hist.end());
        const int32_t x = s.items.back();
        int64_t pos = 0;
        for (int32_t item : top) {
          if (std::binary_search(hist.begin(), hist.end(), item)) continue;
          if (item == x) {
            ++hits;
            ndcg += std::llround(ndcg_at10(pos) * kFixedPoint);
            break;
          }
          if (++pos == 10) break;
        }
      }
      pop_hits += hits;  // integer sums: the same for any thread count
      pop_ndcg += ndcg;
    });
  }

  SynthReport r;
  r.seed = opt.seed;
  r.users = U;
  r.items = I;
  r.topics = opt.topics;
  r.interactions = interactions;
  const double denom = std::max<int64_t>(1, evaluated);
  r.oracle_hr10 = oracle_hits / denom;
  r.oracle_ndcg10 = oracle_ndcg / kFixedPoint / denom;
  r.popularity_hr10 = static_cast<double>(pop_hits.load()) / denom;
  r.popularity_ndcg10 = pop_ndcg.load() / kFixedPoint / denom;
  r.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  return r;
}

char* put_uint(char* p, uint64_t v) {
  char tmp[24];
  int n = 0;
  do {
    tmp[n++] = static_cast<char>('0' + v % 10);
    v /= 10;
  } while (v);
  while (n) *p++ = tmp[--n];
  return p;
}

char* put_id(char* p, char prefix, int64_t v, int width) {
  *p++ = prefix;
  for (int d = digits_of(v); d < width; ++d) *p++ = '0';
  return put_uint(p, static_cast<uint64_t>(v));
}

}  // namespace

SynthReport synth_generate(const SynthOptions& options, SynthFormat format, const std::string& path) {
  SynthModel model(options);
  const SynthOptions& opt = model.options();
  SynthReport report;
  if (format == SynthFormat::Csv) {
    AtomicOutput out(path, "--out");
    out.open();
    const int uw = std::max(6, digits_of(std::max<int64_t>(0, opt.users - 1)));
    const int iw = std::max(6, digits_of(opt.items));
    std::vector<char> buf(8 << 20);
    size_t used = 0;
    const char header[] = "user_id,item_id,timestamp\n";
    out.write(header, sizeof header - 1);
    std::vector<std::pair<int32_t, int32_t>> rows;  // (user in batch, position)
    report = run(model, [&](int64_t first, const std::vector<SynthModel::Sequence>& batch, int64_t bi) {
      rows.clear();
      for (size_t j = 0; j < batch.size(); ++j)
        for (size_t k = 0; k < batch[j].items.size(); ++k)
          rows.emplace_back(static_cast<int32_t>(j), static_cast<int32_t>(k));
      if (opt.shuffle) {
        Rng rng(opt.seed, static_cast<uint64_t>(bi), kSaltShuffle);
        for (size_t k = rows.size(); k > 1; --k) std::swap(rows[k - 1], rows[rng.below(static_cast<int64_t>(k))]);
      }
      for (const auto& [j, k] : rows) {
        if (buf.size() - used < 128) {
          out.write(buf.data(), used);
          used = 0;
        }
        char* p = buf.data() + used;
        p = put_id(p, 'u', first + j, uw);
        *p++ = ',';
        p = put_id(p, 'i', batch[j].items[k], iw);
        *p++ = ',';
        p = put_uint(p, static_cast<uint64_t>(batch[j].times[k]));
        *p++ = '\n';
        used = p - buf.data();
      }
    });
    out.write(buf.data(), used);
    out.commit();
  } else {
    StoreWriter writer(path, true);  // an AtomicOutput too
    std::string id;
    report = run(model, [&](int64_t first, const std::vector<SynthModel::Sequence>& batch, int64_t) {
      for (size_t j = 0; j < batch.size(); ++j)
        writer.add_user(synth_user_id(first + static_cast<int64_t>(j), opt.users), batch[j].items.data(),
                        batch[j].times.data(), static_cast<int64_t>(batch[j].items.size()));
    });
    writer.set_attribute("synth_seed", static_cast<double>(opt.seed));
    writer.set_attribute("synth_oracle_hr10", report.oracle_hr10);
    writer.set_attribute("synth_oracle_ndcg10", report.oracle_ndcg10);
    writer.set_attribute("synth_popularity_hr10", report.popularity_hr10);
    writer.set_attribute("synth_popularity_ndcg10", report.popularity_ndcg10);
    writer.finish(opt.items, [&](int64_t i) { return synth_item_id(i, opt.items); });
  }
  write_file_atomically(path + ".oracle.json", "the oracle report", report.to_json() + "\n");
  return report;
}

Interactions synth_interactions(const SynthOptions& options, SynthReport* report) {
  SynthModel model(options);
  const SynthOptions& opt = model.options();
  Interactions d;
  SynthReport r = run(model, [&](int64_t first, const std::vector<SynthModel::Sequence>& batch, int64_t) {
    for (size_t j = 0; j < batch.size(); ++j) {
      d.user_ids.push_back(synth_user_id(first + static_cast<int64_t>(j), opt.users));
      d.items.insert(d.items.end(), batch[j].items.begin(), batch[j].items.end());
      d.timestamps.insert(d.timestamps.end(), batch[j].times.begin(), batch[j].times.end());
      d.offsets.push_back(static_cast<int64_t>(d.items.size()));
    }
  });
  for (int64_t i = 1; i <= opt.items; ++i) d.item_ids.push_back(synth_item_id(i, opt.items));
  if (report) *report = r;
  return d;
}

}  // namespace sasrec
