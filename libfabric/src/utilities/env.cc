#include "utilities/env.h"

#include <charconv>
#include <cstdlib>

#include "fabric/errors.h"

namespace fabric::env {

std::optional<std::string> get(const char* name) {
  const char* value = std::getenv(name);
  if (value == nullptr) return std::nullopt;
  return std::string(value);
}

std::optional<long long> get_int(const char* name) {
  auto text = get(name);
  if (!text) return std::nullopt;
  long long value = 0;
  auto [end, error] = std::from_chars(text->data(), text->data() + text->size(), value);
  if (error != std::errc() || end != text->data() + text->size()) {
    throw ConfigurationError(std::string("Environment variable ") + name + "='" + *text +
                             "' is not an integer. Unset it or set it to a whole number.");
  }
  return value;
}

void set(const char* name, const std::string& value) { ::setenv(name, value.c_str(), 1); }

}  // namespace fabric::env
