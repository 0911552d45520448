// sasrec_synth.cpp: the command line of the synthetic data generator
// (model and evaluation in synth.cpp). Owns the flags, the one JSON report
// line on stdout and the exit codes (0 ok, 2 bad usage or output path, 1
// other failures, 3 interrupted by SIGTERM / SIGINT: the unfinished output removed).
#include <CLI/CLI.hpp>

#include <cstdio>

#include "sasrec/atomic_file.h"
#include "sasrec/cli_errors.h"
#include "sasrec/error.h"
#include "sasrec/store.h"
#include "sasrec/synth.h"

int main(int argc, char** argv) {
  using namespace sasrec;
  CLI::App app{
      "sasrec_synth: generate an interaction log with planted sequential structure (topics, Zipf popularity,\n"
      "per-item successors), seeded and reproducible. Prints one JSON line with the oracle's and the popularity\n"
      "baseline's HR@10/NDCG@10 on each user's last item (also written to OUT.oracle.json)."};
  app.set_version_flag("--version", std::string("sasrec_synth ") + SASREC_VERSION);
  SynthOptions opt;
  std::string format = "h5", out, order = "user";
  app.add_option("--users", opt.users, "number of users")->capture_default_str();
  app.add_option("--items", opt.items, "number of items")->capture_default_str();
  app.add_option("--mean-length", opt.mean_length, "mean interactions per user")->capture_default_str();
  app.add_option("--min-length", opt.min_length, "shortest sequence")->capture_default_str();
  app.add_option("--max-length", opt.max_length, "longest sequence")->capture_default_str();
  app.add_option("--topics", opt.topics, "item topics (0 = items/100, in 1..1000)")->capture_default_str();
  app.add_option("--successors", opt.successors, "likely next items per item")->capture_default_str();
  app.add_option("--p-markov", opt.p_markov, "P(next = a successor of the previous item)")->capture_default_str();
  app.add_option("--p-switch", opt.p_switch, "P(next = popular item of a topic from the user's mix)")
      ->capture_default_str();
  app.add_option("--zipf", opt.zipf, "popularity exponent within a topic")->capture_default_str();
  app.add_option("--seed", opt.seed, "random seed (same seed, same output)")->capture_default_str();
  app.add_option("--threads", opt.threads, "worker threads (0 = all cores; output does not depend on it)")
      ->capture_default_str();
  app.add_option("--format", format, "csv (user_id,item_id,timestamp) or h5 (the store)")
      ->check(CLI::IsMember({"csv", "h5"}))
      ->capture_default_str();
  app.add_option("--order", order, "csv row order: user (each user's rows in time order) or shuffled")
      ->check(CLI::IsMember({"user", "shuffled"}))
      ->capture_default_str();
  app.add_option("--out", out, "output file")->required();
  if (const int done = parse_command_line(app, argc, argv); done >= 0) return done;
  silence_hdf5_errors();
  install_signal_cleanup("sasrec_synth");
  try {
    opt.shuffle = order == "shuffled";
    SynthReport r = synth_generate(opt, format == "csv" ? SynthFormat::Csv : SynthFormat::H5, out);
    std::printf("%s\n", r.to_json().c_str());
    return kExitOk;
  } catch (const Error& e) {
    std::fprintf(stderr, "sasrec_synth: %s\n", e.what());
    return exit_code_for(e);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "sasrec_synth: %s\n", e.what());
    return kExitFailure;
  }
}
