// test_mpi.cpp: the data-parallel guarantees, run under `mpirun -np 2`
// (ctest does it). At world size 1 every test skips.
//
// Expectations come from single-rank runs of the same code on the whole
// data, computed on rank 0 inside the same job.
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <map>
#include <unordered_map>

#include <nlohmann/json.hpp>

#include "sasrec/blas_kernels.h"
#include "sasrec/checkpoint.h"
#include "sasrec/checkpoint_gather.h"
#include "sasrec/comm.h"
#include "sasrec/error.h"
#include "sasrec/rng.h"
#include "sasrec/serve.h"
#include "sasrec/store.h"
#include "sasrec/trainer.h"
#include "h5_read.h"
#include "test_util.h"

using namespace sasrec;

namespace {

Communicator* g_comm = nullptr;

class MpiEnvironment : public ::testing::Environment {
 public:
  void SetUp() override {
    comm_ = make_mpi_communicator();
    g_comm = comm_.get();
  }
  void TearDown() override { g_comm = nullptr; }

 private:
  std::unique_ptr<Communicator> comm_;
};

// A folder every rank agrees on (rank 0 names it).
std::string shared_dir() {
  static std::string dir;
  if (dir.empty()) {
    auto stamp = torch::zeros({1}, torch::kInt64);
    if (g_comm->is_root()) stamp[0] = static_cast<int64_t>(std::random_device{}());
    g_comm->broadcast(stamp, 0);
    dir = (std::filesystem::temp_directory_path() / ("sasrec_mpi_" + std::to_string(stamp.item<int64_t>()))).string();
    std::filesystem::create_directories(dir);
  }
  return dir;
}

// Writes (on rank 0) a store of `users` users with random sequences; returns its path.
std::string make_store(const std::string& name, int users, int items, uint64_t seed) {
  const std::string path = shared_dir() + "/" + name;
  if (g_comm->is_root()) {
    Rng rng(seed);
    test::Sequences seqs(users);
    for (auto& seq : seqs) {
      const int len = 3 + static_cast<int>(rng.below(25));
      int32_t item = static_cast<int32_t>(rng.between(1, items));
      for (int t = 0; t < len; ++t) {
        seq.push_back(item);
        item = static_cast<int32_t>(1 + (item + rng.below(3)) % items);  // learnable drift
      }
    }
    write_store(path, test::make_interactions(seqs, items));
  }
  g_comm->barrier();
  return path;
}

Config base_config(const std::string& data, const std::string& run) {
  // 10 sampled negatives: the stores here have 40-2000 items, and the trainer refuses a sampled
  // protocol asking for more negatives than a user has untouched items (12-item stores: full only).
  Config c = parse_config(
      "", "test",
      {"data.path=" + data, "model.hidden=16", "model.maxlen=12", "model.heads=2", "train.threads=1", "eval.every=0",
       "eval.sampled_negatives=10", "output.metrics=" + shared_dir() + "/" + run + ".jsonl"});
  c.validate();
  return c;
}

std::map<std::string, torch::Tensor> params(Trainer& t) {
  std::map<std::string, torch::Tensor> out;
  for (auto& p : t.model()->named_parameters()) out[p.key()] = p.value().detach().clone();
  return out;
}

#define SKIP_IF_ONE_RANK() \
  if (g_comm->world_size() < 2) GTEST_SKIP() << "needs mpirun -np 2 or more"

}  // namespace

TEST(Mpi, OneStepOnTwoRanksEqualsOneStepOnOneRank) {
  SKIP_IF_ONE_RANK();
  // 64 trainable users, per-rank batch 32 on 2 ranks = one step over all of
  // them; one rank with batch 64 takes the same sequences in one step. ce and
  // dropout 0: no per-rank randomness in the step.
  const int world = g_comm->world_size();
  const std::string data = make_store("equiv.h5", 32 * world, 50, 1);
  Config c = base_config(data, "equiv");
  c.model.dropout = 0;
  c.train.loss = LossKind::Ce;
  c.train.max_steps = 1;
  c.train.batch_size = 32;
  c.eval.protocols = {Protocol::Full};
  c.eval.max_users = 1;
  Trainer multi(c, *g_comm);
  ASSERT_EQ(multi.steps_per_epoch(), 1);
  multi.fit();
  auto got = params(multi);
  if (g_comm->is_root()) {
    Config one = c;
    one.train.batch_size = 32 * world;
    one.output.metrics = shared_dir() + "/equiv_one.jsonl";
    auto single = make_single_communicator();
    Trainer reference(one, *single);
    reference.fit();
    for (auto& [name, want] : params(reference))
      EXPECT_TRUE(torch::allclose(got.at(name), want, 1e-5, 1e-6))
          << name << ": max diff " << (got.at(name) - want).abs().max().item<double>();
  }
}

