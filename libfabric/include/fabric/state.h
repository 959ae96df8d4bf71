// What fabric.save() writes and fabric.load() restores: an insertion-ordered map from names
// to modules, optimizers, plain values (tensors, integers, floats, bools, strings, nested
// dicts as torch::IValue) and nested States.
//   fabric.save("ckpt.pt", {{"model", model}, {"optimizer", optimizer}, {"epoch", 10}});
// Modules and optimizers are referred to, not copied: load() restores them in place.
#pragma once

#include <torch/nn/module.h>
#include <torch/optim/optimizer.h>
#include <torch/types.h>

#include <functional>
#include <initializer_list>
#include <map>
#include <memory>
#include <string>
#include <utility>
#include <variant>
#include <vector>

#include "fabric/errors.h"
#include "fabric/wrappers.h"

namespace fabric {

class StateValue;

class State {
 public:
  using Entry = std::pair<std::string, StateValue>;

  State() = default;
  State(std::initializer_list<Entry> entries);

  // The entry for `key`, inserted (as None) if absent.
  StateValue& operator[](const std::string& key);
  const StateValue& at(const std::string& key) const;
  StateValue& at(const std::string& key);
  bool contains(const std::string& key) const;
  void erase(const std::string& key);
  std::size_t size() const { return entries_.size(); }
  bool empty() const { return entries_.empty(); }
  std::vector<std::string> keys() const;

  // A plain value as T: std::int64_t, int, double, bool, std::string, torch::Tensor or torch::IValue.
  template <typename T>
  T get(const std::string& key) const;

  auto begin() { return entries_.begin(); }
  auto end() { return entries_.end(); }
  auto begin() const { return entries_.begin(); }
  auto end() const { return entries_.end(); }

 private:
  std::vector<Entry> entries_;
};

class StateValue {
 public:
  using Module = std::shared_ptr<torch::nn::Module>;
  using Optimizer = std::shared_ptr<torch::optim::Optimizer>;

  StateValue() : value_(torch::IValue()) {}
  StateValue(torch::IValue value) : value_(std::move(value)) {}
  StateValue(const torch::Tensor& tensor) : value_(torch::IValue(tensor)) {}
  StateValue(int value) : value_(torch::IValue(static_cast<std::int64_t>(value))) {}
  StateValue(std::int64_t value) : value_(torch::IValue(value)) {}
  StateValue(double value) : value_(torch::IValue(value)) {}
  StateValue(bool value) : value_(torch::IValue(value)) {}
  StateValue(const char* value) : value_(torch::IValue(std::string(value))) {}
  StateValue(std::string value) : value_(torch::IValue(std::move(value))) {}
  StateValue(State nested) : value_(std::move(nested)) {}
  StateValue(Optimizer optimizer) : value_(std::move(optimizer)) {}
  StateValue(const FabricOptimizer& optimizer) : value_(optimizer.shared()) {}
  template <typename Impl>
  StateValue(const FabricModule<Impl>& module) : value_(Module(module.module())) {}
  template <typename Impl>
    requires std::is_base_of_v<torch::nn::Module, Impl>
  StateValue(std::shared_ptr<Impl> module) : value_(Module(std::move(module))) {}
  template <typename Impl>
  StateValue(const torch::nn::ModuleHolder<Impl>& holder) : value_(Module(holder.ptr())) {}

  bool is_module() const { return std::holds_alternative<Module>(value_); }
  bool is_optimizer() const { return std::holds_alternative<Optimizer>(value_); }
  bool is_state() const { return std::holds_alternative<State>(value_); }
  bool is_value() const { return std::holds_alternative<torch::IValue>(value_); }

  torch::nn::Module& module() const { return *std::get<Module>(value_); }
  torch::optim::Optimizer& optimizer() const { return *std::get<Optimizer>(value_); }
  State& state() { return std::get<State>(value_); }
  const State& state() const { return std::get<State>(value_); }
  const torch::IValue& value() const;

 private:
  std::variant<torch::IValue, Module, Optimizer, State> value_;
};

// save(filter=): per top-level key, which entries of that key's state dict are written.
// Called with each entry's name and value; an entry whose filter keeps nothing is omitted.
using SaveFilter = std::map<std::string, std::function<bool(const std::string& key, const torch::IValue& value)>>;

template <typename T>
T State::get(const std::string& key) const {
  const torch::IValue& value = at(key).value();
  try {
    if constexpr (std::is_same_v<T, torch::IValue>) return value;
    else if constexpr (std::is_same_v<T, torch::Tensor>) return value.toTensor();
    else if constexpr (std::is_same_v<T, bool>) return value.toBool();
    else if constexpr (std::is_integral_v<T>) return static_cast<T>(value.toInt());
    else if constexpr (std::is_floating_point_v<T>) return static_cast<T>(value.toDouble());
    else if constexpr (std::is_same_v<T, std::string>) return value.toStringRef();
    else static_assert(sizeof(T) == 0, "State::get supports IValue, Tensor, bool, integers, floats and std::string");
  } catch (const c10::Error&) {
    throw UsageError("State entry '" + key + "' holds a " + value.tagKind() + ", not the type asked for.");
  }
}

}  // namespace fabric
