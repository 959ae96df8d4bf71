// Callbacks: objects whose named hooks Fabric::call(hook, args...) invokes, in registration
// order, skipping callbacks that do not define the hook — Lightning's `fabric.call`. C++ has
// no reflection, so a callback declares its hooks with on(name, function); the function's
// parameters are what call() must pass. Lvalue arguments reach hooks by reference.
//   fabric::Callback progress;
//   progress.on("on_train_epoch_end", [](int epoch, double loss) { ... });
//   fabric::Fabric fabric({.callbacks = {progress}});
//   fabric.call("on_train_epoch_end", epoch, loss);
#pragma once

#include <any>
#include <functional>
#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <type_traits>
#include <utility>
#include <vector>

#include "fabric/errors.h"

namespace fabric {

class Callback {
 public:
  // Defines hook `name` (replacing an earlier definition). Returns *this for chaining.
  template <typename Fn>
  Callback& on(std::string name, Fn fn) {
    hooks_[name] = wrap(name, std::function(std::move(fn)));
    return *this;
  }

  bool has(std::string_view name) const { return hooks_.find(name) != hooks_.end(); }

  // Runs hook `name` with `args`; a UsageError says which argument did not fit its signature.
  template <typename... Args>
  void invoke(std::string_view name, Args&&... args) const {
    auto hook = hooks_.find(name);
    if (hook == hooks_.end()) return;
    std::vector<std::any> packed;
    packed.reserve(sizeof...(Args));
    (packed.push_back(pack(std::forward<Args>(args))), ...);
    hook->second(packed);
  }

 private:
  using Hook = std::function<void(std::vector<std::any>&)>;

  template <typename T>
  static std::any pack(T&& arg) {
    if constexpr (std::is_lvalue_reference_v<T>) {
      return std::ref(arg);  // by reference, like a Python object
    } else {
      return std::decay_t<T>(std::forward<T>(arg));
    }
  }

  // The argument as the hook's parameter type P: a reference to the caller's object, a value,
  // or an arithmetic value converted from another arithmetic type (call("x", 3) into a double).
  template <typename P>
  static decltype(auto) unpack(std::any& arg, const std::string& hook, std::size_t index) {
    using D = std::remove_cvref_t<P>;
    if (auto* ref = std::any_cast<std::reference_wrapper<D>>(&arg)) return static_cast<P>(ref->get());
    if constexpr (std::is_const_v<std::remove_reference_t<P>> || !std::is_lvalue_reference_v<P>) {
      if (auto* ref = std::any_cast<std::reference_wrapper<const D>>(&arg)) return static_cast<P>(ref->get());
    }
    if (auto* value = std::any_cast<D>(&arg)) return static_cast<P>(*value);
    if constexpr (std::is_arithmetic_v<D> && !std::is_lvalue_reference_v<P>) {
      if (auto converted = convert_arithmetic<D>(arg)) return static_cast<P>(*converted);
    }
    throw UsageError("Callback hook '" + hook + "': argument " + std::to_string(index + 1) + " (a " +
                     arg.type().name() + ") does not match the hook's parameter type.");
  }

  template <typename D>
  static std::optional<D> convert_arithmetic(std::any& arg) {
    auto from = [&](auto* tag) -> std::optional<D> {
      using S = std::remove_pointer_t<decltype(tag)>;
      if (auto* value = std::any_cast<S>(&arg)) return static_cast<D>(*value);
      if (auto* ref = std::any_cast<std::reference_wrapper<S>>(&arg)) return static_cast<D>(ref->get());
      if (auto* ref = std::any_cast<std::reference_wrapper<const S>>(&arg)) return static_cast<D>(ref->get());
      return std::nullopt;
    };
    for (auto result : {from((int*)nullptr), from((long*)nullptr), from((long long*)nullptr),
                        from((unsigned*)nullptr), from((unsigned long*)nullptr), from((double*)nullptr),
                        from((float*)nullptr)}) {
      if (result) return result;
    }
    return std::nullopt;
  }

  template <typename... Params>
  static Hook wrap(const std::string& name, std::function<void(Params...)> fn) {
    return [name, fn = std::move(fn)](std::vector<std::any>& args) {
      if (args.size() != sizeof...(Params)) {
        throw UsageError("Callback hook '" + name + "' takes " + std::to_string(sizeof...(Params)) +
                         " argument(s), but call() passed " + std::to_string(args.size()) + ".");
      }
      [&]<std::size_t... I>(std::index_sequence<I...>) {
        fn(unpack<Params>(args[I], name, I)...);
      }(std::index_sequence_for<Params...>{});
    };
  }

  std::map<std::string, Hook, std::less<>> hooks_;
};

}  // namespace fabric