TEST(Mpi, ReplicasStayIdenticalOverManySteps) {
  SKIP_IF_ONE_RANK();
  const std::string data = make_store("replicas.h5", 300, 80, 2);
  Config c = base_config(data, "replicas");
  c.train.epochs = 3;
  c.train.batch_size = 16;
  c.runtime.check_replicas = 5;  // the trainer itself fails on divergence
  Trainer t(c, *g_comm);
  t.fit();
  auto sums = parameter_checksum(t.model());
  auto all = g_comm->allgather(torch::tensor(sums, torch::kFloat64).view({1, 2}));
  for (int r = 1; r < g_comm->world_size(); ++r) EXPECT_TRUE(torch::equal(all[r], all[0])) << "rank " << r;
}

TEST(Mpi, ShardedEvaluationEqualsSingleRank) {
  SKIP_IF_ONE_RANK();
  const std::string data = make_store("eval.h5", 257, 90, 3);
  Config c = base_config(data, "eval");
  c.eval.max_users = 150;     // the subsample must not depend on the rank count either
  Trainer multi(c, *g_comm);  // same seed: same initial model on every rank and in the reference
  auto results = multi.evaluate("test");
  if (g_comm->is_root()) {
    auto single = make_single_communicator();
    Trainer reference(c, *single);
    auto want = reference.evaluate("test");
    ASSERT_EQ(results.size(), want.size());
    for (size_t i = 0; i < want.size(); ++i) {
      EXPECT_EQ(results[i].metrics.count(), want[i].metrics.count()) << want[i].protocol;
      for (auto& [k, v] : want[i].metrics.means())
        EXPECT_NEAR(results[i].metrics.means().at(k), v, 1e-9) << want[i].protocol << " " << k;
    }
  }
}

TEST(Mpi, TimeSplitOnShardsEqualsSingleRank) {
  SKIP_IF_ONE_RANK();
  // Quantile cutoffs come from every rank's times; each rank splits its own
  // users (the shards stay balanced by interaction count), and the sharded
  // evaluation of every held-out case equals one rank's.
  const std::string path = shared_dir() + "/timed.h5";
  if (g_comm->is_root()) {
    Rng rng(6);
    test::Sequences seqs(240);
    test::Times times(240);
    for (int u = 0; u < 240; ++u) {
      const int len = 2 + static_cast<int>(rng.below(15));
      int64_t t = static_cast<int64_t>(rng.below(1000));
      for (int k = 0; k < len; ++k) {
        seqs[u].push_back(static_cast<int32_t>(rng.between(1, 70)));
        times[u].push_back(t += static_cast<int64_t>(rng.below(100)));
      }
    }
    write_store(path, test::make_interactions(seqs, 70, "i", times));
  }
  g_comm->barrier();
  Config c = base_config(path, "timed");
  c.data.split = SplitKind::Time;
  c.data.valid_from = parse_time_cutoff("q0.7", "data.valid_from");
  c.data.test_from = parse_time_cutoff("q0.85", "data.test_from");
  c.eval.sampled_negatives = 20;
  Trainer multi(c, *g_comm);
  std::vector<EvalResult> got;
  for (const char* split : {"valid", "test"})
    for (auto& r : multi.evaluate(split)) got.push_back(r);
  const int64_t trainable = g_comm->allreduce_sum(static_cast<int64_t>(multi.data().trainable_users().size()));
  if (g_comm->is_root()) {
    auto single = make_single_communicator();
    Trainer reference(c, *single);
    EXPECT_EQ(trainable, static_cast<int64_t>(reference.data().trainable_users().size()));
    std::vector<EvalResult> want;
    for (const char* split : {"valid", "test"})
      for (auto& r : reference.evaluate(split)) want.push_back(r);
    ASSERT_EQ(got.size(), want.size());
    for (size_t i = 0; i < want.size(); ++i) {
      EXPECT_GT(want[i].metrics.count(), 0) << want[i].split;
      EXPECT_EQ(got[i].metrics.count(), want[i].metrics.count()) << want[i].split << " " << want[i].protocol;
      for (auto& [k, v] : want[i].metrics.means())
        EXPECT_NEAR(got[i].metrics.means().at(k), v, 1e-9) << want[i].split << " " << want[i].protocol << " " << k;
    }
  }
}

