// Reading the process environment: optional values, with integers parsed strictly.
#pragma once

#include <optional>
#include <string>

namespace fabric::env {

std::optional<std::string> get(const char* name);
// The variable as an integer; ConfigurationError naming the variable if it is not one.
std::optional<long long> get_int(const char* name);
void set(const char* name, const std::string& value);

}  // namespace fabric::env
