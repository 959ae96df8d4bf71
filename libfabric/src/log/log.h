// libfabric's logging, kept in its own target that never sees LibTorch's headers: the torch
// wheel bundles fmt 12 while Debian's spdlog is built against fmt 9, and the two must not
// meet in one translation unit. Callers pass finished strings.
#pragma once

#include <string_view>

namespace fabric::log {

void debug(std::string_view message);
void info(std::string_view message);
void warn(std::string_view message);
// Sets the rank shown in every line's prefix ("[fabric rank 1] ...").
void set_rank(int global_rank);

}  // namespace fabric::log
