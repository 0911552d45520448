// error.h: the one exception type of sasrec-ddp and the checking macros.
//
// Every failure the user can cause or the system can report becomes a
// sasrec::Error carrying a domain (our own checks, I/O, config, HDF5, MPI,
// NCCL; CUDA's failures arrive as libtorch's exceptions), the failing
// expression and file:line. Library code throws;
// only main() catches, prints "[rank r] message" and ends the job.
// Messages a user sees end with what to do.
#pragma once

#include <sstream>
#include <stdexcept>
#include <string>

namespace sasrec {

enum class ErrorDomain { Check, Input, Config, Hdf5, Mpi, Nccl, Io };

const char* domain_name(ErrorDomain d);

class Error : public std::runtime_error {
 public:
  Error(ErrorDomain domain, const std::string& message, const char* file = nullptr, int line = 0);
  ErrorDomain domain() const { return domain_; }
  // Where it was raised ("src/store.cpp:120"), empty for user-input errors.
  const std::string& where() const { return where_; }

 private:
  ErrorDomain domain_;
  std::string where_;
};

// Exit codes of every binary: 0 ok, 1 runtime failure, 2 bad input/usage,
// 3 interrupted by a signal (a checkpoint was written).
enum ExitCode { kExitOk = 0, kExitFailure = 1, kExitBadInput = 2, kExitInterrupted = 3 };

// The exit code a failure ends a binary with, the one rule of every main():
// a sasrec::Error of the Config or Input domain (the user's input) is 2,
// every other failure 1.
int exit_code_for(const std::exception& e);

namespace detail {
// Builds a message from stream-able parts: detail::cat("x=", 3, " y").
template <typename... Args>
std::string cat(const Args&... args) {
  std::ostringstream os;
  (os << ... << args);
  return os.str();
}
}  // namespace detail

}  // namespace sasrec

// Internal invariant or argument contract: throws sasrec::Error(Check) with
// the expression, file:line and the streamed message.
#define SASREC_CHECK(cond, ...)                                                                                     \
  do {                                                                                                              \
    if (!(cond))                                                                                                    \
      throw ::sasrec::Error(::sasrec::ErrorDomain::Check,                                                           \
                            ::sasrec::detail::cat("check failed: " #cond ": ", ##__VA_ARGS__), __FILE__, __LINE__); \
  } while (0)

// A user-facing error (bad file, bad value): no expression, just the message.
#define SASREC_FAIL(domain, ...) \
  throw ::sasrec::Error(::sasrec::ErrorDomain::domain, ::sasrec::detail::cat(__VA_ARGS__))

// HDF5 calls are checked by SASREC_H5_CHECK, with the HDF5 layer (h5.h).

namespace sasrec::detail {
// The failures of the two checks below: the library's message, the failing
// call and the rank (the MPI one asks MPI for it). Defined by the backends
// (comm_mpi.cpp, comm_nccl.cpp), which alone call MPI and NCCL.
[[noreturn]] void throw_mpi_error(int code, const char* expr, const char* file, int line);
[[noreturn]] void throw_nccl_error(int code, const char* expr, int rank, const char* file, int line);
}  // namespace sasrec::detail

// An MPI call (MPI_SUCCESS is 0 by the standard): Error(Mpi) naming the call, the rank and MPI's message.
#define SASREC_MPI_CHECK(expr)                                                       \
  do {                                                                               \
    const int rc_ = (expr);                                                          \
    if (rc_ != 0) ::sasrec::detail::throw_mpi_error(rc_, #expr, __FILE__, __LINE__); \
  } while (0)

// An NCCL call of rank `rank` (ncclSuccess is 0): Error(Nccl) naming the call, the rank and NCCL's message.
#define SASREC_NCCL_CHECK(expr, rank)                                                         \
  do {                                                                                        \
    const int rc_ = static_cast<int>(expr);                                                   \
    if (rc_ != 0) ::sasrec::detail::throw_nccl_error(rc_, #expr, (rank), __FILE__, __LINE__); \
  } while (0)
