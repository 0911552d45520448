// torch_compat.h: every difference between the libtorch versions this code
// builds against, in one place: Debian's libtorch 1.13 (the CPU build) and
// PyTorch 2.x's (the CUDA build, 2.11 on the GPU machines). The rest of the
// code calls these and carries no version #if of its own.
//
//   scaled dot-product attention  at::scaled_dot_product_attention exists from 2.0
//   autocast                      1.13: set_enabled / set_cpu_enabled and a dtype
//                                 per device kind; 2.4+: one call taking the device type
//   optimizer state keys          1.13: the TensorImpl's address as a string; 2.x: the address
#pragma once

#include <ATen/autocast_mode.h>
#include <torch/torch.h>
#include <torch/version.h>

#include <utility>

namespace sasrec::compat {

// Whether this libtorch has at::scaled_dot_product_attention.
inline constexpr bool kHasSdpa = TORCH_VERSION_MAJOR >= 2;
// "1.13.1" / "2.11.0": the libtorch this binary was built with.
inline const char* torch_version() { return TORCH_VERSION; }

// softmax(q k^T / sqrt(dh) + mask) v over [B,H,T,dh] tensors with a boolean
// mask [B,1,T,T] (true: may attend) and dropout p on the weights, through
// the fused kernels of torch 2.x (flash / memory-efficient on CUDA, the
// math kernel on CPU). Only call where kHasSdpa; elsewhere it throws.
inline torch::Tensor scaled_dot_product_attention(const torch::Tensor& q, const torch::Tensor& k,
                                                  const torch::Tensor& v, const torch::Tensor& mask, double p) {
#if TORCH_VERSION_MAJOR >= 2
  return at::scaled_dot_product_attention(q, k, v, mask, p);
#else
  (void)q, (void)k, (void)v, (void)mask, (void)p;
  TORCH_CHECK(false, "scaled_dot_product_attention needs libtorch 2.x; this build has ", TORCH_VERSION);
  return {};
#endif
}

// The key under which torch::optim::Optimizer keeps a parameter's state
// (Optimizer::state()'s key type differs between the versions).
inline auto optimizer_state_key(const torch::Tensor& p) {
#if TORCH_VERSION_MAJOR >= 2
  return static_cast<void*>(p.unsafeGetTensorImpl());
#else
  return c10::guts::to_string(p.unsafeGetTensorImpl());
#endif
}
using OptimizerStateKey = decltype(optimizer_state_key(std::declval<const torch::Tensor&>()));

// Autocast of `device_type` (CPU or CUDA) to `dtype` while alive, the state
// before it restored after; a disabled guard changes nothing.
class AutocastGuard {
 public:
  AutocastGuard(c10::DeviceType device_type, c10::ScalarType dtype, bool enabled)
      : device_type_(device_type), enabled_(enabled) {
    if (!enabled_) return;
    was_enabled_ = is_enabled(device_type_);
    previous_dtype_ = get_dtype(device_type_);
    set_dtype(device_type_, dtype);
    set_enabled(device_type_, true);
    at::autocast::increment_nesting();
  }
  ~AutocastGuard() {
    if (!enabled_) return;
    if (at::autocast::decrement_nesting() == 0) at::autocast::clear_cache();
    set_enabled(device_type_, was_enabled_);
    set_dtype(device_type_, previous_dtype_);
  }
  AutocastGuard(const AutocastGuard&) = delete;
  AutocastGuard& operator=(const AutocastGuard&) = delete;

 private:
#if TORCH_VERSION_MAJOR > 2 || (TORCH_VERSION_MAJOR == 2 && TORCH_VERSION_MINOR >= 4)
  static bool is_enabled(c10::DeviceType d) { return at::autocast::is_autocast_enabled(d); }
  static void set_enabled(c10::DeviceType d, bool on) { at::autocast::set_autocast_enabled(d, on); }
  static c10::ScalarType get_dtype(c10::DeviceType d) { return at::autocast::get_autocast_dtype(d); }
  static void set_dtype(c10::DeviceType d, c10::ScalarType t) { at::autocast::set_autocast_dtype(d, t); }
#else
  static bool is_enabled(c10::DeviceType d) {
    return d == c10::DeviceType::CPU ? at::autocast::is_cpu_enabled() : at::autocast::is_enabled();
  }
  static void set_enabled(c10::DeviceType d, bool on) {
    if (d == c10::DeviceType::CPU)
      at::autocast::set_cpu_enabled(on);
    else
      at::autocast::set_enabled(on);
  }
  static c10::ScalarType get_dtype(c10::DeviceType d) {
    return d == c10::DeviceType::CPU ? at::autocast::get_autocast_cpu_dtype() : at::autocast::get_autocast_gpu_dtype();
  }
  static void set_dtype(c10::DeviceType d, c10::ScalarType t) {
    if (d == c10::DeviceType::CPU)
      at::autocast::set_autocast_cpu_dtype(t);
    else
      at::autocast::set_autocast_gpu_dtype(t);
  }
#endif

  c10::DeviceType device_type_;
  bool enabled_;
  bool was_enabled_ = false;
  c10::ScalarType previous_dtype_ = c10::ScalarType::Float;
};

}  // namespace sasrec::compat
