// checkpoint.cpp: checked, atomic checkpoint files and the checkpoint folder.
#include "sasrec/checkpoint.h"

#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <ctime>
#include <random>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <sstream>

#include "sasrec/atomic_file.h"
#include "sasrec/config.h"
#include "sasrec/error.h"
#include "sasrec/store.h"

namespace sasrec {
namespace fs = std::filesystem;
namespace {

constexpr char kMagic[8] = {'S', 'A', 'S', 'R', 'E', 'C', 'C', 'K'};
constexpr uint32_t kVersion = 2;
struct HeaderV1 {
  char magic[8];
  uint32_t version;
  uint32_t reserved;
  uint64_t payload_bytes;
  uint64_t checksum;
};
struct Header : HeaderV1 {
  char run_id[16];
};
static_assert(sizeof(HeaderV1) == 32 && sizeof(Header) == 48, "the headers are 32 (v1) and 48 (v2) bytes on disk");

// The header's 16 run-id bytes as a string, "" for NUL bytes.
std::string id_of(const char* bytes) { return std::string(bytes, strnlen(bytes, 16)); }

uint64_t checksum_of(const char* run_id, const char* payload, size_t n) {
  return fnv1a64(payload, n, fnv1a64(run_id, 16));
}

// The whole file, or throws Input naming it.
std::string read_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) SASREC_FAIL(Input, path, ": cannot open the checkpoint (", std::strerror(errno), "); check the path");
  std::ostringstream out;
  out << in.rdbuf();
  return out.str();
}

// Where the payload of `bytes` starts (0: a plain archive of old), or sets
// `problem`; `run_id` gets the header's (version 2).
size_t payload_offset(const std::string& bytes, std::string& problem, std::string* run_id = nullptr) {
  if (bytes.size() >= 4 && bytes.compare(0, 4, "PK\x03\x04") == 0) return 0;
  HeaderV1 h{};
  if (bytes.size() < sizeof(h) || std::memcmp(bytes.data(), kMagic, sizeof(kMagic)) != 0) {
    problem = "not a sasrec_ddp checkpoint (no SASRECCK header)";
    return 0;
  }
  std::memcpy(&h, bytes.data(), sizeof(h));
  if (h.version != 1 && h.version != kVersion) {
    problem = detail::cat("checkpoint format version ", h.version, ", this build reads versions 1 and ", kVersion);
    return 0;
  }
  const size_t header = h.version == 1 ? sizeof(HeaderV1) : sizeof(Header);
  if (bytes.size() < header || bytes.size() - header != h.payload_bytes) {
    problem = detail::cat("truncated or padded: ", bytes.size() < header ? 0 : bytes.size() - header,
                          " payload bytes, the header says ", h.payload_bytes);
    return header;
  }
  const char* payload = bytes.data() + header;
  const uint64_t sum = h.version == 1 ? fnv1a64(payload, h.payload_bytes)
                                      : checksum_of(bytes.data() + sizeof(HeaderV1), payload, h.payload_bytes);
  if (sum != h.checksum) problem = "checksum mismatch: the file is corrupt";
  if (run_id && h.version != 1) *run_id = id_of(bytes.data() + sizeof(HeaderV1));
  return header;
}

// The model keys that change the function a checkpoint computes.
constexpr const char* kFunctionKeys[] = {
    "model.hidden",         "model.blocks",        "model.heads",      "model.maxlen",
    "model.norm",           "model.activation",    "model.ffn_hidden", "model.attention_output",
    "model.embedding_norm", "model.user_embedding"};

