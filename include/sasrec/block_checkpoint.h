// block_checkpoint.h: each rank's block of a sharded checkpoint loaded into
// its block model (train.item_table: sharded): what resume, eval, recommend
// and export share.
//
// Rank r reads MAIN.shards/rank-0000r.pt (rank 0 MAIN itself, checkpoint.h),
// then the ranks compare what they loaded: a checkpoint of another rank
// count, or blocks written at different steps, are refused on every rank
// with a message that says how to gather or scatter it.
#pragma once

#include <torch/torch.h>

#include <string>

#include "sasrec/checkpoint.h"
#include "sasrec/comm.h"
#include "sasrec/model.h"

namespace sasrec {

// Every rank calls it. `model` holds this rank's block (SASRecOptions::item_begin/item_rows).
TrainState load_block_checkpoint(const std::string& main, SASRec& model, torch::optim::Optimizer* optimizer,
                                 Communicator& comm, const CheckpointMatch& match = {});

}  // namespace sasrec
