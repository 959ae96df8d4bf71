#include "precision/half.h"

#include "precision/scopes.h"

namespace fabric::precision {

HalfPrecision::HalfPrecision(torch::ScalarType dtype)
    : dtype_(dtype), name_(dtype == torch::kBFloat16 ? "bf16-true" : "16-true") {}

void HalfPrecision::convert_module(torch::nn::Module& module) const { module.to(dtype_); }
Scope HalfPrecision::init_context() const { return default_dtype_scope(dtype_); }
Scope HalfPrecision::forward_context() const { return default_dtype_scope(dtype_); }

}  // namespace fabric::precision
