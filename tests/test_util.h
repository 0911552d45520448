// test_util.h: helpers shared by the tests: temporary folders, running a
// built binary and capturing its exit code and output, the shared data dir,
// and test data made in process: generated stores and csv files
// (synth_generate, not the sasrec_synth binary), small stores and shards
// built from given sequences.
#pragma once

#include <gtest/gtest.h>

#include <array>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <random>
#include <string>
#include <sys/wait.h>
#include <vector>

#include "sasrec/store.h"
#include "sasrec/synth.h"

namespace sasrec::test {

namespace fs = std::filesystem;

// A fresh folder under the system temp dir, removed when it goes out of scope.
class TempDir {
 public:
  TempDir() {
    std::random_device rd;
    path_ = fs::temp_directory_path() / ("sasrec_test_" + std::to_string(rd()) + std::to_string(rd()));
    fs::create_directories(path_);
  }
  ~TempDir() {
    std::error_code ec;
    fs::remove_all(path_, ec);
  }
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;
  const fs::path& path() const { return path_; }
  std::string file(const std::string& name) const { return (path_ / name).string(); }

 private:
  fs::path path_;
};

inline void write_text(const std::string& path, const std::string& text) {
  std::ofstream f(path, std::ios::binary);
  f << text;
}

inline std::string read_text(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(f), std::istreambuf_iterator<char>());
}

struct RunResult {
  int exit_code = -1;
  std::string output;  // stdout and stderr together
};

// Runs a shell command, returns its exit status and combined output.
inline RunResult run(const std::string& command) {
  RunResult r;
  FILE* p = popen((command + " 2>&1").c_str(), "r");
  if (!p) return r;
  std::array<char, 4096> buf{};
  size_t n;
  while ((n = fread(buf.data(), 1, buf.size(), p)) > 0) r.output.append(buf.data(), n);
  int status = pclose(p);
  r.exit_code = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
  return r;
}

// The shared real data folder, or "" (the caller skips) where it is absent.
inline std::string shared_data_dir() {
  const char* env = std::getenv("SASREC_SHARED_DATA_DIR");
  std::string dir = env ? env : SASREC_SHARED_DATA_DIR;
  return fs::exists(fs::path(dir) / "README.md") ? dir : std::string();
}

// ---- data made in process ----------------------------------------------------------

// The options of `sasrec_synth --users U --items I --seed S --mean-length L`.
inline SynthOptions synth_options(int64_t users, int64_t items, uint64_t seed, double mean_length) {
  SynthOptions o;
  o.users = users;
  o.items = items;
  o.seed = seed;
  o.mean_length = mean_length;
  return o;
}

// What `sasrec_synth --users U --items I --seed S --mean-length L --out PATH`
// writes (the store and PATH.oracle.json), made in process.
inline SynthReport synth_store(const std::string& path, int64_t users, int64_t items, uint64_t seed,
                               double mean_length = SynthOptions().mean_length) {
  return synth_generate(synth_options(users, items, seed, mean_length), SynthFormat::H5, path);
}

// The same with `--format csv`: rows in user order, or (`shuffled`) as `--order shuffled`.
inline SynthReport synth_csv(const std::string& path, int64_t users, int64_t items, uint64_t seed, double mean_length,
                             bool shuffled) {
  SynthOptions o = synth_options(users, items, seed, mean_length);
  o.shuffle = shuffled;
  return synth_generate(o, SynthFormat::Csv, path);
}

// Users' item sequences (items 1..I) and, where a test has them, their times.
using Sequences = std::vector<std::vector<int32_t>>;
using Times = std::vector<std::vector<int64_t>>;

// A store in memory: item i named item_prefix + i (row 0 the padding ""),
// user u named "u<u>" with sequences[u] (and times[u], when `times` is given).
inline Interactions make_interactions(const Sequences& sequences, int64_t num_items,
                                      const std::string& item_prefix = "i", const Times& times = {}) {
  Interactions d;
  for (int64_t i = 1; i <= num_items; ++i) d.item_ids.push_back(item_prefix + std::to_string(i));
  for (size_t u = 0; u < sequences.size(); ++u) {
    d.items.insert(d.items.end(), sequences[u].begin(), sequences[u].end());
    if (!times.empty()) d.timestamps.insert(d.timestamps.end(), times[u].begin(), times[u].end());
    d.offsets.push_back(static_cast<int64_t>(d.items.size()));
    d.user_ids.push_back("u" + std::to_string(u));
  }
  return d;
}

// One rank's shard holding `sequences` (and `times`, when given) as the
// global users first_user, first_user + 1, ... of a store of total_users
// users (0: just these).
inline Shard make_shard(const Sequences& sequences, int64_t num_items, int64_t first_user = 0, int64_t total_users = 0,
                        const Times& times = {}) {
  Shard s;
  s.num_items = num_items;
  for (size_t u = 0; u < sequences.size(); ++u) {
    s.items.insert(s.items.end(), sequences[u].begin(), sequences[u].end());
    if (!times.empty()) s.timestamps.insert(s.timestamps.end(), times[u].begin(), times[u].end());
    s.offsets.push_back(static_cast<int64_t>(s.items.size()));
  }
  const int64_t n = static_cast<int64_t>(sequences.size());
  s.users = {first_user, first_user + n};
  s.num_users_total = total_users > 0 ? total_users : n;
  return s;
}

}  // namespace sasrec::test