TEST(Mpi, PopularityProposalCountsEveryRanksInteractions) {
  SKIP_IF_ONE_RANK();
  const std::string data = make_store("popularity.h5", 101, 40, 5);
  Config c = base_config(data, "popularity");
  c.train.loss = LossKind::SampledSoftmax;
  c.train.proposal = Proposal::Popularity;
  c.validate();
  Trainer multi(c, *g_comm);
  std::vector<int64_t> mine = multi.proposal_counts();
  // Every rank must hold the same counts: rank 0's, broadcast, compared on each rank.
  auto root = torch::from_blob(mine.data(), {static_cast<int64_t>(mine.size())}, torch::kInt64).clone();
  g_comm->broadcast(root, 0);
  EXPECT_TRUE(torch::equal(root, torch::from_blob(mine.data(), {root.size(0)}, torch::kInt64)));
  if (g_comm->is_root()) {  // the whole file's train parts, counted here: all but each user's last two
    Interactions d = read_store(data);
    std::vector<int64_t> want(d.num_items() + 1, 0);
    for (int64_t u = 0; u < d.num_users(); ++u) {
      const int64_t b = d.offsets[u], e = d.offsets[u + 1];
      for (int64_t i = b; i < (e - b >= 3 ? e - 2 : e); ++i) ++want[d.items[i]];
    }
    EXPECT_EQ(mine, want);
  }
}

TEST(Mpi, ResumedRunEndsBitIdentical) {
  SKIP_IF_ONE_RANK();
  const std::string data = make_store("resume.h5", 200, 60, 4);
  Config straight = base_config(data, "resume_straight");
  straight.train.epochs = 3;
  straight.train.batch_size = 16;
  straight.checkpoint.dir = shared_dir() + "/ckpt_straight";
  Trainer a(straight, *g_comm);
  a.fit();
  auto want = params(a);

  Config part = base_config(data, "resume_part");
  part.train.epochs = 1;
  part.train.batch_size = 16;
  part.checkpoint.dir = shared_dir() + "/ckpt_part";
  Trainer(part, *g_comm).fit();
  g_comm->barrier();
  part.train.epochs = 3;
  part.checkpoint.resume = {ResumeFrom::Kind::Auto, ""};
  Trainer b(part, *g_comm);
  b.fit();
  for (auto& [name, t] : params(b)) EXPECT_TRUE(torch::equal(t, want.at(name))) << name;
}

namespace {
// 2 epochs of a sampled loss (bce | sampled_softmax) that reads the item
// table by rows, with `optimizer` (adam | lazy_adam) on it and l2_emb on.
Config rows_config(const std::string& data, const std::string& run, const std::string& optimizer,
                   const std::string& loss) {
  Config c = base_config(data, run + "_" + optimizer + "_" + loss);
  c.train.epochs = 2;
  c.train.batch_size = 16;
  c.train.negatives = 32;
  c.train.l2_emb = 0.01;
  c.train.loss = loss == "bce" ? LossKind::Bce : LossKind::SampledSoftmax;
  c.train.item_optimizer = optimizer == "adam" ? ItemOptimizer::Adam : ItemOptimizer::LazyAdam;
  return c;
}

// The `exchange` object of the last train_epoch event of a metrics file.
nlohmann::json last_exchange(const std::string& metrics) {
  std::ifstream in(metrics);
  nlohmann::json found;
  for (std::string line; std::getline(in, line);) {
    auto e = nlohmann::json::parse(line);
    if (e["event"] == "train_epoch") found = e["exchange"];
  }
  return found;
}
}  // namespace

