#include "fabric/strategy.h"

#include <torch/nn/utils/clip_grad.h>

#include "fabric/errors.h"

namespace fabric {
namespace {

template <typename T>
T& completed(const std::shared_ptr<T>& part, std::string_view strategy, const char* what) {
  if (!part) {
    throw UsageError("The " + std::string(strategy) + " strategy has no " + what +
                     " yet: pass it to fabric::Fabric, which completes it with the options it resolves.");
  }
  return *part;
}

}  // namespace

Accelerator& Strategy::accelerator() const { return completed(accelerator_, name(), "accelerator"); }
Precision& Strategy::precision() const { return completed(precision_, name(), "precision"); }
CheckpointIO& Strategy::checkpoint_io() const { return completed(checkpoint_io_, name(), "checkpoint IO"); }

double Strategy::clip_gradients_norm(torch::nn::Module&, torch::optim::Optimizer& optimizer, double max_norm,
                                     double norm_type, bool error_if_nonfinite) {
  std::vector<torch::Tensor> params;
  for (auto& group : optimizer.param_groups()) {
    params.insert(params.end(), group.params().begin(), group.params().end());
  }
  return torch::nn::utils::clip_grad_norm_(params, max_norm, norm_type, error_if_nonfinite);
}

}  // namespace fabric
