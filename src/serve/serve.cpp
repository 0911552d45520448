// serve.cpp: recommend and export from a checkpoint (see serve.h).
#include "sasrec/serve.h"

#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <iterator>
#include <limits>
#include <optional>
#include <tuple>
#include <sstream>
#include <thread>
#include <utility>

#include <nlohmann/json.hpp>

#include "sasrec/atomic_file.h"
#include "sasrec/block_checkpoint.h"
#include "sasrec/checkpoint.h"
#include "sasrec/error.h"
#include "sasrec/device.h"
#include "sasrec/h5.h"

namespace sasrec {
namespace {

// a ranks before b: higher score, then lower index.
bool better(const ScoredItem& a, const ScoredItem& b) {
  return a.score > b.score || (a.score == b.score && a.item < b.item);
}

// User u of `data` as a History: all their items, in order.
History history_of(const Interactions& data, int64_t u) {
  return {std::vector<int32_t>(data.items.begin() + data.offsets[u], data.items.begin() + data.offsets[u + 1]), u};
}

std::string trim(const std::string& s) {
  const auto b = s.find_first_not_of(" \t\r\n");
  if (b == std::string::npos) return "";
  return s.substr(b, s.find_last_not_of(" \t\r\n") - b + 1);
}

// Rows [first, first + n) of the float32 matrix `ds` from `rows` [n,D] (any device, any float dtype).
void write_rows(hid_t ds, const std::string& path, const char* name, hsize_t first, const torch::Tensor& rows) {
  auto block = rows.to(torch::kCPU, torch::kFloat32).contiguous();
  h5::write_block(ds, path, name, H5T_NATIVE_FLOAT, {first, 0},
                  {static_cast<hsize_t>(block.size(0)), static_cast<hsize_t>(block.size(1))}, block.data_ptr<float>());
}

std::vector<std::string> read_lines(std::istream& in) {
  std::vector<std::string> out;
  for (std::string line; std::getline(in, line);) {
    line = trim(line);
    if (!line.empty() && line[0] != '#') out.push_back(line);
  }
  return out;
}

constexpr int64_t kUsersPerChunk = 4096;  // users whose histories and lists are held at once

}  // namespace

torch::Tensor final_states(SASRec& model, const std::vector<History>& histories, int64_t batch, ItemShard* shard) {
  const int64_t n = static_cast<int64_t>(histories.size());
  const int64_t maxlen = model->options().maxlen;
  const auto device = model->item_weight().device();
  const bool with_user = model->options().user_embedding;
  auto out = torch::zeros({n, model->options().hidden}, torch::kFloat32);  // [n,D]
  torch::NoGradGuard no_grad;
  model->eval();
  // Sharded: every rank fetches rows in each block, as many blocks as the rank with most.
  int64_t blocks = (n + batch - 1) / batch;
  if (shard) blocks = shard->comm().allgather(torch::tensor({blocks}, torch::kInt64)).max().item<int64_t>();
  for (int64_t k = 0; k < blocks; ++k) {
    const int64_t b0 = std::min(n, k * batch);
    std::vector<int64_t> rows;  // the non-empty histories of the block; empty ones stay 0
    int64_t width = 1;
    for (int64_t r = b0; r < std::min(n, b0 + batch); ++r) {
      if (histories[r].items.empty()) continue;
      if (with_user && histories[r].user < 0)
        SASREC_FAIL(Input,
                    "a new user has no user vector, and this model was trained with model.user_embedding; "
                    "recommend for new users with a model trained without it");
      rows.push_back(r);
      width = std::max<int64_t>(width, std::min<int64_t>(maxlen, histories[r].items.size()));
    }
    const int64_t m = static_cast<int64_t>(rows.size());
    if (m == 0 && !shard) continue;
    auto seq = torch::zeros({m, width}, torch::kInt64);  // left-padded, the newest item in the last column
    auto users = torch::zeros({m}, torch::kInt64);
    int64_t* s = seq.data_ptr<int64_t>();
    for (int64_t i = 0; i < m; ++i) {
      const auto& items = histories[rows[i]].items;
      left_pad_last(items.data(), static_cast<int64_t>(items.size()), width, s + i * width);
      users[i] = std::max<int64_t>(0, histories[rows[i]].user);
    }
    const torch::Tensor user_ids = with_user ? users.to(device) : torch::Tensor();
    torch::Tensor h;  // [m,D]
    if (!shard) {
      h = model->forward(seq.to(device), user_ids).select(1, width - 1);
    } else {
      Packing packing;
      std::vector<torch::Tensor*> parts;
      if (m > 0) packing = pack_sequences(seq.to(device), maxlen), parts = {&packing.items};
      const ItemRows fetched = shard->fetch(model->item_weight(), parts, /*requires_grad=*/false);
      if (m == 0) continue;
      h = unpack_rows(packing, model->forward_packed(packing, user_ids, fetched.table)).select(1, width - 1);
    }
    out.index_copy_(0, torch::tensor(rows, torch::kInt64), h.to(torch::kCPU, torch::kFloat32));  // [m,D] rows
  }
  return out;
}

std::vector<ScoredItem> top_k(const float* scores, int64_t first, int64_t count, const std::vector<int32_t>& exclude,
                              int k) {
  std::vector<int32_t> skip(exclude);
  std::sort(skip.begin(), skip.end());
  size_t cursor = 0;
  std::vector<ScoredItem> heap;  // the k best so far; heap.front() is the worst of them
  heap.reserve(k);
  for (int64_t j = 0; j < count; ++j) {
    const auto i = static_cast<int32_t>(first + j);
    if (i == 0) continue;  // the padding item
    while (cursor < skip.size() && skip[cursor] < i) ++cursor;
    if (cursor < skip.size() && skip[cursor] == i) continue;
    const ScoredItem c{i, scores[j]};
    if (static_cast<int>(heap.size()) < k) {
      heap.push_back(c);
      std::push_heap(heap.begin(), heap.end(), better);
    } else if (k > 0 && better(c, heap.front())) {
      std::pop_heap(heap.begin(), heap.end(), better);
      heap.back() = c;
      std::push_heap(heap.begin(), heap.end(), better);
    }
  }
  std::sort(heap.begin(), heap.end(), better);
  return heap;
}

std::vector<ScoredItem> merge_top_k(const std::vector<std::vector<ScoredItem>>& lists, int k) {
  std::vector<ScoredItem> all;
  for (const auto& list : lists) all.insert(all.end(), list.begin(), list.end());
  const size_t keep = std::min(all.size(), static_cast<size_t>(std::max(0, k)));
  std::partial_sort(all.begin(), all.begin() + static_cast<std::ptrdiff_t>(keep), all.end(), better);
  all.resize(keep);
  return all;
}

namespace {

// Scores in blocks of users with BLAS on the CPU, top-K by a heap per row.
// `w` holds the rows of items first .. first + w.size(0) - 1.
std::vector<std::vector<ScoredItem>> recommend_blocked(const torch::Tensor& states, const torch::Tensor& w,
                                                       int64_t first, const std::vector<History>& histories, int k,
                                                       int64_t rows) {
  const int64_t n = states.size(0), count = w.size(0);
  std::vector<std::vector<ScoredItem>> out(n);
  for (int64_t r0 = 0; r0 < n; r0 += rows) {
    const int64_t r1 = std::min(n, r0 + rows);
    auto scores = states.slice(0, r0, r1).matmul(w.t()).contiguous();  // [r1-r0, count]
    const float* p = scores.data_ptr<float>();
    for (int64_t r = r0; r < r1; ++r) out[r] = top_k(p + (r - r0) * count, first, count, histories[r].items, k);
  }
  return out;
}

// The same lists from tensor ops on w's device (the GPU path; it runs on
// the CPU too): a block's scores with the history and item 0 set to -inf,
// torch::topk of k plus a margin, and the exact order (higher score, then
// lower index) restored on the host. Where ties reach past the margin, the
// row is ranked again by top_k on the host, so the lists equal the blocked
// path's in every case.
std::vector<std::vector<ScoredItem>> recommend_tensor(const torch::Tensor& states, const torch::Tensor& w,
                                                      int64_t first, const std::vector<History>& histories, int k,
                                                      int64_t rows) {
  constexpr int64_t kTieMargin = 8;
  const int64_t n = states.size(0), count = w.size(0);
  const auto device = w.device();
  const float neg_inf = -std::numeric_limits<float>::infinity();
  std::vector<std::vector<ScoredItem>> out(n);
  if (count == 0) return out;  // a rank past the table's last row
  for (int64_t r0 = 0; r0 < n; r0 += rows) {
    const int64_t r1 = std::min(n, r0 + rows), m = r1 - r0;
    auto scores = states.slice(0, r0, r1).to(device).matmul(w.t());  // [m, count]
    std::vector<int64_t> mask_rows, mask_cols;
    for (int64_t r = r0; r < r1; ++r)
      for (int32_t item : histories[r].items)
        if (item >= first && item < first + count) mask_rows.push_back(r - r0), mask_cols.push_back(item - first);
    if (first == 0) scores.select(1, 0).fill_(neg_inf);
    if (!mask_rows.empty())
      scores.index_put_(
          {torch::tensor(mask_rows, torch::kInt64).to(device), torch::tensor(mask_cols, torch::kInt64).to(device)},
          torch::full({}, neg_inf, scores.options()));
    const int64_t take = std::min<int64_t>(count, k + kTieMargin);
    auto top = scores.topk(take, 1, /*largest=*/true, /*sorted=*/true);
    auto values = std::get<0>(top).cpu().contiguous(), index = std::get<1>(top).cpu().contiguous();
    const float* v = values.data_ptr<float>();
    const int64_t* ix = index.data_ptr<int64_t>();
    for (int64_t i = 0; i < m; ++i) {
      std::vector<ScoredItem> row;
      for (int64_t j = 0; j < take; ++j)
        if (v[i * take + j] != neg_inf)
          row.push_back({static_cast<int32_t>(first + ix[i * take + j]), v[i * take + j]});
      std::sort(row.begin(), row.end(), better);
      const bool cut_tie = static_cast<int64_t>(row.size()) == take && take > k &&
                           row[static_cast<size_t>(take) - 1].score == row[static_cast<size_t>(k) - 1].score;
      if (cut_tie) {  // ties beyond the margin: the whole row on the host
        auto full = scores[i].to(torch::kCPU, torch::kFloat32).contiguous();
        row = top_k(full.data_ptr<float>(), first, count, histories[r0 + i].items, k);
      } else if (static_cast<int64_t>(row.size()) > k) {
        row.resize(k);
      }
      out[r0 + i] = std::move(row);
    }
  }
  return out;
}

// Every rank's lists for the same n users -> the merged lists, on every rank.
std::vector<std::vector<ScoredItem>> merge_across_ranks(Communicator& comm,
                                                        const std::vector<std::vector<ScoredItem>>& lists, int k) {
  const auto n = static_cast<int64_t>(lists.size());
  auto items = torch::full({n, k}, int64_t{-1}, torch::kInt64);  // -1: no item (fewer than k left)
  auto scores = torch::zeros({n, k}, torch::kFloat32);
  for (int64_t u = 0; u < n; ++u)
    for (size_t j = 0; j < lists[u].size(); ++j) {
      items.data_ptr<int64_t>()[u * k + static_cast<int64_t>(j)] = lists[u][j].item;
      scores.data_ptr<float>()[u * k + static_cast<int64_t>(j)] = lists[u][j].score;
    }
  const auto all_items = comm.allgather(items).contiguous(), all_scores = comm.allgather(scores).contiguous();  // [R*n,k]
  const int64_t* ai = all_items.data_ptr<int64_t>();
  const float* as = all_scores.data_ptr<float>();
  std::vector<std::vector<ScoredItem>> out(n);
  std::vector<std::vector<ScoredItem>> per_rank(comm.world_size());
  for (int64_t u = 0; u < n; ++u) {
    for (int r = 0; r < comm.world_size(); ++r) {
      per_rank[r].clear();
      for (int64_t j = 0, at = (r * n + u) * k; j < k && ai[at + j] >= 0; ++j)
        per_rank[r].push_back({static_cast<int32_t>(ai[at + j]), as[at + j]});
    }
    out[u] = merge_top_k(per_rank, k);
  }
  return out;
}

// Rank `rank`'s share of n items: [n r / R, n (r+1) / R).
std::pair<int64_t, int64_t> slice_of(int64_t n, int rank, int world) {
  return {n * rank / world, n * (rank + 1) / world};
}

}  // namespace

std::vector<std::vector<ScoredItem>> recommend(SASRec& model, const std::vector<History>& histories, int k,
                                               int64_t memory_mb, Scorer scorer, ItemShard* shard) {
  torch::NoGradGuard no_grad;
  torch::Tensor states;  // [n,D] CPU
  if (!shard) {
    states = final_states(model, histories);
  } else {  // each rank its slice of the users; their vectors to every rank
    Communicator& comm = shard->comm();
    const auto [lo, hi] = slice_of(static_cast<int64_t>(histories.size()), comm.rank(), comm.world_size());
    const std::vector<History> mine(histories.begin() + lo, histories.begin() + hi);
    states = comm.allgather(final_states(model, mine, 256, shard));
  }
  const auto& weight = model->item_weight();  // [I+1,D], or this rank's block
  const int64_t first = shard ? shard->begin() : 0, count = weight.size(0);
  // One block of scores [rows, count] stays under memory_mb.
  const int64_t rows = std::max<int64_t>(1, memory_mb * (1 << 20) / (4 * std::max<int64_t>(1, count)));
  const bool blocked = scorer == Scorer::Blocked || (scorer == Scorer::Auto && weight.device().is_cpu());
  auto lists = blocked ? recommend_blocked(states, weight.to(torch::kCPU, torch::kFloat32), first, histories, k, rows)
                       : recommend_tensor(states, weight.to(torch::kFloat32), first, histories, k, rows);
  return shard ? merge_across_ranks(shard->comm(), lists, k) : lists;
}

std::unordered_map<std::string, int32_t> index_ids(const std::vector<std::string>& item_ids) {
  std::unordered_map<std::string, int32_t> index;
  index.reserve(item_ids.size());
  for (size_t i = 1; i < item_ids.size(); ++i) index.emplace(item_ids[i], static_cast<int32_t>(i));
  return index;
}

std::vector<ParsedSequence> parse_sequences(std::istream& in,
                                            const std::unordered_map<std::string, int32_t>& item_index) {
  std::vector<ParsedSequence> out;
  int64_t line_no = 0;
  for (std::string line; std::getline(in, line);) {
    ++line_no;
    line = trim(line);
    if (line.empty() || line[0] == '#') continue;
    for (char& c : line)
      if (c == ',' || c == '\t') c = ' ';
    std::istringstream tokens(line);
    ParsedSequence seq;
    seq.label = "new-" + std::to_string(line_no);
    bool first = true;
    for (std::string id; tokens >> id; first = false) {
      if (first && id.size() > 1 && id.back() == ':') {
        seq.label = id.substr(0, id.size() - 1);
        continue;
      }
      auto it = item_index.find(id);
      if (it == item_index.end())
        seq.unknown.push_back(id);
      else
        seq.history.items.push_back(it->second);
    }
    out.push_back(std::move(seq));
  }
  return out;
}

RecommendFormat recommend_format(const std::string& format, const std::string& out_path) {
  if (format == "csv") return RecommendFormat::Csv;
  if (format == "jsonl") return RecommendFormat::Jsonl;
  if (!format.empty()) SASREC_FAIL(Input, "unknown output format '", format, "'; use csv or jsonl");
  const std::string ext = std::filesystem::path(out_path).extension().string();
  return ext == ".jsonl" || ext == ".json" ? RecommendFormat::Jsonl : RecommendFormat::Csv;
}

void write_recommend_header(std::ostream& out, RecommendFormat format) {
  if (format == RecommendFormat::Csv) out << "user_id,rank,item_id,score\n";
}

void write_recommendations(std::ostream& out, RecommendFormat format, const std::string& user,
                           const std::vector<ScoredItem>& items, const std::vector<std::string>& item_ids) {
  if (format == RecommendFormat::Jsonl) {
    nlohmann::ordered_json ids = nlohmann::ordered_json::array(), scores = nlohmann::ordered_json::array();
    for (const auto& s : items) ids.push_back(item_ids[s.item]), scores.push_back(s.score);
    nlohmann::ordered_json line;  // keys in this order: user, items, scores
    line["user"] = user;
    line["items"] = std::move(ids);
    line["scores"] = std::move(scores);
    out << line.dump() << '\n';
    return;
  }
  // CSV: ids with a comma or a quote are quoted (RFC 4180).
  auto field = [](const std::string& s) {
    if (s.find_first_of(",\"\n") == std::string::npos) return s;
    std::string q = "\"";
    for (char c : s) q += c == '"' ? std::string("\"\"") : std::string(1, c);
    return q + "\"";
  };
  char score[32];
  for (size_t r = 0; r < items.size(); ++r) {
    std::snprintf(score, sizeof(score), "%.6g", items[r].score);
    out << field(user) << ',' << r + 1 << ',' << field(item_ids[items[r].item]) << ',' << score << '\n';
  }
}

SASRec load_model_for_serving(const Config& config, const std::string& checkpoint, ItemShard* shard) {
  const StoreInfo info = read_store_info(config.data.path);
  SASRecOptions options = SASRecOptions::from(config, info.num_items, info.num_users);
  if (shard) options.item_begin = shard->begin(), options.item_rows = shard->size();
  SASRec model(options);
  const CheckpointMatch match{config.data.path, read_item_map_fingerprint(config.data.path)};
  if (shard) {
    load_block_checkpoint(checkpoint, model, nullptr, shard->comm(), match);
    model->to(shard->device());
  } else {
    load_checkpoint(checkpoint, model, nullptr, match);
    model->to(resolve_device(config.runtime.device, 0));  // runtime.device: auto takes a GPU where there is one
  }
  model->eval();
  return model;
}

std::unique_ptr<ItemShard> serving_shard(const Config& config, Communicator& comm) {
  if (config.train.item_table != ItemTable::Sharded) return nullptr;
  const StoreInfo info = read_store_info(config.data.path);
  return std::make_unique<ItemShard>(comm, info.num_items + 1, config.model.hidden,
                                     resolve_device(config.runtime.device, comm.local_rank()));
}

namespace {

constexpr int64_t kRowsPerMessage = 1 << 16;  // item rows an owner sends rank 0 at once (export)

// The rows of items 1..I to `write(first_item, rows)` on rank 0 (every
// rank's on one process), each owner's block in messages of
// kRowsPerMessage rows: rank 0 never holds more than one of them.
template <typename Write>
void for_each_item_block(SASRec& model, ItemShard* shard, Write write) {
  const torch::Tensor& w = model->item_weight();
  if (!shard) {
    write(int64_t{1}, w.slice(0, 1, w.size(0)));
    return;
  }
  Communicator& comm = shard->comm();
  const ShardLayout& layout = shard->layout();
  std::vector<int64_t> send(comm.world_size(), 0), recv;
  for (int owner = 0; owner < comm.world_size(); ++owner) {
    for (int64_t r0 = std::max<int64_t>(1, layout.begin(owner)); r0 < layout.end(owner); r0 += kRowsPerMessage) {
      const int64_t r1 = std::min(layout.end(owner), r0 + kRowsPerMessage);
      const bool mine = comm.rank() == owner;
      if (owner == 0) {  // rank 0's own rows
        if (mine) write(r0, w.slice(0, r0, r1));
        continue;
      }
      send[0] = mine ? r1 - r0 : 0;
      const torch::Tensor rows =
          mine ? w.slice(0, r0 - layout.begin(owner), r1 - layout.begin(owner)).contiguous() : w.slice(0, 0, 0);
      const torch::Tensor got = comm.alltoall(rows, send, recv);
      if (comm.is_root()) write(r0, got);
    }
  }
}

// F of users [u0, u1) of `data` to `write(u0, states)` on rank 0; sharded,
// each rank computes a slice and sends it to rank 0.
template <typename Write>
void for_each_user_block(SASRec& model, const Interactions& data, ItemShard* shard, Write write) {
  const int64_t num_users = data.num_users();
  for (int64_t u0 = 0; u0 < num_users; u0 += kUsersPerChunk) {
    const int64_t u1 = std::min(num_users, u0 + kUsersPerChunk);
    int64_t lo = 0, hi = u1 - u0;  // this rank's users of the chunk, from u0
    if (shard) std::tie(lo, hi) = slice_of(u1 - u0, shard->comm().rank(), shard->comm().world_size());
    std::vector<History> histories;
    for (int64_t u = u0 + lo; u < u0 + hi; ++u) histories.push_back(history_of(data, u));
    torch::Tensor states = final_states(model, histories, 256, shard);  // [hi-lo, D] CPU
    if (shard) {
      Communicator& comm = shard->comm();
      std::vector<int64_t> send(comm.world_size(), 0), recv;
      send[0] = hi - lo;
      states = comm.alltoall(states, send, recv);
      if (!comm.is_root()) continue;
    }
    write(u0, states);
  }
}

}  // namespace

void export_embeddings(SASRec& model, const Interactions& data, const std::string& checkpoint,
                       const std::string& out_path, const std::vector<RunInput>& inputs, ItemShard* shard) {
  const int64_t num_items = data.num_items(), num_users = data.num_users();
  const int64_t hidden = model->options().hidden;
  SASREC_CHECK(model->options().num_items == num_items, "model for ", model->options().num_items, " items, store with ",
               num_items);
  const bool root = !shard || shard->comm().is_root();
  silence_hdf5_errors();
  std::optional<AtomicOutput> out;  // rank 0's
  if (root)
    out.emplace(out_path, "--out", inputs, "nothing was written and an existing file is untouched; free disk space");
  const std::string where = "--out " + out_path;  // how failures name the file
  torch::NoGradGuard no_grad;
  try {
    // Every handle is closed before the rename, the file last; a failure
    // closes them the same way (h5::Handle), then `out` removes the temporary.
    h5::Handle file, items, users;
    if (root) {
      file = h5::create_file(out->temp_path(), where);
      const hid_t f = file.get();
      h5::create_groups(f, where, {"items", "users"});
      h5::write_string_attr(f, where, "format", kExportFormat);
      h5::write_attr(f, where, "version", int32_t{kExportVersion});
      h5::write_attr(f, where, "hidden", hidden);
      h5::write_attr(f, where, "num_items", num_items);
      h5::write_attr(f, where, "num_users", num_users);
      h5::write_string_attr(f, where, "checkpoint", checkpoint);
      h5::write_strings(f, where, "/items/id", data.item_ids, 1);
      h5::write_strings(f, where, "/users/id", data.user_ids, 0);
      const hsize_t d = hidden;
      items = h5::create_dataset(f, where, "/items/vector", H5T_IEEE_F32LE, {static_cast<hsize_t>(num_items), d});
      users = h5::create_dataset(f, where, "/users/vector", H5T_IEEE_F32LE, {static_cast<hsize_t>(num_users), d});
    }
    for_each_item_block(model, shard, [&](int64_t first_item, const torch::Tensor& rows) {  // M[1..I]
      write_rows(items.get(), where, "/items/vector", static_cast<hsize_t>(first_item - 1), rows);
    });
    for_each_user_block(model, data, shard, [&](int64_t u0, const torch::Tensor& states) {
      write_rows(users.get(), where, "/users/vector", static_cast<hsize_t>(u0), states);
    });
    // The close flushes: on a full disk this is where the write fails.
    items = h5::Handle(), users = h5::Handle();
    if (root && !file.close()) h5::fail(where, "close the file", __FILE__, __LINE__);
  } catch (const Error& e) {
    if (e.domain() != ErrorDomain::Hdf5) throw;
    SASREC_FAIL(Io, e.what(), "; nothing was written and an existing file is untouched");
  }
  if (out) out->commit();
  if (shard) shard->comm().barrier();  // every rank returns once the file is in place
}

namespace {

// run_recommend's inputs: every file it reads, checked before anything is loaded or written.
std::vector<RunInput> recommend_inputs(const Config& config, const RecommendRequest& request) {
  std::vector<RunInput> inputs{run_input("--checkpoint", request.checkpoint), run_input("data.path", config.data.path)};
  if (!request.config_path.empty()) inputs.push_back(run_input("the config", request.config_path));
  for (const auto& [flag, path] : {std::pair<const char*, std::string>{"--users", request.users_file},
                                   std::pair<const char*, std::string>{"--sequences", request.sequences_file}}) {
    if (path.empty() || path == "-") continue;
    std::ifstream probe(path);
    if (!probe || std::filesystem::is_directory(path))
      SASREC_FAIL(Input, flag, " ", path, ": cannot read it (",
                  std::filesystem::exists(path) ? "not a readable file" : "no such file", "); check the path");
    inputs.push_back(run_input(flag, path));
  }
  return inputs;
}

// The store's users to recommend for: all, or those of --users (unknown ids reported and skipped).
std::vector<int64_t> requested_users(const Config& config, const RecommendRequest& request, const Interactions& data,
                                     std::ostream& log) {
  std::vector<int64_t> users;
  if (request.all) {
    for (int64_t u = 0; u < data.num_users(); ++u) users.push_back(u);
    return users;
  }
  std::ifstream in(request.users_file);
  if (!in) SASREC_FAIL(Input, request.users_file, ": cannot read the user list");
  std::unordered_map<std::string, int64_t> user_index;
  for (int64_t u = 0; u < data.num_users(); ++u) user_index.emplace(data.user_ids[u], u);
  for (const auto& id : read_lines(in)) {
    auto it = user_index.find(id);
    if (it == user_index.end())
      log << "recommend: unknown user id '" << id << "' skipped (not in " << config.data.path << ")\n";
    else
      users.push_back(it->second);
  }
  return users;
}

// The new users of --sequences with a known item, labelled (unknown ids
// reported and skipped). With `comm`, rank 0 reads them (stdin reaches it
// alone) and every rank gets its text.
void requested_sequences(const RecommendRequest& request, const std::vector<std::string>& item_ids, std::ostream& log,
                         Communicator* comm, std::vector<std::string>& labels, std::vector<History>& histories) {
  std::string text;
  if (!comm || comm->is_root()) {
    std::ifstream file_in;
    if (request.sequences_file != "-") {
      file_in.open(request.sequences_file);
      if (!file_in) SASREC_FAIL(Input, request.sequences_file, ": cannot read the sequences");
    }
    std::istream& in = request.sequences_file == "-" ? std::cin : file_in;
    text.assign(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
  }
  if (comm) text = comm->broadcast_string(text);
  std::istringstream in(text);
  for (const auto& p : parse_sequences(in, index_ids(item_ids))) {
    if (!p.unknown.empty()) {
      log << "recommend: " << p.label << ": " << p.unknown.size() << " unknown item id(s) skipped:";
      for (const auto& id : p.unknown) log << ' ' << id;
      log << '\n';
    }
    if (p.history.items.empty()) {
      log << "recommend: " << p.label << ": no known item, no recommendations\n";
      continue;
    }
    labels.push_back(p.label);
    histories.push_back(p.history);
  }
}

}  // namespace

int64_t run_recommend(const Config& config, const RecommendRequest& request, std::ostream& log, Communicator* comm) {
  if (request.topk < 1) SASREC_FAIL(Input, "--topk must be at least 1");
  if (!request.all && request.users_file.empty() && request.sequences_file.empty())
    SASREC_FAIL(Input, "nothing to recommend for: give --users FILE, --all or --sequences FILE (- for stdin)");
  // 1. Every input looked at, the output checked, before anything is loaded or written.
  const std::vector<RunInput> inputs = recommend_inputs(config, request);
  const std::unique_ptr<ItemShard> shard = comm ? serving_shard(config, *comm) : nullptr;
  const bool root = !shard || shard->comm().is_root();  // the rank that logs and writes
  std::ostringstream elsewhere;                          // the other ranks' log: dropped
  std::ostream& note = root ? log : elsewhere;
  std::unique_ptr<AtomicOutput> target;
  if (root && request.out != "-")
    target =
        std::make_unique<AtomicOutput>(request.out, "--out", inputs, "an existing file is untouched; free disk space");
  const RecommendFormat format = recommend_format(request.format, request.out);
  // 2. The model and the item ids.
  SASRec model = load_model_for_serving(config, request.checkpoint, shard.get());
  const std::vector<std::string> item_ids = read_item_ids(config.data.path);
  // 3. The lists, into the output's temporary (or stdout).
  std::ofstream file;
  if (target) {
    file.open(target->temp_path(), std::ios::binary | std::ios::trunc);
    if (!file) target->fail(errno, "creating");
  }
  std::ostringstream discard;
  std::ostream& out = target ? file : root ? std::cout : discard;
  write_recommend_header(out, format);
  int64_t written = 0;
  auto emit = [&](const std::vector<std::string>& labels, const std::vector<History>& histories) {
    const auto lists =
        recommend(model, histories, request.topk, config.eval.memory_mb, config.eval.scorer, shard.get());
    if (!root) return;
    for (size_t i = 0; i < lists.size(); ++i) write_recommendations(out, format, labels[i], lists[i], item_ids);
    written += static_cast<int64_t>(lists.size());
  };
  if (request.all || !request.users_file.empty()) {
    const Interactions data = read_store(config.data.path);
    const std::vector<int64_t> users = requested_users(config, request, data, note);
    for (size_t c0 = 0; c0 < users.size(); c0 += kUsersPerChunk) {
      std::vector<std::string> labels;
      std::vector<History> histories;
      for (size_t c = c0; c < std::min(users.size(), c0 + kUsersPerChunk); ++c) {
        const int64_t u = users[c];
        labels.push_back(data.user_ids[u]);
        histories.push_back(history_of(data, u));
      }
      emit(labels, histories);
    }
  }
  if (!request.sequences_file.empty()) {
    std::vector<std::string> labels;
    std::vector<History> histories;
    requested_sequences(request, item_ids, note, shard ? &shard->comm() : nullptr, labels, histories);
    emit(labels, histories);
  }
  // 4. Renamed over --out only now: a failure above left it as it was.
  out.flush();
  if (target) file.close();
  if (!out) {
    if (target) target->fail(errno ? errno : EIO);
    SASREC_FAIL(Io, "writing the recommendations to stdout failed");
  }
  if (target) target->commit();
  if (shard) shard->comm().barrier();  // every rank returns once the file is in place
  return written;
}

}  // namespace sasrec