// The item rows' gradient gathered (sparse) or all-reduced in the bucket
// (dense): the same sums, so the same parameters bit for bit at 2 ranks,
// with dense Adam and with lazy Adam.
TEST(Mpi, SparseAndDenseExchangeGiveIdenticalParameters) {
  SKIP_IF_ONE_RANK();
  const std::string data = make_store("exchange.h5", 200, 500, 5);
  for (const char* optimizer : {"adam", "lazy_adam"}) {
    for (const char* loss : {"bce", "sampled_softmax"}) {
      std::map<std::string, std::map<std::string, torch::Tensor>> got;
      for (const char* exchange : {"sparse", "dense"}) {
        Config c = rows_config(data, std::string("exchange_") + exchange, optimizer, loss);
        c.train.exchange = std::string(exchange) == "sparse" ? Exchange::Sparse : Exchange::Dense;
        Trainer t(c, *g_comm);
        t.fit();
        got[exchange] = params(t);
        g_comm->barrier();
        if (g_comm->is_root()) {
          auto ex = last_exchange(c.output.metrics);
          const int64_t steps = ex["sparse_steps"].get<int64_t>() + ex["dense_steps"].get<int64_t>();
          EXPECT_EQ(ex[std::string(exchange) + "_steps"].get<int64_t>(), steps) << c.output.metrics;
          EXPECT_GT(ex["item_rows_per_step"].get<int64_t>(), 0) << c.output.metrics;
          // 500 items x 16 x 4 bytes dense; a step touches far fewer rows.
          if (std::string(exchange) == "sparse")
            EXPECT_LT(ex["bytes_per_step"].get<int64_t>(), ex["dense_bytes_per_step"].get<int64_t>())
                << c.output.metrics;
        }
      }
      for (auto& [name, want] : got["dense"])
        EXPECT_TRUE(torch::equal(got["sparse"].at(name), want))
            << optimizer << " " << loss << " " << name << ": max diff "
            << (got["sparse"].at(name) - want).abs().max().item<double>();
    }
  }
}

// auto picks per step whichever moves fewer bytes: sparse for a large
// catalog, dense when the batch touches most of a tiny one.
TEST(Mpi, AutoExchangePicksTheCheaperWay) {
  SKIP_IF_ONE_RANK();
  const std::string large = make_store("auto_large.h5", 100, 2000, 6);
  const std::string tiny = make_store("auto_tiny.h5", 100, 12, 7);
  for (auto [data, expect_sparse] : {std::pair{large, true}, std::pair{tiny, false}}) {
    Config c = base_config(data, expect_sparse ? "auto_large" : "auto_tiny");
    c.train.epochs = 1;
    c.train.batch_size = 16;
    c.eval.protocols = {Protocol::Full};  // some users of the tiny store touched all 12 items: no negative to sample
    Trainer t(c, *g_comm);
    t.fit();
    g_comm->barrier();
    if (g_comm->is_root()) {
      auto ex = last_exchange(c.output.metrics);
      EXPECT_GT(ex[expect_sparse ? "sparse_steps" : "dense_steps"].get<int64_t>(), 0) << data;
      EXPECT_EQ(ex[expect_sparse ? "dense_steps" : "sparse_steps"].get<int64_t>(), 0) << data;
    }
  }
}

int main(int argc, char** argv) {
  sasrec::restart_with_better_blas(argv, /*quiet=*/true);  // before MPI_Init (blas_kernels.h)
  ::testing::InitGoogleTest(&argc, argv);
  torch::set_num_threads(1);  // as test_main.cpp: the ranks share the machine's cores
  ::testing::AddGlobalTestEnvironment(new MpiEnvironment);
  return RUN_ALL_TESTS();
}

// ---- the sharded item table (item_shard.h) -----------------------------------------------

namespace {
// The evaluation figures of a summary, by split/protocol/metric.
std::map<std::string, double> figures(const TrainSummary& s) {
  std::map<std::string, double> out;
  for (const auto& r : s.last)
    for (const auto& [name, value] : r.metrics.means()) out[r.split + "/" + r.protocol + "/" + name] = value;
  return out;
}
}  // namespace

