// step_graph_cuda.cpp: the CUDA graph capture of runtime.cuda_graphs (see
// step_graph.h). Built when Torch has CUDA.
//
// Per token bucket: static device copies of the padded inputs, three warm-up
// steps on a side stream (kernel choices, workspaces, autograd buffers),
// then forward + loss + backward captured with every gradient freshly
// allocated inside the graph's own memory pool. Each replay writes the same
// gradient tensors, which run() hands back to the parameters. Buckets keep
// separate pools: they are replayed in any order.
#include <ATen/cuda/CUDAGraph.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>

#include <map>

#include "sasrec/error.h"
#include "sasrec/step_graph.h"

namespace sasrec {
struct StepGraph::Impl {
  struct Captured {
    std::unique_ptr<at::cuda::CUDAGraph> graph;
    PaddedInputs inputs;  // static device tensors the graph reads
    torch::Tensor scale;  // [] float32: the step's 1 / global targets
    torch::Tensor loss;   // [] the weighted loss sum the graph writes
    std::vector<torch::Tensor> grads;
  };
  std::vector<torch::Tensor> params;
  Body body;
  torch::Device device{torch::kCPU};
  std::map<int64_t, Captured> graphs;  // by token count

  torch::Tensor step(Captured& c) {
    for (auto& p : params) p.mutable_grad().reset();
    auto loss = body(c.inputs.inputs, c.inputs.weight);
    (loss * c.scale).backward();
    return loss;
  }

  Captured& capture(const PaddedInputs& host) {
    Captured c;
    c.inputs = host;
    for (auto* t : c.inputs.inputs.staged_tensors())
      if (t->defined()) *t = t->to(device);
    c.inputs.weight = host.weight.to(device);
    c.scale = torch::ones({}, torch::TensorOptions().dtype(torch::kFloat32).device(device));
    c.graph = std::make_unique<at::cuda::CUDAGraph>();
    torch::cuda::synchronize();
    {
      const c10::cuda::CUDAStreamGuard side(c10::cuda::getStreamFromPool(false, device.index()));
      for (int i = 0; i < 3; ++i) step(c);
      torch::cuda::synchronize();
      for (auto& p : params) p.mutable_grad().reset();
      c.graph->capture_begin();
      c.loss = step(c);
      c.graph->capture_end();
    }
    torch::cuda::synchronize();
    for (auto& p : params) c.grads.push_back(p.grad());
    return graphs.emplace(host.inputs.pos.size(0), std::move(c)).first->second;
  }
};

StepGraph::StepGraph(std::vector<torch::Tensor> parameters, Body body) : impl_(std::make_unique<Impl>()) {
  SASREC_CHECK(!parameters.empty() && parameters.front().is_cuda(), "CUDA graphs need the model on a CUDA device");
  impl_->params = std::move(parameters);
  impl_->body = std::move(body);
  impl_->device = impl_->params.front().device();
}

StepGraph::~StepGraph() = default;

torch::Tensor StepGraph::run(const PaddedInputs& inputs, double scale) {
  auto found = impl_->graphs.find(inputs.inputs.pos.size(0));
  Impl::Captured& c = found != impl_->graphs.end() ? found->second : impl_->capture(inputs);
  // New values into the static tensors (shapes are the bucket's), then the replay.
  StepInputs host = inputs.inputs;
  auto dst = c.inputs.inputs.staged_tensors(), src = host.staged_tensors();
  for (size_t i = 0; i < dst.size(); ++i)
    if (dst[i]->defined()) dst[i]->copy_(*src[i], /*non_blocking=*/true);
  c.inputs.weight.copy_(inputs.weight, /*non_blocking=*/true);
  c.scale.fill_(scale);
  c.graph->replay();
  for (size_t i = 0; i < impl_->params.size(); ++i) impl_->params[i].mutable_grad() = c.grads[i];
  return c.loss;
}

int64_t StepGraph::captured() const { return static_cast<int64_t>(impl_->graphs.size()); }

}  // namespace sasrec
