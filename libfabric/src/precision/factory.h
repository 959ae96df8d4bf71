// Turning a precision input into a Precision plugin: aliases resolved, invalid strings
// refused with the full list, and the per-device rules applied.
#pragma once

#include <memory>
#include <string>

#include "fabric/options.h"
#include "fabric/precision.h"

namespace fabric::precision {

// "bf16" => "bf16-mixed", 16 => "16-mixed", "" => "32-true"; ConfigurationError listing
// every valid value for anything else.
std::string canonical_precision(const PrecisionInput& input);

// The plugin for a canonical precision on `device`. "16-mixed" on the CPU becomes
// "bf16-mixed" with a warning (CPU autocast has no float16 gradient scaling).
std::unique_ptr<Precision> make_precision(const std::string& canonical, torch::Device device);

}  // namespace fabric::precision
