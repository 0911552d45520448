// test_config.cpp: parsing, defaults, overrides and the errors a user sees.
#include <gtest/gtest.h>

#include "sasrec/config.h"
#include "sasrec/error.h"
#include "sasrec/torch_compat.h"
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
  EXPECT_NE(error_of([] { parse_config("model:\n  init: kaiming\n", "r"); }).find("xavier, normal"), std::string::npos);
  EXPECT_NE(error_of([] { parse_config("train: [1]\n", "r"); }).find("section 'train'"), std::string::npos);
  EXPECT_NE(error_of([] { parse_config("", "r", {"train.epochs"}); }).find("section.key=value"), std::string::npos);
}

TEST(Config, ValidateRefusesImpossibleValues) {
  test::TempDir dir;
  const std::string data = dir.file("d.h5");
  test::write_text(data, "x");
  // A value is refused by the parse (a choice outside its names) or by
  // validate(); either way the message names the key.
  auto check = [&](const std::string& set, const std::string& key) {
    auto msg = error_of([&] { parse_config("", "r", {"data.path=" + data, set}).validate(); });
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

TEST(Config, CudaFeatureKeysAgainstDeviceAndBuild) {
  test::TempDir dir;
  const std::string data = dir.file("d.h5");
  test::write_text(data, "x");
  auto error = [&](std::vector<std::string> sets) {
    sets.push_back("data.path=" + data);
    return error_of([&] { parse_config("", "r", sets).validate(); });
  };
  auto refused = [&](std::vector<std::string> sets, const std::string& key, const std::string& why) {
    const std::string msg = error(sets);
    EXPECT_NE(msg.find(key), std::string::npos) << msg;
    EXPECT_NE(msg.find(why), std::string::npos) << msg;
  };
  // SDPA exists from libtorch 2.0: accepted in the CUDA build, refused (saying so) in Debian's 1.13 one.
  if (compat::kHasSdpa)
    EXPECT_EQ(error({"runtime.attention=sdpa"}), "");
  else
    refused({"runtime.attention=sdpa"}, "runtime.attention", "no scaled_dot_product_attention");
  refused({"runtime.attention=fused", "runtime.device=cuda"}, "runtime.attention", "CPU kernel");
  refused({"runtime.attention=fused", "runtime.precision=bf16"}, "runtime.attention", "float32");
  refused({"runtime.precision=fp16"}, "runtime.precision", "one of fp32, bf16");
  refused({"runtime.attention=flash"}, "runtime.attention", "one of auto, fused, sdpa, tensor");
  refused({"runtime.cuda_graphs=true", "runtime.device=cpu"}, "runtime.cuda_graphs", "CUDA device");
  refused({"runtime.cuda_graphs=true", "train.item_optimizer=lazy_adam"}, "runtime.cuda_graphs", "adam");
  refused({"runtime.cuda_graphs=true", "train.exchange=sparse"}, "runtime.cuda_graphs", "dense");
  refused({"eval.scorer=blocked", "runtime.device=cuda"}, "eval.scorer", "CPU scorer");
  refused({"eval.scorer=gpu"}, "eval.scorer", "one of auto, blocked, tensor");
  EXPECT_EQ(error({"runtime.precision=bf16", "eval.scorer=tensor", "runtime.attention=tensor"}), "");
}

TEST(Config, TimeSplitCutoffs) {
  test::TempDir dir;
  const std::string data = dir.file("d.h5");
  test::write_text(data, "x");
  Config c = parse_config("data:\n  split: time\n  valid_from: q0.8\n  test_from: 2014-01-01\n", "r",
                          {"data.path=" + data, "data.eval_targets=first"});
  EXPECT_EQ(c.data.split, SplitKind::Time);
  EXPECT_EQ(c.data.valid_from.kind, TimeCutoff::Kind::Quantile);
  EXPECT_DOUBLE_EQ(c.data.valid_from.quantile, 0.8);
  EXPECT_EQ(c.data.test_from.kind, TimeCutoff::Kind::Timestamp);
  EXPECT_EQ(c.data.test_from.timestamp, 1388534400);  // 2014-01-01 UTC in unix seconds
  EXPECT_EQ(c.data.eval_targets, EvalTargets::First);
  EXPECT_NO_THROW(c.validate());
  // The dump keeps the cutoffs as written and reads back the same.
  EXPECT_EQ(to_yaml(parse_config(to_yaml(c), "dump")), to_yaml(c));
  EXPECT_EQ(parse_config("", "r", {"data.test_from=1388534400"}).data.test_from.timestamp, 1388534400);

  // A bare 0.8 would be the timestamp 1: refused, naming the quantile syntax and the line.
  auto msg = error_of([] { parse_config("data:\n  split: time\n  valid_from: 0.8\n", "r.yaml"); });
  EXPECT_NE(msg.find("r.yaml:3"), std::string::npos) << msg;
  EXPECT_NE(msg.find("q0.8"), std::string::npos) << msg;
  EXPECT_NE(error_of([] { parse_config("", "r", {"data.valid_from=q1.5"}); }).find("between 0 and 1"),
            std::string::npos);
  EXPECT_NE(error_of([] { parse_config("", "r", {"data.test_from=yesterday"}); }).find("data.test_from"),
            std::string::npos);
  EXPECT_NE(error_of([] { parse_config("", "r", {"data.split=random"}); }).find("leave_one_out, time"),
            std::string::npos);
  EXPECT_NE(error_of([] { parse_config("", "r", {"eval.sampled_exclude=all"}); }).find("sequence, train"),
            std::string::npos);

  auto check = [&](const std::vector<std::string>& sets, const std::string& key) {
    std::vector<std::string> all{"data.path=" + data};
    all.insert(all.end(), sets.begin(), sets.end());
    Config bad = parse_config("", "r", all);
    auto m = error_of([&] { bad.validate(); });
    EXPECT_NE(m.find(key), std::string::npos) << m;
  };
  check({"data.split=time", "data.valid_from=q0.8"}, "data.test_from");
  check({"data.split=time", "data.test_from=q0.9"}, "data.valid_from");
  check({"data.split=time", "data.valid_from=q0.9", "data.test_from=q0.8"}, "data.valid_from");
  check({"data.split=time", "data.valid_from=300", "data.test_from=200"}, "data.valid_from");
  check({"data.valid_from=q0.8"}, "data.valid_from");  // leave_one_out has no cutoffs
  check({"data.refit=true", "eval.patience=3"}, "eval.patience");
  Config refit =
      parse_config("", "r", {"data.path=" + data, "data.split=time", "data.test_from=q0.9", "data.refit=true"});
  EXPECT_NO_THROW(refit.validate());  // refit needs no valid period
}

TEST(Config, SetErrorsAreAttributedToTheSetNotToTheFile) {
  const std::string msg = error_of([] { parse_config("train:\n  epochs: 3\n", "run.yaml", {"train.epochs=abc"}); });
  EXPECT_EQ(msg.rfind("--set 'train.epochs=abc': key 'train.epochs' must be an integer", 0), 0u) << msg;
  EXPECT_EQ(msg.find("run.yaml"), std::string::npos) << msg;
  const std::string unknown = error_of([] { parse_config("", "run.yaml", {"train.epoch=3"}); });
  EXPECT_EQ(unknown.rfind("--set 'train.epoch=3': unknown key 'train.epoch'", 0), 0u) << unknown;
}

TEST(Config, SetIntoASectionThatIsNoMapIsAConfigError) {
  // yaml-cpp itself would throw its own exception (exit 1, its message).
  try {
    parse_config("model:\n  hidden: 8\ndata: oops\n", "run.yaml", {"data.path=/x.h5"});
    FAIL() << "accepted";
  } catch (const Error& e) {
    EXPECT_EQ(e.domain(), ErrorDomain::Config);
    EXPECT_NE(std::string(e.what()).find("--set 'data.path=/x.h5': section 'data' at run.yaml:3 is not a map of keys "
                                         "but 'oops'"),
              std::string::npos)
        << e.what();
  }
}

TEST(Config, ValueErrorsNameTheLineTheValueIsOn) {
  test::TempDir dir;
  const std::string data = dir.file("d.h5");
  test::write_text(data, "x");
  Config c = parse_config("data:\n  path: " + data + "\nmodel:\n  hidden: 50\n  heads: 3\n", "run.yaml");
  EXPECT_EQ(error_of([&] { c.validate(); }).rfind("run.yaml:5: config key 'model.heads' (3) must divide", 0), 0u)
      << error_of([&] { c.validate(); });
  Config s = parse_config("data:\n  path: " + data + "\n", "run.yaml", {"train.lr=-1"});
  EXPECT_EQ(error_of([&] { s.validate(); }).rfind("--set 'train.lr=-1': config key 'train.lr' must be > 0", 0), 0u)
      << error_of([&] { s.validate(); });
  EXPECT_EQ(s.where("train.batch_size"), "") << "a default was written nowhere";
}

TEST(Config, ADirectoryAsTheConfigIsRefused) {
  test::TempDir dir;
  const std::string msg = error_of([&] { load_config(dir.path().string()); });
  EXPECT_NE(msg.find(dir.path().string() + ": is a directory; give the YAML config file"), std::string::npos) << msg;
}

TEST(Config, MaxlenIsBoundedAndOverwriteExcludesResume) {
  test::TempDir dir;
  const std::string data = dir.file("d.h5");
  test::write_text(data, "x");
  Config huge = parse_config("", "r", {"data.path=" + data, "model.maxlen=100000000"});
  EXPECT_NE(error_of([&] { huge.validate(); }).find("config key 'model.maxlen' (100000000) must be at most 65536"),
            std::string::npos);
  Config edge = parse_config("", "r", {"data.path=" + data, "model.maxlen=65536"});
  EXPECT_NO_THROW(edge.validate());
  Config both = parse_config(
      "", "r",
      {"data.path=" + data, "checkpoint.dir=" + dir.file("c"), "checkpoint.overwrite=true", "checkpoint.resume=auto"});
  EXPECT_NE(error_of([&] { both.validate(); }).find("checkpoint.overwrite"), std::string::npos);
  Config file_dir = parse_config("", "r", {"data.path=" + data, "checkpoint.dir=" + data});
  EXPECT_NE(error_of([&] { file_dir.validate(); }).find("which is not a folder"), std::string::npos);
}

TEST(Config, LearningRateScheduleAndWeightDecayKeys) {
  Config c =
      parse_config("train:\n  lr_schedule: cosine\n  warmup_steps: 100\n  min_lr: 1e-5\n  weight_decay: 0.1\n", "r");
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
  for (const auto& [set, key] :
       std::vector<std::pair<std::string, std::string>>{{"train.weight_decay=-0.1", "train.weight_decay"},
                                                        {"train.warmup_steps=-1", "train.warmup_steps"},
                                                        {"train.min_lr=0.01", "train.min_lr"}}) {
    Config bad = parse_config("", "r", {"data.path=" + data, set});
    const std::string msg = error_of([&] { bad.validate(); });
    EXPECT_NE(msg.find(key), std::string::npos) << set << " -> " << msg;
  }
}
