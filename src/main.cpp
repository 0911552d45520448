// main.cpp: the sasrec_ddp command line. The only place that catches:
// errors are printed as "[rank r] error: ..." and end the whole job.
//
//   sasrec_ddp CONFIG.yaml [--set section.key=value ...]          train
//   sasrec_ddp eval CONFIG.yaml --checkpoint PATH [--set ...]     evaluate a checkpoint
//   sasrec_ddp recommend CONFIG.yaml --checkpoint PATH            top-K lists (serve.h)
//       [--users FILE|--all] [--sequences FILE|-] [--topk K] [--out FILE]
//   sasrec_ddp export CONFIG.yaml --checkpoint PATH --out FILE.h5 item and user vectors (serve.h)
//   sasrec_ddp gather|scatter --checkpoint PATH [--ranks R] --out FILE
//                                                                 sharded <-> one file (checkpoint_gather.h)
//   sasrec_ddp --blas-kernels                                     the OpenBLAS kernels it computes with
//
// Before anything else main() mends OpenBLAS's choice of kernels where it fell
// back to its slowest (blas_kernels.h): the process starts again, once.
#include <CLI/CLI.hpp>
#include <malloc.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <iostream>
#include <limits>

#include "sasrec/atomic_file.h"
#include "sasrec/blas_kernels.h"
#include "sasrec/checkpoint_gather.h"
#include "sasrec/cli_errors.h"
#include "sasrec/comm.h"
#include "sasrec/config.h"
#include "sasrec/device.h"
#include "sasrec/error.h"
#include "sasrec/fault.h"
#include "sasrec/log.h"
#include "sasrec/serve.h"
#include "sasrec/store.h"
#include "sasrec/trainer.h"

