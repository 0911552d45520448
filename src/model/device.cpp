// device.cpp: a rank's device and thread count (see device.h).
#include "sasrec/device.h"

#include <algorithm>
#include <thread>

#include <ATen/CPUGeneratorImpl.h>

#include "sasrec/error.h"

namespace sasrec {

torch::Device resolve_device(DeviceKind setting, int local_rank) {
  const bool cuda = torch::cuda::is_available();
  if (setting == DeviceKind::Cuda && !cuda)
    SASREC_FAIL(Config, "runtime.device is cuda but this build or machine has no CUDA device; use auto or cpu");
  if (setting == DeviceKind::Cpu || !cuda) return torch::Device(torch::kCPU);
  const int n = static_cast<int>(torch::cuda::device_count());
  return torch::Device(torch::kCUDA, static_cast<c10::DeviceIndex>(local_rank % n));
}

int resolve_threads(int setting) {
  return setting > 0 ? setting : std::max(1, static_cast<int>(std::thread::hardware_concurrency()));
}

TorchSeedScope::TorchSeedScope(uint64_t seed) {
  at::Generator gen = at::detail::getDefaultCPUGenerator();  // a handle sharing the default generator
  saved_ = gen.get_state();
  gen.set_current_seed(seed);
}

TorchSeedScope::~TorchSeedScope() {
  at::Generator gen = at::detail::getDefaultCPUGenerator();
  gen.set_state(saved_);
}

}  // namespace sasrec
