#include "precision/mixed.h"

#include "precision/scopes.h"

namespace fabric::precision {

MixedPrecision::MixedPrecision(torch::ScalarType dtype, torch::Device device)
    : dtype_(dtype),
      device_type_(device.type()),
      name_(dtype == torch::kBFloat16 ? "bf16-mixed" : "16-mixed"),
      scaler_(dtype == torch::kFloat16 ? std::make_unique<GradScaler>(device) : nullptr) {}

Scope MixedPrecision::forward_context() const { return autocast_scope(device_type_, dtype_); }

void MixedPrecision::backward(const torch::Tensor& loss) const {
  if (scaler_) {
    scaler_->scale(loss).backward();
  } else {
    loss.backward();
  }
}

bool MixedPrecision::optimizer_step(torch::optim::Optimizer& optimizer) {
  if (!scaler_) {
    optimizer.step();
    return true;
  }
  const bool stepped = scaler_->step(optimizer);
  scaler_->update();  // after every step, skipped or not, as Lightning does
  return stepped;
}

void MixedPrecision::unscale_gradients(torch::optim::Optimizer& optimizer) {
  if (scaler_) scaler_->unscale_(optimizer);
}

}  // namespace fabric::precision
