// checkpoint.cpp: checked, atomic checkpoint files and the checkpoint folder.
#include "sasrec/checkpoint.h"

#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <csignal>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <sstream>

#include "sasrec/error.h"

namespace sasrec {
namespace fs = std::filesystem;
namespace {

constexpr char kMagic[8] = {'S', 'A', 'S', 'R', 'E', 'C', 'C', 'K'};
constexpr uint32_t kVersion = 1;
struct Header {
  char magic[8];
  uint32_t version;
  uint32_t reserved;
  uint64_t payload_bytes;
  uint64_t checksum;
};
static_assert(sizeof(Header) == 32, "the header is 32 bytes on disk");

void fsync_path(const std::string& path) {
  int fd = ::open(path.c_str(), O_RDONLY);
  if (fd < 0) return;
  ::fsync(fd);
  ::close(fd);
}

// Writes all of `data` or returns the errno of the failure.
int write_all(int fd, const char* data, size_t n) {
  while (n > 0) {
    const ssize_t w = ::write(fd, data, n);
    if (w < 0) {
      if (errno == EINTR) continue;
      return errno;
    }
    data += w;
    n -= static_cast<size_t>(w);
  }
  return 0;
}

// Writes header + payload to `tmp`; returns "" or what failed.
std::string write_file(const std::string& tmp, const Header& header, const std::string& payload, FaultKind inject) {
  const int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (fd < 0) return std::string("cannot create it: ") + std::strerror(errno);
  int err = write_all(fd, reinterpret_cast<const char*>(&header), sizeof(header));
  const size_t half = payload.size() / 2;
  if (!err) err = write_all(fd, payload.data(), half);
  if (!err && inject == FaultKind::CkptKill) {
    ::fsync(fd);
    std::raise(SIGKILL);  // a machine dying mid-write (SASREC_INJECT_FAULT)
  }
  if (!err && inject == FaultKind::CkptEnospc) err = ENOSPC;
  if (!err) err = write_all(fd, payload.data() + half, payload.size() - half);
  if (!err && ::fsync(fd) != 0) err = errno;
  if (::close(fd) != 0 && !err) err = errno;
  return err ? std::strerror(err) : "";
}

// The whole file, or throws Io naming it.
std::string read_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) SASREC_FAIL(Io, path, ": cannot open the checkpoint (", std::strerror(errno), "); check the path");
  std::ostringstream out;
  out << in.rdbuf();
  return out.str();
}

// Where the payload of `bytes` starts (0: a plain archive of old), or sets `problem`.
size_t payload_offset(const std::string& bytes, std::string& problem) {
  if (bytes.size() >= 4 && bytes.compare(0, 4, "PK\x03\x04") == 0) return 0;
  Header h{};
  if (bytes.size() < sizeof(h) || std::memcmp(bytes.data(), kMagic, sizeof(kMagic)) != 0) {
    problem = "not a sasrec_ddp checkpoint (no SASRECCK header)";
    return 0;
  }
  std::memcpy(&h, bytes.data(), sizeof(h));
  if (h.version != kVersion) {
    problem = detail::cat("checkpoint format version ", h.version, ", this build reads version ", kVersion);
  } else if (bytes.size() - sizeof(h) != h.payload_bytes) {
    problem = detail::cat("truncated or padded: ", bytes.size() - sizeof(h), " payload bytes, the header says ",
                          h.payload_bytes);
  } else if (fnv1a64(bytes.data() + sizeof(h), h.payload_bytes) != h.checksum) {
    problem = "checksum mismatch: the file is corrupt";
  }
  return sizeof(h);
}

}  // namespace

uint64_t fnv1a64(const void* data, size_t n) {
  const auto* p = static_cast<const unsigned char*>(data);
  uint64_t h = 0xcbf29ce484222325ull;
  for (size_t i = 0; i < n; ++i) {
    h ^= p[i];
    h *= 0x100000001b3ull;
  }
  return h;
}

