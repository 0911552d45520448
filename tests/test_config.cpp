// test_config.cpp: parsing, defaults, overrides and the errors a user sees.
#include <gtest/gtest.h>

#include "sasrec/config.h"
#include "sasrec/error.h"
#include "test_util.h"

using namespace sasrec;

namespace {
// The message of the sasrec::Error that `f` throws, or "" when it does not throw.
template <typename F>
std::string error_of(F f) {
  try {
    f();
  } catch (const Error& e) {
    return e.what();
  }
  return "";
}
}  // namespace

TEST(Config, DefaultYamlEqualsStructDefaults) {
  // configs/default.yaml writes out every default: it must parse to the same config.
  Config from_file = load_config(std::string(SASREC_SOURCE_DIR) + "/configs/default.yaml");
  EXPECT_EQ(to_yaml(from_file), to_yaml(Config{}));
}

TEST(Config, EveryShippedConfigParses) {
  for (const auto& e : std::filesystem::directory_iterator(std::string(SASREC_SOURCE_DIR) + "/configs"))
    if (e.path().extension() == ".yaml") EXPECT_NO_THROW(load_config(e.path().string())) << e.path();
}

TEST(Config, ValuesAndOverrides) {
  Config c = parse_config("model:\n  hidden: 64\n  norm: paper\ntrain:\n  loss: ce\n  lr: 2e-3\neval:\n  ks: [5, 10]\n",
                          "x.yaml", {"train.epochs=7", "model.hidden=32"});
  EXPECT_EQ(c.model.hidden, 32);
  EXPECT_EQ(c.model.norm, Norm::Paper);
  EXPECT_EQ(c.train.loss, LossKind::Ce);
  EXPECT_DOUBLE_EQ(c.train.lr, 2e-3);
  EXPECT_EQ(c.train.epochs, 7);
  EXPECT_EQ(c.eval.ks, (std::vector<int>{5, 10}));
  EXPECT_EQ(c.train.batch_size, 128);  // untouched default
}

TEST(Config, UnknownKeyNamesItWithDidYouMean) {
  auto msg = error_of([] { parse_config("train:\n  epochs: 3\n  learning_rte: 1\n", "run.yaml"); });
  EXPECT_NE(msg.find("run.yaml:3"), std::string::npos) << msg;
  EXPECT_NE(msg.find("train.learning_rte"), std::string::npos) << msg;
  msg = error_of([] { parse_config("train:\n  epoch: 3\n", "run.yaml"); });
  EXPECT_NE(msg.find("did you mean 'train.epochs'"), std::string::npos) << msg;
  msg = error_of([] { parse_config("trian:\n  epochs: 3\n", "run.yaml"); });
  EXPECT_NE(msg.find("did you mean 'train'"), std::string::npos) << msg;
}

TEST(Config, WrongTypesNameTheKey) {
  auto msg = error_of([] { parse_config("train:\n  batch_size: big\n", "run.yaml"); });
  EXPECT_NE(msg.find("train.batch_size"), std::string::npos) << msg;
  EXPECT_NE(msg.find("integer"), std::string::npos) << msg;
  EXPECT_NE(msg.find("run.yaml:2"), std::string::npos) << msg;
  EXPECT_NE(error_of([] { parse_config("train:\n  epochs: 1.5\n", "r"); }).find("train.epochs"), std::string::npos);
  EXPECT_NE(error_of([] { parse_config("model:\n  norm: layer\n", "r"); }).find("pre, post, paper"), std::string::npos);
  EXPECT_NE(error_of([] { parse_config("eval:\n  ks: 10\n", "r"); }).find("eval.ks"), std::string::npos);
  EXPECT_NE(error_of([] { parse_config("model:\n  activation: swish\n", "r"); }).find("model.activation"),
            std::string::npos);
  EXPECT_NE(error_of([] { parse_config("model:\n  init: kaiming\n", "r"); }).find("xavier, normal"),
            std::string::npos);
  EXPECT_NE(error_of([] { parse_config("train: [1]\n", "r"); }).find("section 'train'"), std::string::npos);
  EXPECT_NE(error_of([] { parse_config("", "r", {"train.epochs"}); }).find("section.key=value"), std::string::npos);
}

