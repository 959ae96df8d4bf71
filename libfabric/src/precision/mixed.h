// "16-mixed" and "bf16-mixed": float32 weights, forward under autocast, inputs cast to the
// half type and outputs back to float32. "16-mixed" scales the loss with a GradScaler,
// which is why loss.backward() must go through fabric.backward() (for both, as in Lightning).
#pragma once

#include <memory>
#include <string>

#include "fabric/grad_scaler.h"
#include "fabric/precision.h"

namespace fabric::precision {

class MixedPrecision final : public Precision {
 public:
  // A scaler is created for float16 on the given device; bfloat16 needs none.
  MixedPrecision(torch::ScalarType dtype, torch::Device device);

  std::string_view name() const override { return name_; }
  Scope forward_context() const override;
  std::optional<torch::ScalarType> input_dtype() const override { return dtype_; }
  bool converts_output() const override { return true; }
  bool requires_fabric_backward() const override { return true; }
  void backward(const torch::Tensor& loss, const BackwardOptions& options) const override;
  StepOutcome optimizer_step(torch::optim::Optimizer& optimizer, const LossClosure& closure) override;
  void unscale_gradients(torch::optim::Optimizer& optimizer) override;
  GradScaler* grad_scaler() override { return scaler_.get(); }

 private:
  torch::ScalarType dtype_;
  torch::DeviceType device_type_;
  std::string name_;
  std::unique_ptr<GradScaler> scaler_;
};

}  // namespace fabric::precision
