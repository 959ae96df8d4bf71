// The options Fabric is constructed with, as value types with designated initializers:
//   fabric::Fabric fabric({.accelerator = "cpu", .devices = 1, .precision = "bf16-mixed"});
// Values mirror Lightning Fabric's constructor arguments; Fabric validates them and
// resolves "auto" when it is constructed (see connector). No torch types here.
#pragma once

#include <chrono>
#include <initializer_list>
#include <memory>
#include <string>
#include <variant>
#include <vector>

#include "fabric/callbacks.h"
#include "fabric/loggers.h"

namespace fabric {

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
// ("bf16", "16", "32", "64") or an int (64, 32, 16). Empty means the default, "32-true".
class PrecisionInput {
 public:
  PrecisionInput() = default;
  PrecisionInput(int bits) : value_(std::to_string(bits)) {}
  PrecisionInput(const char* value) : value_(value) {}
  PrecisionInput(std::string value) : value_(std::move(value)) {}

  const std::string& value() const { return value_; }
  bool empty() const { return value_.empty(); }

 private:
  std::string value_;
};

struct FabricOptions {
  std::string accelerator = "auto";  // "auto", "cpu", "cuda" or "gpu"
  std::string strategy = "auto";     // "auto", "single_device"
  Devices devices = "auto";          // per node
  int num_nodes = 1;
  PrecisionInput precision = {};     // default "32-true"
  // How long the ranks' rendezvous and any one collective may take before a peer that
  // exited or hangs becomes a CollectiveError (Lightning's DDPStrategy(timeout=...)).
  std::chrono::milliseconds timeout = std::chrono::minutes(30);
  // Receive fabric.log / log_dict on global rank zero; finalized when Fabric is destroyed.
  std::vector<std::shared_ptr<Logger>> loggers = {};
  // Whose hooks fabric.call(name, args...) invokes, in this order.
  std::vector<Callback> callbacks = {};
};

}  // namespace fabric
