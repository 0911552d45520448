// test_item_rows.cpp: the large-catalog step pieces on one rank: the touched
// rows of the item table (gather, remap, gradient), summing repeated rows,
// lazy Adam on rows, and the sharded table on one rank (its layout by hand
// at 1, 2 and 3 ranks), each against an independent computation.
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <cmath>
#include <map>
#include <set>

#include "sasrec/comm.h"
#include "sasrec/error.h"
#include "sasrec/item_rows.h"
#include "sasrec/item_shard.h"
#include "sasrec/loss.h"
#include "sasrec/model.h"
#include "sasrec/optimizer.h"
#include "sasrec/torch_compat.h"

using namespace sasrec;

TEST(ItemRows, GatherRemapsEveryPartToRowsOfTheCopy) {
  auto weight = torch::arange(40, torch::kFloat32).view({10, 4});
  auto a = torch::tensor({{7, 3}, {3, 9}}, torch::kInt64);
  auto b = torch::tensor({9, 1}, torch::kInt64);
  torch::Tensor none;
  const auto a0 = a.clone(), b0 = b.clone();
  ItemRows rows = gather_item_rows(weight, {&a, &none, &b});
  EXPECT_TRUE(torch::equal(rows.ids, torch::tensor({1, 3, 7, 9}, torch::kInt64)));
  EXPECT_TRUE(rows.table.requires_grad());
  EXPECT_TRUE(rows.table.is_leaf());
  EXPECT_FALSE(none.defined());
  // Every remapped id names the row holding the original item's vector.
  for (auto [part, original] : {std::pair{a, a0}, std::pair{b, b0}}) {
    EXPECT_EQ(part.sizes(), original.sizes());
    EXPECT_TRUE(torch::equal(rows.table.detach().index_select(0, part.reshape(-1)),
                             weight.index_select(0, original.reshape(-1))));
  }
}

TEST(ItemRows, DistinctIdsComeSortedFromTheScanAndFromTheSort) {
  // Many ids against the rows are put in order by a scan of the table's slots, few by a sort: both give
  // the distinct ids ascending and remap every id to its position among them (std::set the oracle).
  for (int64_t rows : {int64_t{50}, int64_t{1000000}}) {
    torch::manual_seed(rows);
    auto a = torch::randint(rows, {30}, torch::kInt64), b = torch::randint(rows, {7, 3}, torch::kInt64);
    const auto a0 = a.clone(), b0 = b.clone();
    std::set<int64_t> want;
    for (const auto& t : {a0, b0})
      for (int64_t i = 0; i < t.numel(); ++i) want.insert(t.reshape(-1)[i].item<int64_t>());
    const torch::Tensor ids = unique_and_remap({&a, &b}, rows);
    ASSERT_EQ(ids.numel(), static_cast<int64_t>(want.size())) << rows << " rows";
    int64_t k = 0;
    for (int64_t id : want) EXPECT_EQ(ids[k++].item<int64_t>(), id) << rows << " rows";
    EXPECT_TRUE(torch::equal(ids.index_select(0, a.reshape(-1)), a0.reshape(-1))) << rows << " rows";
    EXPECT_TRUE(torch::equal(ids.index_select(0, b.reshape(-1)), b0.reshape(-1))) << rows << " rows";
  }
}

TEST(ItemRows, SumDuplicateRowsAddsRepeatsInOrder) {
  auto ids = torch::tensor({5, 2, 5, 8, 2, 5}, torch::kInt64);
  auto values = torch::randn({6, 3});
  RowGradient got = sum_duplicate_rows(ids, values);
  EXPECT_TRUE(torch::equal(got.ids, torch::tensor({2, 5, 8}, torch::kInt64)));
  std::map<int64_t, std::vector<float>> want;  // plain loops, in the order the rows come
  for (int64_t r = 0; r < 6; ++r) {
    auto& row = want[ids[r].item<int64_t>()];
    row.resize(3, 0.0f);
    for (int c = 0; c < 3; ++c) row[c] += values[r][c].item<float>();
  }
  int64_t i = 0;
  for (const auto& [id, row] : want) {
    for (int c = 0; c < 3; ++c) EXPECT_EQ(got.values[i][c].item<float>(), row[c]) << "item " << id;
    ++i;
  }
  // No repeats: the rows come back sorted by id, unchanged.
  RowGradient perm = sum_duplicate_rows(torch::tensor({4, 1}, torch::kInt64), values.slice(0, 0, 2));
  EXPECT_TRUE(torch::equal(perm.values[0], values[1]));
  EXPECT_TRUE(torch::equal(perm.values[1], values[0]));
}

