// test_equations.cpp: the places where SASRec implementations differ, pinned
// by hand-computed expectations: the sqrt(d) scale of the item embeddings,
// dropout on E + P, where the FFN's dropouts sit, l2_emb against the
// authors' l2_reg * ||W||^2 / 2, and the BCE loss as a mean over the
// batch's target count. The transplant into the PyTorch port and the float64
// TF equations are tests/reference/test_reference.py.
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <cmath>
#include <fstream>

#include <nlohmann/json.hpp>

#include "sasrec/comm.h"
#include "sasrec/model.h"
#include "sasrec/trainer.h"
#include "test_util.h"

using namespace sasrec;

namespace {

SASRecOptions tiny(int64_t hidden, double dropout) {
  SASRecOptions o;
  o.num_items = 6;
  o.hidden = hidden;
  o.heads = 1;
  o.blocks = 1;
  o.maxlen = 4;
  o.dropout = dropout;
  return o;
}

// M[i] = i * (0.1, 0.2, 0.3, 0.4), P[t] = (1, 1, 1, 1) + t * (0, 0.5, 0, -0.5).
void set_tables(SASRec& model) {
  torch::NoGradGuard no_grad;
  auto m = model->named_parameters()["item.weight"];
  auto p = model->named_parameters()["position.weight"];
  for (int64_t i = 0; i < m.size(0); ++i) m[i].copy_(torch::tensor({0.1f, 0.2f, 0.3f, 0.4f}) * static_cast<float>(i));
  for (int64_t t = 0; t < p.size(0); ++t)
    p[t].copy_(torch::tensor({1.0f, 1.0f, 1.0f, 1.0f}) +
               torch::tensor({0.0f, 0.5f, 0.0f, -0.5f}) * static_cast<float>(t));
}

}  // namespace

TEST(Equations, ItemEmbeddingsAreScaledBySqrtD) {
  // d = 4: E = 2 M[s] + P[t]. Batch [0, 3, 5] of width 3 with maxlen 4: the
  // items sit at columns 1 and 2, positions maxlen - 3 + 1 = 2 and 3.
  SASRec model(tiny(4, 0.0));
  set_tables(model);
  model->eval();
  auto x = model->embed(pack_sequences(torch::tensor({{0, 3, 5}}, torch::kInt64), 4));
  // 2 * 3 * (0.1, 0.2, 0.3, 0.4) + (1, 2, 1, 0);  2 * 5 * (0.1, 0.2, 0.3, 0.4) + (1, 2.5, 1, -0.5)
  auto expected = torch::tensor({{1.6f, 3.2f, 2.8f, 2.4f}, {2.0f, 4.5f, 4.0f, 3.5f}});
  EXPECT_TRUE(torch::allclose(x, expected, 0, 1e-6)) << x;
}

TEST(Equations, DropoutActsOnTheSumOfItemAndPositionEmbeddings) {
  // p = 0.5: each element is 0 or 2 (2 M[s] + P[t]). Every P element is
  // nonzero, so zeros mean the mask hit E + P, not M alone (which would
  // leave P); both outcomes occur.
  SASRec model(tiny(4, 0.5));
  set_tables(model);
  model->train();
  model->reseed_dropout(77);
  std::vector<int64_t> row;
  for (int64_t r = 0; r < 200; ++r) row.push_back(1 + r % 6);
  auto seq = torch::tensor(row, torch::kInt64).view({50, 4});
  const Packing packing = pack_sequences(seq, 4);
  auto x = model->embed(packing);
  model->eval();
  auto clean = model->embed(packing);  // 2 M[s] + P[t]
  auto kept = x != 0;
  EXPECT_TRUE(torch::allclose(x.masked_select(kept), 2 * clean.masked_select(kept), 0, 1e-5));
  const double share = kept.to(torch::kFloat64).mean().item<double>();
  EXPECT_GT(share, 0.4);
  EXPECT_LT(share, 0.6);
  EXPECT_TRUE((clean != 0).all().item<bool>());
}

