// step_graph_unavailable.cpp: runtime.cuda_graphs in a build without CUDA
// (CMake compiles this file instead of step_graph_cuda.cpp).
#include "sasrec/error.h"
#include "sasrec/step_graph.h"

namespace sasrec {

struct StepGraph::Impl {};

StepGraph::StepGraph(std::vector<torch::Tensor>, Body) {
  SASREC_FAIL(Config,
              "runtime.cuda_graphs is true, but this build has no CUDA: build against a CUDA libtorch "
              "(bash tools/dev.sh cuda-test, launch/gpu_check.sh) or set runtime.cuda_graphs: false");
}
StepGraph::~StepGraph() = default;
torch::Tensor StepGraph::run(const PaddedInputs&, double) { return {}; }
int64_t StepGraph::captured() const { return 0; }

}  // namespace sasrec