namespace {

// The rank a launcher gave this process, before any communicator exists.
int launcher_rank() {
  for (const char* v : {"OMPI_COMM_WORLD_RANK", "PMI_RANK", "PMIX_RANK", "SLURM_PROCID"})
    if (const char* r = std::getenv(v)) return std::atoi(r);
  return 0;
}

// runtime.comm: none -> one rank; mpi -> MPI (a single rank without a
// launcher); nccl -> NCCL over CUDA, bootstrapped by MPI; auto -> MPI or
// NCCL (CUDA device) when started by a launcher, else one rank.
std::unique_ptr<sasrec::Communicator> make_comm(const sasrec::Config& config) {
  using sasrec::CommKind;
  const CommKind kind = config.runtime.comm;
  if (kind == CommKind::None || (kind == CommKind::Auto && !sasrec::launched_by_mpi()))
    return sasrec::make_single_communicator();
  auto mpi = sasrec::make_mpi_communicator();
  const auto device = sasrec::resolve_device(config.runtime.device, mpi->local_rank());
  if (kind == CommKind::Nccl || (kind == CommKind::Auto && device.is_cuda())) {
    if (!device.is_cuda())
      SASREC_FAIL(Config, "runtime.comm is nccl but the device is ", device.str(),
                  "; use runtime.device cuda or comm mpi");
    return sasrec::make_nccl_communicator(std::move(mpi), device.index());
  }
  return mpi;
}

// The report of an error that ends a rank, and the exit code it ends with.
int report(const std::exception& e, int rank) {
  const auto* se = dynamic_cast<const sasrec::Error*>(&e);
  std::cerr << "[rank " << rank << "] error: " << e.what();
  if (se && !se->where().empty()) std::cerr << " (" << sasrec::domain_name(se->domain()) << ", " << se->where() << ")";
  std::cerr << std::endl;
  return sasrec::exit_code_for(e);
}

// What the process owns and the library leaves alone: its intra-op
// threads (train.threads) and whether progress goes to a terminal.
void set_up_process(sasrec::Config& config) {
  torch::set_num_threads(sasrec::resolve_threads(config.train.threads));
  if (config.output.progress == sasrec::ProgressKind::Auto)
    config.output.progress = ::isatty(STDOUT_FILENO) == 1 ? sasrec::ProgressKind::Live : sasrec::ProgressKind::Lines;
}

// sasrec_ddp eval's JSON lines on stdout, a sentence on stderr where there is no figure.
void print_eval(const std::vector<sasrec::EvalResult>& results, const std::string& checkpoint) {
  for (const auto& r : results) {
    nlohmann::json j{
        {"event", "eval"},        {"checkpoint", checkpoint},    {"split", r.split},
        {"protocol", r.protocol}, {"users", r.metrics.count()},  {"nonfinite_users", r.metrics.nonfinite_users()},
        {"seconds", r.seconds},   {"users_per_s", r.users_per_s}};
    for (const auto& [k, v] : r.metrics.means()) j[k] = v;  // none when no user was evaluated
    std::cout << j.dump() << std::endl;
    if (r.metrics.count() == 0)
      std::cerr << "eval " << r.split << "/" << r.protocol
                << ": no user to evaluate (a user needs 3 or more interactions); no figure\n";
    else if (r.metrics.nonfinite_users() > 0)
      std::cerr << "eval " << r.split << "/" << r.protocol << ": " << r.metrics.nonfinite_users()
                << " user(s) with NaN or Inf scores, ranked below every candidate: the model is not finite\n";
  }
}

int run(const std::string& mode, const std::string& config_path, const std::vector<std::string>& sets,
        const std::string& checkpoint) {
  sasrec::Config config = sasrec::load_config(config_path, sets);
  config.validate();  // every config error is found before any rank allocates
  set_up_process(config);
  std::unique_ptr<sasrec::Communicator> comm = make_comm(config);
  // The tests of failure handling inject faults through the trainer's seam (fault.h).
  const sasrec::FaultPlan faults = sasrec::FaultPlan::parse(std::getenv("SASREC_INJECT_FAULT"));
  sasrec::FaultHooks hooks(faults);
  try {
    const bool train = mode == "train";
    sasrec::Trainer trainer(config, *comm, train ? sasrec::Trainer::Mode::Train : sasrec::Trainer::Mode::Evaluate,
                            faults.kind == sasrec::FaultKind::None ? nullptr : &hooks);
    if (train) {
      const sasrec::TrainSummary summary = trainer.fit();
      // Interrupted (SIGTERM / SIGINT): the checkpoint is written; a distinct exit status says so.
      return summary.interrupted_by ? sasrec::kExitInterrupted : sasrec::kExitOk;
    }
    sasrec::install_signal_cleanup("sasrec_ddp eval");  // SIGTERM / SIGINT: exit 3, nothing written
    trainer.load_model(checkpoint);
    for (const char* split : {"valid", "test"}) {
      if (config.data.refit && std::string(split) == "valid") continue;  // trained on
      const auto results = trainer.evaluate(split);
      if (comm->is_root()) print_eval(results, checkpoint);
    }
    return sasrec::kExitOk;
  } catch (const std::exception& e) {
    // A failing rank takes the job down with it: the others may be waiting in a collective.
    const int code = report(e, comm->rank());
    if (comm->world_size() > 1) comm->abort(code);
    return code;
  }
}

// recommend / export (serve.h): one process, or with train.item_table:
// sharded every rank of the job, each holding its block (rank 0 writes).
int serve(const std::string& mode, const std::string& config_path, const std::vector<std::string>& sets,
          const sasrec::RecommendRequest& request, const std::string& export_out) {
  sasrec::Config config = sasrec::load_config(config_path, sets);
  config.validate();
  set_up_process(config);
  const bool sharded = config.train.item_table == sasrec::ItemTable::Sharded;
  std::unique_ptr<sasrec::Communicator> comm = sharded ? make_comm(config) : sasrec::make_single_communicator();
  sasrec::install_signal_cleanup(("sasrec_ddp " + mode).c_str());  // SIGTERM: the unfinished output is removed, exit 3
  try {
    if (mode == "recommend") {
      sasrec::RecommendRequest r = request;
      r.config_path = config_path;
      const int64_t n = sasrec::run_recommend(config, r, std::cerr, sharded ? comm.get() : nullptr);
      if (comm->is_root())
        std::cerr << "recommend: " << n << " user(s) written to " << (request.out == "-" ? "stdout" : request.out)
                  << "\n";
      return sasrec::kExitOk;
    }
    const std::vector<sasrec::RunInput> inputs{sasrec::run_input("data.path", config.data.path),
                                               sasrec::run_input("--checkpoint", request.checkpoint),
                                               sasrec::run_input("the config", config_path)};
    sasrec::check_output(export_out, "--out", inputs);  // before the model is loaded
    const auto shard = sharded ? sasrec::serving_shard(config, *comm) : nullptr;
    sasrec::SASRec model = sasrec::load_model_for_serving(config, request.checkpoint, shard.get());
    sasrec::export_embeddings(model, sasrec::read_store(config.data.path), request.checkpoint, export_out, inputs,
                              shard.get());
    if (comm->is_root()) std::cerr << "export: wrote " << export_out << "\n";
    return sasrec::kExitOk;
  } catch (const std::exception& e) {
    const int code = report(e, comm->rank());
    if (comm->world_size() > 1) comm->abort(code);  // the other ranks may be waiting in a collective
    return code;
  }
}

// gather (ranks 0): the blocks of a sharded checkpoint into one file; scatter: one file into `ranks` blocks
// (checkpoint_gather.h). No config, no communicator.
int gather_checkpoint(const std::string& checkpoint, const std::string& out, int ranks) {
  try {
    sasrec::check_output(out, "--out", {sasrec::run_input("--checkpoint", checkpoint)});
    const sasrec::GatherSummary g =
        ranks == 0 ? sasrec::gather_checkpoint(checkpoint, out) : sasrec::scatter_checkpoint(checkpoint, ranks, out);
    std::cerr << (ranks == 0 ? "gather: " : "scatter: ") << g.world_size << " block(s), " << g.items << " items, epoch "
              << g.epoch << " step " << g.step << " -> " << out << "\n";
    return sasrec::kExitOk;
  } catch (const std::exception& e) {
    return report(e, 0);
  }
}

// glibc hands freed heap tops and large blocks back to the kernel, so every
// step's activations fault their pages in again: on Beauty that was 35% of
// the training time in the kernel (sys 4.95 s vs user 8.85 s for 2 epochs;
// 0.16 s with these settings). Keep up to 1 GiB of freed memory for reuse;
// blocks over 256 MiB (big evaluation buffers, huge tables) still use mmap.
void keep_freed_memory() {
  mallopt(M_MMAP_THRESHOLD, 256 << 20);
  mallopt(M_TRIM_THRESHOLD, 1 << 30);
  mallopt(M_TOP_PAD, 64 << 20);
}

}  // namespace

