#include <ATen/core/Tensor.h>

#include "fabric/precision.h"

namespace fabric {

void run_backward(const torch::Tensor& loss, const BackwardOptions& options) {
  std::optional<at::TensorList> inputs;
  if (!options.inputs.empty()) inputs = at::TensorList(options.inputs);
  loss.backward(options.gradient, options.retain_graph, options.create_graph, inputs);
}

}  // namespace fabric
