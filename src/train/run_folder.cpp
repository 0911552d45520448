// run_folder.cpp: resume, folder ownership and trajectory checks (see run_folder.h).
#include "sasrec/run_folder.h"

#include <filesystem>
#include <set>

#include "sasrec/error.h"
#include "sasrec/log.h"

namespace sasrec {
namespace {

// The train.* and data.* keys that change which steps a run takes: a resume
// with other values goes on along another path than the uninterrupted run.
constexpr const char* kTrajectoryKeys[] = {
    "data.path",      "data.length_buckets", "model.dropout",  "train.batch_size",     "train.lr",
    "train.beta1",    "train.beta2",         "train.l2_emb",   "train.loss",           "train.negatives",
    "train.proposal", "train.gbce_t",        "train.exchange", "train.item_optimizer", "train.seed"};

}  // namespace

std::string resume_checkpoint(const CheckpointConfig& config, bool log) {
  const ResumeFrom& resume = config.resume;
  if (resume.kind == ResumeFrom::Kind::None) return "";
  if (resume.kind == ResumeFrom::Kind::Path) return resume.path;
  if (!std::filesystem::exists(config.dir)) return "";
  // The newest intact checkpoint: a corrupt one (checksum, truncation) is
  // passed over, saying so, for the one before it.
  const auto all = CheckpointDir(config.dir, config.keep).list();
  for (auto it = all.rbegin(); it != all.rend(); ++it) {
    const std::string problem = checkpoint_problem(*it);
    if (problem.empty()) return *it;
    log_line(log, detail::cat("checkpoint.resume auto: skipping ", *it, " (", problem, "); ",
                              it + 1 != all.rend() ? "falling back to the previous one" : "no older one"));
  }
  if (!all.empty())
    SASREC_FAIL(Io, "checkpoint.resume is auto but no checkpoint in ", config.dir,
                " is intact; move the folder away to start afresh, or set checkpoint.resume to a file");
  return "";
}

void claim_checkpoint_dir(const CheckpointDir& dir, const Config& config, const std::string& run_id, bool resumed) {
  const std::vector<std::string> others = dir.foreign(resumed ? run_id : "");
  if (others.empty()) return;
  if (!resumed && config.checkpoint.overwrite) {
    const std::string aside = dir.move_aside();
    log_line(true, detail::cat("checkpoint.overwrite: moved ", others.size(), " checkpoint(s) of an earlier run from ",
                               dir.dir(), " to ", aside));
    return;
  }
  std::set<std::string> names;
  for (const auto& path : others) {
    const std::string id = checkpoint_run_id(path);
    names.insert(id.empty() ? "unnamed (written before run ids)" : id);
  }
  std::string ids;
  for (const auto& id : names) ids += (ids.empty() ? "" : ", ") + id;
  if (resumed)
    SASREC_FAIL(Input, config.where("checkpoint.dir"), "checkpoint.dir '", dir.dir(), "' holds ", others.size(),
                " checkpoint(s) of another run (run ", ids, ", newest ", others.back(), ") than the one resumed (run ",
                run_id,
                "); its pruning (checkpoint.keep) would delete them. Move them away or choose another "
                "checkpoint.dir");
  SASREC_FAIL(Input, config.where("checkpoint.dir"), "checkpoint.dir '", dir.dir(), "' holds ", others.size(),
              " checkpoint(s) of another run (run ", ids, ", newest ", others.back(),
              "); a fresh run there would mix its files with them and prune them. Set checkpoint.resume: auto to "
              "continue that run, choose another checkpoint.dir, or set checkpoint.overwrite: true to move them aside");
}

std::vector<std::string> trajectory_differences(const Config& config, int world_size, const TrainState& loaded) {
  std::vector<std::string> out;
  if (loaded.config_yaml.empty()) return out;
  const Config then = parse_config(loaded.config_yaml, "the checkpoint's config");
  for (const char* key : kTrajectoryKeys) {
    const std::string a = config_value(config, key), b = config_value(then, key);
    if (a != b) out.push_back(detail::cat(key, " is ", a, " here but ", b, " in the checkpoint"));
  }
  if (loaded.world_size > 0 && loaded.world_size != world_size)
    out.push_back(detail::cat("the world size is ", world_size, " here but ", loaded.world_size, " in the checkpoint"));
  return out;
}

}  // namespace sasrec