// Refuses a checkpoint trained with another value of a function key.
void check_model_keys(const std::string& path, const std::string& config_yaml, const ModelConfig& mine) {
  if (config_yaml.empty()) return;  // no config recorded: the shapes are all there is to check
  Config stored = parse_config(config_yaml, path + " (the config recorded in the checkpoint)");
  Config here;
  here.model = mine;
  for (Config* c : {&stored, &here})  // 0 means hidden: the same function as writing it out
    if (c->model.ffn_hidden == 0) c->model.ffn_hidden = c->model.hidden;
  std::string differences, fixes;
  for (const char* key : kFunctionKeys) {
    const std::string a = config_value(stored, key), b = config_value(here, key);
    if (a == b) continue;
    differences += detail::cat(differences.empty() ? "" : "; ", key, " is ", a, " in the checkpoint but ", b, " here");
    fixes += detail::cat(" --set ", key, "=", a);
  }
  if (!differences.empty())
    SASREC_FAIL(Input, path, ": ", differences,
                ". The model would compute another function than the one trained; "
                "use the config it was trained with (",
                fixes.substr(1), ") or another checkpoint");
}

// A sharded run's file holds one rank's block of M (train.item_table,
// item_shard.h): it loads only into that block, a replicated one only into a whole table.
void check_item_table(const std::string& path, const TrainState& state, const SASRecOptions& mine) {
  if (state.config_yaml.empty()) return;
  const Config stored = parse_config(state.config_yaml, path + " (the config recorded in the checkpoint)");
  const bool shard = stored.train.item_table == ItemTable::Sharded;
  if (shard && !mine.sharded())
    SASREC_FAIL(Input, path, ": written by a run with train.item_table: sharded on ", state.world_size,
                " ranks, so it holds one rank's block of the item table; load it with item_table: sharded on ",
                state.world_size,
                " ranks, or gather the blocks into one checkpoint first: sasrec_ddp gather --checkpoint ", path,
                " --out ONE.pt (docs/large_catalogs.md)");
  if (!shard && mine.sharded())
    SASREC_FAIL(Input, path,
                ": holds the whole item table (train.item_table: replicated) and this run shards it; resume it "
                "with train.item_table: replicated, or split it into blocks first: sasrec_ddp scatter --checkpoint ",
                path, " --ranks N --out NEW.pt (docs/large_catalogs.md)");
}

}  // namespace

std::string new_run_id() {
  std::random_device rd;
  const uint64_t t = static_cast<uint64_t>(std::chrono::system_clock::now().time_since_epoch().count());
  uint64_t h = fnv1a64(&t, sizeof(t));
  const int64_t pid = ::getpid();
  h = fnv1a64(&pid, sizeof(pid), h);
  const uint64_t r = (static_cast<uint64_t>(rd()) << 32) ^ rd();
  h = fnv1a64(&r, sizeof(r), h);
  char buf[17];
  std::snprintf(buf, sizeof(buf), "%016llx", static_cast<unsigned long long>(h));
  return buf;
}

void save_checkpoint(const std::string& path, SASRec& model, torch::optim::Optimizer* optimizer,
                     const TrainState& state, const MidWriteHook& mid_write) {
  torch::serialize::OutputArchive archive;
  {
    // Flat "blocks.0.attn.q.weight" keys: readable by name, checked by shape on load.
    torch::serialize::OutputArchive m;
    for (const auto& p : model->named_parameters()) m.write(p.key(), p.value());
    archive.write("model", m);
  }
  if (optimizer) {
    torch::serialize::OutputArchive o;
    optimizer->save(o);
    archive.write("optimizer", o);
  }
  archive.write("epoch", torch::tensor(state.epoch, torch::kInt64));
  archive.write("step", torch::tensor(state.step, torch::kInt64));
  archive.write("batch", torch::tensor(state.batch, torch::kInt64));
  archive.write("dropout_calls", torch::tensor(static_cast<int64_t>(state.dropout_calls), torch::kInt64));
  archive.write("config", c10::IValue(state.config_yaml));
  // uint64 values travel as the int64 of the same bits.
  archive.write("config_hash", torch::tensor(static_cast<int64_t>(state.config_hash), torch::kInt64));
  archive.write("world_size", torch::tensor(state.world_size, torch::kInt64));
  archive.write("item_map", torch::tensor(static_cast<int64_t>(state.item_map), torch::kInt64));
  archive.write("data_path", c10::IValue(state.data_path));
  std::ostringstream buffer;
  archive.save_to(buffer);
  const std::string payload = buffer.str();

  Header header{};
  std::memcpy(header.magic, kMagic, sizeof(kMagic));
  header.version = kVersion;
  header.payload_bytes = payload.size();
  std::memset(header.run_id, 0, sizeof(header.run_id));  // no id (tests' hand-made states): NUL bytes
  std::memcpy(header.run_id, state.run_id.data(), std::min(state.run_id.size(), sizeof(header.run_id)));
  header.checksum = checksum_of(header.run_id, payload.data(), payload.size());

  AtomicOutput out(path, "checkpoint", {}, "the previous checkpoint is kept. Free disk space or change checkpoint.dir");
  out.open();
  out.write(&header, sizeof(header));
  const size_t half = payload.size() / 2;
  out.write(payload.data(), half);
  if (mid_write) mid_write(out);  // the tests' faults (train_hooks.h): a killed writer, a full disk
  out.write(payload.data() + half, payload.size() - half);
  out.commit();
}

