// init_module(empty_init=true): module constructors run as usual, but the random fills their
// reset_parameters() makes (torch::nn::init's uniform_, normal_, kaiming_*, xavier_*, ...)
// are skipped, so a large model's weights stay untouched memory until a checkpoint
// overwrites them: no time spent drawing numbers, no pages written. Lightning's _EmptyInit
// does the same by intercepting torch.nn.init in Python; in C++ the interception is a
// dispatcher kernel under DeferredInit, the key PyTorch reserves for out-of-core deferred
// module initialisation (torchdistX), enabled for this thread while the scope lives.
// Deterministic fills (zeros, ones, full: buffers such as BatchNorm's statistics) still run.
#pragma once

#include "fabric/scope.h"

namespace fabric::utilities {

Scope skip_random_initialization();

}  // namespace fabric::utilities
