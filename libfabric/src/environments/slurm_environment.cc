// Slurm (SLURMEnvironment): SLURM_NTASKS set, and not an interactive allocation.
#include "environments/variables.h"
#include "fabric/errors.h"
#include "utilities/env.h"

namespace fabric::environments {
namespace {

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

bool slurm_launched() {
  auto job_name = env::get("SLURM_JOB_NAME");
  // An interactive allocation (salloc/srun bash) is not a launch of this program.
  return env::get("SLURM_NTASKS").has_value() && !(job_name && (*job_name == "bash" || *job_name == "interactive"));
}

}  // namespace

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

std::unique_ptr<ClusterEnvironment> detect_slurm() {
  if (!slurm_launched()) return nullptr;
  return std::make_unique<FixedEnvironment>(from_slurm_variables());
}

}  // namespace fabric::environments
