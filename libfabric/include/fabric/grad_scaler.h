// GradScaler: dynamic loss scaling for "16-mixed", the semantics of torch.amp.GradScaler.
// backward multiplies the loss by the scale; step unscales the gradients (once), skips the
// optimizer step if any gradient is inf/NaN, and update() grows the scale after
// growth_interval clean steps or backs it off after an overflow. Single-threaded use.
#pragma once

#include <torch/optim/optimizer.h>
#include <torch/types.h>

#include <functional>
#include <unordered_map>

namespace fabric {

struct GradScalerOptions {
  double init_scale = 65536.0;
  double growth_factor = 2.0;
  double backoff_factor = 0.5;
  std::int64_t growth_interval = 2000;
};

class GradScaler {
 public:
  GradScaler(torch::Device device, GradScalerOptions options = {});

  torch::Tensor scale(const torch::Tensor& loss);
  // Divides this optimizer's gradients by the scale, recording whether any is non-finite.
  // Idempotent until the next update().
  void unscale_(torch::optim::Optimizer& optimizer);
  // Unscales if needed and steps the optimizer unless a gradient was non-finite.
  // Returns whether the optimizer stepped.
  bool step(torch::optim::Optimizer& optimizer);
  // Adjusts the scale from what the steps since the last update saw.
  void update();

  // Sharded training (fsdp): a rank sees only its shard's gradients, so the ranks must agree
  // on whether any gradient anywhere is non-finite, or one rank would step while another
  // skips. `reduce` sums a found-inf flag across the ranks, in place; every rank then calls
  // unscale_ / step the same number of times (torch's ShardedGradScaler).
  using FoundInfReduction = std::function<void(torch::Tensor& found_inf)>;
  void set_found_inf_reduction(FoundInfReduction reduce) { reduce_found_inf_ = std::move(reduce); }

  double get_scale() const;
  std::int64_t growth_tracker() const;

 private:
  torch::Tensor found_inf_for(torch::optim::Optimizer& optimizer);

  GradScalerOptions options_;
  FoundInfReduction reduce_found_inf_;  // empty: this rank's gradients are all of them
  torch::Tensor scale_;           // float32, on the device
  torch::Tensor growth_tracker_;  // int32, on the device
  // Per optimizer since the last update(): its found-inf flag once unscaled.
  std::unordered_map<const torch::optim::Optimizer*, torch::Tensor> found_inf_per_optimizer_;
};

}  // namespace fabric
