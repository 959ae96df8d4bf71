// torchrun (TorchElasticEnvironment): TORCHELASTIC_RUN_ID, or RANK + WORLD_SIZE + MASTER_ADDR.
// Its variables are also fabricd's, which reads them through from_torchrun_variables.
#include "environments/variables.h"
#include "fabric/errors.h"
#include "utilities/env.h"

namespace fabric::environments {

// fabricd sets torchrun's variables plus its own (docs/ARCHITECTURE.md, "The rank environment"), so it reads them here.
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

std::unique_ptr<ClusterEnvironment> detect_torchrun() {
  if (!env::get("TORCHELASTIC_RUN_ID") && !(env::get("RANK") && env::get("WORLD_SIZE") && env::get("MASTER_ADDR"))) {
    return nullptr;
  }
  return std::make_unique<FixedEnvironment>(from_torchrun_variables("torchrun"));
}

}  // namespace fabric::environments
