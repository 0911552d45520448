// model_dump.cpp: sasrec_model_dump, a test tool (not installed). It builds a
// small SASRec with the library's code, runs one bce training step on a fixed
// batch the way the trainer does (packed forward, loss_sum_rows, the sum
// divided by the batch's target count, make_optimizer's Adam step) with
// dropout off, and writes what the reference tests (tests/reference/)
// compare: the parameters before the step, the batch, the features and
// logits, the loss, every parameter's gradient and the parameters after the step.
//
//   sasrec_model_dump OUT_DIR [--norm pre|post|paper] [--hidden 8] [--heads 2] [--blocks 2]
//                     [--maxlen 6] [--items 30] [--batch 5] [--padded] [--seed 1]
//
// OUT_DIR/manifest.json names each tensor's raw file (little-endian,
// row-major), dtype and shape, and holds the config and the loss.
#include <CLI/CLI.hpp>
#include <nlohmann/json.hpp>
#include <torch/torch.h>

#include <filesystem>
#include <fstream>
#include <iostream>

#include "sasrec/loss.h"
#include "sasrec/model.h"
#include "sasrec/rng.h"
#include "sasrec/trainer.h"

using namespace sasrec;

namespace {

class Dump {
 public:
  explicit Dump(std::filesystem::path dir) : dir_(std::move(dir)) { std::filesystem::create_directories(dir_); }

  void add(const std::string& name, const torch::Tensor& t) {
    auto c = t.detach().cpu().contiguous();
    std::string file = name;
    for (char& ch : file)
      if (ch == '/') ch = '-';
    file += ".bin";
    std::ofstream out(dir_ / file, std::ios::binary);
    out.write(static_cast<const char*>(c.data_ptr()), static_cast<std::streamsize>(c.numel() * c.element_size()));
    if (!out) throw std::runtime_error("writing " + (dir_ / file).string() + " failed");
    const char* dtype = c.scalar_type() == torch::kFloat32 ? "float32"
                        : c.scalar_type() == torch::kInt64 ? "int64"
                                                           : "";
    if (!*dtype) throw std::runtime_error(name + ": only float32 and int64 are dumped");
    manifest_["tensors"][name] = {{"file", file}, {"dtype", dtype}, {"shape", c.sizes().vec()}};
  }
  nlohmann::json& manifest() { return manifest_; }
  void finish() {
    std::ofstream out(dir_ / "manifest.json");
    out << manifest_.dump(1) << '\n';
    if (!out) throw std::runtime_error("writing the manifest failed");
  }

 private:
  std::filesystem::path dir_;
  nlohmann::json manifest_;
};

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"sasrec_model_dump: one training step of a small SASRec, written for the reference tests"};
  std::string out, norm = "pre";
  int hidden = 8, heads = 2, blocks = 2, maxlen = 6, items = 30, batch = 5;
  bool padded = false;
  uint64_t seed = 1;
  app.add_option("out", out, "output folder")->required();
  app.add_option("--norm", norm, "pre | post | paper")->check(CLI::IsMember({"pre", "post", "paper"}));
  app.add_option("--hidden", hidden);
  app.add_option("--heads", heads);
  app.add_option("--blocks", blocks);
  app.add_option("--maxlen", maxlen);
  app.add_option("--items", items);
  app.add_option("--batch", batch);
  app.add_flag("--padded", padded, "rows of different lengths (left padding); else every row is maxlen long");
  app.add_option("--seed", seed);
  CLI11_PARSE(app, argc, argv);
  try {
    torch::set_num_threads(1);
    torch::manual_seed(static_cast<int64_t>(seed));
    SASRecOptions o;
    o.num_items = items;
    o.hidden = hidden;
    o.heads = heads;
    o.blocks = blocks;
    o.maxlen = maxlen;
    o.dropout = 0;  // the references are compared without dropout
    o.norm = norm == "pre" ? Norm::Pre : norm == "post" ? Norm::Post : Norm::Paper;
    SASRec model(o);
    {
      // LayerNorms start at weight 1, bias 0, which would hide one LayerNorm
      // standing in for another: every vector parameter gets its own values.
      torch::NoGradGuard no_grad;
      for (auto& p : model->named_parameters())
        if (p.value().dim() == 1) p.value().add_(torch::randn_like(p.value()) * 0.2);
    }
    model->train();

    // The batch: [B,T], T = maxlen; targets are the next items, negatives any item.
    Rng rng(mix_seed({seed, 0xdu}));
    auto seq = torch::zeros({batch, maxlen}, torch::kInt64), pos = torch::zeros_like(seq), neg = torch::zeros_like(seq);
    for (int64_t b = 0; b < batch; ++b) {
      const int64_t len = padded ? std::max<int64_t>(1, maxlen - b) : maxlen;
      for (int64_t t = maxlen - len; t < maxlen; ++t) {
        seq[b][t] = rng.between(1, items);
        pos[b][t] = rng.between(1, items);
        neg[b][t] = rng.between(1, items);
      }
    }

    Dump dump(out);
    for (const auto& p : model->named_parameters()) dump.add("param/" + p.key(), p.value());
    dump.add("seq", seq);
    dump.add("pos", pos);
    dump.add("neg", neg);

    // The trainer's forward and loss (trainer.cpp, train_step), on the full item table.
    const Packing packing = pack_sequences(seq, maxlen);
    auto features = model->forward_packed(packing);  // [N,D]
    auto pos_p = pos.view(-1).index_select(0, packing.index), neg_p = neg.view(-1).index_select(0, packing.index);
    auto sum = loss_sum_rows(LossKind::Bce, features, model->item_weight(), pos_p, neg_p, {});
    const int64_t targets = packing.items.size(0);
    auto loss = sum / static_cast<double>(targets);
    loss.backward();
    auto scatter = [&](const torch::Tensor& rows) {  // [N,...] -> [B*T,...] with 0 at padding
      auto shape = rows.sizes().vec();
      shape[0] = batch * maxlen;
      return torch::zeros(shape, rows.options()).index_copy(0, packing.index, rows.detach());
    };
    const auto& w = model->item_weight();
    dump.add("features", scatter(features).view({batch, maxlen, hidden}));
    dump.add("pos_logits", scatter((features * w.index_select(0, pos_p)).sum(-1)).view({batch, maxlen}));
    dump.add("neg_logits", scatter((features * w.index_select(0, neg_p)).sum(-1)).view({batch, maxlen}));
    for (const auto& p : model->named_parameters())  // an unused parameter has no gradient: written as 0
      dump.add("grad/" + p.key(), p.value().grad().defined() ? p.value().grad() : torch::zeros_like(p.value()));

    // The trainer's optimizer step: Adam(lr 1e-3, betas 0.9 / 0.98), M[0] re-zeroed.
    TrainConfig train;
    train.lr = 1e-3;
    auto optimizer = make_optimizer(model, train);
    optimizer->step();
    model->zero_padding();
    for (const auto& p : model->named_parameters()) dump.add("after/" + p.key(), p.value());

    dump.manifest()["config"] = {{"norm", norm},     {"hidden", hidden},     {"heads", heads},      {"blocks", blocks},
                                 {"maxlen", maxlen}, {"items", items},       {"batch", batch},      {"padded", padded},
                                 {"lr", train.lr},   {"beta1", train.beta1}, {"beta2", train.beta2}};
    dump.manifest()["loss"] = loss.item<double>();
    dump.manifest()["targets"] = targets;
    dump.finish();
  } catch (const std::exception& e) {
    std::cerr << "sasrec_model_dump: " << e.what() << std::endl;
    return 1;
  }
  return 0;
}
