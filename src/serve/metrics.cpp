// metrics.cpp: rank metrics and the metrics file.
#include "sasrec/metrics.h"

#include <algorithm>
#include <cmath>
#include <fcntl.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <ctime>
#include <filesystem>
#include <utility>

#include "sasrec/error.h"

namespace sasrec {

double harmonic_number(int64_t n) {
  SASREC_CHECK(n >= 0, "harmonic_number(", n, ")");
  if (n <= 256) {
    double h = 0;
    for (int64_t k = n; k >= 1; --k) h += 1.0 / static_cast<double>(k);  // smallest terms first
    return h;
  }
  constexpr double kGamma = 0.57721566490153286061;
  const double x = static_cast<double>(n), x2 = x * x;
  return std::log(x) + kGamma + 1 / (2 * x) - 1 / (12 * x2) + 1 / (120 * x2 * x2) - 1 / (252 * x2 * x2 * x2);
}

RankMetrics::RankMetrics(std::vector<int> ks) : ks_(std::move(ks)), sums_(3 + 3 * ks_.size(), 0.0) {
  int max_k = 0;
  for (int k : ks_) max_k = std::max(max_k, k);
  discount_prefix_.assign(static_cast<size_t>(max_k) + 1, 0.0);
  reciprocal_prefix_.assign(static_cast<size_t>(max_k) + 1, 0.0);
  for (int r = 0; r < max_k; ++r) {
    discount_prefix_[r + 1] = discount_prefix_[r] + 1.0 / std::log2(r + 2.0);
    reciprocal_prefix_[r + 1] = reciprocal_prefix_[r] + 1.0 / (r + 1.0);
  }
}

void RankMetrics::add(const TargetRank& r) {
  SASREC_CHECK(r.higher >= 0 && r.ties >= 0, "negative rank ", r.higher, " or ties ", r.ties);
  const int64_t h = r.higher, t = r.ties;
  const double positions = static_cast<double>(t + 1);
  sums_[0] += 1;
  if (t == 0) {
    sums_[1] += 1.0 / static_cast<double>(h + 1);
  } else if (t < 64) {
    double s = 0;
    for (int64_t q = h + t; q >= h; --q) s += 1.0 / static_cast<double>(q + 1);
    sums_[1] += s / positions;
  } else {
    sums_[1] += (harmonic_number(h + t + 1) - harmonic_number(h)) / positions;
  }
  const size_t n = ks_.size();
  for (size_t i = 0; i < n; ++i) {
    const int64_t k = ks_[i];
    if (h >= k) continue;
    const int64_t last = std::min(h + t, k - 1);  // the last position r < k the target may take
    if (t == 0) {
      sums_[2 + i] += 1;
      sums_[2 + n + i] += 1.0 / std::log2(static_cast<double>(h) + 2.0);
      sums_[2 + 2 * n + i] += 1.0 / static_cast<double>(h + 1);
    } else {
      sums_[2 + i] += static_cast<double>(last - h + 1) / positions;
      sums_[2 + n + i] += (discount_prefix_[last + 1] - discount_prefix_[h]) / positions;
      sums_[2 + 2 * n + i] += (reciprocal_prefix_[last + 1] - reciprocal_prefix_[h]) / positions;
    }
  }
  if (r.nonfinite) sums_.back() += 1;
}

std::map<std::string, double> RankMetrics::means() const {
  std::map<std::string, double> m;
  if (sums_[0] <= 0) return m;
  const double c = sums_[0];
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

namespace {

// NAME.prev-YYYYmmdd-HHMMSS by the file's last modification, not yet taken.
std::string aside_name(const std::string& path, const struct stat& st) {
  std::tm local{};
  localtime_r(&st.st_mtime, &local);
  char stamp[32];
  std::strftime(stamp, sizeof(stamp), ".prev-%Y%m%d-%H%M%S", &local);
  std::string name = path + stamp;
  for (int n = 2; std::filesystem::exists(name); ++n) name = path + stamp + "-" + std::to_string(n);
  return name;
}

}  // namespace

MetricsWriter::MetricsWriter(const std::string& path, bool append, const std::vector<RunInput>& inputs) : path_(path) {
  // The folder of output.metrics is made as needed, as checkpoint.dir is.
  const auto folder = std::filesystem::path(path).parent_path();
  std::error_code ignored;  // a failure shows as the open failing, with the message below
  if (!folder.empty()) std::filesystem::create_directories(folder, ignored);
  struct stat st {};
  const bool exists = ::stat(path.c_str(), &st) == 0;
  if (exists && !S_ISREG(st.st_mode) && !S_ISCHR(st.st_mode) && !S_ISFIFO(st.st_mode))
    SASREC_FAIL(Input, "output.metrics '", path, "' is ", S_ISDIR(st.st_mode) ? "a directory" : "not a file",
                "; give the path of a file (or /dev/stdout)");
  const FileId id{static_cast<uint64_t>(st.st_dev), static_cast<uint64_t>(st.st_ino), exists};
  for (const auto& in : inputs)
    if (in.id == id)
      SASREC_FAIL(Input, "output.metrics '", path, "' is ", in.what, " '", in.path,
                  "' (the same file): appending to it would destroy an input of this run; choose another path");
  regular_ = exists ? S_ISREG(st.st_mode) : true;
  fd_ = ::open(path.c_str(), O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0644);
  if (fd_ < 0)
    SASREC_FAIL(Io, path, ": cannot open the metrics file for writing (", std::strerror(errno),
                "); check output.metrics and its folder");
  if (!regular_) return;  // a stream (/dev/stdout, a FIFO): nothing to lock, move or mend
  try {
    open_regular(append, st);
  } catch (...) {
    if (fd_ >= 0) ::close(fd_);
    fd_ = -1;
    throw;
  }
}

void MetricsWriter::open_regular(bool append, struct stat& st) {
  const std::string& path = path_;
  if (::flock(fd_, LOCK_EX | LOCK_NB) != 0 && errno == EWOULDBLOCK)
    SASREC_FAIL(Input, "output.metrics '", path,
                "' is being written by another running process; wait for it to "
                "end or choose another output.metrics");
  if (::fstat(fd_, &st) != 0 || st.st_size == 0) return;
  if (!append) {
    // Another run's events: kept under another name, never truncated.
    moved_aside_ = aside_name(path, st);
    if (std::rename(path.c_str(), moved_aside_.c_str()) != 0)
      SASREC_FAIL(Io, path, ": cannot move the earlier run's metrics aside to ", moved_aside_, " (",
                  std::strerror(errno), "); choose another output.metrics");
    ::close(fd_);  // the lock goes with the old file; the new one is locked below
    fd_ = ::open(path.c_str(), O_WRONLY | O_APPEND | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
    if (fd_ < 0 || ::flock(fd_, LOCK_EX | LOCK_NB) != 0)
      SASREC_FAIL(Io, path, ": cannot create the metrics file (", std::strerror(errno), "); check output.metrics");
    return;
  }
  // Resumed: a line cut by a killed writer is ended, so the next one parses.
  char last = '\n';
  const int rd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (rd >= 0) {
    if (::pread(rd, &last, 1, st.st_size - 1) != 1) last = '\n';
    ::close(rd);
  }
  if (last != '\n' && ::write(fd_, "\n", 1) != 1)
    SASREC_FAIL(Io, path, ": appending to the metrics file failed (", std::strerror(errno), "); check free disk space");
}

MetricsWriter::~MetricsWriter() {
  if (fd_ >= 0) ::close(fd_);
}

MetricsWriter::MetricsWriter(MetricsWriter&& o) noexcept
    : path_(std::move(o.path_)),
      moved_aside_(std::move(o.moved_aside_)),
      fd_(std::exchange(o.fd_, -1)),
      regular_(o.regular_) {}

MetricsWriter& MetricsWriter::operator=(MetricsWriter&& o) noexcept {
  if (this != &o) {
    if (fd_ >= 0) ::close(fd_);
    path_ = std::move(o.path_);
    moved_aside_ = std::move(o.moved_aside_);
    fd_ = std::exchange(o.fd_, -1);
    regular_ = o.regular_;
  }
  return *this;
}

void MetricsWriter::write(const nlohmann::json& event) {
  if (fd_ < 0) return;
  const std::string line = event.dump() + "\n";
  const off_t before = regular_ ? ::lseek(fd_, 0, SEEK_END) : 0;
  size_t done = 0;
  while (done < line.size()) {
    const ssize_t w = ::write(fd_, line.data() + done, line.size() - done);
    if (w < 0 && errno == EINTR) continue;
    if (w <= 0) {
      const int err = w < 0 ? errno : ENOSPC;
      if (regular_ && before >= 0 && ::ftruncate(fd_, before) != 0) {
      }  // the part of the line written is taken back; what was there stays
      SASREC_FAIL(Io, "writing the metrics file ", path_, " failed (", std::strerror(err),
                  "); its earlier lines are intact. Free disk space");
    }
    done += static_cast<size_t>(w);
  }
}

}  // namespace sasrec
