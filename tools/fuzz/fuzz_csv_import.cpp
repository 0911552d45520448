// fuzz_csv_import.cpp: libFuzzer harness for the text readers behind csv2h5
// (csv_import.h): any bytes, read as every input format, must either give a
// valid store or a sasrec::Error(Input); never a crash, a sanitizer report
// or another exception. parse_time gets the raw bytes too.
// Built and run by tools/fuzz.sh (clang, -fsanitize=fuzzer,address,undefined).
#include <unistd.h>

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <string>

#include "sasrec/csv_import.h"
#include "sasrec/error.h"

namespace {

// One file per process, rewritten for every input (the reader takes a path).
const std::string& scratch_path() {
  static const std::string path = [] {
    const char* dir = std::getenv("TMPDIR");
    return std::string(dir ? dir : "/tmp") + "/sasrec_fuzz_" + std::to_string(::getpid()) + ".txt";
  }();
  return path;
}

void check_store(const sasrec::Interactions& d) {
  // What import_interactions returns must hold the store's invariants.
  if (d.offsets.empty() || d.offsets.front() != 0 || d.offsets.back() != static_cast<int64_t>(d.items.size()))
    std::abort();
  for (size_t u = 0; u + 1 < d.offsets.size(); ++u)
    if (d.offsets[u + 1] < d.offsets[u]) std::abort();
  for (int32_t i : d.items)
    if (i < 1 || i > d.num_items()) std::abort();
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  int64_t t = 0;
  sasrec::parse_time(reinterpret_cast<const char*>(data), reinterpret_cast<const char*>(data) + size, &t);

  FILE* f = std::fopen(scratch_path().c_str(), "wb");
  if (!f) std::abort();
  if (size && std::fwrite(data, 1, size, f) != size) std::abort();
  std::fclose(f);
  using sasrec::InputFormat;
  for (InputFormat format : {InputFormat::Auto, InputFormat::Csv, InputFormat::Pairs, InputFormat::Seq}) {
    sasrec::ImportOptions options;
    options.format = format;
    options.buffer_bytes = 64;                 // the smallest buffer: lines cross refills and make it grow
    options.min_user_interactions = size % 3;  // sometimes the k-core filters too
    options.min_item_interactions = size % 2;
    try {
      check_store(sasrec::import_interactions(scratch_path(), options));
    } catch (const sasrec::Error& e) {
      if (e.domain() != sasrec::ErrorDomain::Input) std::abort();  // bad text is an input error, nothing else
    }
  }
  return 0;
}
