// The connector turns FabricOptions into one Strategy (with its accelerator and precision),
// as Lightning's _Connector does: LT_* environment overrides, validation of every value
// with messages that list the valid choices, and resolution of "auto".
#pragma once

#include <memory>

#include "fabric/options.h"
#include "fabric/strategy.h"

namespace fabric::connector {

std::shared_ptr<Strategy> resolve(FabricOptions options);

}  // namespace fabric::connector
