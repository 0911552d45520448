// main.cpp: the sasrec_ddp command line. The only place that catches:
// errors are printed as "[rank r] error: ..." and end the whole job.
//
//   sasrec_ddp CONFIG.yaml [--set section.key=value ...]          train
//   sasrec_ddp eval CONFIG.yaml --checkpoint PATH [--set ...]     evaluate a checkpoint
#include <CLI/CLI.hpp>

#include <cstdio>
#include <iostream>

#include "sasrec/comm.h"
#include "sasrec/config.h"
#include "sasrec/error.h"
#include "sasrec/log.h"
#include "sasrec/trainer.h"

namespace {

int run_train(const std::string& config_path, const std::vector<std::string>& sets, sasrec::Communicator& comm) {
  sasrec::Config config = sasrec::load_config(config_path, sets);
  config.validate();
  sasrec::Trainer trainer(config, comm);
  trainer.fit();
  return sasrec::kExitOk;
}

int run_eval(const std::string& config_path, const std::vector<std::string>& sets, const std::string& checkpoint,
             sasrec::Communicator& comm) {
  sasrec::Config config = sasrec::load_config(config_path, sets);
  config.validate();
  sasrec::Trainer trainer(config, comm);
  trainer.load_model(checkpoint);
  sasrec::MetricsWriter out;
  for (const char* split : {"valid", "test"}) {
    for (const auto& r : trainer.evaluate(split)) {
      if (!comm.is_root()) continue;
      nlohmann::json j{{"event", "eval"}, {"checkpoint", checkpoint}, {"split", r.split},
                       {"protocol", r.protocol}, {"users", r.metrics.count()}, {"seconds", r.seconds}};
      for (const auto& [k, v] : r.metrics.means()) j[k] = v;
      std::cout << j.dump() << std::endl;
    }
  }
  return sasrec::kExitOk;
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"sasrec_ddp: data-parallel SASRec trainer (Kang & McAuley, ICDM 2018)"};
  app.set_version_flag("--version", std::string("sasrec_ddp ") + SASREC_VERSION);
  std::string config_path, checkpoint;
  std::vector<std::string> sets;
  app.add_option("config", config_path, "YAML config (see configs/default.yaml for every key)");
  app.add_option("--set", sets, "override a config key: --set train.epochs=10 (repeatable)");
  auto* eval = app.add_subcommand("eval", "evaluate a checkpoint on valid and test (JSON lines on stdout)");
  eval->add_option("config", config_path, "YAML config of the run")->required();
  eval->add_option("--checkpoint", checkpoint, "checkpoint file to evaluate")->required()->check(CLI::ExistingFile);
  eval->add_option("--set", sets, "override a config key (repeatable)");
  app.require_subcommand(0, 1);
  CLI11_PARSE(app, argc, argv);
  if (!*eval && config_path.empty()) {
    std::cerr << "sasrec_ddp: a config file is required\n" << app.help();
    return sasrec::kExitBadInput;
  }

  std::unique_ptr<sasrec::Communicator> comm;
  try {
    comm = sasrec::launched_by_mpi() ? sasrec::make_mpi_communicator() : sasrec::make_single_communicator();
  } catch (const std::exception& e) {
    std::cerr << "sasrec_ddp: cannot start the communicator: " << e.what() << std::endl;
    return sasrec::kExitFailure;
  }
  try {
    return *eval ? run_eval(config_path, sets, checkpoint, *comm) : run_train(config_path, sets, *comm);
  } catch (const sasrec::Error& e) {
    const bool bad_input = e.domain() == sasrec::ErrorDomain::Config || e.domain() == sasrec::ErrorDomain::Input;
    std::cerr << "[rank " << comm->rank() << "] error: " << e.what();
    if (!e.where().empty()) std::cerr << " (" << sasrec::domain_name(e.domain()) << ", " << e.where() << ")";
    std::cerr << std::endl;
    const int code = bad_input ? sasrec::kExitBadInput : sasrec::kExitFailure;
    if (comm->world_size() > 1) comm->abort(code);
    return code;
  } catch (const std::exception& e) {
    std::cerr << "[rank " << comm->rank() << "] error: " << e.what() << std::endl;
    if (comm->world_size() > 1) comm->abort(sasrec::kExitFailure);
    return sasrec::kExitFailure;
  }
}
