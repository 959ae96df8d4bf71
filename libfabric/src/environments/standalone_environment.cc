// Standalone (LightningEnvironment): one process, or the ranks Fabric::launch starts.
#include "environments/variables.h"
#include "utilities/env.h"

namespace fabric::environments {
namespace {

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

}  // namespace

std::unique_ptr<ClusterEnvironment> standalone() { return std::make_unique<FixedEnvironment>(standalone_values()); }

}  // namespace fabric::environments
