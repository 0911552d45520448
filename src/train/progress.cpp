// progress.cpp: the live line, plain progress lines and the run summary (see progress.h).
#include "sasrec/progress.h"

#include <cmath>
#include <cstdlib>

#include "sasrec/error.h"
#include "sasrec/log.h"

namespace sasrec {

ProgressMode resolve_progress_mode(ProgressKind setting, bool stdout_is_tty) {
  switch (setting) {
    case ProgressKind::Live: return ProgressMode::Live;
    case ProgressKind::Lines: return ProgressMode::Lines;
    case ProgressKind::Off: return ProgressMode::Off;
    case ProgressKind::Auto: break;
  }
  return stdout_is_tty ? ProgressMode::Live : ProgressMode::Lines;
}

std::string format_progress(const ProgressState& s, ProgressMode mode) {
  char buf[160];
  std::snprintf(buf, sizeof(buf), "epoch %lld/%lld  step %lld/%lld  loss %.4f  %.0f seq/s  ETA %s",
                static_cast<long long>(s.epoch), static_cast<long long>(s.epochs), static_cast<long long>(s.step),
                static_cast<long long>(s.steps), s.loss, s.seqs_per_s,
                s.eta_seconds < 0 ? "?" : format_duration(s.eta_seconds).c_str());
  return mode == ProgressMode::Live ? "\r" + std::string(buf) + "\033[K" : std::string(buf);
}

int nearest_cutoff(const std::vector<int>& ks, int target) {
  SASREC_CHECK(!ks.empty(), "no cutoffs");
  int k = ks.front();
  for (int c : ks)
    if (std::abs(c - target) < std::abs(k - target)) k = c;
  return k;
}

std::vector<std::string> format_summary(int64_t epochs, int64_t steps, double seconds, int64_t best_epoch,
                                        const std::vector<EvalResult>& best_valid,
                                        const std::vector<EvalResult>& best_test, const std::vector<int>& ks) {
  std::vector<std::string> lines{
      detail::cat("done: ", epochs, " epochs, ", steps, " steps in ", format_duration(seconds))};
  if (best_epoch == 0) return lines;
  const std::string at = "@" + std::to_string(nearest_cutoff(ks));
  auto figures = [&](const std::vector<EvalResult>& results) {
    std::string out;
    for (const auto& r : results) {
      auto m = r.metrics.means();
      char buf[128];
      std::snprintf(buf, sizeof(buf), "%s%s HR%s %.4f NDCG%s %.4f", out.empty() ? "" : ", ", r.protocol.c_str(),
                    at.c_str(), m["hr" + at], at.c_str(), m["ndcg" + at]);
      out += buf;
    }
    return out;
  };
  if (best_valid.empty())  // data.refit: valid was trained on, the last evaluation counts
    lines.push_back(detail::cat("no valid figures (data.refit: true): the last evaluation, epoch ", best_epoch));
  else
    lines.push_back(detail::cat("best valid at epoch ", best_epoch, ": ", figures(best_valid)));
  lines.push_back(detail::cat("test at epoch ", best_epoch, ": ", figures(best_test)));
  return lines;
}

Progress::Progress(ProgressMode mode, int log_every, double line_seconds, std::FILE* out)
    : mode_(mode), log_every_(log_every), line_seconds_(line_seconds), out_(out) {}

void Progress::update(const ProgressState& state, double elapsed, int64_t steps_left) {
  if (mode_ == ProgressMode::Off) return;
  if (state.epoch != last_epoch_) last_epoch_ = state.epoch, last_print_ = -1;
  bool due;
  if (mode_ == ProgressMode::Live)  // at most 5 redraws a second, and the epoch's last step
    due = last_print_ < 0 || elapsed - last_print_ >= 0.2 || state.step == state.steps;
  else if (log_every_ > 0)
    due = state.step % log_every_ == 0;
  else
    due = (last_print_ < 0 ? elapsed : elapsed - last_print_) >= line_seconds_;
  if (!due) return;
  last_print_ = elapsed;
  ProgressState s = state;
  const double step_rate = elapsed > 0 ? static_cast<double>(state.step) / elapsed : 0;
  s.eta_seconds = step_rate > 0 ? static_cast<double>(steps_left) / step_rate : -1;
  if (mode_ == ProgressMode::Live) {
    std::fputs(format_progress(s, mode_).c_str(), out_);
    live_shown_ = true;
  } else {
    std::fprintf(out_, "[%7.1fs] %s\n", elapsed_seconds(), format_progress(s, mode_).c_str());
  }
  std::fflush(out_);
}

void Progress::clear() {
  if (!live_shown_) return;
  std::fputs("\r\033[K", out_);
  std::fflush(out_);
  live_shown_ = false;
}

}  // namespace sasrec
