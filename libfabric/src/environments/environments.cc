#include <algorithm>

#include "environments/launcher_link.h"
#include "environments/variables.h"
#include "fabric/errors.h"
#include "utilities/env.h"

namespace fabric {
namespace environments {
namespace {

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

// fabricd sets torchrun's variables plus its own (docs/ARCHITECTURE.md, "The rank environment").
Values from_torchrun_variables(const std::string& name) {
  Values values{.name = name, .external = true};
  values.world_size = required_int("WORLD_SIZE", name);
  values.global_rank = required_int("RANK", name);
  values.local_rank = int_var("LOCAL_RANK", 0);
  values.node_rank = int_var("GROUP_RANK", int_var("NODE_RANK", 0));
  auto address = env::get("MASTER_ADDR");
  if (!address || address->empty()) {
    throw ConfigurationError(name + " environment detected but MASTER_ADDR is not set: the ranks cannot find "
                             "each other. Set MASTER_ADDR (and MASTER_PORT) to rank zero's host.");
  }
  values.main_address = *address;
  values.main_port = required_int("MASTER_PORT", name);
  return values;
}

Values from_slurm_variables() {
  Values values{.name = "slurm", .external = true};
  values.world_size = required_int("SLURM_NTASKS", "Slurm");
  values.global_rank = required_int("SLURM_PROCID", "Slurm");
  values.local_rank = int_var("SLURM_LOCALID", 0);
  values.node_rank = int_var("SLURM_NODEID", 0);
  if (auto address = env::get("MASTER_ADDR")) {
    values.main_address = *address;
  } else {
    auto nodes = env::get("SLURM_NODELIST");
    if (!nodes) nodes = env::get("SLURM_JOB_NODELIST");
    if (!nodes) throw ConfigurationError("Slurm environment detected but SLURM_NODELIST is not set.");
    values.main_address = first_slurm_host(*nodes);
  }
  // Lightning's choice: the job id's last 4 digits + 15000, so jobs on one node differ.
  auto job = env::get("SLURM_JOB_ID");
  const int derived = job && job->size() >= 1 ? std::stoi(job->substr(job->size() > 4 ? job->size() - 4 : 0)) + 15000 : 12910;
  values.main_port = int_var("MASTER_PORT", derived);
  return values;
}

Values standalone_values() {
  Values values{.name = "standalone"};
  // Set by Fabric::launch for the ranks it starts; absent in a plain single process.
  values.external = env::get("LOCAL_RANK").has_value();
  values.world_size = int_var("WORLD_SIZE", 1);
  values.global_rank = int_var("RANK", int_var("LOCAL_RANK", 0));
  values.local_rank = int_var("LOCAL_RANK", 0);
  values.node_rank = int_var("NODE_RANK", int_var("GROUP_RANK", 0));
  values.main_address = env::get("MASTER_ADDR").value_or("127.0.0.1");
  values.main_port = int_var("MASTER_PORT", 0);
  return values;
}

bool slurm_launched() {
  auto job_name = env::get("SLURM_JOB_NAME");
  // An interactive allocation (salloc/srun bash) is not a launch of this program.
  return env::get("SLURM_NTASKS").has_value() && !(job_name && (*job_name == "bash" || *job_name == "interactive"));
}

}  // namespace

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

std::string first_slurm_host(const std::string& nodelist) {
  const auto separator = nodelist.find_first_of(", ");
  const auto bracket = nodelist.find('[');
  if (bracket == std::string::npos || (separator != std::string::npos && separator < bracket)) {
    return nodelist.substr(0, separator);
  }
  // "node[5-9,12]" => "node" + first number of the range list
  const auto end = nodelist.find_first_of("-,]", bracket + 1);
  if (end == std::string::npos) throw ConfigurationError("Malformed Slurm node list '" + nodelist + "'.");
  return nodelist.substr(0, bracket) + nodelist.substr(bracket + 1, end - bracket - 1);
}

}  // namespace environments

std::unique_ptr<ClusterEnvironment> detect_environment() {
  using namespace environments;
  if (env::get("FABRICD_ENDPOINT")) {
    auto environment = std::make_unique<FixedEnvironment>(from_torchrun_variables("fabricd"));
    LauncherLink::get();  // connects now, so that an uncaught exception from here on is reported
    return environment;
  }
  if (env::get("TORCHELASTIC_RUN_ID") ||
      (env::get("RANK") && env::get("WORLD_SIZE") && env::get("MASTER_ADDR"))) {
    return std::make_unique<FixedEnvironment>(from_torchrun_variables("torchrun"));
  }
  if (slurm_launched()) return std::make_unique<FixedEnvironment>(from_slurm_variables());
  return std::make_unique<FixedEnvironment>(standalone_values());
}

}  // namespace fabric
