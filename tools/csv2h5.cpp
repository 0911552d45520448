// csv2h5.cpp: the command-line converter from interaction logs (csv with a
// header, `user item` pairs, `user item item ...` sequences) to the HDF5
// store. Parsing lives in csv_import.cpp, the layout in store.cpp; this
// file owns only the flags, the summary line and the exit codes
// (0 ok, 2 bad input or usage, 1 any other failure, 3 interrupted by
// SIGTERM / SIGINT: the unfinished output removed).
#include <CLI/CLI.hpp>

#include <cstdio>
#include <iostream>

#include "sasrec/atomic_file.h"
#include "sasrec/cli_errors.h"
#include "sasrec/csv_import.h"
#include "sasrec/error.h"
#include "sasrec/store.h"

int main(int argc, char** argv) {
  using namespace sasrec;
  CLI::App app{
      "csv2h5: convert an interaction log to the sasrec-interactions HDF5 store.\n"
      "Formats: csv (a header names the columns), pairs ('user item' per line, file order = time order),\n"
      "seq ('user item item ...' per line). Users are numbered 0..U-1 and items 1..I in order of first\n"
      "appearance; each user's interactions are sorted by time (ties keep file order)."};
  app.set_version_flag("--version", std::string("csv2h5 ") + SASREC_VERSION);
  std::string input, output, format = "auto", delimiter;
  ImportOptions opt;
  app.add_option(
         "INPUT", input,
         "interaction log (text), read once as a stream: a file, a FIFO, /dev/stdin, <(zcat f.gz) or - for stdin")
      ->required();
  app.add_option(
         "OUTPUT", output,
         "the HDF5 store to write (replaced only on success; never a device, FIFO or directory, never the input)")
      ->required();
  app.add_option("--format", format, "auto|csv|pairs|seq (auto: see docs/data.md)")
      ->check(CLI::IsMember({"auto", "csv", "pairs", "seq"}));
  app.add_option("--user-col", opt.user_col,
                 "csv: user column (default: detect user_id, user, userId, reviewerID, ...)");
  app.add_option("--item-col", opt.item_col,
                 "csv: item column (default: detect item_id, item, itemId, movieId, asin, ...)");
  app.add_option("--time-col", opt.time_col,
                 "csv: time column (default: detect timestamp, time, unixReviewTime, date, ...; none = file order)");
  app.add_option("--delimiter", delimiter, "csv: field delimiter, one character or 'tab' (default: detect , tab ;)");
  app.add_option("--min-user-interactions", opt.min_user_interactions,
                 "drop users with fewer interactions (k-core, iterated with the item filter)")
      ->check(CLI::NonNegativeNumber);
  app.add_option("--min-item-interactions", opt.min_item_interactions, "drop items with fewer interactions")
      ->check(CLI::NonNegativeNumber);
  if (const int done = parse_command_line(app, argc, argv); done >= 0) return done;
  silence_hdf5_errors();
  install_signal_cleanup("csv2h5");  // SIGTERM / SIGINT: OUTPUT.tmp-PID removed, exit 3

  try {
    opt.format = parse_input_format(format);
    if (!delimiter.empty()) {
      if (delimiter == "tab" || delimiter == "\\t" || delimiter == "\t")
        opt.delimiter = '\t';
      else if (delimiter.size() == 1 && delimiter[0] != '"' && delimiter[0] != '\n')
        opt.delimiter = delimiter[0];
      else
        SASREC_FAIL(Input, "--delimiter '", delimiter, "': give one character (e.g. ';') or 'tab'");
    }
    ImportStats st = convert_to_store(input, output, opt);
    const double mb = st.bytes / 1e6;
    std::printf(
        "csv2h5: wrote %s: %lld users, %lld items, %lld interactions, %lld dropped rows (%s, %lld rows read), "
        "%.2f s (parse %.2f s, sort %.2f s, write %.2f s), %.1f MB/s\n",
        output.c_str(), static_cast<long long>(st.users), static_cast<long long>(st.items),
        static_cast<long long>(st.interactions), static_cast<long long>(st.dropped_rows), format_name(st.format),
        static_cast<long long>(st.rows), st.seconds, st.read_seconds, st.sort_seconds, st.write_seconds,
        st.seconds > 0 ? mb / st.seconds : 0.0);
    if (st.comment_lines > 0)
      std::printf("csv2h5: %lld comment line(s) starting with '#' skipped\n", static_cast<long long>(st.comment_lines));
    if (st.stale_temporaries_removed > 0)
      std::printf("csv2h5: removed %d unfinished %s.tmp-PID file(s) of a killed run\n", st.stale_temporaries_removed,
                  output.c_str());
    return kExitOk;
  } catch (const Error& e) {
    std::fprintf(stderr, "csv2h5: %s\n", e.what());
    return exit_code_for(e);
  } catch (const std::bad_alloc&) {
    std::fprintf(stderr, "csv2h5: out of memory; see docs/data.md for the memory per row, or filter the input\n");
    return kExitFailure;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "csv2h5: %s\n", e.what());
    return kExitFailure;
  }
}
