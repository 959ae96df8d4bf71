#include "precision/scopes.h"

#include <ATen/autocast_mode.h>
#include <c10/core/DefaultDtype.h>

namespace fabric::precision {

Scope default_dtype_scope(torch::ScalarType dtype) {
  const caffe2::TypeMeta previous = c10::get_default_dtype();
  c10::set_default_dtype(c10::scalarTypeToTypeMeta(dtype));
  return Scope([previous] { c10::set_default_dtype(previous); });
}

Scope autocast_scope(torch::DeviceType device_type, torch::ScalarType dtype) {
  const bool was_enabled = at::autocast::is_autocast_enabled(device_type);
  const torch::ScalarType previous_dtype = at::autocast::get_autocast_dtype(device_type);
  const bool cache_was_enabled = at::autocast::is_autocast_cache_enabled();
  at::autocast::set_autocast_enabled(device_type, true);
  at::autocast::set_autocast_dtype(device_type, dtype);
  at::autocast::set_autocast_cache_enabled(true);
  at::autocast::increment_nesting();
  return Scope([=] {
    // The cast cache holds weights cast for this region; drop it when the outermost ends.
    if (at::autocast::decrement_nesting() == 0) at::autocast::clear_cache();
    at::autocast::set_autocast_enabled(device_type, was_enabled);
    at::autocast::set_autocast_dtype(device_type, previous_dtype);
    at::autocast::set_autocast_cache_enabled(cache_was_enabled);
  });
}

}  // namespace fabric::precision
