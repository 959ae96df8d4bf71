// An RAII scope: whatever a precision, strategy or Fabric method set up on entry is undone
// when the Scope is destroyed. Lightning's context managers become these:
//   { auto autocast = fabric.autocast(); ... }   // autocast ends with the block
#pragma once

#include <functional>
#include <utility>
#include <vector>

namespace fabric {

class Scope {
 public:
  Scope() = default;
  explicit Scope(std::function<void()> on_exit) : on_exit_(std::move(on_exit)) {}
  Scope(Scope&& other) noexcept : on_exit_(std::exchange(other.on_exit_, nullptr)) {}
  Scope& operator=(Scope&& other) noexcept {
    if (this != &other) {
      exit();
      on_exit_ = std::exchange(other.on_exit_, nullptr);
    }
    return *this;
  }
  Scope(const Scope&) = delete;
  Scope& operator=(const Scope&) = delete;
  ~Scope() { exit(); }

 private:
  void exit() {
    if (on_exit_) std::exchange(on_exit_, nullptr)();
  }
  std::function<void()> on_exit_;
};

}  // namespace fabric
