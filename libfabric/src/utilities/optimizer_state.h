// Moving an optimizer's state (momentum buffers, Adam moments, ...) to a device, so that an
// optimizer created before its module was moved keeps working. LibTorch has no generic
// accessor for per-parameter state, so each built-in optimizer's state type is handled.
#pragma once

#include <torch/optim/optimizer.h>

namespace fabric::utilities {

void move_optimizer_state(torch::optim::Optimizer& optimizer, torch::Device device);

}  // namespace fabric::utilities
