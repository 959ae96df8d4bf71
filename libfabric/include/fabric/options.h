// The options Fabric is constructed with, as value types with designated initializers:
//   fabric::Fabric fabric({.accelerator = "cpu", .devices = 1, .precision = "bf16-mixed"});
// Values mirror Lightning Fabric's constructor arguments: accelerator, strategy and
// precision are strings or instances (a user's own subclass, or DDPStrategy with its
// options), and plugins add a ClusterEnvironment, Precision or CheckpointIO. Fabric
// validates them and resolves "auto" when it is constructed (see connector). No torch
// types here: the plugin classes are only declared.
#pragma once

#include <chrono>
#include <initializer_list>
#include <memory>
#include <string>
#include <type_traits>
#include <variant>
#include <vector>

#include "fabric/callbacks.h"
#include "fabric/loggers.h"

namespace fabric {

class Accelerator;
class CheckpointIO;
class ClusterEnvironment;
class Precision;
class Strategy;

// A string option that also takes an instance of `Plugin` (or of a class derived from it).
template <typename Plugin>
class NameOrInstance {
 public:
  NameOrInstance(const char* name) : name_(name) {}
  NameOrInstance(std::string name) : name_(std::move(name)) {}
  template <typename Derived>
    requires std::is_convertible_v<Derived*, Plugin*>
  NameOrInstance(std::shared_ptr<Derived> instance) : instance_(std::move(instance)) {}

  const std::string& name() const { return name_; }
  const std::shared_ptr<Plugin>& instance() const { return instance_; }

 private:
  std::string name_;
  std::shared_ptr<Plugin> instance_;
};

// accelerator=: "auto", "cpu", "cuda", "gpu", or an Accelerator instance.
using AcceleratorInput = NameOrInstance<Accelerator>;
// strategy=: "auto", "single_device", "ddp", "ddp_find_unused_parameters_true", or a
// Strategy instance (DDPStrategy with options, SingleDeviceStrategy, a user's subclass).
using StrategyInput = NameOrInstance<Strategy>;

// plugins=: a ClusterEnvironment (who the ranks are), a Precision, or a CheckpointIO (how
// checkpoints are written and read); at most one of each kind.
class Plugin {
 public:
  template <typename Derived>
    requires std::is_convertible_v<Derived*, ClusterEnvironment*> || std::is_convertible_v<Derived*, Precision*> ||
             std::is_convertible_v<Derived*, CheckpointIO*>
  Plugin(std::shared_ptr<Derived> plugin) {
    if constexpr (std::is_convertible_v<Derived*, ClusterEnvironment*>) environment_ = plugin;
    if constexpr (std::is_convertible_v<Derived*, Precision*>) precision_ = plugin;
    if constexpr (std::is_convertible_v<Derived*, CheckpointIO*>) checkpoint_io_ = plugin;
  }

  const std::shared_ptr<ClusterEnvironment>& environment() const { return environment_; }
  const std::shared_ptr<Precision>& precision() const { return precision_; }
  const std::shared_ptr<CheckpointIO>& checkpoint_io() const { return checkpoint_io_; }

 private:
  std::shared_ptr<ClusterEnvironment> environment_;
  std::shared_ptr<Precision> precision_;
  std::shared_ptr<CheckpointIO> checkpoint_io_;
};

// devices=: a count (2), all (-1), "auto", a count or list as a string ("2", "0,1", "-1"),
// or explicit device indices ({0, 1}). Exactly Lightning's accepted forms.
class Devices {
 public:
  Devices() : value_(std::string("auto")) {}
  Devices(int count) : value_(count) {}
  Devices(const char* spec) : value_(std::string(spec)) {}
  Devices(std::string spec) : value_(std::move(spec)) {}
  Devices(std::vector<int> indices) : value_(std::move(indices)) {}
  Devices(std::initializer_list<int> indices) : value_(std::vector<int>(indices)) {}

  const std::variant<int, std::string, std::vector<int>>& value() const { return value_; }
  bool is_auto() const;
  std::string to_string() const;

 private:
  std::variant<int, std::string, std::vector<int>> value_;
};

// precision=: a Lightning precision string ("bf16-mixed", "64-true", ...), a legacy alias
// ("bf16", "16", "32", "64"), an int (64, 32, 16), or a Precision instance. Empty means
// the default, "32-true".
class PrecisionInput : public NameOrInstance<Precision> {
 public:
  using NameOrInstance::NameOrInstance;
  PrecisionInput() : NameOrInstance(std::string()) {}
  PrecisionInput(int bits) : NameOrInstance(std::to_string(bits)) {}

  const std::string& value() const { return name(); }
  bool empty() const { return name().empty() && !instance(); }
};

struct FabricOptions {
  AcceleratorInput accelerator = "auto";
  StrategyInput strategy = "auto";
  Devices devices = "auto";  // per node
  int num_nodes = 1;
  PrecisionInput precision = {};  // default "32-true"
  std::vector<Plugin> plugins = {};
  // How long the ranks' rendezvous and any one collective may take before a peer that
  // exited or hangs becomes a CollectiveError (Lightning's DDPStrategy(timeout=...)).
  std::chrono::milliseconds timeout = std::chrono::minutes(30);
  // Receive fabric.log / log_dict on global rank zero; finalized when Fabric is destroyed.
  std::vector<std::shared_ptr<Logger>> loggers = {};
  // Whose hooks fabric.call(name, args...) invokes, in this order.
  std::vector<Callback> callbacks = {};
};

}  // namespace fabric