void save_checkpoint(const std::string& path, SASRec& model, torch::optim::Optimizer* optimizer,
                     const TrainState& state, FaultKind inject) {
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
  std::ostringstream buffer;
  archive.save_to(buffer);
  const std::string payload = buffer.str();

  Header header{};
  std::memcpy(header.magic, kMagic, sizeof(kMagic));
  header.version = kVersion;
  header.payload_bytes = payload.size();
  header.checksum = fnv1a64(payload.data(), payload.size());
  const std::string tmp = path + ".tmp-" + std::to_string(::getpid());
  const std::string failed = write_file(tmp, header, payload, inject);
  if (!failed.empty()) {
    std::remove(tmp.c_str());
    SASREC_FAIL(Io, "writing checkpoint ", path, " failed (", failed,
                "); the previous checkpoint is kept. Free disk space or change checkpoint.dir");
  }
  std::error_code ec;
  fs::rename(tmp, path, ec);
  if (ec) {
    std::remove(tmp.c_str());
    SASREC_FAIL(Io, "renaming checkpoint ", tmp, " to ", path, " failed (", ec.message(),
                "); the previous checkpoint is kept");
  }
  fsync_path(fs::path(path).parent_path().empty() ? "." : fs::path(path).parent_path().string());
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

TrainState load_checkpoint(const std::string& path, SASRec& model, torch::optim::Optimizer* optimizer) {
  const std::string bytes = read_file(path);
  std::string problem;
  const size_t offset = payload_offset(bytes, problem);
  if (!problem.empty())
    SASREC_FAIL(Io, path, ": ", problem, "; point checkpoint.resume at another file (resume: auto skips it)");
  torch::serialize::InputArchive archive;
  try {
    archive.load_from(bytes.data() + offset, bytes.size() - offset);
  } catch (const std::exception& e) {
    SASREC_FAIL(Io, path, ": not a readable checkpoint (", std::string(e.what()).substr(0, 200),
                "); point checkpoint.resume at another file");
  }
  torch::serialize::InputArchive m;
  if (!archive.try_read("model", m)) SASREC_FAIL(Io, path, ": no model in this checkpoint");
  // Shapes first, all of them: libtorch would silently resize a parameter to
  // the stored shape, and a refused file must leave the model untouched.
  std::vector<std::pair<torch::Tensor, torch::Tensor>> copies;
  for (auto& p : model->named_parameters()) {
    torch::Tensor stored;
    if (!m.try_read(p.key(), stored))
      SASREC_FAIL(Io, path, ": parameter '", p.key(), "' is missing; the checkpoint is from another model "
                  "(model.norm, model.user_embedding or model.blocks differ)");
    if (stored.sizes() != p.value().sizes()) {
      const bool catalog = p.value().is_same(model->item_weight()) && stored.size(1) == p.value().size(1);
      SASREC_FAIL(Io, path, ": parameter '", p.key(), "' has shape ", stored.sizes(), " in the checkpoint but ",
                  p.value().sizes(), " in this model; ",
                  catalog ? detail::cat("it was trained on a catalog of ", stored.size(0) - 1, " items, this data has ",
                                        p.value().size(0) - 1, ". Use the data it was trained on")
                          : std::string("it was trained with another model.hidden/model.maxlen/catalog. Use a "
                                        "matching config"),
                  " or start without checkpoint.resume");
    }
    copies.emplace_back(p.value(), stored);
  }
  {
    torch::NoGradGuard no_grad;
    for (auto& [param, stored] : copies) param.copy_(stored);
  }
  if (optimizer) {
    torch::serialize::InputArchive o;
    if (!archive.try_read("optimizer", o)) SASREC_FAIL(Io, path, ": no optimizer state in this checkpoint");
    optimizer->load(o);
  }
  TrainState state;
  torch::Tensor t;
  archive.read("epoch", t);
  state.epoch = t.item<int64_t>();
  archive.read("step", t);
  state.step = t.item<int64_t>();
  if (archive.try_read("batch", t)) state.batch = t.item<int64_t>();
  if (archive.try_read("dropout_calls", t)) state.dropout_calls = static_cast<uint64_t>(t.item<int64_t>());
  c10::IValue config;
  archive.read("config", config);
  state.config_yaml = config.toStringRef();
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

std::string CheckpointDir::latest() const {
  auto all = list();
  return all.empty() ? "" : all.back();
}

int CheckpointDir::remove_stale_temporaries() const {
  int removed = 0;
  for (const auto& e : fs::directory_iterator(dir_))
    if (e.path().filename().string().find(".pt.tmp-") != std::string::npos) {
      std::error_code ec;
      removed += fs::remove(e.path(), ec) ? 1 : 0;
    }
  return removed;
}

std::string CheckpointDir::save(SASRec& model, torch::optim::Optimizer* optimizer, const TrainState& state,
                                FaultKind inject) {
  char name[64];
  if (state.batch == 0)
    std::snprintf(name, sizeof(name), "epoch-%06lld.pt", static_cast<long long>(state.epoch));
  else  // '.s' sorts after '.p': after epoch N's own checkpoint, before epoch N+1's
    std::snprintf(name, sizeof(name), "epoch-%06lld.step-%09lld.pt", static_cast<long long>(state.epoch),
                  static_cast<long long>(state.step));
  const std::string path = (fs::path(dir_) / name).string();
  save_checkpoint(path, model, optimizer, state, inject);
  auto all = list();
  for (size_t i = 0; i + keep_ < all.size(); ++i) fs::remove(all[i]);
  return path;
}

}  // namespace sasrec
