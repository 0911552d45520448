// run_folder.h: a training run and its checkpoint folder (checkpoint.*):
// which checkpoint a run resumes from, the refusal of another run's files
// in its folder, and what differs from the run resumed. Rank 0 decides;
// the trainer holds the folder's lock (FolderLock, atomic_file.h) while it
// runs and writes through CheckpointDir (checkpoint.h).
#pragma once

#include <string>
#include <vector>

#include "sasrec/checkpoint.h"
#include "sasrec/config.h"

namespace sasrec {

// The checkpoint checkpoint.resume names: "" for a fresh run (none, or auto
// with no checkpoint yet); auto: the newest intact one in checkpoint.dir, a
// corrupt one passed over (saying so, when `log`) for the one before. Throws
// Error(Io) when every checkpoint of the folder is corrupt.
std::string resume_checkpoint(const CheckpointConfig& config, bool log);

// Rank 0: refuses a folder holding checkpoints of another run than `run_id`
// ("" for a fresh run): exit 2 saying what to do; a fresh run with
// checkpoint.overwrite moves them aside into DIR/replaced-DATE/ and logs it.
void claim_checkpoint_dir(const CheckpointDir& dir, const Config& config, const std::string& run_id, bool resumed);

// The keys that change which steps a run takes, where `config` and the
// checkpoint's differ ("train.lr is 0.001 here but 0.002 in the checkpoint"),
// the world size too.
std::vector<std::string> trajectory_differences(const Config& config, int world_size, const TrainState& loaded);

}  // namespace sasrec
