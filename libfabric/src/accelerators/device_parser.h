// Parsing `devices=` the way Lightning's device_parser does, shared by the accelerators.
#pragma once

#include <string>
#include <vector>

#include "fabric/options.h"

namespace fabric::accelerators {

// A positive device count (int or digit string), else ConfigurationError naming `accelerator`.
int parse_device_count(const Devices& devices, const std::string& accelerator);

// GPU indices: -1 / "-1" => all of [0, available), N / "N" => [0, N) (a count, not an
// index), "1,3" / {1, 3} => exactly those. Duplicates and unavailable ids are refused.
std::vector<int> parse_gpu_ids(const Devices& devices, int available);

}  // namespace fabric::accelerators
