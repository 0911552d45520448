// block_checkpoint.cpp: a rank's block of a sharded checkpoint (see block_checkpoint.h).
#include "sasrec/block_checkpoint.h"

#include <filesystem>

#include "sasrec/error.h"

namespace sasrec {
namespace {

// This rank's file of `main`, refused when `main` exists but the block does
// not (a whole checkpoint, or the blocks of fewer ranks).
std::string block_path(const std::string& main, const Communicator& comm) {
  const std::string path = shard_checkpoint_path(main, comm.rank());
  if (comm.rank() > 0 && std::filesystem::exists(main) && !std::filesystem::exists(path))
    SASREC_FAIL(Input, main, " has no block for rank ", comm.rank(), " (", path,
                "): it holds the whole item table, or the blocks of fewer ranks. Split a whole one for this run: "
                "sasrec_ddp scatter --checkpoint ",
                main, " --ranks ", comm.world_size(),
                " --out NEW.pt (after sasrec_ddp gather for blocks; docs/large_catalogs.md)");
  return path;
}

// The blocks of one checkpoint, written by as many ranks as load it, at one step.
void check_blocks_agree(const TrainState& loaded, const std::string& main, Communicator& comm) {
  if (loaded.world_size != comm.world_size())
    SASREC_FAIL(Input, main, ": a sharded checkpoint of ", loaded.world_size, " ranks, loaded on ", comm.world_size(),
                "; load it on ", loaded.world_size, " ranks, or join its blocks (sasrec_ddp gather --checkpoint ", main,
                " --out ONE.pt) and split them for this rank count (sasrec_ddp scatter --checkpoint ONE.pt --ranks ",
                comm.world_size(), " --out NEW.pt; docs/large_catalogs.md)");
  auto mine = torch::tensor({loaded.step, loaded.epoch, loaded.batch}, torch::kInt64).view({1, 3});
  auto all = comm.allgather(mine).contiguous();
  for (int r = 1; r < comm.world_size(); ++r)
    if (!torch::equal(all[r], all[0]))
      SASREC_FAIL(Input, shard_checkpoint_path(main, r), " is from step ", all[r][0].item<int64_t>(), ", ", main,
                  " from step ", all[0][0].item<int64_t>(),
                  ": the blocks of a sharded checkpoint must be written "
                  "together; use another checkpoint");
}

}  // namespace

TrainState load_block_checkpoint(const std::string& main, SASRec& model, torch::optim::Optimizer* optimizer,
                                 Communicator& comm, const CheckpointMatch& match) {
  const TrainState loaded = load_checkpoint(block_path(main, comm), model, optimizer, match);
  check_blocks_agree(loaded, main, comm);
  return loaded;
}

}  // namespace sasrec
