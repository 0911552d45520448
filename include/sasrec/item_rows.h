// item_rows.h: the rows of the item table one step touches, and their
// gradient across ranks (docs/large_catalogs.md).
//
// A step of a sampled loss (bce, sampled_softmax, gbce) reads M only at the
// batch's inputs, targets and negatives: a few thousand of I rows. The
// trainer copies those rows into a small leaf table before the forward pass
// and remaps every id of the batch to its row, so backward writes a [U,d]
// gradient, never a dense [(I+1),d] one. Across ranks the rows' gradients are
// either gathered (sparse: ids and rows, variable sizes) or scattered into
// M's dense gradient and all-reduced with the other parameters (dense).
#pragma once

#include <torch/torch.h>

#include <vector>

#include "sasrec/comm.h"

namespace sasrec {

// Sorted unique global item ids and a gradient row for each.
struct RowGradient {
  torch::Tensor ids;     // [U] int64, sorted, unique
  torch::Tensor values;  // [U,d]
};

struct ItemRows {
  torch::Tensor ids;    // [U] int64 sorted unique global item ids
  torch::Tensor table;  // [U,d] leaf copy of M[ids] that requires grad; backward fills table.grad()
  // [U,d] the rows' gradient where no copy was made (table undefined): the
  // fused step reads M[ids] in place (fused_model.h) and returns it.
  torch::Tensor grad;
  const torch::Tensor& gradient() const { return table.defined() ? table.grad() : grad; }
};

// Copies the rows of `weight` named by the ids in `parts` (any shapes; an
// undefined part is skipped) into ItemRows, and rewrites each part in place
// as row indices of the returned table.
ItemRows gather_item_rows(const torch::Tensor& weight, const std::vector<torch::Tensor*>& parts);

// Sorted unique ids of every part (any shapes; an undefined part is
// skipped; ids in [0, rows)), [U] int64 on the parts' device, each part
// rewritten in place as indices into them: gather_item_rows without the copy.
torch::Tensor unique_and_remap(const std::vector<torch::Tensor*>& parts, int64_t rows);

// Sums rows with equal ids: `ids` [R] (any order, repeats allowed), `values`
// [R,d] -> sorted unique ids and their sums. Repeats are added in the order
// they come (0 + v_first + v_second ...), so the result does not depend on
// the thread count.
RowGradient sum_duplicate_rows(const torch::Tensor& ids, const torch::Tensor& values);

// Every rank's rows summed: both tensors allgathered (sizes may differ per
// rank), then sum_duplicate_rows in rank order. Same result on every rank.
RowGradient allgather_rows(Communicator& comm, const torch::Tensor& ids, const torch::Tensor& values);

// Bytes one rank sends and receives, ring algorithms (what NCCL and Open MPI
// use for large messages): all-reduce of `bytes`: 2 (p-1)/p bytes;
// allgather of `total_bytes` over all ranks: (p-1)/p total_bytes.
int64_t allreduce_wire_bytes(int64_t bytes, int world);
int64_t allgather_wire_bytes(int64_t total_bytes, int world);

}  // namespace sasrec
