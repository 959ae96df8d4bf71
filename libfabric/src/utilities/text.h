// Small text helpers for error messages.
#pragma once

#include <string>
#include <vector>

namespace fabric::text {

// {"a", "b"} => "\"a\", \"b\"": how error messages list the valid choices.
inline std::string quoted_list(const std::vector<std::string>& values) {
  std::string out;
  for (const auto& value : values) out += (out.empty() ? "\"" : ", \"") + value + "\"";
  return out;
}

}  // namespace fabric::text
