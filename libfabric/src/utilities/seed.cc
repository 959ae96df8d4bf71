#include <torch/utils.h>

#include <cstdlib>
#include <limits>

#include "fabric/errors.h"
#include "fabric/fabric.h"
#include "log/log.h"
#include "utilities/env.h"

namespace fabric {

std::uint64_t seed_everything(std::optional<std::int64_t> seed, bool workers) {
  if (!seed) {
    seed = env::get_int("PL_GLOBAL_SEED");
    if (!seed) {
      log::warn("No seed found, seed set to 0");
      seed = 0;
    }
  }
  constexpr std::int64_t kMaxSeed = std::numeric_limits<std::uint32_t>::max();
  if (*seed < 0 || *seed > kMaxSeed) {
    throw ConfigurationError("seed " + std::to_string(*seed) + " is not in bounds: use a value from 0 to " +
                             std::to_string(kMaxSeed) + ".");
  }
  env::set("PL_GLOBAL_SEED", std::to_string(*seed));
  env::set("PL_SEED_WORKERS", workers ? "1" : "0");
  torch::manual_seed(static_cast<std::uint64_t>(*seed));  // CPU and every CUDA device
  std::srand(static_cast<unsigned>(*seed));
  log::info("Seed set to " + std::to_string(*seed));
  return static_cast<std::uint64_t>(*seed);
}

std::uint64_t Fabric::seed_everything(std::optional<std::int64_t> seed, bool workers) {
  return fabric::seed_everything(seed, workers);
}

}  // namespace fabric