TEST(ItemRows, WireBytesOfRingCollectives) {
  EXPECT_EQ(allreduce_wire_bytes(1000, 1), 0);
  EXPECT_EQ(allreduce_wire_bytes(1000, 2), 1000);  // 2 (p-1)/p
  EXPECT_EQ(allreduce_wire_bytes(1000, 4), 1500);
  EXPECT_EQ(allgather_wire_bytes(1000, 2), 500);  // (p-1)/p of everything gathered
  EXPECT_EQ(allgather_wire_bytes(1000, 8), 875);
}

namespace {
SASRecOptions options() {
  SASRecOptions o;
  o.num_items = 40;
  o.hidden = 8;
  o.blocks = 2;
  o.heads = 2;
  o.maxlen = 6;
  o.dropout = 0;
  return o;
}
}  // namespace

// The loss and M's gradient through the rows' copy equal those through M itself.
TEST(ItemRows, StepThroughTheRowsEqualsTheStepThroughTheTable) {
  for (LossKind kind : {LossKind::Bce, LossKind::SampledSoftmax}) {
    torch::manual_seed(5);
    SASRec model(options());
    auto seq = torch::tensor({{0, 0, 3, 7, 7, 12}, {0, 5, 9, 1, 30, 2}}, torch::kInt64);
    auto pos_bt = torch::tensor({{0, 0, 7, 7, 12, 4}, {0, 9, 1, 30, 2, 40}}, torch::kInt64);
    auto neg_bt = torch::tensor({{0, 0, 11, 3, 22, 8}, {0, 17, 6, 12, 39, 2}}, torch::kInt64);
    auto shared0 = torch::tensor({4, 8, 15, 16, 23, 40, 8}, torch::kInt64);
    const Packing packing = pack_sequences(seq, 6);
    auto pick = [&](const torch::Tensor& x) { return x.reshape(-1).index_select(0, packing.index); };
    auto neg0 = kind == LossKind::Bce ? pick(neg_bt) : torch::Tensor();
    auto shared_ids = kind == LossKind::SampledSoftmax ? shared0 : torch::Tensor();

    // Through M.
    auto full =
        loss_sum_rows(kind, model->forward_packed(packing), model->item_weight(), pick(pos_bt), neg0, shared_ids);
    full.backward();
    auto dense = model->item_weight().grad().clone();
    for (auto& p : model->parameters()) p.mutable_grad().reset();

    // Through the rows.
    Packing local = packing;
    auto pos = pick(pos_bt), neg = neg0.defined() ? neg0.clone() : neg0, shared = shared_ids;
    ItemRows rows = gather_item_rows(model->item_weight(), {&local.items, &pos, &neg, &shared});
    auto sum = loss_sum_rows(kind, model->forward_packed(local, {}, rows.table), rows.table, pos, neg, shared);
    sum.backward();
    EXPECT_NEAR(sum.item<double>(), full.item<double>(), 1e-5) << loss_name(kind);
    EXPECT_FALSE(model->item_weight().grad().defined()) << "M got a dense gradient";
    auto scattered = torch::zeros_like(dense).index_copy_(0, rows.ids, rows.table.grad());
    EXPECT_TRUE(torch::allclose(scattered, dense, 1e-5, 1e-6))
        << loss_name(kind) << ": max difference " << (scattered - dense).abs().max().item<float>();
    // Rows nobody touched have no gradient in either.
    EXPECT_EQ(dense.index_select(0, torch::tensor({10, 13, 14}, torch::kInt64)).abs().sum().item<float>(), 0.0f);
  }
}

