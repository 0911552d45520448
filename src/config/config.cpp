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

// "; did you mean 'x'?" for the closest of `known`, or "".
std::string did_you_mean(const std::string& unknown, const std::vector<std::string>& known);

template <typename T>
T parse_value(const Ctx& c);
template <typename E>
std::enable_if_t<std::is_enum_v<E>, E> parse_choice(const Ctx& c);
// A value of any key's type: a choice through its name table, else parse_value.
template <typename T>
T read_value(const Ctx& c) {
  if constexpr (std::is_enum_v<T>)
    return parse_choice<T>(c);
  else
    return parse_value<T>(c);
}

template <>
int parse_value<int>(const Ctx& c) {
  int64_t v = parse_int(c);
  if (v < std::numeric_limits<int>::min() || v > std::numeric_limits<int>::max()) c.fail("a 32-bit integer");
  return static_cast<int>(v);
}
template <>
int64_t parse_value<int64_t>(const Ctx& c) {
  return parse_int(c);
}
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
// Every choice's one name table: parsing (with did-you-mean), the YAML dump
// and its *_name() function read it. A new choice is an enum in config.h and
// a row here.
template <typename E>
struct Choice;
#define SASREC_CHOICE(E, ...)                                           \
  template <>                                                           \
  struct Choice<E> {                                                    \
    static constexpr std::pair<E, const char*> names[] = {__VA_ARGS__}; \
  };
SASREC_CHOICE(Norm, {Norm::Pre, "pre"}, {Norm::Post, "post"}, {Norm::Paper, "paper"})
SASREC_CHOICE(Activation, {Activation::Relu, "relu"}, {Activation::Gelu, "gelu"})
SASREC_CHOICE(Init, {Init::Xavier, "xavier"}, {Init::Normal, "normal"})
SASREC_CHOICE(LossKind, {LossKind::Bce, "bce"}, {LossKind::Ce, "ce"}, {LossKind::SampledSoftmax, "sampled_softmax"},
              {LossKind::Gbce, "gbce"})
SASREC_CHOICE(SplitKind, {SplitKind::LeaveOneOut, "leave_one_out"}, {SplitKind::Time, "time"})
SASREC_CHOICE(EvalTargets, {EvalTargets::All, "all"}, {EvalTargets::First, "first"})
SASREC_CHOICE(SampledExclude, {SampledExclude::Sequence, "sequence"}, {SampledExclude::Train, "train"})
SASREC_CHOICE(AttentionKernel, {AttentionKernel::Auto, "auto"}, {AttentionKernel::Fused, "fused"},
              {AttentionKernel::Sdpa, "sdpa"}, {AttentionKernel::Tensor, "tensor"})
SASREC_CHOICE(Precision, {Precision::Fp32, "fp32"}, {Precision::Bf16, "bf16"})
SASREC_CHOICE(Kernels, {Kernels::Auto, "auto"}, {Kernels::Fused, "fused"}, {Kernels::Autograd, "autograd"})
SASREC_CHOICE(LrSchedule, {LrSchedule::Constant, "constant"}, {LrSchedule::Cosine, "cosine"},
              {LrSchedule::Linear, "linear"})
SASREC_CHOICE(Scorer, {Scorer::Auto, "auto"}, {Scorer::Blocked, "blocked"}, {Scorer::Tensor, "tensor"})
SASREC_CHOICE(Proposal, {Proposal::Uniform, "uniform"}, {Proposal::Popularity, "popularity"})
SASREC_CHOICE(Exchange, {Exchange::Auto, "auto"}, {Exchange::Sparse, "sparse"}, {Exchange::Dense, "dense"})
SASREC_CHOICE(ItemOptimizer, {ItemOptimizer::Adam, "adam"}, {ItemOptimizer::LazyAdam, "lazy_adam"})
SASREC_CHOICE(ItemTable, {ItemTable::Replicated, "replicated"}, {ItemTable::Sharded, "sharded"})
SASREC_CHOICE(OnNonfinite, {OnNonfinite::Stop, "stop"}, {OnNonfinite::Skip, "skip"})
SASREC_CHOICE(Protocol, {Protocol::Full, "full"}, {Protocol::Sampled, "sampled"})
SASREC_CHOICE(DeviceKind, {DeviceKind::Auto, "auto"}, {DeviceKind::Cpu, "cpu"}, {DeviceKind::Cuda, "cuda"})
SASREC_CHOICE(CommKind, {CommKind::Auto, "auto"}, {CommKind::Mpi, "mpi"}, {CommKind::Nccl, "nccl"},
              {CommKind::None, "none"})