// Each rank holding one block of the item table computes the replicated run
// with the sparse exchange: the rows' gradients are summed in the same
// (rank) order and Adam steps the same floats, so the dense parameters and
// every row agree bit for bit, and the evaluation (each block scored on its
// owner, counts summed) gives the same figures; bce and sampled_softmax,
// adam and lazy_adam, both protocols.
TEST(Mpi, ShardedItemTableComputesTheReplicatedRun) {
  SKIP_IF_ONE_RANK();
  const std::string data = make_store("sharded.h5", 200, 500, 11);
  const ShardLayout layout(501, g_comm->world_size());
  const int rank = g_comm->rank();
  for (const char* optimizer : {"adam", "lazy_adam"}) {
    for (const char* loss : {"bce", "sampled_softmax"}) {
      std::map<std::string, std::map<std::string, torch::Tensor>> got;
      std::map<std::string, std::map<std::string, double>> evaluated;
      for (const char* table : {"replicated", "sharded"}) {
        Config c = rows_config(data, std::string("sharded_") + table, optimizer, loss);
        if (std::string(table) == "sharded")
          c.train.item_table = ItemTable::Sharded;
        else
          c.train.exchange = Exchange::Sparse;
        c.eval.protocols = {Protocol::Full, Protocol::Sampled};
        Trainer t(c, *g_comm);
        evaluated[table] = figures(t.fit());
        got[table] = params(t);
      }
      const std::string what = std::string(optimizer) + " " + loss;
      const auto& whole = got["replicated"].at("item.weight");
      EXPECT_EQ(got["sharded"].at("item.weight").size(0), layout.size(rank)) << what;
      EXPECT_TRUE(torch::equal(got["sharded"].at("item.weight"), whole.slice(0, layout.begin(rank), layout.end(rank))))
          << what << ": rank " << rank << "'s block";
      for (auto& [name, want] : got["replicated"])
        if (name != "item.weight") EXPECT_TRUE(torch::equal(got["sharded"].at(name), want)) << what << " " << name;
      ASSERT_FALSE(evaluated["replicated"].empty());
      EXPECT_EQ(evaluated["sharded"], evaluated["replicated"]) << what;
    }
  }
}

