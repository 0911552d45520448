// metrics.h: ranking metrics from the held-out item's place among its
// candidates, and the JSON-lines metrics file.
//
// A case's target has `higher` candidates scoring strictly above it and
// `ties` scoring exactly the same (float32 values as computed). Ties are
// broken uniformly at random, and the EXPECTED metric is reported, computed
// exactly (never sampled): the 0-based rank is r = higher + U with U uniform
// on {0..ties}, so with h = higher, t = ties:
//   HR@k     = E[r < k]            = max(0, min(t+1, k-h)) / (t+1)
//   recall@k = HR@k: one relevant item per case (RecBole's Recall@k, Hit@k)
//   NDCG@k   = E[[r < k] / log2(r + 2)]  (one relevant item)
//   MRR      = E[1 / (r + 1)]      = (H(h+t+1) - H(h)) / (t+1), H the harmonic numbers
//   MRR@k    = E[[r < k] / (r + 1)] (RecBole's MRR@k)
// Without ties these are the plain [r < k], 1/log2(r+2), 1/(r+1). A model
// whose scores are all equal gets HR@k = k / candidates, not 1. Non-finite
// scores never favour the target: a NaN candidate counts as scoring above it,
// a target whose own score is NaN or +-Inf is ranked below every candidate,
// and cases with any non-finite score are counted (nonfinite_users).
// Sums and the counts are kept as doubles in one flat vector, so ranks add
// them up with one all-reduce and divide at the end.
#pragma once

#include <sys/stat.h>

#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "sasrec/atomic_file.h"

namespace sasrec {

// Where one user's target stands (see the rule above).
struct TargetRank {
  int64_t higher = 0;      // candidates scoring above the target (NaN ones included)
  int64_t ties = 0;        // candidates scoring exactly the target's score
  bool nonfinite = false;  // some score of the user was NaN or +-Inf
};

class RankMetrics {
 public:
  explicit RankMetrics(std::vector<int> ks);
  void add(int64_t rank) { add(TargetRank{rank, 0, false}); }  // no ties
  void add(const TargetRank& r);
  // Layout: [count, mrr, hr@k..., ndcg@k..., mrr@k..., nonfinite users].
  std::vector<double>& sums() { return sums_; }
  const std::vector<double>& sums() const { return sums_; }
  int64_t count() const { return static_cast<int64_t>(sums_[0]); }
  int64_t nonfinite_users() const { return static_cast<int64_t>(sums_.back()); }
  // Means: {"hr@10", "recall@10", "ndcg@10", "mrr@10", .., "mrr"}; empty
  // when count is 0 (no case was evaluated: there is no figure to report).
  std::map<std::string, double> means() const;

 private:
  std::vector<int> ks_;
  std::vector<double> sums_;
  std::vector<double> discount_prefix_;    // [max k + 1]: sum of 1/log2(r+2) for r < j
  std::vector<double> reciprocal_prefix_;  // [max k + 1]: sum of 1/(r+1) for r < j (MRR@k)
};

// H(n) = 1 + 1/2 + ... + 1/n (H(0) = 0): exact sums up to n = 256, the
// asymptotic expansion ln n + gamma + 1/(2n) - 1/(12n^2) + 1/(120n^4) - 1/(252n^6)
// beyond (its error there is below 1e-19).
double harmonic_number(int64_t n);

// The metrics file: one JSON object a line, appended as the run goes (it
// must be readable while the run writes it, so it is a stream, not an
// AtomicOutput). What "nothing is destroyed" means for it:
//   - each event is one write(2) of a whole line (O_APPEND); a write that
//     fails is rolled back (the file cut to where it was), so the file only
//     ever holds whole lines;
//   - a fresh run (append = false) never truncates an earlier run's file: a
//     non-empty regular file there is moved aside to NAME.prev-YYYYmmdd-HHMMSS
//     (its last write's time), named by moved_aside();
//   - a resumed run appends, after a newline when the file ends in a line a
//     killed writer cut short;
//   - while open, the file is flock'ed: a second process writing it is refused;
//   - a character device or FIFO (/dev/stdout) is written as a stream; a
//     directory, socket or one of the run's `inputs` is refused (Error(Input)).
// The folder is made as needed.
class MetricsWriter {
 public:
  MetricsWriter() = default;  // writes nothing (ranks other than 0)
  MetricsWriter(const std::string& path, bool append, const std::vector<RunInput>& inputs = {});
  ~MetricsWriter();
  MetricsWriter(MetricsWriter&& other) noexcept;
  MetricsWriter& operator=(MetricsWriter&& other) noexcept;
  void write(const nlohmann::json& event);
  bool enabled() const { return fd_ >= 0; }
  const std::string& moved_aside() const { return moved_aside_; }

 private:
  // A regular file: the lock, an earlier run's file moved aside or a cut line ended.
  void open_regular(bool append, struct stat& st);

  std::string path_;
  std::string moved_aside_;
  int fd_ = -1;
  bool regular_ = false;
};

}  // namespace sasrec
