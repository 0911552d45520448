// metrics.h: ranking metrics from the 0-based rank of the held-out item, and
// the JSON-lines metrics file.
//
// rank r = number of candidate items scored strictly higher than the target.
//   HR@k     = [r < k]
//   recall@k = HR@k: one relevant item per case (RecBole's Recall@k, Hit@k)
//   NDCG@k   = [r < k] / log2(r + 2)      (one relevant item)
//   MRR      = 1 / (r + 1)
//   MRR@k    = [r < k] / (r + 1)          (RecBole's MRR@k)
// Sums and the user count are kept as doubles in one flat vector, so ranks
// add them up with one all-reduce and divide at the end.
#pragma once

#include <cstdint>
#include <fstream>
#include <map>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

namespace sasrec {

class RankMetrics {
 public:
  explicit RankMetrics(std::vector<int> ks);
  void add(int64_t rank);
  // Layout: [count, mrr, hr@k..., ndcg@k..., mrr@k...].
  std::vector<double>& sums() { return sums_; }
  const std::vector<double>& sums() const { return sums_; }
  int64_t count() const { return static_cast<int64_t>(sums_[0]); }
  // Means: {"hr@10", "recall@10", "ndcg@10", "mrr@10", .., "mrr"}; zeros when count is 0.
  std::map<std::string, double> means() const;

 private:
  std::vector<int> ks_;
  std::vector<double> sums_;
};

// Appends one JSON object a line; flushed after each event.
class MetricsWriter {
 public:
  MetricsWriter() = default;  // writes nothing (ranks other than 0)
  MetricsWriter(const std::string& path, bool append);
  void write(const nlohmann::json& event);
  bool enabled() const { return out_.is_open(); }

 private:
  std::ofstream out_;
};

}  // namespace sasrec