SASREC_CHOICE(ProgressKind, {ProgressKind::Auto, "auto"}, {ProgressKind::Live, "live"}, {ProgressKind::Lines, "lines"},
              {ProgressKind::Off, "off"})
#undef SASREC_CHOICE

template <typename E>
const char* choice_name(E value) {
  for (const auto& [v, name] : Choice<E>::names)
    if (v == value) return name;
  return "?";
}

template <typename E>
std::enable_if_t<std::is_enum_v<E>, E> parse_choice(const Ctx& c) {
  std::string expected = "one of ";
  std::vector<std::string> known;
  for (const auto& [value, name] : Choice<E>::names) {
    expected += std::string(known.empty() ? "" : ", ") + name;
    known.push_back(name);
  }
  const std::string s = c.scalar(expected);
  for (const auto& [value, name] : Choice<E>::names)
    if (s == name) return value;
  c.fail(expected + did_you_mean(s, known));
}

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
  for (const auto& item : c.node) out.push_back(read_value<T>(Ctx{c.origin, c.key, item}));
  return out;
}
template <>
std::vector<Protocol> parse_value<std::vector<Protocol>>(const Ctx& c) {
  return parse_list<Protocol>(c, "a list of protocols, e.g. [full, sampled]");
}
template <>
ResumeFrom parse_value<ResumeFrom>(const Ctx& c) {
  const std::string s = c.scalar("none, auto or a checkpoint file");
  if (s == "none") return {};
  if (s == "auto") return {ResumeFrom::Kind::Auto, ""};
  return {ResumeFrom::Kind::Path, s};
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
YAML::Node to_node(const TimeCutoff& v) { return YAML::Node(v.text); }
YAML::Node to_node(const ResumeFrom& v) { return YAML::Node(resume_name(v)); }
template <typename E, typename = std::enable_if_t<std::is_enum_v<E>>>
YAML::Node to_node(E v) {
  return YAML::Node(std::string(choice_name(v)));
}
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
  return Field{section, key, [s, m](Config& c, const Ctx& ctx) { (c.*s).*m = read_value<T>(ctx); },
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
      field("model", "kernels", &Config::model, &ModelConfig::kernels),
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
      field("train", "item_table", &Config::train, &TrainConfig::item_table),
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
                  did_you_mean(section, sections),
                  " (sections: data, model, train, eval, checkpoint, runtime, output)");
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

const char* norm_name(Norm n) { return choice_name(n); }
const char* activation_name(Activation a) { return choice_name(a); }
const char* init_name(Init i) { return choice_name(i); }
const char* loss_name(LossKind l) { return choice_name(l); }
const char* attention_name(AttentionKernel a) { return choice_name(a); }
const char* precision_name(Precision p) { return choice_name(p); }
const char* kernels_name(Kernels k) { return choice_name(k); }
const char* scorer_name(Scorer s) { return choice_name(s); }
const char* lr_schedule_name(LrSchedule s) { return choice_name(s); }
const char* split_name(SplitKind s) { return choice_name(s); }
const char* eval_targets_name(EvalTargets t) { return choice_name(t); }
const char* sampled_exclude_name(SampledExclude e) { return choice_name(e); }
const char* proposal_name(Proposal p) { return choice_name(p); }
const char* exchange_name(Exchange e) { return choice_name(e); }
const char* item_optimizer_name(ItemOptimizer o) { return choice_name(o); }
const char* item_table_name(ItemTable t) { return choice_name(t); }
const char* on_nonfinite_name(OnNonfinite o) { return choice_name(o); }
const char* protocol_name(Protocol p) { return choice_name(p); }
const char* device_name(DeviceKind d) { return choice_name(d); }
const char* comm_name(CommKind c) { return choice_name(c); }
const char* progress_name(ProgressKind p) { return choice_name(p); }
std::string resume_name(const ResumeFrom& r) {
  return r.kind == ResumeFrom::Kind::None ? "none" : r.kind == ResumeFrom::Kind::Auto ? "auto" : r.path;
}

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

namespace {

// One rule of validate(): Error(Config) naming the key, where it was
// written (FILE:LINE or the --set) and the rule, when `ok` is false.
struct Require {
  const Config& config;
  void operator()(bool ok, const char* key, const std::string& rule) const {
    if (!ok) SASREC_FAIL(Config, config.where(key), "config key '", key, "' ", rule);
  }
};

// validate(): the data section, with its cross-field rules.
void validate_data(const Config& c, const Require& require) {
  require(!c.data.path.empty(), "data.path", "is empty: set it to the HDF5 file written by csv2h5");
  require(std::filesystem::exists(c.data.path), "data.path",
          "names '" + c.data.path + "', which does not exist: convert your log with csv2h5 first");
  require(!std::filesystem::is_directory(c.data.path), "data.path",
          "names '" + c.data.path + "', a directory: give the .h5 file written by csv2h5");
  require(c.data.sampler_threads >= 1, "data.sampler_threads", "must be >= 1");
  require(c.data.prefetch >= 1, "data.prefetch", "must be >= 1");
  require(c.data.length_buckets >= 0, "data.length_buckets", "must be >= 0 (0: off)");
  if (c.data.split == SplitKind::Time) {
    require(c.data.test_from.set(), "data.test_from",
            "is not set, and data.split: time needs it: a timestamp (1388534400, 2014-01-01) or a quantile (q0.9)");
    require(c.data.valid_from.set() || c.data.refit, "data.valid_from",
            "is not set, and data.split: time needs it unless data.refit is true: a timestamp or a quantile (q0.8)");
    const auto& v = c.data.valid_from;
    const auto& t = c.data.test_from;
    if (v.kind == t.kind && v.kind == TimeCutoff::Kind::Quantile)
      require(v.quantile <= t.quantile, "data.valid_from",
              "(" + v.text + ") must not come after data.test_from (" + t.text + ")");
    if (v.kind == t.kind && v.kind == TimeCutoff::Kind::Timestamp)
      require(v.timestamp <= t.timestamp, "data.valid_from",
              "(" + v.text + ") must not come after data.test_from (" + t.text + ")");
  } else {
    require(!c.data.valid_from.set(), "data.valid_from",
            "is set, but only data.split: time uses it: set data.split: time or remove it");
    require(!c.data.test_from.set(), "data.test_from",
            "is set, but only data.split: time uses it: set data.split: time or remove it");
  }
  require(!c.data.refit || c.eval.patience == 0, "eval.patience",
          "needs valid figures, which data.refit: true turns off (valid is trained on): set eval.patience: 0");
}

// validate(): the model section.
void validate_model(const Config& c, const Require& require) {
  require(c.model.hidden >= 1, "model.hidden", "must be >= 1");
  require(c.model.blocks >= 1, "model.blocks", "must be >= 1");
  require(c.model.heads >= 1, "model.heads", "must be >= 1");
  require(c.model.hidden % c.model.heads == 0, "model.heads",
          detail::cat("(", c.model.heads, ") must divide model.hidden (", c.model.hidden, ")"));
  require(c.model.maxlen >= 1, "model.maxlen", "must be >= 1");
  require(c.model.maxlen <= kMaxMaxlen, "model.maxlen",
          detail::cat("(", c.model.maxlen, ") must be at most ", kMaxMaxlen,
                      ": attention keeps a maxlen x maxlen matrix per sequence and head (16 GiB each at ", kMaxMaxlen,
                      "), and a history longer than maxlen is cut to its newest maxlen items anyway"));
  require(c.model.dropout >= 0 && c.model.dropout < 1, "model.dropout", "must be in [0, 1)");
  require(c.eval.patience >= 0, "eval.patience", "must be >= 0 (0: off)");
  require(c.model.ffn_hidden >= 0, "model.ffn_hidden", "must be >= 0 (0: model.hidden)");
  require(c.model.init_std > 0, "model.init_std", "must be > 0");
}

// validate(): the train section.
void validate_train(const Config& c, const Require& require) {
  require(c.train.epochs >= 1, "train.epochs", "must be >= 1");
  require(c.train.batch_size >= 1, "train.batch_size", "must be >= 1");
  require(c.train.lr > 0, "train.lr", "must be > 0");
  require(c.train.beta1 >= 0 && c.train.beta1 < 1, "train.beta1", "must be in [0, 1)");
  require(c.train.beta2 >= 0 && c.train.beta2 < 1, "train.beta2", "must be in [0, 1)");
  require(c.train.l2_emb >= 0, "train.l2_emb", "must be >= 0");
  require(c.train.weight_decay >= 0, "train.weight_decay", "must be >= 0 (0: off)");
  require(c.train.warmup_steps >= 0, "train.warmup_steps", "must be >= 0 (0: no warm-up)");
  require(c.train.min_lr >= 0 && c.train.min_lr <= c.train.lr, "train.min_lr",
          detail::cat("must be in [0, train.lr = ", c.train.lr, "]"));
  require(c.train.negatives >= 1, "train.negatives", "must be >= 1");
  require(c.train.max_steps >= 0, "train.max_steps", "must be >= 0 (0: no limit)");
  require(c.train.threads >= 0, "train.threads", "must be >= 0 (0: all cores)");
  require(c.train.proposal == Proposal::Uniform || c.train.loss == LossKind::SampledSoftmax, "train.proposal",
          "is popularity, which only sampled_softmax uses (gbce's calibration assumes uniform negatives): "
          "set train.loss: sampled_softmax or train.proposal: uniform");
  require(c.train.gbce_t >= 0 && c.train.gbce_t <= 1, "train.gbce_t", "must be in [0, 1]");
  require(c.train.item_optimizer == ItemOptimizer::Adam || c.train.loss != LossKind::Ce, "train.item_optimizer",
          "is lazy_adam, but loss ce touches every item at every step, so there is nothing to skip: "
          "use train.item_optimizer: adam, or a sampled loss (bce, sampled_softmax, gbce)");
  require(c.train.item_table == ItemTable::Replicated || c.train.loss != LossKind::Ce, "train.item_table",
          "is sharded, but loss ce scores every item at every step, which a rank holding one block of the table "
          "cannot do: use a sampled loss (sampled_softmax with train.negatives, gbce or bce), or item_table: "
          "replicated");
  require(c.train.item_table == ItemTable::Replicated || c.train.exchange == Exchange::Auto, "train.exchange",
          detail::cat("is ", exchange_name(c.train.exchange),
                      ", which chooses how a replicated table's gradient crosses ranks; a sharded table "
                      "(train.item_table: sharded) always returns its rows' gradients to their owners: "
                      "leave train.exchange at auto"));
}

// validate(): the eval section.
void validate_eval(const Config& c, const Require& require) {
  require(c.eval.every >= 0, "eval.every", "must be >= 0 (0: only after the last epoch)");
  require(!c.eval.protocols.empty(), "eval.protocols", "is empty: use [full], [sampled] or [full, sampled]");
  require(!c.eval.ks.empty(), "eval.ks", "is empty: use e.g. [1, 5, 10, 20]");
  for (int k : c.eval.ks) require(k >= 1, "eval.ks", "must hold cutoffs >= 1");
  require(c.eval.max_users >= 0, "eval.max_users", "must be >= 0 (0: every eligible user)");
  require(c.eval.sampled_negatives >= 1, "eval.sampled_negatives", "must be >= 1");
  require(c.eval.batch_users >= 1, "eval.batch_users", "must be >= 1");
  require(c.eval.memory_mb >= 1, "eval.memory_mb", "must be >= 1");
}

// validate(): the checkpoint section.
void validate_checkpoint(const Config& c, const Require& require) {
  require(c.checkpoint.every >= 1, "checkpoint.every", "must be >= 1");
  require(c.checkpoint.keep >= 1, "checkpoint.keep", "must be >= 1");
  using Resume = ResumeFrom::Kind;
  require(c.checkpoint.resume.kind != Resume::Path || std::filesystem::exists(c.checkpoint.resume.path),
          "checkpoint.resume",
          "must be none, auto or an existing checkpoint file, got '" + c.checkpoint.resume.path + "'");
  require(c.checkpoint.resume.kind != Resume::Auto || !c.checkpoint.dir.empty(), "checkpoint.resume",
          "is auto but checkpoint.dir is empty: set checkpoint.dir");
  require(!c.checkpoint.overwrite || c.checkpoint.resume.kind == Resume::None, "checkpoint.overwrite",
          "is true, which moves the folder's checkpoints aside for a fresh run, but checkpoint.resume is '" +
              resume_name(c.checkpoint.resume) + "', which continues from them: set one of the two");
  require(!c.checkpoint.overwrite || !c.checkpoint.dir.empty(), "checkpoint.overwrite",
          "is true but checkpoint.dir is empty: set checkpoint.dir");
  require(c.checkpoint.dir.empty() || !std::filesystem::exists(c.checkpoint.dir) ||
              std::filesystem::is_directory(c.checkpoint.dir),
          "checkpoint.dir",
          "names '" + c.checkpoint.dir + "', which is not a folder: give a folder for the checkpoints");
}

// validate(): the runtime and output sections, and the CUDA features against the build and device.
void validate_runtime(const Config& c, const Require& require) {
  require(c.runtime.attention != AttentionKernel::Sdpa || compat::kHasSdpa, "runtime.attention",
          detail::cat("is sdpa, but this build's libtorch (", compat::torch_version(),
                      ") has no scaled_dot_product_attention: use auto or tensor, or build against libtorch 2.x "
                      "(bash tools/dev.sh cuda-test)"));
  require(c.runtime.attention != AttentionKernel::Fused || c.runtime.device != DeviceKind::Cuda, "runtime.attention",
          "is fused, the float32 CPU kernel, but runtime.device is cuda: use auto, sdpa or tensor");
  require(c.runtime.attention != AttentionKernel::Fused || c.runtime.precision == Precision::Fp32, "runtime.attention",
          "is fused, a float32 kernel, but runtime.precision is bf16: use auto, sdpa or tensor");
  // model.kernels fused: the explicit CPU float32 step (fused_model.h); where runtime.device auto
  // resolves to CUDA, the trainer refuses it too.
  require(c.model.kernels != Kernels::Fused || c.runtime.device != DeviceKind::Cuda, "model.kernels",
          "is fused, the CPU float32 step, but runtime.device is cuda: use auto or autograd");
  require(c.model.kernels != Kernels::Fused || c.runtime.precision == Precision::Fp32, "model.kernels",
          "is fused, a float32 step, but runtime.precision is bf16: use auto or autograd");
  require(c.model.kernels != Kernels::Fused || !c.runtime.cuda_graphs, "model.kernels",
          "is fused, but runtime.cuda_graphs captures the autograd step: use auto or autograd");
  require(c.model.kernels != Kernels::Fused || c.runtime.attention == AttentionKernel::Auto ||
              c.runtime.attention == AttentionKernel::Fused,
          "model.kernels",
          detail::cat("is fused, which computes attention with its own packed kernel, but runtime.attention is ",
                      attention_name(c.runtime.attention), ": use runtime.attention auto, or model.kernels autograd"));
  require(c.eval.scorer != Scorer::Blocked || c.runtime.device != DeviceKind::Cuda, "eval.scorer",
          "is blocked, the CPU scorer, but runtime.device is cuda: use auto or tensor");
  require(!c.runtime.cuda_graphs || c.runtime.device != DeviceKind::Cpu, "runtime.cuda_graphs",
          "is true but runtime.device is cpu: CUDA graphs need a CUDA device (set it false on CPU)");
  require(
      !c.runtime.cuda_graphs || (c.train.item_optimizer == ItemOptimizer::Adam && c.train.exchange != Exchange::Sparse),
      "runtime.cuda_graphs",
      "is true: a captured step has fixed shapes, so the item table's gradient is dense; it needs "
      "train.item_optimizer: adam and train.exchange: dense or auto (or set runtime.cuda_graphs: false)");
  require(!c.runtime.cuda_graphs || c.train.item_table == ItemTable::Replicated, "runtime.cuda_graphs",
          "is true, but a captured step has fixed shapes and a sharded item table (train.item_table: sharded) "
          "fetches a different number of rows each step: set runtime.cuda_graphs: false");
  require(c.runtime.memory_mb >= 0, "runtime.memory_mb", "must be >= 0 (0: the memory the machine has)");
  require(c.runtime.check_replicas >= 0, "runtime.check_replicas", "must be >= 0 (0: off)");
  require(c.output.log_every >= 0, "output.log_every", "must be >= 0");
}

}  // namespace

void Config::validate() const {
  const Require require{*this};
  validate_data(*this, require);
  validate_model(*this, require);
  validate_train(*this, require);
  validate_eval(*this, require);
  validate_checkpoint(*this, require);
  validate_runtime(*this, require);
}

}  // namespace sasrec
