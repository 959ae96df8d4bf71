#include "connector.h"

#include <algorithm>
#include <cctype>
#include <vector>

#include "accelerators/cpu.h"
#include "accelerators/cuda.h"
#include "fabric/environment.h"
#include "fabric/errors.h"
#include "precision/factory.h"
#include "strategies/ddp.h"
#include "strategies/single_device.h"
#include "utilities/env.h"
#include "utilities/text.h"

namespace fabric::connector {
namespace {

const std::vector<std::string> kAcceleratorNames = {"auto", "cpu", "cuda", "gpu"};
const std::vector<std::string> kStrategyNames = {"auto", "single_device", "ddp", "ddp_find_unused_parameters_true"};
// Lightning strategies that Fabric for C++ does not provide (yet): named, so the error can
// say so instead of calling them invalid.
const std::vector<std::string> kUnavailableStrategies = {"dp",  "fsdp",     "fsdp_cpu_offload", "deepspeed",
                                                          "xla", "xla_fsdp", "single_xla"};
// Python starts these ranks by spawning or forking an interpreter; a C++ program re-executes itself.
const std::vector<std::string> kPythonOnlyStrategies = {"ddp_spawn", "ddp_fork", "ddp_notebook"};

std::string lower(std::string value) {
  std::transform(value.begin(), value.end(), value.begin(), [](unsigned char c) { return std::tolower(c); });
  return value;
}

bool contains(const std::vector<std::string>& values, const std::string& value) {
  return std::find(values.begin(), values.end(), value) != values.end();
}

// LT_ACCELERATOR, LT_STRATEGY, LT_DEVICES, LT_NUM_NODES and LT_PRECISION replace the
// constructor's values, as they do for Lightning's CLI.
void apply_env_overrides(FabricOptions& options) {
  if (auto value = env::get("LT_ACCELERATOR")) options.accelerator = *value;
  if (auto value = env::get("LT_STRATEGY")) options.strategy = *value;
  if (auto value = env::get("LT_DEVICES")) options.devices = Devices(*value);
  if (auto value = env::get_int("LT_NUM_NODES")) options.num_nodes = static_cast<int>(*value);
  if (auto value = env::get("LT_PRECISION")) options.precision = PrecisionInput(*value);
}

void validate_strategy_name(const std::string& strategy) {
  if (contains(kStrategyNames, strategy)) return;
  if (contains(kPythonOnlyStrategies, strategy)) {
    throw ConfigurationError("strategy=\"" + strategy + "\" spawns or forks Python interpreters; in C++ use "
                             "strategy=\"ddp\", whose launch() re-executes the program once per local rank.");
  }
  if (contains(kUnavailableStrategies, strategy) || strategy.rfind("deepspeed", 0) == 0) {
    throw ConfigurationError("strategy=\"" + strategy +
                             "\" is a Lightning strategy that this build of Fabric for C++ does not provide. "
                             "Available strategies: " + text::quoted_list(kStrategyNames) + ".");
  }
  throw ConfigurationError("You selected an invalid strategy name: strategy=\"" + strategy +
                           "\". Available strategies: " + text::quoted_list(kStrategyNames) + ".");
}

void validate_devices(const Devices& devices) {
  const auto& value = devices.value();
  const bool zero = (std::holds_alternative<int>(value) && std::get<int>(value) == 0) ||
                    (std::holds_alternative<std::string>(value) && std::get<std::string>(value) == "0") ||
                    (std::holds_alternative<std::vector<int>>(value) && std::get<std::vector<int>>(value).empty());
  if (zero) {
    throw ConfigurationError("Fabric(devices=" + devices.to_string() +
                             ") value is not a valid input. Use a positive count, -1 for all devices, "
                             "\"auto\", or a list of device indices; to train on the CPU pass accelerator=\"cpu\".");
  }
}

std::shared_ptr<Accelerator> choose_accelerator(const std::string& requested) {
  if (requested == "mps" || requested == "tpu") {
    throw ConfigurationError("accelerator=\"" + requested +
                             "\" is not supported by Fabric for C++ (LibTorch has no " +
                             (requested == "mps" ? "Metal" : "XLA") + " backend here). Choose one of " +
                             text::quoted_list(kAcceleratorNames) + ".");
  }
  if (!contains(kAcceleratorNames, requested)) {
    throw ConfigurationError("You selected an invalid accelerator name: accelerator=\"" + requested +
                             "\". Available names are: " + text::quoted_list(kAcceleratorNames) + ".");
  }
  auto cuda = std::make_shared<accelerators::CudaAccelerator>();
  if (requested == "auto") {
    if (cuda->is_available()) return cuda;
    return std::make_shared<accelerators::CpuAccelerator>();
  }
  if (requested == "cpu") return std::make_shared<accelerators::CpuAccelerator>();
  if (!cuda->is_available()) {
    throw ConfigurationError(requested == "gpu"
                                 ? std::string("accelerator=\"gpu\": no supported GPU backend found (CUDA reports no "
                                               "device). Use accelerator=\"cpu\" or \"auto\".")
                                 : std::string("accelerator=\"cuda\" is not available: CUDA reports no device. "
                                               "Available accelerators here: \"cpu\" (or \"auto\")."));
  }
  return cuda;
}

}  // namespace

std::shared_ptr<Strategy> resolve(FabricOptions options) {
  apply_env_overrides(options);
  options.accelerator = lower(options.accelerator);
  options.strategy = lower(options.strategy);
  validate_strategy_name(options.strategy);
  const std::string precision_name = precision::canonical_precision(options.precision);
  validate_devices(options.devices);
  if (options.num_nodes < 1) {
    throw ConfigurationError("num_nodes=" + std::to_string(options.num_nodes) +
                             " is not valid: it must be a positive integer.");
  }

  auto accelerator = choose_accelerator(options.accelerator);
  auto environment = detect_environment();
  const bool launched_outside = environment->creates_processes_externally() && environment->world_size() > 1;
  Devices devices = options.devices;
  if (devices.is_auto()) {
    // Under fabricd, torchrun or Slurm, "auto" means the processes the launcher started on this node.
    devices = launched_outside
                  ? Devices(static_cast<int>(env::get_int("LOCAL_WORLD_SIZE")
                                                 .value_or(environment->world_size() / options.num_nodes)))
                  : Devices(accelerator->auto_device_count());
  }
  const std::vector<torch::Device> parallel_devices = accelerator->parse_devices(devices);
  const bool distributed = parallel_devices.size() > 1 || options.num_nodes > 1 || launched_outside;

  std::string strategy = options.strategy;
  if (strategy == "auto") strategy = distributed ? "ddp" : "single_device";
  if (strategy == "single_device" && distributed) {
    throw ConfigurationError("strategy=\"single_device\" runs one process on one device, but " +
                             std::to_string(parallel_devices.size()) + " device(s) x " +
                             std::to_string(options.num_nodes) + " node(s) were requested" +
                             (launched_outside ? " (and " + environment->name() + " started " +
                                                     std::to_string(environment->world_size()) + " processes)"
                                               : std::string()) +
                             ". Use strategy=\"ddp\" or \"auto\".");
  }
  if (strategy == "single_device") {
    const torch::Device root = parallel_devices.front();
    auto precision = precision::make_precision(precision_name, root);
    auto single = std::make_shared<strategies::SingleDeviceStrategy>(root, std::move(accelerator), std::move(precision));
    single->set_launcher(environment->launcher());  // a one-rank fabricd job still heartbeats
    return single;
  }
  const int local_rank = launched_outside ? environment->local_rank() : 0;
  const torch::Device root = parallel_devices.at(static_cast<size_t>(
      std::min(local_rank, static_cast<int>(parallel_devices.size()) - 1)));
  auto precision = precision::make_precision(precision_name, root);
  strategies::DDPOptions ddp{.find_unused_parameters = strategy == "ddp_find_unused_parameters_true",
                             .timeout = options.timeout};
  LauncherServices* launcher = environment->launcher();
  auto ddp_strategy = std::make_shared<strategies::DDPStrategy>(parallel_devices, options.num_nodes,
                                                                std::move(environment), std::move(accelerator),
                                                                std::move(precision), ddp);
  ddp_strategy->set_launcher(launcher);
  return ddp_strategy;
}

}  // namespace fabric::connector
