// synth.h: the synthetic interaction generator behind sasrec_synth.
//
// Items are split into topics (contiguous id ranges) with Zipf popularity
// inside each topic; every item has a few fixed likely successors in its
// topic; every user has a mix of two topics. A user's next item is, with
// probability p_markov, a successor of the previous item (weights 1/(k+1),
// normalized); with p_switch, a Zipf-popular item of a topic drawn from the
// user's mix; otherwise a Zipf-popular item of the previous item's topic.
// Items never repeat within a user. Lengths are min_length + a geometric
// extra with the requested mean, capped at max_length.
//
// Everything is a pure function of (options, user index): each user draws
// from its own splitmix64 stream seeded by (seed, user), so generation runs
// in parallel and stays identical for any thread count. Memory is
// O(items * successors + batch), never O(users * items).
//
// The report gives, on the LAST item of each user (full ranking, history
// excluded), the oracle's HR@10/NDCG@10 (ranking by the true next-item
// distribution, knowing the user's topic mix) and the popularity
// baseline's (items by count over all but each user's last interaction).
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "sasrec/store.h"

namespace sasrec {

struct SynthOptions {
  int64_t users = 10000;
  int64_t items = 5000;
  double mean_length = 10.0;  // mean interactions per user (>= min_length)
  int min_length = 3;
  int max_length = 200;
  int64_t topics = 0;     // 0 = auto: clamp(items / 100, 1, 1000)
  int successors = 4;     // likely next items per item
  double p_markov = 0.6;  // next = a successor of the previous item
  double p_switch = 0.1;  // next = a popular item of a topic from the user's mix
  double zipf = 1.0;      // popularity exponent inside a topic
  uint64_t seed = 1;
  int threads = 0;       // 0 = all cores; the output does not depend on it
  bool shuffle = false;  // csv: shuffle rows within blocks of users (deterministic)

  // Throws Error(Input) naming the bad option; resolves topics/threads.
  void validate();
};

struct SynthReport {
  uint64_t seed = 0;
  int64_t users = 0, items = 0, interactions = 0, topics = 0;
  double oracle_hr10 = 0, oracle_ndcg10 = 0;
  double popularity_hr10 = 0, popularity_ndcg10 = 0;
  double seconds = 0;
  std::string to_json() const;  // one line
};

// "u000123" / "i004567": zero-padded to max(6, digits of the largest index).
std::string synth_user_id(int64_t user, int64_t num_users);
std::string synth_item_id(int64_t item, int64_t num_items);

// The planted model: a pure function of the options.
class SynthModel {
 public:
  explicit SynthModel(SynthOptions options);  // validates

  struct Sequence {
    std::vector<int32_t> items;  // 1..I, distinct
    std::vector<int64_t> times;  // unix seconds, strictly increasing
    int64_t oracle_rank = 0;     // 0-based rank of the last item under the true distribution
  };
  // User u's sequence; oracle_rank filled when `with_oracle`.
  void generate(int64_t user, Sequence* out, bool with_oracle) const;

  const SynthOptions& options() const { return opt_; }
  int64_t topic_of(int32_t item) const;

 private:
  int32_t topic_begin(int64_t t) const;  // first item of topic t (topic t+1's begin = its end)
  double zipf_weight(int64_t topic_size, int64_t rank) const;
  int64_t zipf_draw(int64_t topic_size, double u) const;
  int64_t oracle_rank(const std::vector<int32_t>& seq, const int64_t* mix_topic, const double* mix_w) const;

  SynthOptions opt_;
  std::vector<int32_t> successors_;            // [I * S], row i-1 = successors of item i
  std::vector<double> succ_weight_;            // [S], sums to 1
  int64_t small_size_ = 0;                     // topic sizes are small_size_ or small_size_ + 1
  std::vector<double> cdf_small_, cdf_large_;  // Zipf CDFs for the two sizes
  double norm_small_ = 1, norm_large_ = 1;     // Zipf normalizers H(m, s)
};

enum class SynthFormat { Csv, H5 };

// Generates to `path` (csv: user_id,item_id,timestamp; h5: the store,
// streamed through StoreWriter), writes `path + ".oracle.json"` and returns
// the report. Atomic like write_store: `path` appears only on success.
SynthReport synth_generate(const SynthOptions& options, SynthFormat format, const std::string& path);

// The same data in memory (user u = index u, item ids synth_item_id), for tests.
Interactions synth_interactions(const SynthOptions& options, SynthReport* report = nullptr);

}  // namespace sasrec
