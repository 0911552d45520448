// config.cpp: YAML -> Config, overrides, validation and the YAML dump.
//
// One table (kFields) names every key once, binding it to its struct member:
// parsing, unknown-key detection, did-you-mean and to_yaml() all read it.
#include "sasrec/config.h"

#include <yaml-cpp/yaml.h>

#include <algorithm>
#include <cerrno>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <functional>
#include <limits>
#include <sstream>

#include "sasrec/error.h"

namespace sasrec {
namespace {

// "FILE:LINE: " for a node, or "FILE: " where yaml-cpp has no mark.
std::string where(const std::string& source, const YAML::Node& node) {
  const YAML::Mark m = node.Mark();
  if (m.line >= 0 && !m.is_null()) return detail::cat(source, ":", m.line + 1, ": ");
  return source + ": ";
}

struct Ctx {
  const std::string& source;
  const std::string& key;  // full path, "train.lr"
  const YAML::Node& node;
  [[noreturn]] void fail(const std::string& expected) const {
    std::string got = node.IsScalar() ? "'" + node.Scalar() + "'" : node.IsSequence() ? "a list" : "a map";
    SASREC_FAIL(Config, where(source, node), "key '", key, "' must be ", expected, ", got ", got,
                "; fix it in the config or with --set ", key, "=VALUE");
  }
  std::string scalar(const std::string& expected) const {
    if (!node.IsScalar()) fail(expected);
    return node.Scalar();
  }
};

int64_t parse_int(const Ctx& c, const char* expected = "an integer") {
  std::string s = c.scalar(expected);
  errno = 0;
  char* end = nullptr;
  long long v = std::strtoll(s.c_str(), &end, 10);
  if (s.empty() || *end != '\0' || errno == ERANGE) c.fail(expected);
  return v;
}

template <typename T>
T parse_value(const Ctx& c);

template <>
int parse_value<int>(const Ctx& c) {
  int64_t v = parse_int(c);
  if (v < std::numeric_limits<int>::min() || v > std::numeric_limits<int>::max()) c.fail("a 32-bit integer");
  return static_cast<int>(v);
}
template <>
int64_t parse_value<int64_t>(const Ctx& c) { return parse_int(c); }
template <>
uint64_t parse_value<uint64_t>(const Ctx& c) {
  int64_t v = parse_int(c, "a non-negative integer");
  if (v < 0) c.fail("a non-negative integer");
  return static_cast<uint64_t>(v);
}
template <>
double parse_value<double>(const Ctx& c) {
  std::string s = c.scalar("a number");
  char* end = nullptr;
  errno = 0;
  double v = std::strtod(s.c_str(), &end);
  if (s.empty() || *end != '\0' || errno == ERANGE) c.fail("a number");
  return v;
}
template <>
bool parse_value<bool>(const Ctx& c) {
  std::string s = c.scalar("true or false");
  if (s == "true" || s == "True" || s == "yes" || s == "on") return true;
  if (s == "false" || s == "False" || s == "no" || s == "off") return false;
  c.fail("true or false");
}
template <>
std::string parse_value<std::string>(const Ctx& c) {
  if (c.node.IsNull()) return "";
  return c.scalar("a string");
}
template <>
Norm parse_value<Norm>(const Ctx& c) {
  std::string s = c.scalar("one of pre, post, paper");
  if (s == "pre") return Norm::Pre;
  if (s == "post") return Norm::Post;
  if (s == "paper") return Norm::Paper;
  c.fail("one of pre, post, paper");
}
template <>
Activation parse_value<Activation>(const Ctx& c) {
  std::string s = c.scalar("one of relu, gelu");
  if (s == "relu") return Activation::Relu;
  if (s == "gelu") return Activation::Gelu;
  c.fail("one of relu, gelu");
}
template <>
Init parse_value<Init>(const Ctx& c) {
  std::string s = c.scalar("one of xavier, normal");
  if (s == "xavier") return Init::Xavier;
  if (s == "normal") return Init::Normal;
  c.fail("one of xavier, normal");
}
template <>
LossKind parse_value<LossKind>(const Ctx& c) {
  std::string s = c.scalar("one of bce, ce, sampled_softmax, gbce");
  if (s == "bce") return LossKind::Bce;
  if (s == "ce") return LossKind::Ce;
  if (s == "sampled_softmax") return LossKind::SampledSoftmax;
  if (s == "gbce") return LossKind::Gbce;
  c.fail("one of bce, ce, sampled_softmax, gbce");
}
template <>
LrSchedule parse_value<LrSchedule>(const Ctx& c) {
  std::string s = c.scalar("one of constant, cosine, linear");
  if (s == "constant") return LrSchedule::Constant;
  if (s == "cosine") return LrSchedule::Cosine;
  if (s == "linear") return LrSchedule::Linear;
  c.fail("one of constant, cosine, linear");
}
template <typename T>
std::vector<T> parse_list(const Ctx& c, const char* expected) {
  if (!c.node.IsSequence()) c.fail(expected);
  std::vector<T> out;
  for (const auto& item : c.node) out.push_back(parse_value<T>(Ctx{c.source, c.key, item}));
  return out;
}
template <>
std::vector<std::string> parse_value<std::vector<std::string>>(const Ctx& c) {
  return parse_list<std::string>(c, "a list of strings, e.g. [full, sampled]");
}
template <>
std::vector<int> parse_value<std::vector<int>>(const Ctx& c) {
  return parse_list<int>(c, "a list of integers, e.g. [1, 5, 10]");
}

YAML::Node to_node(const std::string& v) { return YAML::Node(v); }
YAML::Node to_node(int v) { return YAML::Node(v); }
YAML::Node to_node(int64_t v) { return YAML::Node(static_cast<long long>(v)); }
YAML::Node to_node(uint64_t v) { return YAML::Node(static_cast<unsigned long long>(v)); }
YAML::Node to_node(double v) { return YAML::Node(v); }
YAML::Node to_node(bool v) { return YAML::Node(v); }
YAML::Node to_node(Norm v) { return YAML::Node(std::string(norm_name(v))); }
YAML::Node to_node(Activation v) { return YAML::Node(std::string(activation_name(v))); }
YAML::Node to_node(Init v) { return YAML::Node(std::string(init_name(v))); }
YAML::Node to_node(LossKind v) { return YAML::Node(std::string(loss_name(v))); }
YAML::Node to_node(LrSchedule v) { return YAML::Node(std::string(lr_schedule_name(v))); }
template <typename T>
YAML::Node to_node(const std::vector<T>& v) {
  YAML::Node n(YAML::NodeType::Sequence);
  for (const auto& x : v) n.push_back(to_node(x));
  n.SetStyle(YAML::EmitterStyle::Flow);
  return n;
}

struct Field {
  std::string section;
  std::string key;
  std::function<void(Config&, const Ctx&)> set;
  std::function<YAML::Node(const Config&)> get;
};

template <typename S, typename T>
Field field(const char* section, const char* key, S Config::*s, T S::*m) {
  return Field{section, key, [s, m](Config& c, const Ctx& ctx) { (c.*s).*m = parse_value<T>(ctx); },
               [s, m](const Config& c) { return to_node((c.*s).*m); }};
}

const std::vector<Field>& fields() {
  static const std::vector<Field> kFields = {
      field("data", "path", &Config::data, &DataConfig::path),
      field("data", "sampler_threads", &Config::data, &DataConfig::sampler_threads),
      field("data", "prefetch", &Config::data, &DataConfig::prefetch),
      field("data", "length_buckets", &Config::data, &DataConfig::length_buckets),
      field("model", "hidden", &Config::model, &ModelConfig::hidden),
      field("model", "blocks", &Config::model, &ModelConfig::blocks),
      field("model", "heads", &Config::model, &ModelConfig::heads),
      field("model", "maxlen", &Config::model, &ModelConfig::maxlen),
      field("model", "dropout", &Config::model, &ModelConfig::dropout),
      field("model", "norm", &Config::model, &ModelConfig::norm),
      field("model", "user_embedding", &Config::model, &ModelConfig::user_embedding),
      field("model", "activation", &Config::model, &ModelConfig::activation),
      field("model", "ffn_hidden", &Config::model, &ModelConfig::ffn_hidden),
      field("model", "attention_output", &Config::model, &ModelConfig::attention_output),
      field("model", "embedding_norm", &Config::model, &ModelConfig::embedding_norm),
      field("model", "init", &Config::model, &ModelConfig::init),
      field("model", "init_std", &Config::model, &ModelConfig::init_std),
      field("train", "epochs", &Config::train, &TrainConfig::epochs),
      field("train", "batch_size", &Config::train, &TrainConfig::batch_size),
      field("train", "lr", &Config::train, &TrainConfig::lr),
      field("train", "beta1", &Config::train, &TrainConfig::beta1),
      field("train", "beta2", &Config::train, &TrainConfig::beta2),
      field("train", "l2_emb", &Config::train, &TrainConfig::l2_emb),
      field("train", "weight_decay", &Config::train, &TrainConfig::weight_decay),
      field("train", "lr_schedule", &Config::train, &TrainConfig::lr_schedule),
      field("train", "warmup_steps", &Config::train, &TrainConfig::warmup_steps),
      field("train", "min_lr", &Config::train, &TrainConfig::min_lr),
      field("train", "loss", &Config::train, &TrainConfig::loss),
      field("train", "negatives", &Config::train, &TrainConfig::negatives),
      field("train", "proposal", &Config::train, &TrainConfig::proposal),
      field("train", "gbce_t", &Config::train, &TrainConfig::gbce_t),
      field("train", "exchange", &Config::train, &TrainConfig::exchange),
      field("train", "item_optimizer", &Config::train, &TrainConfig::item_optimizer),
      field("train", "seed", &Config::train, &TrainConfig::seed),
      field("train", "max_steps", &Config::train, &TrainConfig::max_steps),
      field("train", "threads", &Config::train, &TrainConfig::threads),
      field("train", "on_nonfinite", &Config::train, &TrainConfig::on_nonfinite),
      field("eval", "every", &Config::eval, &EvalConfig::every),
      field("eval", "protocols", &Config::eval, &EvalConfig::protocols),
      field("eval", "ks", &Config::eval, &EvalConfig::ks),
      field("eval", "max_users", &Config::eval, &EvalConfig::max_users),
      field("eval", "sampled_negatives", &Config::eval, &EvalConfig::sampled_negatives),
      field("eval", "batch_users", &Config::eval, &EvalConfig::batch_users),
      field("eval", "memory_mb", &Config::eval, &EvalConfig::memory_mb),
      field("eval", "patience", &Config::eval, &EvalConfig::patience),
      field("checkpoint", "dir", &Config::checkpoint, &CheckpointConfig::dir),
      field("checkpoint", "every", &Config::checkpoint, &CheckpointConfig::every),
      field("checkpoint", "keep", &Config::checkpoint, &CheckpointConfig::keep),
      field("checkpoint", "resume", &Config::checkpoint, &CheckpointConfig::resume),
      field("runtime", "device", &Config::runtime, &RuntimeConfig::device),
      field("runtime", "comm", &Config::runtime, &RuntimeConfig::comm),
      field("runtime", "check_replicas", &Config::runtime, &RuntimeConfig::check_replicas),
      field("runtime", "memory_mb", &Config::runtime, &RuntimeConfig::memory_mb),
      field("output", "metrics", &Config::output, &OutputConfig::metrics),
      field("output", "log_every", &Config::output, &OutputConfig::log_every),
      field("output", "profile", &Config::output, &OutputConfig::profile),
      field("output", "progress", &Config::output, &OutputConfig::progress),
  };
  return kFields;
}

size_t edit_distance(const std::string& a, const std::string& b) {
  std::vector<size_t> prev(b.size() + 1), cur(b.size() + 1);
  for (size_t j = 0; j <= b.size(); ++j) prev[j] = j;
  for (size_t i = 1; i <= a.size(); ++i) {
    cur[0] = i;
    for (size_t j = 1; j <= b.size(); ++j)
      cur[j] = std::min({prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (a[i - 1] == b[j - 1] ? 0 : 1)});
    std::swap(prev, cur);
  }
  return prev[b.size()];
}

// "; did you mean 'train.lr'?" for the closest known key, or "".
std::string did_you_mean(const std::string& unknown, const std::vector<std::string>& known) {
  std::string best;
  size_t best_d = std::numeric_limits<size_t>::max();
  for (const auto& k : known) {
    size_t d = edit_distance(unknown, k);
    if (d < best_d) best_d = d, best = k;
  }
  if (best.empty() || best_d > std::max<size_t>(2, unknown.size() / 3)) return "";
  return "; did you mean '" + best + "'?";
}

void apply_override(YAML::Node& root, const std::string& assignment) {
  auto eq = assignment.find('=');
  auto dot = assignment.find('.');
  if (eq == std::string::npos || dot == std::string::npos || dot > eq || dot == 0 || dot + 1 == eq)
    SASREC_FAIL(Config, "--set '", assignment, "': expected section.key=value, e.g. --set train.epochs=10");
  std::string section = assignment.substr(0, dot);
  std::string key = assignment.substr(dot + 1, eq - dot - 1);
  std::string value = assignment.substr(eq + 1);
  YAML::Node v;
  try {
    v = YAML::Load(value);
  } catch (const YAML::Exception& e) {
    SASREC_FAIL(Config, "--set '", assignment, "': value is not valid YAML: ", e.msg);
  }
  if (!root[section] || root[section].IsNull()) root[section] = YAML::Node(YAML::NodeType::Map);
  root[section][key] = v;
}

}  // namespace

const char* norm_name(Norm n) {
  switch (n) {
    case Norm::Pre: return "pre";
    case Norm::Post: return "post";
    case Norm::Paper: return "paper";
  }
  return "?";
}

const char* activation_name(Activation a) {
  switch (a) {
    case Activation::Relu: return "relu";
    case Activation::Gelu: return "gelu";
  }
  return "?";
}

const char* init_name(Init i) {
  switch (i) {
    case Init::Xavier: return "xavier";
    case Init::Normal: return "normal";
  }
  return "?";
}

const char* loss_name(LossKind l) {
  switch (l) {
    case LossKind::Bce: return "bce";
    case LossKind::Ce: return "ce";
    case LossKind::SampledSoftmax: return "sampled_softmax";
    case LossKind::Gbce: return "gbce";
  }
  return "?";
}

const char* lr_schedule_name(LrSchedule s) {
  switch (s) {
    case LrSchedule::Constant: return "constant";
    case LrSchedule::Cosine: return "cosine";
    case LrSchedule::Linear: return "linear";
  }
  return "?";
}

Config parse_config(const std::string& yaml_text, const std::string& source,
                    const std::vector<std::string>& overrides) {
  YAML::Node root;
  try {
    root = YAML::Load(yaml_text);
  } catch (const YAML::ParserException& e) {
    SASREC_FAIL(Config, source, ":", e.mark.line + 1, ": not valid YAML: ", e.msg);
  }
  if (root.IsNull()) root = YAML::Node(YAML::NodeType::Map);
  if (!root.IsMap()) SASREC_FAIL(Config, source, ": the top level must be a map of sections (data, model, train, ...)");
  for (const auto& o : overrides) apply_override(root, o);

  std::vector<std::string> sections, keys;
  for (const auto& f : fields()) {
    if (std::find(sections.begin(), sections.end(), f.section) == sections.end()) sections.push_back(f.section);
    keys.push_back(f.section + "." + f.key);
  }

  Config config;
  for (const auto& sec : root) {
    const std::string section = sec.first.as<std::string>();
    if (std::find(sections.begin(), sections.end(), section) == sections.end())
      SASREC_FAIL(Config, where(source, sec.first), "unknown section '", section, "'",
                  did_you_mean(section, sections), " (sections: data, model, train, eval, checkpoint, runtime, output)");
    if (sec.second.IsNull()) continue;
    if (!sec.second.IsMap()) SASREC_FAIL(Config, where(source, sec.second), "section '", section, "' must be a map of keys");
    for (const auto& kv : sec.second) {
      const std::string full = section + "." + kv.first.as<std::string>();
      auto it = std::find_if(fields().begin(), fields().end(),
                             [&](const Field& f) { return f.section + "." + f.key == full; });
      if (it == fields().end())
        SASREC_FAIL(Config, where(source, kv.first), "unknown key '", full, "'", did_you_mean(full, keys),
                    "; every key and its default is in configs/default.yaml");
      it->set(config, Ctx{source, full, kv.second});
    }
  }
  return config;
}

Config load_config(const std::string& path, const std::vector<std::string>& overrides) {
  std::ifstream in(path);
  if (!in) SASREC_FAIL(Config, path, ": cannot read the config file; check the path");
  std::stringstream text;
  text << in.rdbuf();
  return parse_config(text.str(), path, overrides);
}

std::string to_yaml(const Config& config) {
  YAML::Node root(YAML::NodeType::Map);
  for (const auto& f : fields()) root[f.section][f.key] = f.get(config);
  YAML::Emitter out;
  out << root;
  return std::string(out.c_str()) + "\n";
}

void Config::validate() const {
  auto require = [](bool ok, const char* key, const std::string& rule) {
    if (!ok) SASREC_FAIL(Config, "config key '", key, "' ", rule);
  };
  require(!data.path.empty(), "data.path", "is empty: set it to the HDF5 file written by csv2h5");
  require(std::filesystem::exists(data.path), "data.path",
          "names '" + data.path + "', which does not exist: convert your log with csv2h5 first");
  require(!std::filesystem::is_directory(data.path), "data.path",
          "names '" + data.path + "', a directory: give the .h5 file written by csv2h5");
  require(data.sampler_threads >= 1, "data.sampler_threads", "must be >= 1");
  require(data.prefetch >= 1, "data.prefetch", "must be >= 1");
  require(data.length_buckets >= 0, "data.length_buckets", "must be >= 0 (0: off)");
  require(model.hidden >= 1, "model.hidden", "must be >= 1");
  require(model.blocks >= 1, "model.blocks", "must be >= 1");
  require(model.heads >= 1, "model.heads", "must be >= 1");
  require(model.hidden % model.heads == 0, "model.heads",
          detail::cat("(", model.heads, ") must divide model.hidden (", model.hidden, ")"));
  require(model.maxlen >= 1, "model.maxlen", "must be >= 1");
  require(model.dropout >= 0 && model.dropout < 1, "model.dropout", "must be in [0, 1)");
  require(eval.patience >= 0, "eval.patience", "must be >= 0 (0: off)");
  require(model.ffn_hidden >= 0, "model.ffn_hidden", "must be >= 0 (0: model.hidden)");
  require(model.init_std > 0, "model.init_std", "must be > 0");
  require(train.epochs >= 1, "train.epochs", "must be >= 1");
  require(train.batch_size >= 1, "train.batch_size", "must be >= 1");
  require(train.lr > 0, "train.lr", "must be > 0");
  require(train.beta1 >= 0 && train.beta1 < 1, "train.beta1", "must be in [0, 1)");
  require(train.beta2 >= 0 && train.beta2 < 1, "train.beta2", "must be in [0, 1)");
  require(train.l2_emb >= 0, "train.l2_emb", "must be >= 0");
  require(train.weight_decay >= 0, "train.weight_decay", "must be >= 0 (0: off)");
  require(train.warmup_steps >= 0, "train.warmup_steps", "must be >= 0 (0: no warm-up)");
  require(train.min_lr >= 0 && train.min_lr <= train.lr, "train.min_lr",
          detail::cat("must be in [0, train.lr = ", train.lr, "]"));
  require(train.negatives >= 1, "train.negatives", "must be >= 1");
  require(train.max_steps >= 0, "train.max_steps", "must be >= 0 (0: no limit)");
  require(train.threads >= 0, "train.threads", "must be >= 0 (0: all cores)");
  require(train.proposal == "uniform" || train.proposal == "popularity", "train.proposal",
          "must be uniform or popularity, got '" + train.proposal + "'");
  require(train.proposal == "uniform" || train.loss == LossKind::SampledSoftmax, "train.proposal",
          "is popularity, which only sampled_softmax uses (gbce's calibration assumes uniform negatives): "
          "set train.loss: sampled_softmax or train.proposal: uniform");
  require(train.gbce_t >= 0 && train.gbce_t <= 1, "train.gbce_t", "must be in [0, 1]");
  require(train.exchange == "auto" || train.exchange == "sparse" || train.exchange == "dense", "train.exchange",
          "must be auto, sparse or dense, got '" + train.exchange + "'");
  require(train.item_optimizer == "adam" || train.item_optimizer == "lazy_adam", "train.item_optimizer",
          "must be adam or lazy_adam, got '" + train.item_optimizer + "'");
  require(train.item_optimizer == "adam" || train.loss != LossKind::Ce, "train.item_optimizer",
          "is lazy_adam, but loss ce touches every item at every step, so there is nothing to skip: "
          "use train.item_optimizer: adam, or a sampled loss (bce, sampled_softmax, gbce)");
  require(train.on_nonfinite == "stop" || train.on_nonfinite == "skip", "train.on_nonfinite",
          "must be stop or skip, got '" + train.on_nonfinite + "'");
  require(eval.every >= 0, "eval.every", "must be >= 0 (0: only after the last epoch)");
  require(!eval.protocols.empty(), "eval.protocols", "is empty: use [full], [sampled] or [full, sampled]");
  for (const auto& p : eval.protocols)
    require(p == "full" || p == "sampled", "eval.protocols", "has '" + p + "': use full and/or sampled");
  require(!eval.ks.empty(), "eval.ks", "is empty: use e.g. [1, 5, 10, 20]");
  for (int k : eval.ks) require(k >= 1, "eval.ks", "must hold cutoffs >= 1");
  require(eval.max_users >= 0, "eval.max_users", "must be >= 0 (0: every eligible user)");
  require(eval.sampled_negatives >= 1, "eval.sampled_negatives", "must be >= 1");
  require(eval.batch_users >= 1, "eval.batch_users", "must be >= 1");
  require(eval.memory_mb >= 1, "eval.memory_mb", "must be >= 1");
  require(checkpoint.every >= 1, "checkpoint.every", "must be >= 1");
  require(checkpoint.keep >= 1, "checkpoint.keep", "must be >= 1");
  require(checkpoint.resume == "none" || checkpoint.resume == "auto" || std::filesystem::exists(checkpoint.resume),
          "checkpoint.resume", "must be none, auto or an existing checkpoint file, got '" + checkpoint.resume + "'");
  require(checkpoint.resume != "auto" || !checkpoint.dir.empty(), "checkpoint.resume",
          "is auto but checkpoint.dir is empty: set checkpoint.dir");
  require(runtime.device == "auto" || runtime.device == "cpu" || runtime.device == "cuda", "runtime.device",
          "must be auto, cpu or cuda, got '" + runtime.device + "'");
  require(runtime.comm == "auto" || runtime.comm == "mpi" || runtime.comm == "nccl" || runtime.comm == "none",
          "runtime.comm", "must be auto, mpi, nccl or none, got '" + runtime.comm + "'");
  require(runtime.memory_mb >= 0, "runtime.memory_mb", "must be >= 0 (0: the memory the machine has)");
  require(runtime.check_replicas >= 0, "runtime.check_replicas", "must be >= 0 (0: off)");
  require(output.log_every >= 0, "output.log_every", "must be >= 0");
  require(output.progress == "auto" || output.progress == "live" || output.progress == "lines" ||
              output.progress == "off",
          "output.progress", "must be auto, live, lines or off, got '" + output.progress + "'");
}

}  // namespace sasrec
