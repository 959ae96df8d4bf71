// detect_environment(): the first environment whose launcher started this process, in
// Lightning's order (fabricd before torchrun, whose variables it also sets), and what the
// per-launcher files share: reading integers, FixedEnvironment's checks.
#include "environments/variables.h"
#include "fabric/errors.h"
#include "utilities/env.h"

namespace fabric {
namespace environments {

int int_var(const char* name, int fallback) {
  auto value = env::get_int(name);
  return value ? static_cast<int>(*value) : fallback;
}

int required_int(const char* name, const std::string& launcher) {
  auto value = env::get_int(name);
  if (!value) {
    throw ConfigurationError(launcher + " environment detected but " + name + " is not set. Start the program "
                             "with the launcher, or unset the variables that made it look launched.");
  }
  return static_cast<int>(*value);
}

FixedEnvironment::FixedEnvironment(Values values) : values_(std::move(values)) {
  auto where = " (from the " + values_.name + " environment)";
  if (values_.world_size < 1) {
    throw ConfigurationError("world size " + std::to_string(values_.world_size) + " is not positive" + where + ".");
  }
  if (values_.global_rank < 0 || values_.global_rank >= values_.world_size) {
    throw ConfigurationError("rank " + std::to_string(values_.global_rank) + " is outside the world of size " +
                             std::to_string(values_.world_size) + where + ": ranks run from 0 to world size - 1.");
  }
  if (values_.local_rank < 0 || values_.local_rank > values_.global_rank) {
    throw ConfigurationError("local rank " + std::to_string(values_.local_rank) + " is inconsistent with rank " +
                             std::to_string(values_.global_rank) + where + ".");
  }
  if (values_.main_port < 0 || values_.main_port > 65535) {
    throw ConfigurationError("port " + std::to_string(values_.main_port) + " is not a TCP port" + where + ".");
  }
}

}  // namespace environments

std::unique_ptr<ClusterEnvironment> detect_environment() {
  using namespace environments;
  if (auto environment = detect_fabricd()) return environment;
  if (auto environment = detect_torchrun()) return environment;
  if (auto environment = detect_slurm()) return environment;
  return standalone();
}

}  // namespace fabric
