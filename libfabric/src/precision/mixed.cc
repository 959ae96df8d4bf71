#include "precision/mixed.h"

#include <torch/optim/lbfgs.h>

#include "fabric/errors.h"
#include "precision/scopes.h"

namespace fabric::precision {

MixedPrecision::MixedPrecision(torch::ScalarType dtype, torch::Device device)
    : dtype_(dtype),
      device_type_(device.type()),
      name_(dtype == torch::kBFloat16 ? "bf16-mixed" : "16-mixed"),
      scaler_(dtype == torch::kFloat16 ? std::make_unique<GradScaler>(device) : nullptr) {}

Scope MixedPrecision::forward_context() const { return autocast_scope(device_type_, dtype_); }

void MixedPrecision::backward(const torch::Tensor& loss, const BackwardOptions& options) const {
  run_backward(scaler_ ? scaler_->scale(loss) : loss, options);
}

StepOutcome MixedPrecision::optimizer_step(torch::optim::Optimizer& optimizer, const LossClosure& closure) {
  if (!scaler_) return {.stepped = true, .loss = optimizer.step(closure)};
  if (dynamic_cast<torch::optim::LBFGS*>(&optimizer) != nullptr) {
    throw UsageError("Native AMP and the LBFGS optimizer are not compatible: precision=\"16-mixed\" scales the loss, "
                     "which LBFGS's line search cannot undo. Use \"bf16-mixed\" or \"32-true\" with LBFGS.");
  }
  if (closure) {
    throw UsageError("precision=\"16-mixed\" cannot step an optimizer with a closure: its gradient scaler must unscale "
                     "the gradients between backward and step (torch.amp.GradScaler refuses closures too). Call "
                     "fabric.backward(loss) and optimizer.step() yourself, or use \"bf16-mixed\".");
  }
  const bool stepped = scaler_->step(optimizer);
  scaler_->update();  // after every step, skipped or not, as Lightning does
  return {.stepped = stepped};
}

void MixedPrecision::unscale_gradients(torch::optim::Optimizer& optimizer) {
  if (scaler_) scaler_->unscale_(optimizer);
}

}  // namespace fabric::precision