// Lazy Adam, worked element by element here: the touched rows step as Adam
// with the call count as step count; other rows and their moments stay.
TEST(LazyAdam, OnlyTouchedRowsAndTheirMomentsMove) {
  torch::manual_seed(9);
  const double lr = 0.01, b1 = 0.9, b2 = 0.98, eps = 1e-8, wd = 0.1;
  auto table = torch::randn({6, 3}).requires_grad_(true);
  auto other = torch::randn({2}).requires_grad_(true);
  std::vector<torch::optim::OptimizerParamGroup> groups;
  groups.emplace_back(std::vector<torch::Tensor>{table},
                      std::make_unique<torch::optim::AdamOptions>(
                          torch::optim::AdamOptions(lr).betas({b1, b2}).eps(eps).weight_decay(wd)));
  groups.emplace_back(std::vector<torch::Tensor>{other},
                      std::make_unique<torch::optim::AdamOptions>(torch::optim::AdamOptions(lr)));
  FusedAdam adam(std::move(groups), torch::optim::AdamOptions(lr));

  std::vector<std::vector<double>> w(6, std::vector<double>(3)), m(6, std::vector<double>(3, 0.0)), v = m;
  for (int r = 0; r < 6; ++r)
    for (int c = 0; c < 3; ++c) w[r][c] = table[r][c].item<float>();
  const std::vector<std::vector<int64_t>> touched{{1, 4}, {4}, {0, 1, 5}};
  for (size_t step = 1; step <= touched.size(); ++step) {
    auto ids = torch::tensor(touched[step - 1], torch::kInt64);
    auto g = torch::randn({ids.size(0), 3});
    adam.step_rows(table, ids, g);
    for (int64_t i = 0; i < ids.size(0); ++i) {
      const int64_t r = touched[step - 1][i];
      for (int c = 0; c < 3; ++c) {
        const double grad = g[i][c].item<float>() + wd * w[r][c];
        m[r][c] = b1 * m[r][c] + (1 - b1) * grad;
        v[r][c] = b2 * v[r][c] + (1 - b2) * grad * grad;
        const double mhat = m[r][c] / (1 - std::pow(b1, step)), vhat = v[r][c] / (1 - std::pow(b2, step));
        w[r][c] -= lr * mhat / (std::sqrt(vhat) + eps);
      }
    }
    for (int r = 0; r < 6; ++r)
      for (int c = 0; c < 3; ++c)
        ASSERT_NEAR(table[r][c].item<float>(), w[r][c], 2e-6) << "step " << step << " row " << r;
  }
  auto key = compat::optimizer_state_key(table);
  auto& state = static_cast<torch::optim::AdamParamState&>(*adam.state().at(key));
  EXPECT_EQ(state.step(), 3);
  // Rows 2 and 3 were never touched: zero moments (dense Adam would have moved them).
  EXPECT_EQ(state.exp_avg()[2].abs().sum().item<float>(), 0.0f);
  EXPECT_EQ(state.exp_avg_sq()[3].abs().sum().item<float>(), 0.0f);
  EXPECT_NEAR(state.exp_avg()[4][0].item<float>(), m[4][0], 1e-6);
  EXPECT_THROW(adam.step_rows(table, torch::tensor({6}, torch::kInt64), torch::zeros({1, 3})), std::exception);
  EXPECT_THROW(adam.step_rows(torch::randn({6, 3}), torch::tensor({1}, torch::kInt64), torch::zeros({1, 3})),
               std::exception);
}

// ---- the sharded table (item_shard.h) ------------------------------------------------------

// Blocks of ceil(rows / world) rows in rank order, worked by hand for 10 rows.
TEST(ShardLayout, BlocksOwnersAndSplitsByHand) {
  const ShardLayout one(10, 1), two(10, 2), three(10, 3);
  EXPECT_EQ(one.begin(0), 0);
  EXPECT_EQ(one.end(0), 10);
  EXPECT_EQ(one.owner(9), 0);
  EXPECT_EQ(two.end(0), 5);
  EXPECT_EQ(two.begin(1), 5);
  EXPECT_EQ(two.end(1), 10);
  EXPECT_EQ(two.owner(4), 0);
  EXPECT_EQ(two.owner(5), 1);
  // 10 rows over 3 ranks: 4 + 4 + 2.
  EXPECT_EQ(three.size(0), 4);
  EXPECT_EQ(three.size(1), 4);
  EXPECT_EQ(three.size(2), 2);
  EXPECT_EQ(three.begin(2), 8);
  EXPECT_EQ(three.owner(7), 1);
  EXPECT_EQ(three.owner(8), 2);
  const auto ids = torch::tensor({0, 3, 4, 8, 9}, torch::kInt64);
  EXPECT_EQ(one.split(ids), (std::vector<int64_t>{5}));
  EXPECT_EQ(two.split(ids), (std::vector<int64_t>{3, 2}));
  EXPECT_EQ(three.split(ids), (std::vector<int64_t>{2, 1, 2}));
  EXPECT_EQ(three.split(torch::empty({0}, torch::kInt64)), (std::vector<int64_t>{0, 0, 0}));
  // More ranks than rows: the last ranks own nothing.
  const ShardLayout wide(2, 3);
  EXPECT_EQ(wide.size(0), 1);
  EXPECT_EQ(wide.size(1), 1);
  EXPECT_EQ(wide.size(2), 0);
  EXPECT_THROW(three.split(torch::tensor({10}, torch::kInt64)), Error);
}

