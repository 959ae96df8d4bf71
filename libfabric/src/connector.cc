#include "connector.h"

#include <algorithm>
#include <cctype>
#include <vector>

#include "accelerators/cpu.h"
#include "accelerators/cuda.h"
#include "fabric/environment.h"
#include "fabric/errors.h"
#include "precision/factory.h"
#include "fabric/strategies.h"
#include "utilities/env.h"
#include "utilities/text.h"

namespace fabric::connector {
namespace {

const std::vector<std::string> kAcceleratorNames = {"auto", "cpu", "cuda", "gpu"};
const std::vector<std::string> kStrategyNames = {"auto", "single_device", "ddp", "ddp_find_unused_parameters_true",
                                                 "fsdp"};
// Lightning strategies that Fabric for C++ does not provide (yet): named, so the error can
// say so instead of calling them invalid.
const std::vector<std::string> kUnavailableStrategies = {"dp",  "fsdp_cpu_offload", "deepspeed",
                                                          "xla", "xla_fsdp",         "single_xla"};
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

std::shared_ptr<Accelerator> choose_accelerator(const AcceleratorInput& requested) {
  if (!requested.instance()) return choose_accelerator(lower(requested.name()));
  if (!requested.instance()->is_available()) {
    throw ConfigurationError("The accelerator instance given (" + std::string(requested.instance()->name()) +
                             ") reports that it is not available on this machine.");
  }
  return requested.instance();
}

bool is_auto(const AcceleratorInput& accelerator) {
  return !accelerator.instance() && lower(accelerator.name()) == "auto";
}

std::string describe(const AcceleratorInput& accelerator) {
  return accelerator.instance() ? "an Accelerator instance (" + std::string(accelerator.instance()->name()) + ")"
                                : "accelerator=\"" + accelerator.name() + "\"";
}

std::string describe(const PrecisionInput& precision) {
  return precision.instance() ? "precision=<a Precision instance (" + std::string(precision.instance()->name()) + ")>"
                              : "precision=\"" + precision.value() + "\"";
}

// What FabricOptions::plugins held, sorted by kind, at most one of each (Lightning's rule).
struct Plugins {
  std::shared_ptr<Precision> precision;
  std::shared_ptr<ClusterEnvironment> environment;
  std::shared_ptr<CheckpointIO> checkpoint_io;
};

Plugins sort_plugins(const FabricOptions& options) {
  Plugins plugins;
  std::vector<std::string> repeated;
  const auto take = [&repeated](auto& slot, const auto& plugin, const char* kind) {
    if (!plugin) return;
    if (slot && !contains(repeated, kind)) repeated.emplace_back(kind);
    slot = plugin;
  };
  for (const Plugin& plugin : options.plugins) {
    if (!plugin.precision() && !plugin.environment() && !plugin.checkpoint_io()) {
      throw ConfigurationError("FabricOptions::plugins holds a null plugin; pass a ClusterEnvironment, Precision or "
                               "CheckpointIO instance.");
    }
    take(plugins.precision, plugin.precision(), "Precision");
    take(plugins.environment, plugin.environment(), "ClusterEnvironment");
    take(plugins.checkpoint_io, plugin.checkpoint_io(), "CheckpointIO");
  }
  if (!repeated.empty()) {
    std::string kinds;
    for (const auto& kind : repeated) kinds += (kinds.empty() ? "" : ", ") + kind;
    throw ConfigurationError("Received multiple values for " + kinds +
                             " flags in `plugins`. Expected one value for each type at most.");
  }
  if (plugins.precision && !options.precision.empty()) {
    throw ConfigurationError("Received both " + describe(options.precision) + " and a Precision plugin (" +
                             std::string(plugins.precision->name()) + ") in `plugins`. Choose one.");
  }
  if (!plugins.precision) plugins.precision = options.precision.instance();
  return plugins;
}

// A Strategy instance may carry its own accelerator, precision and checkpoint IO; giving
// the same thing again as an option or plugin is a conflict, as in Lightning.
void take_from_strategy(const Strategy& strategy, const FabricOptions& options, const Plugins& plugins) {
  if (strategy.has_accelerator() && !is_auto(options.accelerator)) {
    throw ConfigurationError("The accelerator is set through both the strategy instance (" +
                             std::string(strategy.accelerator().name()) + ") and " + describe(options.accelerator) +
                             ". Choose one.");
  }
  if (strategy.has_precision() && (plugins.precision || !options.precision.empty())) {
    throw ConfigurationError("The precision is set through both the strategy instance (" +
                             std::string(strategy.precision().name()) + ") and " +
                             (options.precision.empty() ? std::string("a Precision plugin") : describe(options.precision)) +
                             ". Choose one.");
  }
  if (strategy.has_checkpoint_io() && plugins.checkpoint_io) {
    throw ConfigurationError("checkpoint_io is set through both the strategy instance and a CheckpointIO plugin. "
                             "Choose one.");
  }
}

// The strategy the string names ("auto" already chosen), or the instance given.
std::shared_ptr<Strategy> make_strategy(const StrategyInput& input, const std::string& name, torch::Device first_device) {
  if (input.instance()) return input.instance();
  if (name == "single_device") return std::make_shared<SingleDeviceStrategy>(first_device);
  if (name == "fsdp") return std::make_shared<FSDPStrategy>();
  return std::make_shared<DDPStrategy>(DDPOptions{.find_unused_parameters = name == "ddp_find_unused_parameters_true"});
}

std::string describe(const Strategy& strategy, const StrategyInput& input) {
  return input.instance() ? "the strategy instance (" + std::string(strategy.name()) + ")"
                          : "strategy=\"" + input.name() + "\"";
}

}  // namespace

std::shared_ptr<Strategy> resolve(FabricOptions options) {
  apply_env_overrides(options);
  const std::shared_ptr<Strategy>& given = options.strategy.instance();
  const std::string strategy_name = given ? "" : lower(options.strategy.name());
  if (!given) validate_strategy_name(strategy_name);
  const Plugins plugins = sort_plugins(options);
  validate_devices(options.devices);
  if (options.num_nodes < 1) {
    throw ConfigurationError("num_nodes=" + std::to_string(options.num_nodes) +
                             " is not valid: it must be a positive integer.");
  }
  if (given) take_from_strategy(*given, options, plugins);
  // Validated before anything else is built, so that a bad string is the error a user sees.
  const std::string precision_name =
      plugins.precision || (given && given->has_precision()) ? "" : precision::canonical_precision(options.precision);

  // The strategy's own accelerator, the instance given, or the one the name chooses.
  std::shared_ptr<Accelerator> accelerator =
      given && given->has_accelerator() ? nullptr : choose_accelerator(options.accelerator);
  const Accelerator& chosen = accelerator ? *accelerator : given->accelerator();
  const bool environment_is_plugin = plugins.environment != nullptr;
  std::shared_ptr<ClusterEnvironment> environment =
      environment_is_plugin ? plugins.environment : std::shared_ptr<ClusterEnvironment>(detect_environment());
  const bool launched_outside = environment->creates_processes_externally() && environment->world_size() > 1;
  Devices devices = options.devices;
  if (devices.is_auto()) {
    // Under fabricd, torchrun or Slurm, "auto" means the processes the launcher started on this node.
    devices = launched_outside
                  ? Devices(static_cast<int>(env::get_int("LOCAL_WORLD_SIZE")
                                                 .value_or(environment->world_size() / options.num_nodes)))
                  : Devices(chosen.auto_device_count());
  }
  const std::vector<torch::Device> parallel_devices = chosen.parse_devices(devices);
  const bool distributed = parallel_devices.size() > 1 || options.num_nodes > 1 || launched_outside;

  const std::string name = strategy_name == "auto" ? (distributed ? "ddp" : "single_device") : strategy_name;
  std::shared_ptr<Strategy> strategy = make_strategy(options.strategy, name, parallel_devices.front());
  if (accelerator) strategy->set_accelerator(accelerator);
  if (plugins.checkpoint_io) strategy->set_checkpoint_io(plugins.checkpoint_io);
  if (!strategy->has_checkpoint_io()) strategy->set_checkpoint_io(std::make_shared<TorchCheckpointIO>());
  strategy->set_launcher(environment->launcher());  // a one-rank fabricd job still heartbeats too

  auto* parallel = dynamic_cast<ParallelStrategy*>(strategy.get());
  if (!parallel && distributed) {
    throw ConfigurationError(describe(*strategy, options.strategy) + " runs one process on one device, but " +
                             std::to_string(parallel_devices.size()) + " device(s) x " +
                             std::to_string(options.num_nodes) + " node(s) were requested" +
                             (launched_outside ? " (and " + environment->name() + " started " +
                                                     std::to_string(environment->world_size()) + " processes)"
                                               : std::string()) +
                             ". Use strategy=\"ddp\" or \"auto\".");
  }
  const int local_rank = launched_outside ? environment->local_rank() : 0;
  const torch::Device root =
      parallel ? parallel_devices.at(static_cast<size_t>(std::min(local_rank, static_cast<int>(parallel_devices.size()) - 1)))
               : strategy->root_device();
  if (root.type() != chosen.device_type()) {
    throw ConfigurationError(describe(*strategy, options.strategy) + " trains on " + root.str() + ", but the accelerator is " +
                             std::string(chosen.name()) + ". Make them agree.");
  }
  if (plugins.precision) {
    strategy->set_precision(plugins.precision);
  } else if (!strategy->has_precision()) {
    strategy->set_precision(precision::make_precision(precision_name, root));
  }
  if (parallel) {
    parallel->configure({.parallel_devices = parallel_devices,
                         .num_nodes = options.num_nodes,
                         .environment = std::move(environment),
                         .environment_is_plugin = environment_is_plugin,
                         .timeout = options.timeout});
  }
  return strategy;
}

}  // namespace fabric::connector
