// "64-true": parameters, inputs and the default dtype are float64; outputs come back in
// the default dtype outside forward (float32), as Lightning's DoublePrecision does.
#pragma once

#include "fabric/precision.h"

namespace fabric::precision {

class DoublePrecision final : public Precision {
 public:
  std::string_view name() const override { return "64-true"; }
  void convert_module(torch::nn::Module& module) const override;
  Scope init_context() const override;
  Scope forward_context() const override;
  std::optional<torch::ScalarType> input_dtype() const override { return torch::kFloat64; }
  bool converts_output() const override { return true; }
};

}  // namespace fabric::precision
