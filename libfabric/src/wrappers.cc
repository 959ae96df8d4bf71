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

void report_progress(const Strategy& strategy, const char* phase, std::int64_t samples) noexcept {
  auto* launcher = strategy.launcher();
  if (launcher == nullptr) return;
  launcher->progress(phase);
  if (samples > 0) launcher->samples(samples);
}

}  // namespace detail

bool FabricOptimizer::step() {
  const bool stepped = strategy_->optimizer_step(*optimizer_);
  if (auto* launcher = strategy_->launcher()) launcher->step();
  return stepped;
}

}  // namespace fabric
