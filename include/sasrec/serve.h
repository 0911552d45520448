// serve.h: using a trained checkpoint, one process, no MPI: top-K
// recommendations by original ids (`sasrec_ddp recommend`) and the export of
// item embeddings and user states for an ANN index (`sasrec_ddp export`).
//
// A user's representation is the final hidden state F at the last position
// of the whole history (train + valid + test; its last maxlen items), the
// vector the model scores items with: score(i) = F . M[i]. Recommendations
// exclude every item of the history and the padding item. This file owns
// scoring, top-K, id lookup and the export file; training, evaluation and
// the store format live elsewhere (trainer.h, evaluator.h, store.h).
//
// A sharded model (train.item_table: sharded, item_shard.h) is served under
// mpirun on the rank count that trained it, no rank holding the whole table:
// each rank computes the user vectors of a slice of each chunk of users,
// fetching their history's rows from the owners; the vectors go to every
// rank; each scores them against its own block and keeps its k best; the
// ranks' lists are allgathered and merged (merge_top_k) and rank 0 writes
// the output. Export sends the
// blocks to rank 0 in chunks of rows. Functions taking an ItemShard are
// called by every rank, with the same arguments, in the same order.
//
// Export file (HDF5), version 1:
//   / attrs: format = "sasrec-embeddings", version = 1, hidden = D,
//            num_items = I, num_users = U, checkpoint = path
//   /items/id      string  [I]    original item ids (the store's rows 1..I)
//   /items/vector  float32 [I,D]  M[1..I], the item embeddings
//   /users/id      string  [U]    original user ids
//   /users/vector  float32 [U,D]  F of each user's whole history
// Inner product of a user row and an item row = the model's score.
#pragma once

#include <torch/torch.h>

#include <cstdint>
#include <istream>
#include <memory>
#include <ostream>
#include <string>
#include <unordered_map>
#include <vector>

#include "sasrec/comm.h"
#include "sasrec/config.h"
#include "sasrec/item_shard.h"
#include "sasrec/model.h"
#include "sasrec/store.h"