// Every rank writes its block of each checkpoint (MAIN.shards/rank-R.pt,
// then rank 0's MAIN); a run resumed from one ends where an uninterrupted
// one does, bit for bit. A replicated run refuses the file, naming gather;
// gathered into one file (checkpoint_gather.h), a replicated run with the
// sparse exchange resumes from it and ends where the sharded run does, and
// scattered into blocks again, so does a sharded one.
TEST(Mpi, ShardedCheckpointResumesBitIdentical) {
  SKIP_IF_ONE_RANK();
  const std::string data = make_store("sharded_resume.h5", 200, 300, 12);
  auto config = [&](const std::string& run) {
    Config c = base_config(data, run);
    c.train.batch_size = 16;
    c.train.negatives = 16;
    c.train.loss = LossKind::SampledSoftmax;
    c.train.item_optimizer = ItemOptimizer::LazyAdam;
    c.train.item_table = ItemTable::Sharded;
    c.checkpoint.dir = shared_dir() + "/" + run;
    return c;
  };
  Config straight = config("sharded_straight");
  straight.train.epochs = 3;
  Trainer a(straight, *g_comm);
  a.fit();
  const auto want = params(a);

  Config part = config("sharded_part");
  part.train.epochs = 1;
  Trainer(part, *g_comm).fit();
  g_comm->barrier();
  const std::string first = part.checkpoint.dir + "/epoch-000001.pt";
  for (int r = 1; r < g_comm->world_size(); ++r)
    EXPECT_TRUE(std::filesystem::exists(shard_checkpoint_path(first, r))) << shard_checkpoint_path(first, r);
  part.train.epochs = 3;
  part.checkpoint.resume = {ResumeFrom::Kind::Auto, ""};
  Trainer b(part, *g_comm);
  b.fit();
  for (auto& [name, t] : params(b)) EXPECT_TRUE(torch::equal(t, want.at(name))) << name;

  Config replicated = base_config(data, "sharded_refused");
  Trainer r(replicated, *g_comm, Trainer::Mode::Evaluate);
  try {
    r.load_model(first);
    ADD_FAILURE() << "a replicated model loaded one block of a sharded checkpoint";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("sasrec_ddp gather"), std::string::npos) << e.what();
  }

  const std::string gathered = shared_dir() + "/sharded_gathered.pt";
  if (g_comm->is_root()) {
    const GatherSummary g = gather_checkpoint(first, gathered);
    EXPECT_EQ(g.world_size, g_comm->world_size());
    EXPECT_EQ(g.items, 300);
    EXPECT_EQ(g.epoch, 1);
  }
  g_comm->barrier();
  Config whole = config("sharded_gathered_resume");
  whole.train.item_table = ItemTable::Replicated;
  whole.train.exchange = Exchange::Sparse;
  whole.train.epochs = 3;
  whole.checkpoint.dir = "";
  whole.checkpoint.resume = {ResumeFrom::Kind::Path, gathered};
  Trainer w(whole, *g_comm);
  w.fit();
  const ShardLayout layout(301, g_comm->world_size());
  const int rank = g_comm->rank();
  for (auto& [name, t] : params(w)) {
    if (name == "item.weight")
      EXPECT_TRUE(torch::equal(t.slice(0, layout.begin(rank), layout.end(rank)), want.at(name))) << name;
    else
      EXPECT_TRUE(torch::equal(t, want.at(name))) << name;
  }

  // The refusals name the way out: a whole table into a sharded run, a block of 2 ranks into 1 rank's.
  auto refused = [](Trainer& t, const std::string& path, const std::string& way) {
    try {
      t.load_model(path);
      ADD_FAILURE() << path << " loaded";
    } catch (const Error& e) {
      EXPECT_NE(std::string(e.what()).find(way), std::string::npos) << e.what();
    }
  };
  Config blocks = config("sharded_refusals");
  blocks.checkpoint.dir = "";
  Trainer sharded_eval(blocks, *g_comm, Trainer::Mode::Evaluate);
  refused(sharded_eval, gathered, "sasrec_ddp scatter --checkpoint " + gathered);
  if (g_comm->is_root()) {
    auto one = make_single_communicator();
    Trainer alone(blocks, *one, Trainer::Mode::Evaluate);
    refused(alone, first, "sasrec_ddp scatter");
  }
  g_comm->barrier();

  // And back: the gathered file split into blocks again, resumed sharded.
  const std::string scattered = shared_dir() + "/sharded_scattered/epoch-000001.pt";
  if (g_comm->is_root()) {
    std::filesystem::create_directories(shared_dir() + "/sharded_scattered");
    EXPECT_EQ(scatter_checkpoint(gathered, g_comm->world_size(), scattered).world_size, g_comm->world_size());
  }
  g_comm->barrier();
  Config again = config("sharded_scattered_resume");
  again.train.epochs = 3;
  again.checkpoint.dir = "";
  again.checkpoint.resume = {ResumeFrom::Kind::Path, scattered};
  Trainer s(again, *g_comm);
  s.fit();
  for (auto& [name, t] : params(s)) EXPECT_TRUE(torch::equal(t, want.at(name))) << "scattered " << name;
}