TEST(Equations, FeedForwardDropsAfterTheActivationAndAfterW2) {
  // FFN(x) = D2(W2 D1(relu(W1 x + b1)) + b2), p = 0.5, scale 2. With W1 = I,
  // b1 = (0.5, 0.5), W2 = [[1, 1], [1, -2]], b2 = (0.3, -0.2) and x >= 0,
  // a = x + b1 > 0, and for the inner mask m in {0, 1}^2 the value before D2
  // is v(m) = W2 (2 m a) + b2. Each output element must be 0 or 2 v_j(m),
  // for one m per row; some rows need m != (1, 1) (D1 exists) and exact zeros
  // appear (D2 exists). D1 before the ReLU would be the same function (the
  // mask is >= 0); D1 on x or after W2 would not fit any m.
  auto stream = std::make_shared<DropoutStream>();
  FeedForward ffn(2, 2, Activation::Relu, 0.5, stream);
  {
    torch::NoGradGuard g;
    auto p = ffn->named_parameters();
    p["w1.weight"].copy_(torch::eye(2));
    p["w1.bias"].copy_(torch::tensor({0.5f, 0.5f}));
    p["w2.weight"].copy_(torch::tensor({{1.0f, 1.0f}, {1.0f, -2.0f}}));
    p["w2.bias"].copy_(torch::tensor({0.3f, -0.2f}));
  }
  ffn->train();
  stream->reseed(5);
  const int64_t n = 400;
  auto x = torch::rand({n, 2}) + 0.1;
  auto y = ffn->forward(x);
  auto a = x + 0.5;
  int64_t fitted = 0, needs_inner_drop = 0, zeros = 0;
  for (int64_t r = 0; r < n; ++r) {
    const double a0 = a[r][0].item<double>(), a1 = a[r][1].item<double>();
    const double y0 = y[r][0].item<double>(), y1 = y[r][1].item<double>();
    zeros += (y0 == 0) + (y1 == 0);
    bool fits = false, fits_all_kept = false;
    for (int m0 = 0; m0 < 2; ++m0)
      for (int m1 = 0; m1 < 2; ++m1) {
        const double h0 = 2 * m0 * a0, h1 = 2 * m1 * a1;
        const double v0 = h0 + h1 + 0.3, v1 = h0 - 2 * h1 - 0.2;
        const bool ok = (y0 == 0 || std::abs(y0 - 2 * v0) < 1e-5) && (y1 == 0 || std::abs(y1 - 2 * v1) < 1e-5);
        fits |= ok;
        if (m0 == 1 && m1 == 1) fits_all_kept = ok;
      }
    fitted += fits;
    needs_inner_drop += fits && !fits_all_kept;
  }
  EXPECT_EQ(fitted, n) << "some outputs fit no inner mask: the dropouts are elsewhere";
  EXPECT_GT(needs_inner_drop, n / 4) << "no row needs the inner dropout";
  EXPECT_GT(zeros, n / 2) << "no zeros: the dropout after W2 is missing";
}

TEST(Equations, L2EmbIsTheAuthorsPenaltyOnItemAndPositionTables) {
  // kang205/SASRec adds l2_reg * ||W||^2 / 2 (tf.contrib l2_regularizer) for
  // the item table and the position table. Its gradient, l2 * W, is what
  // Adam's first moment holds after one step with a zero loss gradient:
  // m = (1 - beta1) (g + decay * W). No other parameter is decayed. (The
  // PyTorch port SASRec.pytorch adds l2_emb * ||M|| instead, the norm without
  // the square, on the item table only; the shared torch_reference.py none.)
  torch::manual_seed(3);
  SASRec model(tiny(4, 0.0));
  TrainConfig train;
  train.l2_emb = 0.3;
  train.beta1 = 0.9;
  auto optimizer = make_optimizer(model, train);
  std::map<std::string, torch::Tensor> before;
  for (auto& p : model->named_parameters()) {
    before[p.key()] = p.value().detach().clone();
    p.value().mutable_grad() = torch::zeros_like(p.value());
  }
  optimizer->step();
  // The penalty, in double, differentiated by autograd.
  auto m = before["item.weight"].to(torch::kFloat64).requires_grad_(true);
  auto pos = before["position.weight"].to(torch::kFloat64).requires_grad_(true);
  (0.3 * (m.pow(2).sum() + pos.pow(2).sum()) / 2).backward();
  std::map<std::string, torch::Tensor> penalty_grad{{"item.weight", m.grad()}, {"position.weight", pos.grad()}};
  for (auto& p : model->named_parameters()) {
    const auto& state = optimizer->state_for(p.value());
    auto it = penalty_grad.find(p.key());
    auto expected = it != penalty_grad.end() ? (1 - 0.9) * it->second : torch::zeros_like(p.value(), torch::kFloat64);
    EXPECT_TRUE(torch::allclose(state.exp_avg().to(torch::kFloat64), expected, 1e-5, 1e-8)) << p.key();
  }
}