namespace sasrec {

inline constexpr const char* kExportFormat = "sasrec-embeddings";
inline constexpr int kExportVersion = 1;

// One scored item: its index 1..I and the model's score.
struct ScoredItem {
  int32_t item = 0;
  float score = 0;
};

// A history of item indices (oldest first) and, with model.user_embedding,
// the user's index (-1: a new user, who has no user vector).
struct History {
  std::vector<int32_t> items;
  int64_t user = -1;
};

// F at the last position of each history's last maxlen items: [n,D] float32.
// An empty history gives a zero row. Evaluates in eval mode, without grad,
// in blocks of `batch` histories. With `shard`, `model` holds this rank's
// block and each rank passes its own histories (any number, none too).
torch::Tensor final_states(SASRec& model, const std::vector<History>& histories, int64_t batch = 256,
                           ItemShard* shard = nullptr);

// The k highest-scoring of the items first .. first+count-1, scores[j]
// being item first+j's, skipping item 0 and every item in `exclude`; best
// first, ties by lower index. Fewer than k when fewer items are left.
std::vector<ScoredItem> top_k(const float* scores, int64_t first, int64_t count, const std::vector<int32_t>& exclude,
                              int k);
// The same over a whole table's scores [I+1] (row 0 = padding).
inline std::vector<ScoredItem> top_k(const float* scores, int64_t num_items, const std::vector<int32_t>& exclude,
                                     int k) {
  return top_k(scores + 1, 1, num_items, exclude, k);
}
// The k best of the union of `lists` (each best first, no item in two):
// the top-k of a whole table from the top-k of each of its blocks.
std::vector<ScoredItem> merge_top_k(const std::vector<std::vector<ScoredItem>>& lists, int k);

// Top-K for each history, its own items excluded: [n][<=k]. Scored in
// blocks of users under memory_mb, on the model's device: BLAS and a heap on
// the CPU (Scorer::Blocked), tensor ops and torch::topk elsewhere
// (Scorer::Tensor, which runs on the CPU too); the lists are the same.
// With `shard`: every rank passes the same histories and gets the same
// lists, each rank having scored only its block.
std::vector<std::vector<ScoredItem>> recommend(SASRec& model, const std::vector<History>& histories, int k,
                                               int64_t memory_mb = 256, Scorer scorer = Scorer::Auto,
                                               ItemShard* shard = nullptr);

// A new user's sequence of original item ids, mapped to indices.
struct ParsedSequence {
  std::string label;                 // "new-<line>" or the label given before a ':'
  History history;                   // the known items, in order
  std::vector<std::string> unknown;  // ids not in the store's item map
};

// Reads new users, one a line: "[label:] item item ..." (ids separated by
// spaces, tabs or commas, oldest first). Blank lines and lines starting with
// '#' are skipped. Unknown ids are collected, not fatal.
std::vector<ParsedSequence> parse_sequences(std::istream& in,
                                            const std::unordered_map<std::string, int32_t>& item_index);

// item id -> index 1..I from the store's item map (row 0, the padding, left out).
std::unordered_map<std::string, int32_t> index_ids(const std::vector<std::string>& item_ids);

enum class RecommendFormat { Csv, Jsonl };
// "csv" | "jsonl"; "" picks by the file name (.json/.jsonl: jsonl, else csv).
RecommendFormat recommend_format(const std::string& format, const std::string& out_path);

// Writes one user's list. CSV: "user_id,rank,item_id,score" rows (rank 1 =
// best; the header is written by write_recommend_header). JSON lines:
// {"user":..,"items":[..],"scores":[..]}.
void write_recommend_header(std::ostream& out, RecommendFormat format);
void write_recommendations(std::ostream& out, RecommendFormat format, const std::string& user,
                           const std::vector<ScoredItem>& items, const std::vector<std::string>& item_ids);

// The model of `config` (catalog size from config.data.path) with the
// parameters of `checkpoint`, in eval mode on the shard's device (sharded:
// this rank's block, block_checkpoint.h) or runtime.device. Refuses a
// checkpoint of another model function or trained on another item map (checkpoint.h).
SASRec load_model_for_serving(const Config& config, const std::string& checkpoint, ItemShard* shard = nullptr);

// The ItemShard of a sharded config (train.item_table: sharded) on `comm`;
// null for a replicated one.
std::unique_ptr<ItemShard> serving_shard(const Config& config, Communicator& comm);

// Writes the export file (layout above) for every user of `data` through an
// AtomicOutput: never over a non-regular file or one of `inputs`, whole or
// not at all (a full disk leaves the old file and no temporary). With
// `shard`, rank 0 writes the file and the other ranks send it their rows.
void export_embeddings(SASRec& model, const Interactions& data, const std::string& checkpoint,
                       const std::string& out_path, const std::vector<RunInput>& inputs = {},
                       ItemShard* shard = nullptr);

// What `sasrec_ddp recommend` does. users_file: original user ids, one a
// line ("" with all = every user); sequences_file: new users ("-" = stdin,
// "" = none). Unknown user or item ids are reported on `log`. Every input is
// checked before the model is loaded; `out` (unless "-") is an AtomicOutput:
// a failure leaves an existing file as it was, and it may not be an input
// (the checkpoint, the store, the config, the lists). Returns the number of
// users written. A sharded config is served on `comm` (every rank calls
// it; rank 0 logs and writes).
struct RecommendRequest {
  std::string checkpoint;
  std::string users_file;
  bool all = false;
  std::string sequences_file;
  int topk = 10;
  std::string out = "-";    // "-": stdout
  std::string format;       // csv | jsonl | "" (by the file name)
  std::string config_path;  // the config file, an input --out may not replace
};
int64_t run_recommend(const Config& config, const RecommendRequest& request, std::ostream& log,
                      Communicator* comm = nullptr);

}  // namespace sasrec
