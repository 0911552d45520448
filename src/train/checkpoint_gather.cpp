// checkpoint_gather.cpp: the blocks of a sharded checkpoint into one file (see checkpoint_gather.h).
#include "sasrec/checkpoint_gather.h"

#include <filesystem>

#include "sasrec/checkpoint.h"
#include "sasrec/config.h"
#include "sasrec/error.h"
#include "sasrec/item_shard.h"
#include "sasrec/model.h"
#include "sasrec/trainer.h"

namespace sasrec {
namespace {

// Adam's state of `from` copied into that of `to`, rows [begin, begin + from rows) of a 2-d parameter.
void copy_adam_rows(FusedAdam& to_opt, const torch::Tensor& to, FusedAdam& from_opt, const torch::Tensor& from,
                    int64_t begin) {
  auto& a = to_opt.state_for(to);
  auto& b = from_opt.state_for(from);
  a.step(b.step());
  a.exp_avg().narrow(0, begin, from.size(0)).copy_(b.exp_avg());
  a.exp_avg_sq().narrow(0, begin, from.size(0)).copy_(b.exp_avg_sq());
}

}  // namespace

GatherSummary gather_checkpoint(const std::string& main, const std::string& out) {
  const TrainState state = read_checkpoint_state(main);
  Config config = parse_config(state.config_yaml, main + " (the config recorded in the checkpoint)");
  if (config.train.item_table != ItemTable::Sharded)
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
  const int64_t block = read_checkpoint_parameter(main, "item.weight").size(0);
  const int64_t last = read_checkpoint_parameter(shard_checkpoint_path(main, world - 1), "item.weight").size(0);
  const int64_t rows = world == 1 ? block : block * (world - 1) + last;
  const int64_t users = config.model.user_embedding ? read_checkpoint_parameter(main, "user.weight").size(0) : 0;

  torch::NoGradGuard no_grad;
  SASRec whole(SASRecOptions::from(config, rows - 1, users));
  auto whole_opt = make_optimizer(whole, config.train);
  const ShardLayout layout(rows, world);
  for (int r = 0; r < world; ++r) {
    SASRecOptions o = SASRecOptions::from(config, rows - 1, users);
    o.item_begin = layout.begin(r), o.item_rows = layout.size(r);
    SASRec part(o);
    auto part_opt = make_optimizer(part, config.train);
    const std::string path = shard_checkpoint_path(main, r);
    const TrainState got = load_checkpoint(path, part, part_opt.get());  // shapes checked against the layout
    if (got.step != state.step || got.run_id != state.run_id)
      SASREC_FAIL(Input, path, " is from step ", got.step, " of run ", got.run_id, ", ", main, " from step ",
                  state.step, " of run ", state.run_id, ": the blocks of one checkpoint must be written together");
    whole->item_weight().narrow(0, o.item_begin, o.item_rows).copy_(part->item_weight());
    copy_adam_rows(*whole_opt, whole->item_weight(), *part_opt, part->item_weight(), o.item_begin);
    if (r != 0) continue;
    // The dense parameters are the same on every rank: rank 0's.
    auto wp = whole->named_parameters(), pp = part->named_parameters();
    for (const auto& p : pp) {
      if (p.key() == "item.weight") continue;
      wp[p.key()].copy_(p.value());
      auto& a = whole_opt->state_for(wp[p.key()]);
      const auto& b = part_opt->state_for(p.value());
      a.step(b.step());
      a.exp_avg().copy_(b.exp_avg());
      a.exp_avg_sq().copy_(b.exp_avg_sq());
    }
  }
  TrainState replicated = state;
  config.train.item_table = ItemTable::Replicated;
  replicated.config_yaml = to_yaml(config);
  replicated.config_hash = config_hash(config);
  save_checkpoint(out, whole, whole_opt.get(), replicated);
  return {world, rows - 1, state.epoch, state.step};
}

}  // namespace sasrec
