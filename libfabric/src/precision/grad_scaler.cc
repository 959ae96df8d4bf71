#include "fabric/grad_scaler.h"

#include <ATen/ops/_amp_foreach_non_finite_check_and_unscale.h>
#include <ATen/ops/_amp_update_scale.h>

#include <map>
#include <tuple>

#include "fabric/errors.h"

namespace fabric {

GradScaler::GradScaler(torch::Device device, GradScalerOptions options)
    : options_(options),
      scale_(torch::full({}, options.init_scale, torch::TensorOptions().dtype(torch::kFloat32).device(device))),
      growth_tracker_(torch::zeros({}, torch::TensorOptions().dtype(torch::kInt32).device(device))) {}

torch::Tensor GradScaler::scale(const torch::Tensor& loss) {
  return loss * scale_.to(loss.device(), /*non_blocking=*/true);
}

torch::Tensor GradScaler::found_inf_for(torch::optim::Optimizer& optimizer) {
  // Unscale in float64 reciprocal precision, as torch.amp.GradScaler does.
  const torch::Tensor inv_scale = scale_.to(torch::kFloat64).reciprocal().to(torch::kFloat32);
  torch::Tensor found_inf = torch::zeros({1}, scale_.options());
  // The fused kernel takes one dtype and device per call.
  std::map<std::tuple<int, int, int>, std::vector<torch::Tensor>> grads;  // (device type, index, dtype)
  for (auto& group : optimizer.param_groups()) {
    for (auto& param : group.params()) {
      const torch::Tensor& grad = param.grad();
      if (!grad.defined()) continue;
      grads[{static_cast<int>(grad.device().type()), grad.device().index(), static_cast<int>(grad.scalar_type())}]
          .push_back(grad);
    }
  }
  for (auto& [key, tensors] : grads) {
    const torch::Device device = tensors.front().device();
    torch::Tensor device_found_inf = torch::zeros({1}, scale_.options().device(device));
    at::_amp_foreach_non_finite_check_and_unscale_(tensors, device_found_inf, inv_scale.to(device));
    found_inf.add_(device_found_inf.to(found_inf.device()));
  }
  if (reduce_found_inf_) reduce_found_inf_(found_inf);
  return found_inf;
}

void GradScaler::unscale_(torch::optim::Optimizer& optimizer) {
  if (found_inf_per_optimizer_.count(&optimizer)) {
    throw UsageError("GradScaler::unscale_() was already called on this optimizer since the last update(); "
                     "call it at most once per optimizer step.");
  }
  found_inf_per_optimizer_.emplace(&optimizer, found_inf_for(optimizer));
}

bool GradScaler::step(torch::optim::Optimizer& optimizer) {
  auto it = found_inf_per_optimizer_.find(&optimizer);
  if (it == found_inf_per_optimizer_.end()) {
    it = found_inf_per_optimizer_.emplace(&optimizer, found_inf_for(optimizer)).first;
  }
  if (it->second.item<float>() != 0.0f) return false;  // inf/NaN gradients: skip this step
  optimizer.step();
  return true;
}

void GradScaler::update() {
  if (found_inf_per_optimizer_.empty()) return;  // nothing was unscaled since the last update
  torch::Tensor found_inf = torch::zeros({1}, scale_.options());
  for (auto& [optimizer, flag] : found_inf_per_optimizer_) found_inf.add_(flag);
  at::_amp_update_scale_(scale_, growth_tracker_, found_inf, options_.growth_factor, options_.backoff_factor,
                         options_.growth_interval);
  found_inf_per_optimizer_.clear();
}

double GradScaler::get_scale() const { return scale_.item<double>(); }
std::int64_t GradScaler::growth_tracker() const { return growth_tracker_.item<std::int64_t>(); }

}  // namespace fabric