std::string checkpoint_problem(const std::string& path) {
  std::string bytes, problem;
  try {
    bytes = read_file(path);
  } catch (const Error& e) {
    return e.what();
  }
  payload_offset(bytes, problem);
  return problem;
}

std::string checkpoint_run_id(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  char buf[sizeof(Header)] = {};
  in.read(buf, sizeof(buf));
  const std::string head(buf, static_cast<size_t>(in.gcount()));
  if (head.compare(0, 4, "PK\x03\x04") == 0) return "";
  HeaderV1 h{};
  if (head.size() < sizeof(h) || std::memcmp(head.data(), kMagic, sizeof(kMagic)) != 0)
    SASREC_FAIL(Input, path,
                ": not a sasrec_ddp checkpoint (no SASRECCK header); move it out of the checkpoint folder");
  std::memcpy(&h, head.data(), sizeof(h));
  if (h.version == 1 || head.size() < sizeof(Header)) return "";
  return id_of(head.data() + sizeof(HeaderV1));
}

namespace {

// The checked archive of `path` and the run id in its header.
torch::serialize::InputArchive open_checkpoint(const std::string& path, std::string& run_id) {
  const std::string bytes = read_file(path);
  std::string problem;
  const size_t offset = payload_offset(bytes, problem, &run_id);
  if (!problem.empty())
    SASREC_FAIL(Input, path, ": ", problem, "; point checkpoint.resume at another file (resume: auto skips it)");
  torch::serialize::InputArchive archive;
  try {
    archive.load_from(bytes.data() + offset, bytes.size() - offset);
  } catch (const std::exception& e) {
    SASREC_FAIL(Input, path, ": not a readable checkpoint (", std::string(e.what()).substr(0, 200),
                "); point checkpoint.resume at another file");
  }
  return archive;
}

TrainState read_state(torch::serialize::InputArchive& archive, const std::string& run_id) {
  TrainState state;
  state.run_id = run_id;
  torch::Tensor t;
  archive.read("epoch", t);
  state.epoch = t.item<int64_t>();
  archive.read("step", t);
  state.step = t.item<int64_t>();
  if (archive.try_read("batch", t)) state.batch = t.item<int64_t>();
  if (archive.try_read("dropout_calls", t)) state.dropout_calls = static_cast<uint64_t>(t.item<int64_t>());
  if (archive.try_read("config_hash", t)) state.config_hash = static_cast<uint64_t>(t.item<int64_t>());
  if (archive.try_read("world_size", t)) state.world_size = t.item<int64_t>();
  if (archive.try_read("item_map", t)) state.item_map = static_cast<uint64_t>(t.item<int64_t>());
  c10::IValue v;
  archive.read("config", v);
  state.config_yaml = v.toStringRef();
  if (archive.try_read("data_path", v)) state.data_path = v.toStringRef();
  return state;
}

}  // namespace