// One rank owns every row: the fetch is gather_item_rows, the returned
// gradient is backward's, repeats summed.
TEST(ItemShard, OneRankFetchesAndReturnsLikeTheReplicatedPath) {
  auto comm = make_single_communicator();
  auto table = torch::randn({12, 3});
  ItemShard shard(*comm, 12, 3);
  auto a = torch::tensor({{7, 3}, {3, 11}}, torch::kInt64), a_whole = a.clone();
  ItemRows got = shard.fetch(table, {&a});
  ItemRows want = gather_item_rows(table, {&a_whole});
  EXPECT_TRUE(torch::equal(got.ids, want.ids));
  EXPECT_TRUE(torch::equal(got.table.detach(), want.table.detach()));
  EXPECT_TRUE(torch::equal(a, a_whole));
  EXPECT_TRUE(got.table.requires_grad());
  got.table.mutable_grad() = torch::arange(9, torch::kFloat32).view({3, 3});
  RowGradient g = shard.return_gradient(got);
  EXPECT_TRUE(torch::equal(g.ids, torch::tensor({3, 7, 11}, torch::kInt64)));
  EXPECT_TRUE(torch::equal(g.values, got.table.grad()));
  // No ids (a rank without targets): nothing asked, nothing returned.
  ItemRows none = shard.fetch(table, {});
  EXPECT_EQ(none.ids.numel(), 0);
  EXPECT_EQ(shard.return_gradient(none).ids.numel(), 0);
  // The gradient goes back along a training fetch's routes, once: not after
  // an evaluation's fetch (no routes kept), not twice.
  EXPECT_THROW(shard.return_gradient(none), Error);
  ItemRows eval = shard.fetch(table, {&a_whole}, /*requires_grad=*/false);
  EXPECT_THROW(shard.return_gradient(eval), Error);
}

// A row's initial value is a function of (seed, id): a block drawn alone
// equals the same rows of the whole table, across the 4096-row streams.
TEST(ItemShard, InitialRowsDoNotDependOnTheBlock) {
  auto whole = torch::empty({9000, 4});
  init_item_rows(whole, 0, 9000, 0.5, 42);
  auto block = torch::empty({3000, 4});
  init_item_rows(block, 4000, 9000, 0.5, 42);
  EXPECT_TRUE(torch::equal(block, whole.slice(0, 4000, 7000)));
  EXPECT_NEAR(whole.std().item<double>(), 0.5, 0.01);
  EXPECT_NEAR(whole.mean().item<double>(), 0.0, 0.01);
  auto other_seed = torch::empty({9000, 4});
  init_item_rows(other_seed, 0, 9000, 0.5, 43);
  EXPECT_FALSE(torch::equal(other_seed, whole));
}

// A model holding one block of the table has that block of the whole
// model's table and the same dense parameters, from the same seed.
TEST(ItemShard, ABlockModelIsTheWholeModelsBlock) {
  SASRecOptions o;
  o.num_items = 5000, o.hidden = 8, o.maxlen = 6, o.blocks = 1, o.heads = 2;
  torch::manual_seed(7);
  SASRec whole(o);
  SASRecOptions part = o;
  part.item_begin = 2500, part.item_rows = 2501;
  torch::manual_seed(7);
  SASRec block(part);
  EXPECT_TRUE(torch::equal(block->item_weight(), whole->item_weight().slice(0, 2500, 5001)));
  EXPECT_GT(block->item_weight()[0].abs().sum().item<double>(), 0);  // row 2500 is an item, not padding
  auto w = whole->named_parameters(), b = block->named_parameters();
  for (const auto& p : w)
    if (p.key() != "item.weight") EXPECT_TRUE(torch::equal(b[p.key()], p.value())) << p.key();
}
