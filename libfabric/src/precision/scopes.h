// The two scopes precisions are made of: a default-dtype switch and an autocast region.
// Both restore exactly what was in force before, so they nest.
#pragma once

#include <torch/types.h>

#include "fabric/scope.h"

namespace fabric::precision {

// torch::get_default_dtype() is `dtype` until the scope ends (Lightning's _DtypeContextManager).
Scope default_dtype_scope(torch::ScalarType dtype);

// Autocast to `dtype` for `device_type` until the scope ends (torch.autocast's enter/exit).
Scope autocast_scope(torch::DeviceType device_type, torch::ScalarType dtype);

}  // namespace fabric::precision
