// metrics.cpp: rank metrics and the metrics file.
#include "sasrec/metrics.h"

#include <cmath>
#include <filesystem>

#include "sasrec/error.h"

namespace sasrec {

RankMetrics::RankMetrics(std::vector<int> ks) : ks_(std::move(ks)), sums_(2 + 3 * ks_.size(), 0.0) {}

void RankMetrics::add(int64_t rank) {
  SASREC_CHECK(rank >= 0, "negative rank ", rank);
  sums_[0] += 1;
  sums_[1] += 1.0 / static_cast<double>(rank + 1);
  const size_t n = ks_.size();
  for (size_t i = 0; i < n; ++i) {
    if (rank < ks_[i]) {
      sums_[2 + i] += 1;
      sums_[2 + n + i] += 1.0 / std::log2(static_cast<double>(rank) + 2.0);
      sums_[2 + 2 * n + i] += 1.0 / static_cast<double>(rank + 1);
    }
  }
}

std::map<std::string, double> RankMetrics::means() const {
  std::map<std::string, double> m;
  const double c = sums_[0] > 0 ? sums_[0] : 1;
  const size_t n = ks_.size();
  m["mrr"] = sums_[1] / c;
  for (size_t i = 0; i < n; ++i) {
    const std::string k = std::to_string(ks_[i]);
    m["hr@" + k] = m["recall@" + k] = sums_[2 + i] / c;  // one relevant item per case
    m["ndcg@" + k] = sums_[2 + n + i] / c;
    m["mrr@" + k] = sums_[2 + 2 * n + i] / c;
  }
  return m;
}

MetricsWriter::MetricsWriter(const std::string& path, bool append) {
  // The folder of output.metrics is made as needed, as checkpoint.dir is.
  const auto folder = std::filesystem::path(path).parent_path();
  std::error_code ignored;  // a failure shows as the open failing, with the message below
  if (!folder.empty()) std::filesystem::create_directories(folder, ignored);
  out_.open(path, append ? std::ios::app : std::ios::trunc);
  if (!out_) SASREC_FAIL(Io, path, ": cannot open the metrics file for writing; check output.metrics and its folder");
}

void MetricsWriter::write(const nlohmann::json& event) {
  if (!out_.is_open()) return;
  out_ << event.dump() << '\n';
  out_.flush();
  if (!out_) SASREC_FAIL(Io, "writing the metrics file failed (disk full?)");
}

}  // namespace sasrec