CheckpointShape read_checkpoint_shape(const std::string& path) {
  std::string run_id;
  auto archive = open_checkpoint(path, run_id);
  CheckpointShape shape;
  shape.state = read_state(archive, run_id);
  torch::serialize::InputArchive m;
  torch::Tensor t;
  if (!archive.try_read("model", m) || !m.try_read("item.weight", t))
    SASREC_FAIL(Input, path, ": no parameter 'item.weight' in this checkpoint");
  shape.item_rows = t.size(0);
  if (m.try_read("user.weight", t)) shape.user_rows = t.size(0);
  return shape;
}

TrainState load_checkpoint(const std::string& path, SASRec& model, torch::optim::Optimizer* optimizer,
                           const CheckpointMatch& match) {
  std::string run_id;
  auto archive = open_checkpoint(path, run_id);
  TrainState state = read_state(archive, run_id);
  check_model_keys(path, state.config_yaml, model->options());
  check_item_table(path, state, model->options());
  torch::serialize::InputArchive m;
  if (!archive.try_read("model", m)) SASREC_FAIL(Input, path, ": no model in this checkpoint");
  // Shapes first, all of them: libtorch would silently resize a parameter to
  // the stored shape, and a refused file must leave the model untouched.
  std::vector<std::pair<torch::Tensor, torch::Tensor>> copies;
  for (auto& p : model->named_parameters()) {
    torch::Tensor stored;
    if (!m.try_read(p.key(), stored))
      SASREC_FAIL(Input, path, ": parameter '", p.key(),
                  "' is missing; the checkpoint is from another model "
                  "(model.norm, model.user_embedding or model.blocks differ)");
    if (stored.sizes() != p.value().sizes()) {
      const bool catalog = p.value().is_same(model->item_weight()) && stored.size(1) == p.value().size(1);
      if (catalog && model->options().sharded())
        SASREC_FAIL(Input, path, ": holds a block of ", stored.size(0), " rows of the item table, this rank's is ",
                    p.value().size(0), " rows: it was written by a sharded run on ", state.world_size,
                    " ranks (or for another catalog). Load it on ", state.world_size,
                    " ranks, or join its blocks (sasrec_ddp gather --checkpoint MAIN --out ONE.pt) and split them for "
                    "this rank count (sasrec_ddp scatter --checkpoint ONE.pt --ranks N --out NEW.pt)");
      SASREC_FAIL(Input, path, ": parameter '", p.key(), "' has shape ", stored.sizes(), " in the checkpoint but ",
                  p.value().sizes(), " in this model; ",
                  catalog ? detail::cat("it was trained on a catalog of ", stored.size(0) - 1, " items, this data has ",
                                        p.value().size(0) - 1, ". Use the data it was trained on")
                          : std::string("it was trained with another model.hidden/model.maxlen/catalog. Use a "
                                        "matching config"),
                  " or start without checkpoint.resume");
    }
    copies.emplace_back(p.value(), stored);
  }
  // Same sizes, other ids: only the item map's fingerprint tells (the same log in another row order).
  if (match.item_map != 0 && state.item_map != 0 && match.item_map != state.item_map)
    SASREC_FAIL(Input, path, " was trained on ", state.data_path.empty() ? "a store" : "'" + state.data_path + "'",
                " (item map ", fingerprint_hex(state.item_map), "), but data.path '", match.data_path,
                "' has other item ids or the same ones in another order (item map ", fingerprint_hex(match.item_map),
                "): its item indices name other items. Use the store the model was made from",
                state.data_path.empty() ? std::string() : " ('" + state.data_path + "')", ", or train on this one");
  {
    torch::NoGradGuard no_grad;
    for (auto& [param, stored] : copies) param.copy_(stored);
  }
  if (optimizer) {
    torch::serialize::InputArchive o;
    if (!archive.try_read("optimizer", o)) SASREC_FAIL(Input, path, ": no optimizer state in this checkpoint");
    optimizer->load(o);
  }
  return state;
}

