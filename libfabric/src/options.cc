#include "fabric/options.h"

#include <sstream>

namespace fabric {

bool Devices::is_auto() const {
  const auto* text = std::get_if<std::string>(&value_);
  return text != nullptr && *text == "auto";
}

std::string Devices::to_string() const {
  if (const auto* count = std::get_if<int>(&value_)) return std::to_string(*count);
  if (const auto* text = std::get_if<std::string>(&value_)) return "\"" + *text + "\"";
  std::ostringstream out;
  out << "{";
  const auto& ids = std::get<std::vector<int>>(value_);
  for (size_t i = 0; i < ids.size(); ++i) out << (i ? ", " : "") << ids[i];
  out << "}";
  return out.str();
}

}  // namespace fabric
