// test_memory_plan.cpp: the memory plan's components against hand-worked
// numbers, its verdicts at 1M items, runtime.memory_mb, the available-memory
// rule over /proc and cgroup files, and the trainer refusing a config over
// budget before it trains.
#include <gtest/gtest.h>

#include <filesystem>
#include <limits>

#include "sasrec/config.h"
#include "sasrec/error.h"
#include "sasrec/memory_plan.h"
#include "sasrec/model.h"
#include "test_util.h"

namespace sasrec {
namespace {

const torch::Device kCpu(torch::kCPU);

// Parsed, not validated: validate() wants data.path to exist, and the plan needs no file.
Config config_of(const std::vector<std::string>& sets) { return parse_config("", "test", sets); }

int64_t bytes_of(const MemoryPlan& plan, const std::string& name) {
  const MemoryComponent* c = plan.find(name);
  EXPECT_NE(c, nullptr) << "no component '" << name << "'";
  return c ? c->bytes : -1;
}

// d=8, 1 block, 1 head, n=5, B=4 (N=20 tokens), I=20 items, 10 users, bce, dropout on.
Config small() {
  return config_of({"model.hidden=8", "model.blocks=1", "model.heads=1", "model.maxlen=5", "model.dropout=0.5",
                    "train.batch_size=4", "train.loss=bce", "train.threads=2", "eval.batch_users=16",
                    "eval.protocols=[full]", "data.sampler_threads=1", "data.prefetch=2"});
}

TEST(MemoryPlan, ComponentsOfASmallConfigByHand) {
  const MemoryPlan plan = plan_memory(small(), /*items=*/20, /*users=*/10, /*local_interactions=*/70, 1, kCpu);
  // Item table: 21 rows x 8 x 4 bytes.
  EXPECT_EQ(bytes_of(plan, "item table"), 21 * 8 * 4);
  // Positions 5x8 = 40; the block: q 8x8+8, k 8x8 (no bias), v 8x8+8, w1, w2 8x8+8 each,
  // two LayerNorms 16 each = 72+64+72+72+72+32 = 384; final LayerNorm 16. 440 floats.
  EXPECT_EQ(bytes_of(plan, "other parameters"), 440 * 4);
  EXPECT_EQ(bytes_of(plan, "optimizer state"), 2 * (672 + 1760));
  EXPECT_EQ(bytes_of(plan, "gradients (other parameters)"), 1760);
  // bce touches at most 2 x 20 rows, capped by the 21 of the table; one rank's adam steps the table
  // from the rows, two ranks' adam scatters them into a dense gradient.
  EXPECT_EQ(bytes_of(plan, "item gradient (rows)"), 21 * 8 * 4);
  EXPECT_EQ(plan.find("item gradient (dense)"), nullptr);
  EXPECT_EQ(bytes_of(plan_memory(small(), 20, 10, 70, 2, kCpu), "item gradient (dense)"), 21 * 8 * 4);
  // bce: rows and product [2N,d], then their gradients: 4 x 20 x 8 floats.
  EXPECT_EQ(bytes_of(plan, "loss buffers (bce)"), 4 * 20 * 8 * 4);
  // Per token: embedding mask+output 2, block 11, final LN 1, backward 4 = 18 x 8 floats;
  // attention: softmax and dropped weights, 4 sequences x 5 x 5; int64 batch 3 x 20 + packing 4 x 20.
  EXPECT_EQ(bytes_of(plan, "activations"), (18 * 20 * 8 + 2 * 4 * 25) * 4 + (60 + 80) * 8);
  // 70 int32 items, 3 int64 per user, 11 offsets of the store, (1 thread x 3 batches) of 3 x [4,5] int64.
  EXPECT_EQ(bytes_of(plan, "data"), 70 * 4 + 10 * 24 + 11 * 8 + 3 * 3 * 20 * 8);
  // Evaluation: 16 user vectors, the forward 4 x [16,5,8], histories 16 x 5 int32, 2 threads x 256 KiB blocks.
  EXPECT_EQ(bytes_of(plan, "evaluation buffers"), 16 * 8 * 4 + 4 * 16 * 5 * 8 * 4 + 16 * 5 * 4 + 2 * 262144);
  EXPECT_EQ(plan.find("exchange buffers (dense)"), nullptr);  // one rank: nothing exchanged
  EXPECT_EQ(plan.find("checkpoint buffers"), nullptr);
  int64_t sum = 0;
  for (const auto& c : plan.components) sum += c.bytes;
  EXPECT_EQ(plan.total(), sum);
}

TEST(MemoryPlan, ParametersMatchTheModel) {
  for (bool user : {false, true}) {
    Config c = small();
    c.model.user_embedding = user;
    c.model.blocks = 2;
    c.model.heads = 2;
    // The BERT-style variant on the second pass: W_O, a 4x FFN, the embedding LayerNorm.
    c.model.attention_output = user;
    c.model.ffn_hidden = user ? 32 : 0;
    c.model.embedding_norm = user;
    const MemoryPlan plan = plan_memory(c, 20, 10, 70, 1, kCpu);
    SASRec model(SASRecOptions::from(c.model, 20, 10));
    int64_t floats = 0;
    for (const auto& p : model->parameters()) floats += p.numel();
    EXPECT_EQ(bytes_of(plan, "item table") + bytes_of(plan, "other parameters"), floats * 4) << "user " << user;
  }
}

TEST(MemoryPlan, ExchangeBuffersWithTwoRanks) {
  Config c = small();
  c.train.exchange = Exchange::Sparse;
  const MemoryPlan sparse = plan_memory(c, 20, 10, 70, 2, kCpu);
  // 2 ranks x 21 rows x (8 + 32) bytes gathered, the sum over min(21, 42) rows x 32.
  EXPECT_EQ(bytes_of(sparse, "exchange buffers (sparse)"), 2 * 21 * 40 + 21 * 32);
  c.train.exchange = Exchange::Dense;
  EXPECT_EQ(bytes_of(plan_memory(c, 20, 10, 70, 2, kCpu), "exchange buffers (dense)"), 672 + 1760);
}

// A sharded table: one block of ceil(21 / 2) = 11 rows a rank, its moments,
// no dense item gradient; the all-to-all buffers 2 ranks x 21 rows x (8 + 32)
// bytes each way, the 21 fetched rows, and the dense bucket of the rest.
TEST(MemoryPlan, ShardedTableHoldsOneBlockARank) {
  Config c = small();
  c.train.item_table = ItemTable::Sharded;
  const MemoryPlan plan = plan_memory(c, 20, 10, 70, 2, kCpu);
  EXPECT_EQ(bytes_of(plan, "item table (this rank's block)"), 11 * 32);
  EXPECT_EQ(bytes_of(plan, "optimizer state"), 2 * (11 * 32 + 1760));
  EXPECT_EQ(plan.find("item gradient (dense)"), nullptr);
  EXPECT_EQ(bytes_of(plan, "exchange buffers (sharded)"), 2 * 21 * 40 * 2 + 21 * 32 + 1760);
}

Config million(const std::string& loss) {
  return config_of({"model.hidden=64", "model.maxlen=50", "train.batch_size=128", "train.loss=" + loss,
                    "train.negatives=256", "runtime.memory_mb=4096"});
}

TEST(MemoryPlan, CeAtOneMillionItemsIsRefusedNamingTheLoss) {
  const Config c = million("ce");
  const MemoryPlan plan = plan_memory(c, 1000000, 1000000, 20000000, 1, kCpu);
  // 3 x N x I x 4 bytes, N = 128 x 50.
  EXPECT_EQ(bytes_of(plan, "loss buffers (ce)"), 3LL * 6400 * 1000000 * 4);
  const MemoryBudget budget = memory_budget(c, kCpu);
  try {
    check_memory_plan(plan, budget);
    FAIL() << "a 77 GB plan passed a 4 GiB budget";
  } catch (const Error& e) {
    EXPECT_EQ(e.domain(), ErrorDomain::Config);
    const std::string m = e.what();
    EXPECT_NE(m.find("train.loss"), std::string::npos) << m;
    EXPECT_NE(m.find("sampled_softmax"), std::string::npos) << m;
    EXPECT_NE(m.find("4.00 GiB"), std::string::npos) << m;
    EXPECT_NE(m.find("runtime.memory_mb"), std::string::npos) << m;
  }
}

TEST(MemoryPlan, SampledSoftmaxAtOneMillionItemsFits) {
  const Config c = million("sampled_softmax");
  const MemoryPlan plan = plan_memory(c, 1000000, 1000000, 20000000, 1, kCpu);
  EXPECT_LT(plan.total(), 4096LL << 20);
  EXPECT_NO_THROW(check_memory_plan(plan, memory_budget(c, kCpu)));
  // The table (256 MB) and Adam's two moments dominate.
  EXPECT_EQ(bytes_of(plan, "item table"), 1000001LL * 64 * 4);
}

// 10M items, d = 64, replicated: 3 x 2.56 GB of table and moments a rank,
// over 4 GiB. The advice names the smallest rank count whose sharded plan
// fits, and half of it does not; ce (which cannot shard) gets none.
TEST(MemoryPlan, AReplicatedTableOverBudgetIsToldTheRanksThatShardedFits) {
  const Config c = million("sampled_softmax");
  const int64_t budget = int64_t{4096} << 20;
  ASSERT_GT(plan_memory(c, 10'000'000, 1000, 20000, 1, kCpu).total(), budget);
  const std::string advice = sharding_advice(c, 10'000'000, 1000, 20000, kCpu, MemoryUse::Training, budget);
  ASSERT_NE(advice.find("train.item_table: sharded"), std::string::npos) << advice;
  const auto at = advice.find("fits on ");
  ASSERT_NE(at, std::string::npos) << advice;
  const int ranks = std::stoi(advice.substr(at + 8));
  Config sharded = c;
  sharded.train.item_table = ItemTable::Sharded;
  EXPECT_LE(plan_memory(sharded, 10'000'000, 1000, 20000, ranks, kCpu).total(), budget) << advice;
  EXPECT_GT(plan_memory(sharded, 10'000'000, 1000, 20000, ranks / 2, kCpu).total(), budget) << advice;
  EXPECT_EQ(sharding_advice(million("ce"), 10'000'000, 1000, 20000, kCpu, MemoryUse::Training, budget), "");
}

TEST(MemoryPlan, GbceCountsItsNegativesPerTarget) {
  // The small config with gbce, k = 3 negatives per target: N = 20 tokens, d = 8, I = 20.
  Config c = small();
  c.train.loss = LossKind::Gbce;
  c.train.negatives = 3;
  const MemoryPlan plan = plan_memory(c, 20, 10, 70, 1, kCpu);
  // Rows [N,k+1,d] gathered, their gradient and a workspace: 3 x 20 x 4 x 8 floats; logits [N,k+1], their
  // gradient and softplus: 3 x 20 x 4 floats; the ids, 20 x 4 int64; the hit mask, 20 x 3 bytes.
  EXPECT_EQ(bytes_of(plan, "loss buffers (gbce)"), 3 * 20 * 4 * 8 * 4 + 3 * 20 * 4 * 4 + 20 * 4 * 8 + 20 * 3);
  // Touched rows: 20 x (1 + 3) = 80, capped by the table's 21.
  EXPECT_EQ(bytes_of(plan, "item gradient (rows)"), 21 * 8 * 4);
  // Batches carry seq, pos [4,5] and neg [4,5,3]: 5 x 20 int64 each, 3 queued.
  EXPECT_EQ(bytes_of(plan, "data"), 70 * 4 + 10 * 24 + 11 * 8 + 3 * 5 * 20 * 8);
  EXPECT_EQ(bytes_of(plan, "activations"), (18 * 20 * 8 + 2 * 4 * 25) * 4 + (5 * 20 + 80) * 8);
  // Under the cap: 1M items, B = 128, n = 50, k = 256 touch N (1 + k) = 6400 x 257 rows, more than the
  // table, so all 1000001; the loss buffers are about 3 N (k+1) d x 4 bytes = 1.26 GB.
  const MemoryPlan big = plan_memory(million("gbce"), 1000000, 1000000, 20000000, 1, kCpu);
  EXPECT_EQ(bytes_of(big, "item gradient (rows)"), 1000001LL * 64 * 4);
  const int64_t N = 6400, k1 = 257;
  EXPECT_EQ(bytes_of(big, "loss buffers (gbce)"), 3 * N * k1 * 64 * 4 + 3 * N * k1 * 4 + N * k1 * 8 + N * 256);
  c.train.negatives = 1;  // 20 x 2 = 40 rows: still capped; with I = 100 not
  EXPECT_EQ(bytes_of(plan_memory(c, 100, 10, 70, 1, kCpu), "item gradient (rows)"), 40 * 8 * 4);
}

TEST(MemoryPlan, RuntimeMemoryMbIsTheBudget) {
  Config c = small();
  c.runtime.memory_mb = 100;
  const MemoryBudget b = memory_budget(c, kCpu);
  EXPECT_EQ(b.bytes, 100LL << 20);
  EXPECT_EQ(b.source, "runtime.memory_mb");
  c.runtime.memory_mb = 1;  // below the fixed overhead alone
  const MemoryPlan plan = plan_memory(c, 20, 10, 70, 1, kCpu);
  EXPECT_THROW(check_memory_plan(plan, memory_budget(c, kCpu)), Error);
  EXPECT_NO_THROW(check_memory_plan(plan, MemoryBudget{-1, "unknown"}));  // unknown: nothing checked
}

TEST(MemoryPlan, AvailableMemoryIsMemAvailableCappedByTheCgroup) {
  test::TempDir dir;
  test::write_text(dir.file("meminfo"), "MemTotal:       2048000 kB\nMemFree:  100 kB\nMemAvailable:    1000000 kB\n");
  test::write_text(dir.file("v2max"), "max\n");
  test::write_text(dir.file("v2limit"), "524288000\n");
  test::write_text(dir.file("v1none"), "9223372036854771712\n");
  const std::string mi = dir.file("meminfo");
  EXPECT_EQ(available_cpu_memory(mi, {}), 1000000LL * 1024);
  EXPECT_EQ(available_cpu_memory(mi, {dir.file("v2max"), dir.file("v1none")}), 1000000LL * 1024);
  EXPECT_EQ(available_cpu_memory(mi, {dir.file("missing"), dir.file("v2limit")}), 524288000);
  EXPECT_EQ(available_cpu_memory(dir.file("missing"), {dir.file("v2limit")}), 524288000);
  EXPECT_EQ(available_cpu_memory(dir.file("missing"), {}), -1);
  EXPECT_GT(available_memory(kCpu), 0);  // this machine's
}

TEST(MemoryPlan, AnEstimatePast64BitsSaturatesAndIsRefusedWhateverTheBudget) {
  // The config (validate() now bounds maxlen first; the plan must hold on its own too):
  // attention alone is 2 blocks x 2 (dropout) x 1 head x 64 x 1e8 x 1e8 x 4 bytes = 1.0e19 > 2^63 - 1.
  Config c = config_of({"model.maxlen=100000000", "model.hidden=32", "train.batch_size=64"});
  const MemoryPlan plan = plan_memory(c, 12101, 22363, 198502, 1, kCpu);
  for (const auto& part : plan.components) EXPECT_GE(part.bytes, 0) << part.name << " wrapped around";
  EXPECT_EQ(bytes_of(plan, "activations"), std::numeric_limits<int64_t>::max());
  EXPECT_EQ(plan.total(), std::numeric_limits<int64_t>::max());
  EXPECT_EQ(format_bytes(plan.total()), "over 8 EiB");
  for (const MemoryBudget& budget : {MemoryBudget{-1, "unknown"}, MemoryBudget{1LL << 40, "runtime.memory_mb"}}) {
    try {
      check_memory_plan(plan, budget);
      ADD_FAILURE() << "passed with budget " << budget.bytes;
    } catch (const Error& e) {
      EXPECT_EQ(e.domain(), ErrorDomain::Config);
      EXPECT_NE(std::string(e.what()).find("more than 8 EiB per rank"), std::string::npos) << e.what();
      EXPECT_NE(std::string(e.what()).find("model.maxlen"), std::string::npos) << e.what();
    }
  }
  // Just below the edge nothing saturates: 2 x 2 x 64 x n^2 x 4 bytes with n = 2^27 is 2^64 (saturates),
  // with n = 2^26 it is 2^62, exact.
  Config edge = config_of({"model.maxlen=67108864", "model.hidden=1", "train.batch_size=64", "model.blocks=2"});
  const int64_t attention = int64_t{2} * 2 * 64 * (int64_t{1} << 52) * 4;
  EXPECT_GE(bytes_of(plan_memory(edge, 10, 10, 10, 1, kCpu), "activations"), attention);
  EXPECT_LT(bytes_of(plan_memory(edge, 10, 10, 10, 1, kCpu), "activations"), std::numeric_limits<int64_t>::max());
}

// The trainer refuses before it trains: exit code 2 (a config error), the
// key to change on the terminal, no training line, no metrics file.
TEST(MemoryPlan, TrainerRefusesAConfigOverBudget) {
  test::TempDir dir;
  const std::string data = dir.file("synth.h5");
  test::synth_store(data, /*users=*/300, /*items=*/3000, /*seed=*/3, /*mean_length=*/8);
  const std::string metrics = dir.file("metrics.jsonl");
  // ce: 3 x (128 x 50) x 3000 x 4 bytes = 230 MB of logits alone, over 200 MiB.
  const std::string base = std::string(SASREC_TRAINER) + " " + std::string(SASREC_SOURCE_DIR) +
                           "/configs/default.yaml --set data.path=" + data + " --set output.metrics=" + metrics +
                           " --set train.epochs=1 --set train.threads=1 --set output.progress=off";
  auto r = test::run(base + " --set train.loss=ce --set runtime.memory_mb=200");
  EXPECT_EQ(r.exit_code, 2) << r.output;
  EXPECT_NE(r.output.find("memory plan: total"), std::string::npos) << r.output;
  EXPECT_NE(r.output.find("over the budget"), std::string::npos) << r.output;
  EXPECT_NE(r.output.find("train.loss"), std::string::npos) << r.output;
  EXPECT_EQ(r.output.find("epoch 1/1"), std::string::npos) << r.output;
  EXPECT_FALSE(std::filesystem::exists(metrics));
  // The same with a sampled loss fits and trains one step, writing the plan to the metrics file.
  r = test::run(base +
                " --set train.loss=sampled_softmax --set runtime.memory_mb=1000 --set train.max_steps=1"
                " --set eval.max_users=50 --set eval.protocols=[full]");
  ASSERT_EQ(r.exit_code, 0) << r.output;
  const std::string events = test::read_text(metrics);
  EXPECT_NE(events.find("\"event\":\"memory_plan\""), std::string::npos) << events;
  EXPECT_NE(events.find("\"users_per_s\""), std::string::npos) << events;
}

}  // namespace
}  // namespace sasrec
