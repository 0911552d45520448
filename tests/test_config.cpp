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

TEST(Config, SetErrorsAreAttributedToTheSetNotToTheFile) {
  const std::string msg =
      error_of([] { parse_config("train:\n  epochs: 3\n", "run.yaml", {"train.epochs=abc"}); });
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
  Config both = parse_config("", "r", {"data.path=" + data, "checkpoint.dir=" + dir.file("c"),
                                       "checkpoint.overwrite=true", "checkpoint.resume=auto"});
  EXPECT_NE(error_of([&] { both.validate(); }).find("checkpoint.overwrite"), std::string::npos);
  Config file_dir = parse_config("", "r", {"data.path=" + data, "checkpoint.dir=" + data});
  EXPECT_NE(error_of([&] { file_dir.validate(); }).find("which is not a folder"), std::string::npos);
}
