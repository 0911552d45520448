// checkpoint.cpp: atomic checkpoint files and the checkpoint folder.
#include "sasrec/checkpoint.h"

#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <filesystem>

#include "sasrec/error.h"

namespace sasrec {
namespace fs = std::filesystem;
namespace {

void fsync_path(const std::string& path) {
  int fd = ::open(path.c_str(), O_RDONLY);
  if (fd < 0) return;
  ::fsync(fd);
  ::close(fd);
}

}  // namespace

void save_checkpoint(const std::string& path, SASRec& model, torch::optim::Optimizer* optimizer,
                     const TrainState& state) {
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
  archive.write("config", c10::IValue(state.config_yaml));

  const std::string tmp = path + ".tmp-" + std::to_string(::getpid());
  try {
    archive.save_to(tmp);
  } catch (const std::exception& e) {
    std::remove(tmp.c_str());
    SASREC_FAIL(Io, "writing checkpoint ", path, " failed (", e.what(),
                "); the previous checkpoint is kept. Free disk space or change checkpoint.dir");
  }
  fsync_path(tmp);
  std::error_code ec;
  fs::rename(tmp, path, ec);
  if (ec) {
    std::remove(tmp.c_str());
    SASREC_FAIL(Io, "renaming checkpoint ", tmp, " to ", path, " failed: ", ec.message());
  }
  fsync_path(fs::path(path).parent_path().empty() ? "." : fs::path(path).parent_path().string());
}

TrainState load_checkpoint(const std::string& path, SASRec& model, torch::optim::Optimizer* optimizer) {
  torch::serialize::InputArchive archive;
  try {
    archive.load_from(path);
  } catch (const std::exception& e) {
    SASREC_FAIL(Io, path, ": not a readable checkpoint (", std::string(e.what()).substr(0, 200),
                "); point checkpoint.resume at another file");
  }
  torch::serialize::InputArchive m;
  if (!archive.try_read("model", m)) SASREC_FAIL(Io, path, ": no model in this checkpoint");
  // Shapes first: libtorch would silently resize a parameter to the stored shape.
  torch::NoGradGuard no_grad;
  for (auto& p : model->named_parameters()) {
    torch::Tensor stored;
    if (!m.try_read(p.key(), stored))
      SASREC_FAIL(Io, path, ": parameter '", p.key(), "' is missing; the checkpoint is from another model "
                  "(model.norm, model.user_embedding or model.blocks differ)");
    if (stored.sizes() != p.value().sizes())
      SASREC_FAIL(Io, path, ": parameter '", p.key(), "' has shape ", stored.sizes(), " in the checkpoint but ",
                  p.value().sizes(), " in this model; it was trained with another catalog or model.hidden/"
                  "model.maxlen. Use a matching config or start without checkpoint.resume");
    p.value().copy_(stored);
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
  std::sort(out.begin(), out.end());  // zero-padded epoch numbers sort by time
  return out;
}

std::string CheckpointDir::latest() const {
  auto all = list();
  return all.empty() ? "" : all.back();
}

std::string CheckpointDir::save(SASRec& model, torch::optim::Optimizer* optimizer, const TrainState& state) {
  char name[32];
  std::snprintf(name, sizeof(name), "epoch-%06lld.pt", static_cast<long long>(state.epoch));
  const std::string path = (fs::path(dir_) / name).string();
  save_checkpoint(path, model, optimizer, state);
  auto all = list();
  for (size_t i = 0; i + keep_ < all.size(); ++i) fs::remove(all[i]);
  return path;
}

}  // namespace sasrec
