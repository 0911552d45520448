// error.cpp: sasrec::Error construction and domain names (error.h). Owns
// no message text and no exit code: callers write the message, main()s
// map domains to exit codes.
#include "sasrec/error.h"

namespace sasrec {

const char* domain_name(ErrorDomain d) {
  switch (d) {
    case ErrorDomain::Check: return "internal";
    case ErrorDomain::Input: return "input";
    case ErrorDomain::Config: return "config";
    case ErrorDomain::Hdf5: return "hdf5";
    case ErrorDomain::Mpi: return "mpi";
    case ErrorDomain::Nccl: return "nccl";
    case ErrorDomain::Io: return "io";
  }
  return "unknown";
}

int exit_code_for(const std::exception& e) {
  const auto* error = dynamic_cast<const Error*>(&e);
  const bool input = error && (error->domain() == ErrorDomain::Config || error->domain() == ErrorDomain::Input);
  return input ? kExitBadInput : kExitFailure;
}

Error::Error(ErrorDomain domain, const std::string& message, const char* file, int line)
    : std::runtime_error(message), domain_(domain) {
  if (file) where_ = std::string(file) + ":" + std::to_string(line);
}

}  // namespace sasrec
