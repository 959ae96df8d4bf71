#include "precision/factory.h"

#include <algorithm>
#include <map>

#include "fabric/errors.h"
#include "log/log.h"
#include "utilities/text.h"
#include "precision/double.h"
#include "precision/half.h"
#include "precision/mixed.h"

namespace fabric {

const std::vector<std::string>& valid_precision_inputs() {
  static const std::vector<std::string> values = {"64-true", "32-true",    "16-true", "bf16-true",
                                                  "16-mixed", "bf16-mixed", "64",      "32",
                                                  "16",       "bf16"};
  return values;
}

namespace precision {
namespace {

class FullPrecision final : public Precision {
 public:
  std::string_view name() const override { return "32-true"; }
};

}  // namespace

std::string canonical_precision(const PrecisionInput& input) {
  if (input.empty()) return "32-true";
  static const std::map<std::string, std::string> aliases = {
      {"64", "64-true"}, {"32", "32-true"}, {"16", "16-mixed"}, {"bf16", "bf16-mixed"}};
  const std::string& value = input.value();
  if (auto alias = aliases.find(value); alias != aliases.end()) {
    if (value == "16" || value == "bf16") {
      log::warn("precision=\"" + value + "\" is supported for historical reasons but its usage is discouraged. " +
                "Please set your precision to \"" + alias->second + "\" instead.");
    }
    return alias->second;
  }
  const auto& valid = valid_precision_inputs();
  if (std::find(valid.begin(), valid.end(), value) != valid.end()) return value;
  if (value.rfind("transformer-engine", 0) == 0) {
    throw ConfigurationError("precision=\"" + value +
                             "\" needs NVIDIA Transformer Engine, which Fabric for C++ does not support. "
                             "Allowed precision values: " + text::quoted_list(valid) + ".");
  }
  throw ConfigurationError("Precision \"" + value + "\" is invalid. Allowed precision values: " +
                           text::quoted_list(valid) + " (or the integers 64, 32, 16).");
}

std::unique_ptr<Precision> make_precision(const std::string& canonical, torch::Device device) {
  if (canonical == "32-true") return std::make_unique<FullPrecision>();
  if (canonical == "64-true") return std::make_unique<DoublePrecision>();
  if (canonical == "16-true") return std::make_unique<HalfPrecision>(torch::kFloat16);
  if (canonical == "bf16-true") return std::make_unique<HalfPrecision>(torch::kBFloat16);
  if (canonical == "bf16-mixed") return std::make_unique<MixedPrecision>(torch::kBFloat16, device);
  if (canonical == "16-mixed") {
    if (device.is_cpu()) {
      log::warn("You passed precision=\"16-mixed\" with the cpu accelerator, which only supports bfloat16 "
                "autocast; using precision=\"bf16-mixed\" instead.");
      return std::make_unique<MixedPrecision>(torch::kBFloat16, device);
    }
    return std::make_unique<MixedPrecision>(torch::kFloat16, device);
  }
  throw ConfigurationError("internal: no precision plugin for \"" + canonical + "\"");
}

}  // namespace precision
}  // namespace fabric
