// log.h: what rank 0 prints on the terminal. Plain lines with the elapsed
// time; nothing here writes the metrics file (metrics.h does).
#pragma once

#include <string>

namespace sasrec {

// Prints "[  12.3s] message" to stdout when `enabled` (rank 0), flushed.
void log_line(bool enabled, const std::string& message);
// Seconds since the process started (the time log_line prints).
double elapsed_seconds();
// "1:02:03", "4:05" or "12.3s".
std::string format_duration(double seconds);

}  // namespace sasrec