TEST(Equations, BceIsTheMeanOverTheTargetsOfTheStep) {
  // One step of the trainer on one rank: its gradient is that of
  // (sum over targets of softplus(-s(pos)) + softplus(s(neg))) / N, N the
  // non-padding targets of the batch (not B, not B x T), and the epoch's
  // logged loss is that mean. Here the whole log is one batch.
  test::TempDir dir;
  // Leave-one-out train parts 1, 7, 3, 2, 10, 4; the trainable five give 6 + 2 + 1 + 8 + 3 = 20
  // targets (the 10-item user's 9 cut to maxlen 8) in a [5,8] batch.
  const std::vector<int> lengths{3, 9, 5, 4, 12, 6};
  test::Sequences seqs(lengths.size());
  int32_t item = 1;
  for (size_t u = 0; u < lengths.size(); ++u)
    for (int t = 0; t < lengths[u]; ++t) seqs[u].push_back(item = 1 + (item * 7 + 3) % 20);
  const std::string store = dir.file("log.h5");
  write_store(store, test::make_interactions(seqs, 20));
  // Both ways of computing a step (model.kernels): the same equation.
  for (const std::string kernels : {"autograd", "fused"}) {
    SCOPED_TRACE("model.kernels " + kernels);
    Config c = parse_config("", "test",
                            {"data.path=" + store, "model.hidden=8", "model.heads=1", "model.maxlen=8",
                             "model.dropout=0", "train.batch_size=64", "train.epochs=1", "train.max_steps=1",
                             "train.threads=1", "eval.every=0", "eval.protocols=[full]", "model.kernels=" + kernels,
                             "output.progress=off", "output.metrics=" + dir.file("m-" + kernels + ".jsonl")});
    c.validate();
    auto comm = make_single_communicator();
    Trainer trained(c, *comm), initial(c, *comm);  // same seed: the same initial parameters
    trained.fit();

    // The step's batch, as the trainer's sampler builds it (trainer.cpp, fit()).
    SamplerOptions so;
    so.batch_size = c.train.batch_size;
    so.maxlen = c.model.maxlen;
    so.per_position_negatives = true;
    so.seed = c.train.seed;
    so.steps_per_epoch = trained.steps_per_epoch();
    ASSERT_EQ(so.steps_per_epoch, 1);
    Sampler sampler(initial.data(), so);
    sampler.start_epoch(1);
    const Batch batch = sampler.next();
    const int64_t targets = (batch.pos != 0).sum().item<int64_t>();
    ASSERT_EQ(targets, 20);
    ASSERT_EQ(batch.pos.numel(), 5 * 8);  // so B x T (40) and B (5) would give other gradients

    SASRec& model = initial.model();
    model->train();
    auto f = model->forward(batch.seq);  // [B,T,D]
    const auto& w = model->item_weight();
    auto s_pos = (f * torch::embedding(w, batch.pos)).sum(-1), s_neg = (f * torch::embedding(w, batch.neg)).sum(-1);
    auto is_target = (batch.pos != 0).to(torch::kFloat32);
    auto loss = ((torch::softplus(-s_pos) + torch::softplus(s_neg)) * is_target).sum() / static_cast<double>(targets);
    loss.backward();
    auto got = trained.model()->named_parameters();
    for (auto& p : model->named_parameters()) {
      // M's gradient arrives as the rows the step touched at one rank (reducer.h): item_gradient() scatters them.
      const auto g = p.key() == "item.weight" ? trained.item_gradient() : got[p.key()].grad();
      ASSERT_TRUE(g.defined()) << p.key();
      EXPECT_TRUE(torch::allclose(g, p.value().grad(), 1e-4, 1e-7))
          << p.key() << " max diff " << (g - p.value().grad()).abs().max();
    }
    std::ifstream metrics(dir.file("m-" + kernels + ".jsonl"));
    std::string line;
    double logged = -1;
    while (std::getline(metrics, line)) {
      auto j = nlohmann::json::parse(line);
      if (j["event"] == "train_epoch") logged = j["loss"].get<double>();
    }
    EXPECT_NEAR(logged, loss.item<double>(), 1e-5);
  }
}
