// "16-true" and "bf16-true": the whole model in float16 or bfloat16 (weights included),
// inputs cast to it, outputs back to float32, as Lightning's HalfPrecision.
#pragma once

#include <string>

#include "fabric/precision.h"

namespace fabric::precision {

class HalfPrecision final : public Precision {
 public:
  explicit HalfPrecision(torch::ScalarType dtype);
  std::string_view name() const override { return name_; }
  void convert_module(torch::nn::Module& module) const override;
  Scope init_context() const override;
  Scope forward_context() const override;
  std::optional<torch::ScalarType> input_dtype() const override { return dtype_; }
  bool converts_output() const override { return true; }

 private:
  torch::ScalarType dtype_;
  std::string name_;
};

}  // namespace fabric::precision
