// log.cpp: terminal lines with the time since start.
#include "sasrec/log.h"

#include <chrono>
#include <cstdio>

namespace sasrec {
namespace {
const auto kStart = std::chrono::steady_clock::now();
}

std::string format_duration(double seconds) {
  char buf[32];
  const long s = static_cast<long>(seconds);
  if (seconds < 60)
    std::snprintf(buf, sizeof(buf), "%.1fs", seconds);
  else if (s < 3600)
    std::snprintf(buf, sizeof(buf), "%ld:%02ld", s / 60, s % 60);
  else
    std::snprintf(buf, sizeof(buf), "%ld:%02ld:%02ld", s / 3600, (s / 60) % 60, s % 60);
  return buf;
}

double elapsed_seconds() { return std::chrono::duration<double>(std::chrono::steady_clock::now() - kStart).count(); }

void log_line(bool enabled, const std::string& message) {
  if (!enabled) return;
  std::printf("[%7.1fs] %s\n", elapsed_seconds(), message.c_str());
  std::fflush(stdout);
}

}  // namespace sasrec
