#include "fabric/worker/standby.h"

namespace fabric::worker {

std::string encode_assignment(const std::map<std::string, std::string>& env) {
  std::string message;
  for (const auto& [name, value] : env) message.append(name).append(1, '=').append(value).append(1, '\0');
  message.append(1, '\0');
  return message;
}

std::optional<std::map<std::string, std::string>> decode_assignment(const std::string& message) {
  if (message.empty() || message.back() != '\0') return std::nullopt;
  std::map<std::string, std::string> env;
  std::size_t at = 0;
  const std::size_t end = message.size() - 1;  // the terminating NUL
  while (at < end) {
    const std::size_t nul = message.find('\0', at);
    const std::string entry = message.substr(at, nul - at);
    const std::size_t equals = entry.find('=');
    if (equals == std::string::npos || equals == 0) return std::nullopt;
    env[entry.substr(0, equals)] = entry.substr(equals + 1);
    at = nul + 1;
  }
  if (at != end) return std::nullopt;  // the last entry ran into the terminator
  return env;
}

}  // namespace fabric::worker
