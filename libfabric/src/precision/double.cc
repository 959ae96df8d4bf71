#include "precision/double.h"

#include "precision/scopes.h"

namespace fabric::precision {

void DoublePrecision::convert_module(torch::nn::Module& module) const { module.to(torch::kFloat64); }
Scope DoublePrecision::init_context() const { return default_dtype_scope(torch::kFloat64); }
Scope DoublePrecision::forward_context() const { return default_dtype_scope(torch::kFloat64); }

}  // namespace fabric::precision
