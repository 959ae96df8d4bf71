#include "fabric/wrappers.h"

#include "backward_flag.h"
#include "environments/launcher_services.h"

namespace fabric {
namespace detail {

void guard_backward(const torch::Tensor& tensor) {
  if (!tensor.requires_grad()) return;
  tensor.register_hook([](const torch::Tensor&) {
    if (!inside_fabric_backward()) {
      throw UsageError(
          "The current strategy and precision selection requires you to call fabric.backward(loss) "
          "instead of loss.backward().");
    }
  });
}

ForwardFailure::~ForwardFailure() {
  if (!failed_) return;
  try {
    strategy_.forward_failed(module_);
  } catch (...) {
    // The forward's own exception is the one the caller sees.
  }
}

void report_progress(const Strategy& strategy, const char* phase, std::int64_t samples) noexcept {
  auto* launcher = strategy.launcher();
  if (launcher == nullptr) return;
  launcher->progress(phase);
  if (samples > 0) launcher->samples(samples);
}

}  // namespace detail

bool FabricOptimizer::step() {
  const bool stepped = strategy_->optimizer_step(*optimizer_, nullptr).stepped;
  if (auto* launcher = strategy_->launcher()) launcher->step();
  return stepped;
}

void FabricOptimizer::zero_grad(bool set_to_none) {
  strategy_->before_zero_grad(*optimizer_);
  for (auto& group : optimizer_->param_groups()) {
    for (auto& param : group.params()) {
      torch::Tensor& grad = param.mutable_grad();
      if (!grad.defined()) continue;
      if (set_to_none) {
        grad.reset();
        continue;
      }
      if (grad.grad_fn()) {
        grad.detach_();
      } else {
        grad.requires_grad_(false);
      }
      grad.zero_();
    }
  }
}

torch::Tensor FabricOptimizer::step(const LossClosure& closure) {
  if (!closure) throw UsageError("FabricOptimizer::step(closure) needs a closure; call step() without one instead.");
  // Optimizers step under NoGradGuard; the closure must build a graph to backward through
  // (Python's optimizers wrap it in torch.enable_grad() the same way).
  LossClosure with_grad = [&closure] {
    torch::AutoGradMode enable_grad(true);
    return closure();
  };
  torch::Tensor loss = strategy_->optimizer_step(*optimizer_, with_grad).loss;
  if (auto* launcher = strategy_->launcher()) launcher->step();
  return loss;
}

}  // namespace fabric