// Recommend and export on the blocks of a sharded model (serve.h), no rank
// holding the whole table, give what the gathered model gives on one
// process: the same lists, the same item rows bit for bit, the same user
// vectors to 1e-6. Scores agree to 1e-5, not bit for bit: the blocks'
// user vectors come from packed sequences and smaller batches (other GEMM
// shapes), so two items whose scores are that close may trade places.
TEST(Mpi, ShardedServingEqualsTheGatheredModel) {
  SKIP_IF_ONE_RANK();
  const bool root = g_comm->is_root();
  const std::string data = make_store("sharded_serve.h5", 120, 250, 21);
  Config c = base_config(data, "sharded_serve");
  c.train.epochs = 1;
  c.train.batch_size = 16;
  c.train.negatives = 16;
  c.train.loss = LossKind::SampledSoftmax;
  c.train.item_optimizer = ItemOptimizer::LazyAdam;
  c.train.item_table = ItemTable::Sharded;
  c.checkpoint.dir = shared_dir() + "/sharded_serve";
  Trainer(c, *g_comm).fit();
  g_comm->barrier();
  const std::string main = c.checkpoint.dir + "/epoch-000001.pt", whole = shared_dir() + "/sharded_serve_whole.pt";
  if (root) gather_checkpoint(main, whole);
  g_comm->barrier();

  const auto shard = serving_shard(c, *g_comm);
  ASSERT_TRUE(shard);
  SASRec blocks = load_model_for_serving(c, main, shard.get());
  EXPECT_EQ(blocks->item_weight().size(0), shard->size());
  Config rc = c;
  rc.train.item_table = ItemTable::Replicated;
  EXPECT_FALSE(serving_shard(rc, *g_comm));
  SASRec model = load_model_for_serving(rc, whole);  // the reference, on every rank
  try {  // a whole table is no block: the refusal says how to split it
    load_model_for_serving(c, whole, shard.get());
    ADD_FAILURE() << "a sharded model loaded a whole checkpoint";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("sasrec_ddp scatter"), std::string::npos) << e.what();
  }

  const Interactions store = read_store(data);
  std::vector<History> histories;
  for (int64_t u = 0; u < store.num_users(); ++u)
    histories.push_back(
        {std::vector<int32_t>(store.items.begin() + store.offsets[u], store.items.begin() + store.offsets[u + 1]), u});
  histories.push_back({{5, 9, 9, 17}, -1});  // a new user
  histories.push_back({{}, -1});             // no history: every score 0, ties across blocks by lower index
  for (const Scorer scorer : {Scorer::Blocked, Scorer::Tensor})
    for (const int64_t memory_mb : {int64_t{0}, int64_t{256}})  // one user a GEMM, or all at once
      for (const int k : {10, 200}) {                             // 200 > a block at 2 ranks: every block contributes
        const auto want = recommend(model, histories, k, memory_mb, scorer);
        const auto got = recommend(blocks, histories, k, memory_mb, scorer, shard.get());
        // EXPECTs only, the first few: a rank that left the test early would leave the others in a collective.
        int64_t wrong = 0;
        EXPECT_EQ(got.size(), want.size());
        for (size_t u = 0; u < std::min(got.size(), want.size()); ++u) {
          EXPECT_EQ(got[u].size(), want[u].size()) << "user " << u << " k " << k;
          if (got[u].size() != want[u].size()) continue;
          std::unordered_map<int32_t, float> want_score;
          for (const auto& s : want[u]) want_score[s.item] = s.score;
          for (size_t j = 0; j < want[u].size(); ++j) {
            const auto& g = got[u][j];
            // The same item, or one the reference also lists with a score within 1e-5 of this place's.
            const auto other = want_score.find(g.item);
            const bool same = g.item == want[u][j].item ||
                              (other != want_score.end() && std::abs(other->second - want[u][j].score) < 1e-5f);
            if (same && std::abs(g.score - want[u][j].score) < 1e-5f) continue;
            if (++wrong > 5) continue;
            EXPECT_TRUE(same) << "user " << u << " place " << j << " k " << k << ": item " << g.item << ", want "
                              << want[u][j].item;
            EXPECT_NEAR(g.score, want[u][j].score, 1e-5) << "user " << u << " place " << j << " k " << k;
          }
        }
        EXPECT_EQ(wrong, 0) << "places that differ, k " << k << ", memory_mb " << memory_mb;
      }

  const std::string from_blocks = shared_dir() + "/sharded_serve_blocks.h5";
  const std::string from_whole = shared_dir() + "/sharded_serve_whole.h5";
  export_embeddings(blocks, store, main, from_blocks, {}, shard.get());
  if (root) export_embeddings(model, store, whole, from_whole);
  g_comm->barrier();
  if (root) {
    hid_t a = H5Fopen(from_blocks.c_str(), H5F_ACC_RDONLY, H5P_DEFAULT);
    hid_t b = H5Fopen(from_whole.c_str(), H5F_ACC_RDONLY, H5P_DEFAULT);
    ASSERT_GE(a, 0);
    ASSERT_GE(b, 0);
    EXPECT_TRUE(torch::equal(test::read_h5_matrix(a, "/items/vector"), test::read_h5_matrix(b, "/items/vector")));
    EXPECT_EQ(test::read_h5_strings(a, "/items/id"), test::read_h5_strings(b, "/items/id"));
    EXPECT_EQ(test::read_h5_strings(a, "/users/id"), test::read_h5_strings(b, "/users/id"));
    const auto users_a = test::read_h5_matrix(a, "/users/vector"), users_b = test::read_h5_matrix(b, "/users/vector");
    ASSERT_EQ(users_a.sizes(), users_b.sizes());
    EXPECT_TRUE(torch::allclose(users_a, users_b, 1e-6, 1e-6));
    H5Fclose(a), H5Fclose(b);
  }
}
