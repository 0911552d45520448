// checkpoint_gather.h: a sharded checkpoint assembled into one replicated
// file, and one replicated file split into a sharded checkpoint.
//
// A run with train.item_table: sharded writes each checkpoint as rank 0's
// file and one block file per other rank (checkpoint.h). gather_checkpoint
// reads them one block at a time and writes a single checkpoint holding the
// whole item table, its Adam moments in row order, every dense parameter
// and its state, and the run's counters, with the recorded config saying
// item_table: replicated: what recommend, export and eval load on one
// process, and what a replicated run resumes from (on the writer's rank
// count it goes on along the same trajectory). It needs the memory of the
// whole table and its moments, as any replicated use of the model does.
#pragma once

#include <cstdint>
#include <string>

namespace sasrec {

struct GatherSummary {
  int world_size = 0;  // blocks read (gather) or written (scatter)
  int64_t items = 0;   // I
  int64_t epoch = 0, step = 0;
};

// `main`: rank 0's file of a sharded checkpoint; `out`: the file written
// (atomically; an existing file is replaced). Refuses a checkpoint that is
// not sharded, and a missing or mismatched block, naming the file.
GatherSummary gather_checkpoint(const std::string& main, const std::string& out);

// The reverse: the replicated checkpoint `whole` split into the blocks of a
// sharded checkpoint for `ranks` ranks, `main` (rank 0's file, written
// last) and MAIN.shards/rank-R.pt, the recorded config saying item_table:
// sharded and the world size `ranks`: what a sharded run on `ranks` ranks
// resumes from (a model trained replicated, or gathered from another rank
// count, goes on sharded). Refuses a sharded file and one trained with ce.
GatherSummary scatter_checkpoint(const std::string& whole, int ranks, const std::string& main);

}  // namespace sasrec
