#include "fabric/wrappers.h"

#include "backward_flag.h"

namespace fabric::detail {

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

}  // namespace fabric::detail
