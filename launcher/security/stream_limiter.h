// StreamLimiter: at most N open server streams (WatchJob, StreamLogs) per caller, so that
// one client cannot hold every thread of a daemon. A stream holds a Slot for as long as it
// runs; the Slot's destructor gives it back. Thread-safe; slots may outlive the limiter.
#pragma once

#include <grpcpp/grpcpp.h>

#include <cstddef>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>

namespace fabric::launcher {

class StreamLimiter {
  struct State {
    std::mutex mutex;
    std::map<std::string, std::size_t> open;  // by caller
  };

 public:
  explicit StreamLimiter(std::size_t per_caller) : per_caller_(per_caller) {}

  class Slot {
   public:
    Slot(std::shared_ptr<State> state, std::string caller) : state_(std::move(state)), caller_(std::move(caller)) {}
    Slot(Slot&& other) noexcept = default;
    Slot& operator=(Slot&&) = delete;
    Slot(const Slot&) = delete;
    ~Slot() {
      if (!state_) return;
      std::lock_guard lock(state_->mutex);
      if (--state_->open[caller_] == 0) state_->open.erase(caller_);
    }

   private:
    std::shared_ptr<State> state_;
    std::string caller_;
  };

  // A slot for `caller`'s new stream; nullopt, with RESOURCE_EXHAUSTED naming the limit in
  // `refusal`, when the caller already has per_caller streams open.
  std::optional<Slot> acquire(const std::string& caller, grpc::Status& refusal) {
    std::lock_guard lock(state_->mutex);
    std::size_t& open = state_->open[caller];
    if (open >= per_caller_) {
      refusal = {grpc::StatusCode::RESOURCE_EXHAUSTED,
                 "'" + caller + "' already has " + std::to_string(open) +
                     " WatchJob/StreamLogs streams open, the limit of streams per client (" +
                     std::to_string(per_caller_) + "); close some before opening more"};
      return std::nullopt;
    }
    ++open;
    return std::optional<Slot>(std::in_place, state_, caller);
  }

 private:
  std::shared_ptr<State> state_ = std::make_shared<State>();
  const std::size_t per_caller_;
};

}  // namespace fabric::launcher
