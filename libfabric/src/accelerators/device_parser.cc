#include "accelerators/device_parser.h"

#include <algorithm>
#include <charconv>
#include <numeric>
#include <set>
#include <sstream>

#include "fabric/errors.h"

namespace fabric::accelerators {
namespace {

bool parse_int(std::string_view text, int& value) {
  while (!text.empty() && text.front() == ' ') text.remove_prefix(1);
  while (!text.empty() && text.back() == ' ') text.remove_suffix(1);
  auto [end, error] = std::from_chars(text.data(), text.data() + text.size(), value);
  return !text.empty() && error == std::errc() && end == text.data() + text.size();
}

std::string join(const std::vector<int>& ids) {
  std::ostringstream out;
  for (size_t i = 0; i < ids.size(); ++i) out << (i ? ", " : "") << ids[i];
  return out.str();
}

std::vector<int> first_n(int n) {
  std::vector<int> ids(static_cast<size_t>(n));
  std::iota(ids.begin(), ids.end(), 0);
  return ids;
}

// The requested ids before checking them against what is available; -1 means all.
std::vector<int> requested_gpu_ids(const Devices& devices, int available) {
  const auto& value = devices.value();
  if (const auto* ids = std::get_if<std::vector<int>>(&value)) return *ids;
  int count = 0;
  if (const auto* text = std::get_if<std::string>(&value)) {
    if (text->find(',') != std::string::npos) {
      std::vector<int> ids;
      std::istringstream pieces(*text);
      for (std::string piece; std::getline(pieces, piece, ',');) {
        if (piece.find_first_not_of(' ') == std::string::npos) continue;  // "1," => [1]
        int id = 0;
        if (!parse_int(piece, id)) {
          throw ConfigurationError("devices='" + *text + "': '" + piece +
                                   "' is not a device index. Use a count (\"2\"), \"-1\" for all, "
                                   "or a comma-separated list of indices (\"0,1\").");
        }
        ids.push_back(id);
      }
      return ids;
    }
    if (!parse_int(*text, count)) {
      throw ConfigurationError("devices='" + *text +
                               "' is not valid. Use \"auto\", a count (\"2\"), \"-1\" for all, or "
                               "a comma-separated list of indices (\"0,1\").");
    }
  } else {
    count = std::get<int>(value);
  }
  if (count == -1) return first_n(available);
  if (count < -1) {
    throw ConfigurationError("devices=" + std::to_string(count) +
                             " is not valid: use a positive count, -1 for all devices, or indices.");
  }
  return first_n(count);
}

}  // namespace

int parse_device_count(const Devices& devices, const std::string& accelerator) {
  const auto& value = devices.value();
  int count = 0;
  bool ok = false;
  if (const auto* n = std::get_if<int>(&value)) {
    count = *n;
    ok = true;
  } else if (const auto* text = std::get_if<std::string>(&value)) {
    ok = std::all_of(text->begin(), text->end(), [](char c) { return c >= '0' && c <= '9'; }) &&
         parse_int(*text, count);
  }
  if (!ok || count <= 0) {
    throw ConfigurationError("devices=" + devices.to_string() + " is not valid for the " + accelerator +
                             " accelerator: devices selected with it should be an int > 0 (the number "
                             "of processes), e.g. devices=2.");
  }
  return count;
}

std::vector<int> parse_gpu_ids(const Devices& devices, int available) {
  std::vector<int> ids = requested_gpu_ids(devices, available);
  if (ids.empty()) {
    throw ConfigurationError("devices=" + devices.to_string() +
                             ": GPUs requested but none are available. Use accelerator=\"cpu\".");
  }
  if (std::set<int>(ids.begin(), ids.end()).size() != ids.size()) {
    throw ConfigurationError("devices=" + devices.to_string() + " names a device more than once (" +
                             join(ids) + "). List each device index once.");
  }
  for (int id : ids) {
    if (id < 0 || id >= available) {
      throw ConfigurationError("devices=" + devices.to_string() + " asks for GPU " + std::to_string(id) +
                               ", but only " + std::to_string(available) + " GPU(s) are visible" +
                               (available ? " (indices 0.." + std::to_string(available - 1) + ")." : "."));
    }
  }
  return ids;
}

}  // namespace fabric::accelerators
