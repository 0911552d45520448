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
#include <map>
#include <sstream>
#include <utility>

#include "sasrec/csv_import.h"
#include "sasrec/error.h"
#include "sasrec/torch_compat.h"
#include "sasrec/fnv.h"

namespace sasrec {
namespace {

// "FILE:LINE" for a node, or "FILE" where yaml-cpp has no mark.
std::string where(const std::string& source, const YAML::Node& node) {
  const YAML::Mark m = node.Mark();
  if (m.line >= 0 && !m.is_null()) return detail::cat(source, ":", m.line + 1);
  return source;
}

struct Ctx {
  const std::string& origin;  // "FILE:LINE" or "--set 'key=value'": where the value was written
  const std::string& key;     // full path, "train.lr"
  const YAML::Node& node;
  [[noreturn]] void fail(const std::string& expected) const {
    std::string got = node.IsScalar() ? "'" + node.Scalar() + "'" : node.IsSequence() ? "a list" : "a map";
    SASREC_FAIL(Config, origin, ": key '", key, "' must be ", expected, ", got ", got,
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
// A choice's one name table, read by parsing and by its *_name() function.
template <typename E>
using Names = std::pair<E, const char*>;
constexpr Names<SplitKind> kSplitNames[] = {{SplitKind::LeaveOneOut, "leave_one_out"}, {SplitKind::Time, "time"}};
constexpr Names<EvalTargets> kEvalTargetNames[] = {{EvalTargets::All, "all"}, {EvalTargets::First, "first"}};
constexpr Names<SampledExclude> kSampledExcludeNames[] = {{SampledExclude::Sequence, "sequence"},
                                                          {SampledExclude::Train, "train"}};
constexpr Names<AttentionKernel> kAttentionNames[] = {{AttentionKernel::Auto, "auto"}, {AttentionKernel::Fused, "fused"},
                                                      {AttentionKernel::Sdpa, "sdpa"}, {AttentionKernel::Tensor, "tensor"}};
constexpr Names<Precision> kPrecisionNames[] = {{Precision::Fp32, "fp32"}, {Precision::Bf16, "bf16"}};
constexpr Names<LrSchedule> kLrScheduleNames[] = {{LrSchedule::Constant, "constant"}, {LrSchedule::Cosine, "cosine"},
                                                   {LrSchedule::Linear, "linear"}};
constexpr Names<Scorer> kScorerNames[] = {{Scorer::Auto, "auto"}, {Scorer::Blocked, "blocked"}, {Scorer::Tensor, "tensor"}};

template <typename E, size_t N>
E parse_choice(const Ctx& c, const Names<E> (&names)[N]) {
  std::string expected = "one of ";
  for (size_t i = 0; i < N; ++i) expected += std::string(i ? ", " : "") + names[i].second;
  const std::string s = c.scalar(expected);
  for (const auto& [value, name] : names)
    if (s == name) return value;
  c.fail(expected);
}
template <typename E, size_t N>
const char* choice_name(E value, const Names<E> (&names)[N]) {
  for (const auto& [v, name] : names)
    if (v == value) return name;
  return "?";
}

template <>
SplitKind parse_value<SplitKind>(const Ctx& c) { return parse_choice(c, kSplitNames); }
template <>
EvalTargets parse_value<EvalTargets>(const Ctx& c) { return parse_choice(c, kEvalTargetNames); }
template <>
SampledExclude parse_value<SampledExclude>(const Ctx& c) { return parse_choice(c, kSampledExcludeNames); }
template <>
AttentionKernel parse_value<AttentionKernel>(const Ctx& c) { return parse_choice(c, kAttentionNames); }
template <>
Precision parse_value<Precision>(const Ctx& c) { return parse_choice(c, kPrecisionNames); }
template <>
Scorer parse_value<Scorer>(const Ctx& c) { return parse_choice(c, kScorerNames); }
template <>
LrSchedule parse_value<LrSchedule>(const Ctx& c) { return parse_choice(c, kLrScheduleNames); }
template <>
TimeCutoff parse_value<TimeCutoff>(const Ctx& c) {
  if (c.node.IsNull()) return {};
  const std::string s = c.scalar("a timestamp (1388534400, 2014-01-01) or a quantile (q0.8)");
  try {
    return parse_time_cutoff(s, c.key);
  } catch (const Error& e) {  // the reason, at the config line
    SASREC_FAIL(Config, c.origin, ": ", e.what(), "; fix it in the config or with --set ", c.key, "=VALUE");
  }
}
template <typename T>
std::vector<T> parse_list(const Ctx& c, const char* expected) {
  if (!c.node.IsSequence()) c.fail(expected);
  std::vector<T> out;
  for (const auto& item : c.node) out.push_back(parse_value<T>(Ctx{c.origin, c.key, item}));
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
YAML::Node to_node(AttentionKernel v) { return YAML::Node(std::string(attention_name(v))); }
YAML::Node to_node(Precision v) { return YAML::Node(std::string(precision_name(v))); }
YAML::Node to_node(Scorer v) { return YAML::Node(std::string(scorer_name(v))); }
YAML::Node to_node(SplitKind v) { return YAML::Node(std::string(split_name(v))); }
YAML::Node to_node(EvalTargets v) { return YAML::Node(std::string(eval_targets_name(v))); }
YAML::Node to_node(SampledExclude v) { return YAML::Node(std::string(sampled_exclude_name(v))); }
YAML::Node to_node(const TimeCutoff& v) { return YAML::Node(v.text); }
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
      field("data", "split", &Config::data, &DataConfig::split),
      field("data", "valid_from", &Config::data, &DataConfig::valid_from),
      field("data", "test_from", &Config::data, &DataConfig::test_from),
      field("data", "eval_targets", &Config::data, &DataConfig::eval_targets),
      field("data", "refit", &Config::data, &DataConfig::refit),
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
      field("eval", "scorer", &Config::eval, &EvalConfig::scorer),
      field("eval", "sampled_exclude", &Config::eval, &EvalConfig::sampled_exclude),
      field("checkpoint", "dir", &Config::checkpoint, &CheckpointConfig::dir),
      field("checkpoint", "every", &Config::checkpoint, &CheckpointConfig::every),
      field("checkpoint", "keep", &Config::checkpoint, &CheckpointConfig::keep),
      field("checkpoint", "resume", &Config::checkpoint, &CheckpointConfig::resume),
      field("checkpoint", "overwrite", &Config::checkpoint, &CheckpointConfig::overwrite),
      field("runtime", "device", &Config::runtime, &RuntimeConfig::device),
      field("runtime", "comm", &Config::runtime, &RuntimeConfig::comm),
      field("runtime", "check_replicas", &Config::runtime, &RuntimeConfig::check_replicas),
      field("runtime", "memory_mb", &Config::runtime, &RuntimeConfig::memory_mb),
      field("runtime", "attention", &Config::runtime, &RuntimeConfig::attention),
      field("runtime", "precision", &Config::runtime, &RuntimeConfig::precision),
      field("runtime", "pin_memory", &Config::runtime, &RuntimeConfig::pin_memory),
      field("runtime", "cuda_graphs", &Config::runtime, &RuntimeConfig::cuda_graphs),
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

// Applies one --set to the parsed YAML; returns the full key it set.
std::string apply_override(YAML::Node& root, const std::string& source, const std::string& assignment) {
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
  const YAML::Node existing = root[section];
  if (existing && !existing.IsNull() && !existing.IsMap())
    SASREC_FAIL(Config, "--set '", assignment, "': section '", section, "' at ", where(source, existing),
                " is not a map of keys but ", existing.IsScalar() ? "'" + existing.Scalar() + "'" : "a list",
                "; write it as '", section, ":' followed by indented 'key: value' lines, or remove it");
  if (!existing || existing.IsNull()) root[section] = YAML::Node(YAML::NodeType::Map);
  root[section][key] = v;
  return section + "." + key;
}

Config parse_config_yaml(const std::string& yaml_text, const std::string& source,
                         const std::vector<std::string>& overrides) {
  YAML::Node root;
  try {
    root = YAML::Load(yaml_text);
  } catch (const YAML::ParserException& e) {
    SASREC_FAIL(Config, source, ":", e.mark.line + 1, ": not valid YAML: ", e.msg);
  }
  if (root.IsNull()) root = YAML::Node(YAML::NodeType::Map);
  if (!root.IsMap()) SASREC_FAIL(Config, source, ": the top level must be a map of sections (data, model, train, ...)");
  std::map<std::string, std::string> overridden;  // key -> "--set 'key=value'"
  for (const auto& o : overrides) overridden[apply_override(root, source, o)] = "--set '" + o + "'";

  std::vector<std::string> sections, keys;
  for (const auto& f : fields()) {
    if (std::find(sections.begin(), sections.end(), f.section) == sections.end()) sections.push_back(f.section);
    keys.push_back(f.section + "." + f.key);
  }

  Config config;
  config.source = source;
  for (const auto& sec : root) {
    const std::string section = sec.first.as<std::string>();
    if (std::find(sections.begin(), sections.end(), section) == sections.end())
      SASREC_FAIL(Config, where(source, sec.first), ": unknown section '", section, "'",
                  did_you_mean(section, sections), " (sections: data, model, train, eval, checkpoint, runtime, output)");
    if (sec.second.IsNull()) continue;
    if (!sec.second.IsMap())
      SASREC_FAIL(Config, where(source, sec.second), ": section '", section, "' must be a map of keys");
    for (const auto& kv : sec.second) {
      const std::string full = section + "." + kv.first.as<std::string>();
      auto set = overridden.find(full);
      const std::string origin = set != overridden.end() ? set->second : where(source, kv.first);
      auto it = std::find_if(fields().begin(), fields().end(),
                             [&](const Field& f) { return f.section + "." + f.key == full; });
      if (it == fields().end())
        SASREC_FAIL(Config, origin, ": unknown key '", full, "'", did_you_mean(full, keys),
                    "; every key and its default is in configs/default.yaml");
      it->set(config, Ctx{origin, full, kv.second});
      config.origins[full] = origin;
    }
  }
  return config;
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

const char* attention_name(AttentionKernel a) { return choice_name(a, kAttentionNames); }
const char* precision_name(Precision p) { return choice_name(p, kPrecisionNames); }
const char* scorer_name(Scorer s) { return choice_name(s, kScorerNames); }
const char* lr_schedule_name(LrSchedule s) { return choice_name(s, kLrScheduleNames); }
const char* split_name(SplitKind s) { return choice_name(s, kSplitNames); }
const char* eval_targets_name(EvalTargets t) { return choice_name(t, kEvalTargetNames); }
const char* sampled_exclude_name(SampledExclude e) { return choice_name(e, kSampledExcludeNames); }

TimeCutoff parse_time_cutoff(const std::string& text, const std::string& key) {
  TimeCutoff c;
  c.text = text;
  if (text.empty()) return c;
  const auto bad = [&](const std::string& why) {
    SASREC_FAIL(Config, "config key '", key, "' is '", text, "': ", why);
  };
  if (text[0] == 'q') {
    char* end = nullptr;
    errno = 0;
    const double q = std::strtod(text.c_str() + 1, &end);
    if (text.size() == 1 || *end != '\0' || errno == ERANGE || !(q > 0 && q < 1))
      bad("a quantile is q followed by a number strictly between 0 and 1, e.g. q0.8");
    c.kind = TimeCutoff::Kind::Quantile;
    c.quantile = q;
    return c;
  }
  char* end = nullptr;
  const double number = std::strtod(text.c_str(), &end);
  if (*end == '\0' && number > 0 && number < 1)
    bad("a bare number between 0 and 1 would be a timestamp; write the quantile as q" + text);
  if (!parse_time(text.data(), text.data() + text.size(), &c.timestamp))
    bad("expected a timestamp (an integer such as 1388534400, or a UTC date 2014-01-01) or a quantile (q0.8)");
  c.kind = TimeCutoff::Kind::Timestamp;
  return c;
}

Config parse_config(const std::string& yaml_text, const std::string& source,
                    const std::vector<std::string>& overrides) {
  try {
    return parse_config_yaml(yaml_text, source, overrides);
  } catch (const YAML::Exception& e) {  // anything yaml-cpp refuses that the checks above did not catch
    SASREC_FAIL(Config, source, e.mark.is_null() ? std::string() : detail::cat(":", e.mark.line + 1), ": ", e.msg,
                "; fix the config");
  }
}

Config load_config(const std::string& path, const std::vector<std::string>& overrides) {
  std::error_code ec;
  if (std::filesystem::is_directory(path, ec))
    SASREC_FAIL(Config, path, ": is a directory; give the YAML config file (e.g. configs/default.yaml)");
  std::ifstream in(path);
  if (!in) SASREC_FAIL(Config, path, ": cannot read the config file; check the path");
  std::stringstream text;
  text << in.rdbuf();
  return parse_config(text.str(), path, overrides);
}

std::string config_value(const Config& config, const std::string& key) {
  for (const auto& f : fields()) {
    if (f.section + "." + f.key != key) continue;
    const YAML::Node node = f.get(config);
    if (node.IsScalar()) return node.Scalar();
    YAML::Emitter out;
    out << node;
    return out.c_str();
  }
  SASREC_CHECK(false, "no config key ", key);
  return "";
}

uint64_t config_hash(const Config& config) {
  uint64_t h = kFnvBasis;
  for (const auto& f : fields()) {
    if (f.section != "data" && f.section != "model" && f.section != "train") continue;
    const std::string line = f.section + "." + f.key + "=" + config_value(config, f.section + "." + f.key) + "\n";
    h = fnv1a64(line.data(), line.size(), h);
  }
  return h;
}

std::string to_yaml(const Config& config) {
  YAML::Node root(YAML::NodeType::Map);
  for (const auto& f : fields()) root[f.section][f.key] = f.get(config);
  YAML::Emitter out;
  out << root;
  return std::string(out.c_str()) + "\n";
}

std::string Config::where(const std::string& key) const {
  auto it = origins.find(key);
  return it == origins.end() ? std::string() : it->second + ": ";
}

void Config::validate() const {
  auto require = [this](bool ok, const char* key, const std::string& rule) {
    if (!ok) SASREC_FAIL(Config, where(key), "config key '", key, "' ", rule);
  };
  require(!data.path.empty(), "data.path", "is empty: set it to the HDF5 file written by csv2h5");
  require(std::filesystem::exists(data.path), "data.path",
          "names '" + data.path + "', which does not exist: convert your log with csv2h5 first");
  require(!std::filesystem::is_directory(data.path), "data.path",
          "names '" + data.path + "', a directory: give the .h5 file written by csv2h5");
  require(data.sampler_threads >= 1, "data.sampler_threads", "must be >= 1");
  require(data.prefetch >= 1, "data.prefetch", "must be >= 1");
  require(data.length_buckets >= 0, "data.length_buckets", "must be >= 0 (0: off)");
  if (data.split == SplitKind::Time) {
    require(data.test_from.set(), "data.test_from",
            "is not set, and data.split: time needs it: a timestamp (1388534400, 2014-01-01) or a quantile (q0.9)");
    require(data.valid_from.set() || data.refit, "data.valid_from",
            "is not set, and data.split: time needs it unless data.refit is true: a timestamp or a quantile (q0.8)");
    const auto& v = data.valid_from;
    const auto& t = data.test_from;
    if (v.kind == t.kind && v.kind == TimeCutoff::Kind::Quantile)
      require(v.quantile <= t.quantile, "data.valid_from", "(" + v.text + ") must not come after data.test_from (" + t.text + ")");
    if (v.kind == t.kind && v.kind == TimeCutoff::Kind::Timestamp)
      require(v.timestamp <= t.timestamp, "data.valid_from", "(" + v.text + ") must not come after data.test_from (" + t.text + ")");
  } else {
    require(!data.valid_from.set(), "data.valid_from", "is set, but only data.split: time uses it: set data.split: time or remove it");
    require(!data.test_from.set(), "data.test_from", "is set, but only data.split: time uses it: set data.split: time or remove it");
  }
  require(!data.refit || eval.patience == 0, "eval.patience",
          "needs valid figures, which data.refit: true turns off (valid is trained on): set eval.patience: 0");
  require(model.hidden >= 1, "model.hidden", "must be >= 1");
  require(model.blocks >= 1, "model.blocks", "must be >= 1");
  require(model.heads >= 1, "model.heads", "must be >= 1");
  require(model.hidden % model.heads == 0, "model.heads",
          detail::cat("(", model.heads, ") must divide model.hidden (", model.hidden, ")"));
  require(model.maxlen >= 1, "model.maxlen", "must be >= 1");
  require(model.maxlen <= kMaxMaxlen, "model.maxlen",
          detail::cat("(", model.maxlen, ") must be at most ", kMaxMaxlen,
                      ": attention keeps a maxlen x maxlen matrix per sequence and head (16 GiB each at ", kMaxMaxlen,
                      "), and a history longer than maxlen is cut to its newest maxlen items anyway"));
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
  require(!checkpoint.overwrite || checkpoint.resume == "none", "checkpoint.overwrite",
          "is true, which moves the folder's checkpoints aside for a fresh run, but checkpoint.resume is '" +
              checkpoint.resume + "', which continues from them: set one of the two");
  require(!checkpoint.overwrite || !checkpoint.dir.empty(), "checkpoint.overwrite",
          "is true but checkpoint.dir is empty: set checkpoint.dir");
  require(checkpoint.dir.empty() || !std::filesystem::exists(checkpoint.dir) ||
              std::filesystem::is_directory(checkpoint.dir),
          "checkpoint.dir", "names '" + checkpoint.dir + "', which is not a folder: give a folder for the checkpoints");
  require(runtime.device == "auto" || runtime.device == "cpu" || runtime.device == "cuda", "runtime.device",
          "must be auto, cpu or cuda, got '" + runtime.device + "'");
  require(runtime.comm == "auto" || runtime.comm == "mpi" || runtime.comm == "nccl" || runtime.comm == "none",
          "runtime.comm", "must be auto, mpi, nccl or none, got '" + runtime.comm + "'");
  require(runtime.attention != AttentionKernel::Sdpa || compat::kHasSdpa, "runtime.attention",
          detail::cat("is sdpa, but this build's libtorch (", compat::torch_version(),
                      ") has no scaled_dot_product_attention: use auto or tensor, or build against libtorch 2.x "
                      "(bash tools/dev.sh cuda-test)"));
  require(runtime.attention != AttentionKernel::Fused || runtime.device != "cuda", "runtime.attention",
          "is fused, the float32 CPU kernel, but runtime.device is cuda: use auto, sdpa or tensor");
  require(runtime.attention != AttentionKernel::Fused || runtime.precision == Precision::Fp32, "runtime.attention",
          "is fused, a float32 kernel, but runtime.precision is bf16: use auto, sdpa or tensor");
  require(eval.scorer != Scorer::Blocked || runtime.device != "cuda", "eval.scorer",
          "is blocked, the CPU scorer, but runtime.device is cuda: use auto or tensor");
  require(!runtime.cuda_graphs || runtime.device != "cpu", "runtime.cuda_graphs",
          "is true but runtime.device is cpu: CUDA graphs need a CUDA device (set it false on CPU)");
  require(!runtime.cuda_graphs || (train.item_optimizer == "adam" && train.exchange != "sparse"), "runtime.cuda_graphs",
          "is true: a captured step has fixed shapes, so the item table's gradient is dense; it needs "
          "train.item_optimizer: adam and train.exchange: dense or auto (or set runtime.cuda_graphs: false)");
  require(runtime.memory_mb >= 0, "runtime.memory_mb", "must be >= 0 (0: the memory the machine has)");
  require(runtime.check_replicas >= 0, "runtime.check_replicas", "must be >= 0 (0: off)");
  require(output.log_every >= 0, "output.log_every", "must be >= 0");
  require(output.progress == "auto" || output.progress == "live" || output.progress == "lines" ||
              output.progress == "off",
          "output.progress", "must be auto, live, lines or off, got '" + output.progress + "'");
}

}  // namespace sasrec