TEST(Config, ValidateRefusesImpossibleValues) {
  test::TempDir dir;
  const std::string data = dir.file("d.h5");
  test::write_text(data, "x");
  auto check = [&](const std::string& set, const std::string& key) {
    Config c = parse_config("", "r", {"data.path=" + data, set});
    auto msg = error_of([&] { c.validate(); });
    EXPECT_NE(msg.find(key), std::string::npos) << set << " -> " << msg;
  };
  check("model.heads=3", "model.heads");
  check("model.maxlen=0", "model.maxlen");
  check("train.lr=-1", "train.lr");
  check("train.batch_size=0", "train.batch_size");
  check("eval.ks=[]", "eval.ks");
  check("eval.protocols=[all]", "eval.protocols");
  check("model.dropout=1", "model.dropout");
  check("model.ffn_hidden=-1", "model.ffn_hidden");
  check("model.init_std=0", "model.init_std");
  check("runtime.device=tpu", "runtime.device");
  check("checkpoint.resume=auto", "checkpoint.resume");
  check("output.progress=fancy", "output.progress");
  check("train.on_nonfinite=ignore", "train.on_nonfinite");
  Config missing = parse_config("data:\n  path: /no/such/file.h5\n", "r");
  EXPECT_NE(error_of([&] { missing.validate(); }).find("/no/such/file.h5"), std::string::npos);
  Config folder = parse_config("", "r", {"data.path=" + dir.path().string()});
  EXPECT_NE(error_of([&] { folder.validate(); }).find("a directory"), std::string::npos);
  Config ok = parse_config("", "r", {"data.path=" + data});
  EXPECT_NO_THROW(ok.validate());
}

TEST(Config, PopularityProposalOnlyForSampledSoftmax) {
  test::TempDir dir;
  const std::string data = dir.file("d.h5");
  test::write_text(data, "x");
  Config gbce = parse_config("", "r", {"data.path=" + data, "train.loss=gbce", "train.proposal=popularity"});
  const std::string msg = error_of([&] { gbce.validate(); });
  EXPECT_NE(msg.find("train.proposal"), std::string::npos) << msg;
  EXPECT_NE(msg.find("gbce"), std::string::npos) << msg;
  Config bce = parse_config("", "r", {"data.path=" + data, "train.proposal=popularity"});
  EXPECT_NE(error_of([&] { bce.validate(); }).find("train.proposal"), std::string::npos);
  Config ok = parse_config("", "r", {"data.path=" + data, "train.loss=sampled_softmax", "train.proposal=popularity"});
  EXPECT_NO_THROW(ok.validate());
  Config t = parse_config("", "r", {"data.path=" + data, "train.loss=gbce", "train.gbce_t=1.5"});
  EXPECT_NE(error_of([&] { t.validate(); }).find("train.gbce_t"), std::string::npos);
}

TEST(Config, LearningRateScheduleAndWeightDecayKeys) {
  Config c = parse_config("train:\n  lr_schedule: cosine\n  warmup_steps: 100\n  min_lr: 1e-5\n  weight_decay: 0.1\n", "r");
  EXPECT_EQ(c.train.lr_schedule, LrSchedule::Cosine);
  EXPECT_EQ(c.train.warmup_steps, 100);
  EXPECT_DOUBLE_EQ(c.train.min_lr, 1e-5);
  EXPECT_DOUBLE_EQ(c.train.weight_decay, 0.1);
  EXPECT_NE(to_yaml(c).find("lr_schedule: cosine"), std::string::npos);
  EXPECT_NE(error_of([] { parse_config("train:\n  lr_schedule: step\n", "r"); }).find("constant, cosine, linear"),
            std::string::npos);
  test::TempDir dir;
  const std::string data = dir.file("d.h5");
  test::write_text(data, "x");
  for (const auto& [set, key] : std::vector<std::pair<std::string, std::string>>{
           {"train.weight_decay=-0.1", "train.weight_decay"},
           {"train.warmup_steps=-1", "train.warmup_steps"},
           {"train.min_lr=0.01", "train.min_lr"}}) {
    Config bad = parse_config("", "r", {"data.path=" + data, set});
    const std::string msg = error_of([&] { bad.validate(); });
    EXPECT_NE(msg.find(key), std::string::npos) << set << " -> " << msg;
  }
}