CheckpointDir::CheckpointDir(std::string dir, int keep) : dir_(std::move(dir)), keep_(keep) {
  std::error_code ec;
  fs::create_directories(dir_, ec);
  if (ec) SASREC_FAIL(Io, "cannot create checkpoint.dir '", dir_, "': ", ec.message());
}

std::vector<std::string> CheckpointDir::list() const {
  std::vector<std::string> out;
  for (const auto& e : fs::directory_iterator(dir_)) {
    const std::string name = e.path().filename().string();
    if (name.rfind("epoch-", 0) == 0 && e.path().extension() == ".pt") out.push_back(e.path().string());
  }
  std::sort(out.begin(), out.end());  // zero-padded numbers sort by time
  return out;
}

int CheckpointDir::remove_stale_temporaries() const { return sasrec::remove_stale_temporaries(dir_, "epoch-"); }

std::vector<std::string> CheckpointDir::foreign(const std::string& run_id) const {
  std::vector<std::string> out;
  for (const auto& path : list()) {
    if (run_id.empty()) {
      out.push_back(path);
      continue;
    }
    const std::string id = checkpoint_run_id(path);
    if (!id.empty() && id != run_id) out.push_back(path);
  }
  return out;
}

std::string CheckpointDir::move_aside() const {
  const std::time_t now = std::time(nullptr);
  std::tm local{};
  localtime_r(&now, &local);
  char stamp[32];
  std::strftime(stamp, sizeof(stamp), "replaced-%Y%m%d-%H%M%S", &local);
  fs::path aside = fs::path(dir_) / stamp;
  for (int n = 2; fs::exists(aside); ++n) aside = fs::path(dir_) / detail::cat(stamp, "-", n);
  std::error_code ec;
  fs::create_directory(aside, ec);
  if (ec) SASREC_FAIL(Io, "checkpoint.overwrite: cannot create ", aside.string(), " (", ec.message(), ")");
  for (const auto& path : list()) {
    if (fs::exists(path + ".shards")) fs::rename(path + ".shards", aside / fs::path(path + ".shards").filename(), ec);
    if (!ec) fs::rename(path, aside / fs::path(path).filename(), ec);
    if (ec)
      SASREC_FAIL(Io, "checkpoint.overwrite: cannot move ", path, " into ", aside.string(), " (", ec.message(),
                  "); the checkpoints not yet moved are still in ", dir_);
  }
  return aside.string();
}

std::string checkpoint_file_name(const TrainState& state) {
  char name[64];
  if (state.batch == 0)
    std::snprintf(name, sizeof(name), "epoch-%06lld.pt", static_cast<long long>(state.epoch));
  else  // '.s' sorts after '.p': after epoch N's own checkpoint, before epoch N+1's
    std::snprintf(name, sizeof(name), "epoch-%06lld.step-%09lld.pt", static_cast<long long>(state.epoch),
                  static_cast<long long>(state.step));
  return name;
}

std::string shard_checkpoint_path(const std::string& main, int rank) {
  if (rank == 0) return main;
  char name[32];
  std::snprintf(name, sizeof(name), "rank-%05d.pt", rank);
  return (fs::path(main + ".shards") / name).string();
}

std::string CheckpointDir::save(SASRec& model, torch::optim::Optimizer* optimizer, const TrainState& state,
                                const MidWriteHook& mid_write) {
  const std::string path = (fs::path(dir_) / checkpoint_file_name(state)).string();
  save_checkpoint(path, model, optimizer, state, mid_write);
  auto all = list();
  for (size_t i = 0; i + keep_ < all.size(); ++i) fs::remove(all[i]), fs::remove_all(all[i] + ".shards");
  return path;
}

}  // namespace sasrec
