// checkpoint_gather.cpp: the blocks of a sharded checkpoint into one file (see checkpoint_gather.h).
#include "sasrec/checkpoint_gather.h"

#include <filesystem>
#include <utility>

#include "sasrec/checkpoint.h"
#include "sasrec/config.h"
#include "sasrec/error.h"
#include "sasrec/item_shard.h"
#include "sasrec/model.h"
#include "sasrec/trainer.h"

namespace sasrec {
namespace {

// Rows [from_begin, from_begin + n) of parameter `from` and of its Adam
// state into rows [to_begin, to_begin + n) of `to` and its state.
void copy_rows(FusedAdam& to_opt, const torch::Tensor& to, int64_t to_begin, FusedAdam& from_opt,
               const torch::Tensor& from, int64_t from_begin, int64_t n) {
  to.narrow(0, to_begin, n).copy_(from.narrow(0, from_begin, n));
  auto& a = to_opt.state_for(to);
  auto& b = from_opt.state_for(from);
  a.step(b.step());
  a.exp_avg().narrow(0, to_begin, n).copy_(b.exp_avg().narrow(0, from_begin, n));
  a.exp_avg_sq().narrow(0, to_begin, n).copy_(b.exp_avg_sq().narrow(0, from_begin, n));
}

// Every parameter but the item table, and its Adam state, from `from` into `to`.
void copy_dense(SASRec& to, FusedAdam& to_opt, SASRec& from, FusedAdam& from_opt) {
  auto dst = to->named_parameters();
  for (const auto& p : from->named_parameters())
    if (p.key() != "item.weight") copy_rows(to_opt, dst[p.key()], 0, from_opt, p.value(), 0, p.value().size(0));
}

// What a checkpoint's model is: its recorded config, and the table sizes
// read off the file (one read of it; the load is the second).
struct Recorded {
  TrainState state;
  Config config;
  int64_t rows = 0, users = 0;  // item rows in this file (a block, for a sharded run's), user rows
};
Recorded recorded(const std::string& path) {
  Recorded r;
  CheckpointShape shape = read_checkpoint_shape(path);
  r.state = std::move(shape.state);
  r.config = parse_config(r.state.config_yaml, path + " (the config recorded in the checkpoint)");
  r.rows = shape.item_rows;
  if (r.config.model.user_embedding) r.users = shape.user_rows;
  return r;
}

}  // namespace

GatherSummary gather_checkpoint(const std::string& main, const std::string& out) {
  Recorded rec = recorded(main);
  const TrainState& state = rec.state;
  if (rec.config.train.item_table != ItemTable::Sharded)
    SASREC_FAIL(Input, main,
                ": not a sharded checkpoint (its run had train.item_table: replicated), so it is whole already; "
                "recommend, export and eval load it as it is");
  const int world = static_cast<int>(state.world_size);
  SASREC_CHECK(world >= 1, main, ": no world size recorded");
  for (int r = 1; r < world; ++r)
    if (!std::filesystem::exists(shard_checkpoint_path(main, r)))
      SASREC_FAIL(Input, main, ": the block of rank ", r, " (", shard_checkpoint_path(main, r),
                  ") is missing; a sharded checkpoint needs every rank's file");
  // The table's rows: every block but the last is full (ShardLayout).
  const int64_t block = rec.rows;
  const int64_t last = world == 1 ? block : read_checkpoint_shape(shard_checkpoint_path(main, world - 1)).item_rows;
  const int64_t rows = world == 1 ? block : block * (world - 1) + last;

  torch::NoGradGuard no_grad;
  SASRec whole(SASRecOptions::from(rec.config, rows - 1, rec.users));
  auto whole_opt = make_optimizer(whole, rec.config.train);
  const ShardLayout layout(rows, world);
  for (int r = 0; r < world; ++r) {  // one block in memory at a time
    SASRecOptions o = SASRecOptions::from(rec.config, rows - 1, rec.users);
    o.item_begin = layout.begin(r), o.item_rows = layout.size(r);
    SASRec part(o);
    auto part_opt = make_optimizer(part, rec.config.train);
    const std::string path = shard_checkpoint_path(main, r);
    const TrainState got = load_checkpoint(path, part, part_opt.get());  // shapes checked against the layout
    if (got.step != state.step || got.run_id != state.run_id)
      SASREC_FAIL(Input, path, " is from step ", got.step, " of run ", got.run_id, ", ", main, " from step ",
                  state.step, " of run ", state.run_id, ": the blocks of one checkpoint must be written together");
    copy_rows(*whole_opt, whole->item_weight(), o.item_begin, *part_opt, part->item_weight(), 0, o.item_rows);
    if (r == 0) copy_dense(whole, *whole_opt, part, *part_opt);  // the same on every rank: rank 0's
  }
  TrainState replicated = state;
  rec.config.train.item_table = ItemTable::Replicated;
  replicated.config_yaml = to_yaml(rec.config);
  replicated.config_hash = config_hash(rec.config);
  save_checkpoint(out, whole, whole_opt.get(), replicated);
  return {world, rows - 1, state.epoch, state.step};
}

GatherSummary scatter_checkpoint(const std::string& whole_path, int ranks, const std::string& main) {
  Recorded rec = recorded(whole_path);
  if (rec.config.train.item_table == ItemTable::Sharded)
    SASREC_FAIL(Input, whole_path, ": already a sharded checkpoint (of ", rec.state.world_size,
                " ranks); gather it first (sasrec_ddp gather) to split it for another rank count");
  if (rec.config.train.loss == LossKind::Ce)
    SASREC_FAIL(Input, whole_path,
                ": trained with train.loss: ce, which a sharded table cannot train; resume it replicated");
  if (ranks < 1) SASREC_FAIL(Input, "--ranks must be 1 or more, not ", ranks);
  const int64_t rows = rec.rows;

  torch::NoGradGuard no_grad;
  SASRec whole(SASRecOptions::from(rec.config, rows - 1, rec.users));
  auto whole_opt = make_optimizer(whole, rec.config.train);
  load_checkpoint(whole_path, whole, whole_opt.get());
  TrainState sharded = rec.state;
  rec.config.train.item_table = ItemTable::Sharded;
  sharded.config_yaml = to_yaml(rec.config);
  sharded.config_hash = config_hash(rec.config);
  sharded.world_size = ranks;
  const ShardLayout layout(rows, ranks);
  if (ranks > 1) std::filesystem::create_directories(main + ".shards");
  for (int r = ranks - 1; r >= 0; --r) {  // rank 0's file last: it makes the checkpoint (checkpoint.h)
    SASRecOptions o = SASRecOptions::from(rec.config, rows - 1, rec.users);
    o.item_begin = layout.begin(r), o.item_rows = layout.size(r);
    SASRec part(o);
    auto part_opt = make_optimizer(part, rec.config.train);
    copy_rows(*part_opt, part->item_weight(), 0, *whole_opt, whole->item_weight(), o.item_begin, o.item_rows);
    copy_dense(part, *part_opt, whole, *whole_opt);
    save_checkpoint(shard_checkpoint_path(main, r), part, part_opt.get(), sharded);
  }
  return {ranks, rows - 1, rec.state.epoch, rec.state.step};
}

}  // namespace sasrec
