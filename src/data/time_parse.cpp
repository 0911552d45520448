// time_parse.cpp: parse_time (time_parse.h): unix seconds, numbers,
// ISO 8601 dates and date-times (UTC), proleptic Gregorian days.
#include "sasrec/time_parse.h"

#include <charconv>
#include <cmath>
#include <limits>
#include <system_error>

namespace sasrec {

namespace {

// Days since 1970-01-01 of a proleptic Gregorian date (H. Hinnant's algorithm).
int64_t days_from_civil(int64_t y, unsigned m, unsigned d) {
  y -= m <= 2;
  const int64_t era = (y >= 0 ? y : y - 399) / 400;
  const unsigned yoe = static_cast<unsigned>(y - era * 400);
  const unsigned doy = (153 * (m + (m > 2 ? -3 : 9)) + 2) / 5 + d - 1;
  const unsigned doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
  return era * 146097 + static_cast<int64_t>(doe) - 719468;
}

int days_in_month(int y, int m) {
  static constexpr int kDays[12] = {31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};
  const bool leap = (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
  return m == 2 && leap ? 29 : kDays[m - 1];
}

// Reads exactly n digits at p into v.
bool digits(const char* p, const char* end, int n, int* v) {
  if (end - p < n) return false;
  int x = 0;
  for (int i = 0; i < n; ++i) {
    if (p[i] < '0' || p[i] > '9') return false;
    x = x * 10 + (p[i] - '0');
  }
  *v = x;
  return true;
}

bool parse_iso(const char* p, const char* end, int64_t* out) {
  int y, mo, d, h = 0, mi = 0, s = 0;
  if (!digits(p, end, 4, &y) || end - p < 10 || p[4] != '-' || !digits(p + 5, end, 2, &mo) || p[7] != '-' ||
      !digits(p + 8, end, 2, &d))
    return false;
  if (mo < 1 || mo > 12 || d < 1 || d > days_in_month(y, mo)) return false;  // 2019-02-29, 2020-04-31: no such day
  p += 10;
  if (p < end && (*p == 'T' || *p == ' ')) {
    if (!digits(p + 1, end, 2, &h) || end - p < 6 || p[3] != ':' || !digits(p + 4, end, 2, &mi)) return false;
    p += 6;
    if (p < end && *p == ':') {
      if (!digits(p + 1, end, 2, &s)) return false;
      p += 3;
      if (p < end && *p == '.') {  // fractional seconds: truncated
        ++p;
        const char* q = p;
        while (p < end && *p >= '0' && *p <= '9') ++p;
        if (p == q) return false;
      }
    }
    if (h > 23 || mi > 59 || s > 60) return false;
  }
  if (p < end && *p == 'Z') ++p;
  if (p != end) return false;
  *out = days_from_civil(y, mo, d) * 86400 + h * 3600 + mi * 60 + s;
  return true;
}

}  // namespace

bool parse_time(const char* p, const char* end, int64_t* out) {
  if (p == end) return false;
  // Plain integer: the fast, common case.
  {
    const char* q = p;
    bool neg = false;
    if (*q == '-' || *q == '+') neg = *q++ == '-';
    if (q < end) {
      uint64_t v = 0;
      const char* r = q;
      while (r < end && *r >= '0' && *r <= '9' && v <= (std::numeric_limits<uint64_t>::max() - 9) / 10) {
        v = v * 10 + static_cast<uint64_t>(*r - '0');
        ++r;
      }
      constexpr uint64_t kMax = static_cast<uint64_t>(std::numeric_limits<int64_t>::max());
      if (r == end && (v <= kMax || (neg && v == kMax + 1))) {  // -2^63 too
        *out = v <= kMax ? (neg ? -static_cast<int64_t>(v) : static_cast<int64_t>(v))
                         : std::numeric_limits<int64_t>::min();
        return true;
      }
    }
  }
  if (end - p >= 10 && p[4] == '-' && parse_iso(p, end, out)) return true;
  double d = 0;
  const char* q = (*p == '+') ? p + 1 : p;
  auto [ptr, ec] = std::from_chars(q, end, d);
  if (ec != std::errc() || ptr != end || !std::isfinite(d) || std::fabs(d) >= 9.2e18) return false;
  *out = std::llround(d);
  return true;
}

}  // namespace sasrec