int main(int argc, char** argv) {
  sasrec::restart_with_better_blas(argv, /*quiet=*/launcher_rank() != 0);
  keep_freed_memory();
  sasrec::silence_hdf5_errors();  // failures are our one-line messages, never pages of HDF5-DIAG
  CLI::App app{"sasrec_ddp: data-parallel SASRec trainer (Kang & McAuley, ICDM 2018)"};
  app.set_version_flag("--version", std::string("sasrec_ddp ") + SASREC_VERSION);
  bool print_blas = false;
  app.add_flag("--blas-kernels", print_blas,
               "print the OpenBLAS kernels this program computes with (blank for another BLAS) and exit; "
               "benchmarks export them as OPENBLAS_CORETYPE for the Python they compare with");
  std::string config_path, checkpoint;
  std::vector<std::string> sets;
  app.add_option("config", config_path, "YAML config (see configs/default.yaml for every key)");
  app.add_option("--set", sets, "override a config key: --set train.epochs=10 (repeatable)");
  auto* eval = app.add_subcommand("eval", "evaluate a checkpoint on valid and test (JSON lines on stdout)");
  eval->add_option("config", config_path, "YAML config of the run")->required();
  eval->add_option("--checkpoint", checkpoint, "checkpoint file to evaluate")->required()->check(CLI::ExistingFile);
  eval->add_option("--set", sets, "override a config key (repeatable)");
  sasrec::RecommendRequest request;
  auto* recommend = app.add_subcommand("recommend", "top-K items per user by original ids (CSV or JSON lines)");
  recommend->add_option("config", config_path, "YAML config of the run (data.path names the store)")->required();
  recommend->add_option("--checkpoint", request.checkpoint, "checkpoint file")->required()->check(CLI::ExistingFile);
  auto* users = recommend->add_option("--users", request.users_file, "file of original user ids, one a line")
                    ->check(CLI::ExistingFile);
  recommend->add_flag("--all", request.all, "every user of the store")->excludes(users);
  recommend->add_option("--sequences", request.sequences_file,
                        "new users: one a line, '[label:] item item ...' (original ids, oldest first); - for stdin");
  recommend->add_option("--topk", request.topk, "items per user (1 or more)")
      ->capture_default_str()
      ->check(CLI::Range(1, std::numeric_limits<int>::max()));
  recommend->add_option("--out", request.out, "output file; - for stdout")->capture_default_str();
  recommend->add_option("--format", request.format, "csv or jsonl (default: by the --out name, else csv)")
      ->check(CLI::IsMember({"csv", "jsonl"}));
  recommend->add_option("--set", sets, "override a config key (repeatable)");
  std::string export_out;
  auto* exporter = app.add_subcommand("export", "item embeddings and user states with original ids, as HDF5");
  exporter->add_option("config", config_path, "YAML config of the run (data.path names the store)")->required();
  exporter->add_option("--checkpoint", request.checkpoint, "checkpoint file")->required()->check(CLI::ExistingFile);
  exporter->add_option("--out", export_out, "output HDF5 file (layout: docs/serving.md)")->required();
  exporter->add_option("--set", sets, "override a config key (repeatable)");
  std::string gather_out;
  auto* gather = app.add_subcommand(
      "gather", "join a sharded checkpoint (train.item_table: sharded) into one file that recommend/export/eval load");
  gather->add_option("--checkpoint", request.checkpoint, "rank 0's file of the sharded checkpoint")
      ->required()
      ->check(CLI::ExistingFile);
  gather->add_option("--out", gather_out, "the checkpoint file to write")->required();
  int scatter_ranks = 0;
  auto* scatter = app.add_subcommand(
      "scatter", "split one checkpoint into the blocks of a sharded one, for a train.item_table: sharded run");
  scatter->add_option("--checkpoint", request.checkpoint, "a replicated checkpoint file")
      ->required()
      ->check(CLI::ExistingFile);
  scatter->add_option("--ranks", scatter_ranks, "the rank count of the sharded run")
      ->required()
      ->check(CLI::Range(1, 1 << 20));
  scatter->add_option("--out", gather_out, "rank 0's file to write (the blocks go to OUT.shards/)")->required();
  app.require_subcommand(0, 1);
  if (const int done = sasrec::parse_command_line(app, argc, argv); done >= 0) return done;
  if (print_blas) return std::printf("%s\n", sasrec::blas_kernels().c_str()) < 0;
  if (*gather) return gather_checkpoint(request.checkpoint, gather_out, 0);
  if (*scatter) return gather_checkpoint(request.checkpoint, gather_out, scatter_ranks);
  if (config_path.empty()) {
    std::cerr << "sasrec_ddp: a config file is required\n" << app.help();
    return sasrec::kExitBadInput;
  }
  try {
    if (*recommend) return serve("recommend", config_path, sets, request, "");
    if (*exporter) return serve("export", config_path, sets, request, export_out);
    return run(*eval ? "eval" : "train", config_path, sets, checkpoint);
  } catch (const std::exception& e) {  // before the communicator: config errors, MPI start-up
    return report(e, launcher_rank());
  }
}
