// SIGINT and SIGTERM are handled on one thread of fabricd's (sigwait), never by a signal
// handler: block_stop_signals() must run before any other thread starts (gRPC's among
// them), so that every thread inherits the mask and no signal is delivered anywhere else.
// The ranks unblock them again (ranks/rank_group.cc).
#pragma once

#include <functional>
#include <memory>

namespace fabric::launcher::cli {

void block_stop_signals();

// Calls on_signal(signal, repeated) on a thread of its own for every SIGINT/SIGTERM;
// `repeated` is true from the second one on. The callback refers to objects of the caller's
// (the job, the agent), so it is only called while the returned handle lives: destroying the
// handle waits for a call in progress and ignores later signals, which may still arrive
// while fabricd finishes.
class [[nodiscard]] StopSignalHandler {
 public:
  explicit StopSignalHandler(std::function<void(int signal, bool repeated)> on_signal);
  ~StopSignalHandler();
  StopSignalHandler(const StopSignalHandler&) = delete;
  StopSignalHandler& operator=(const StopSignalHandler&) = delete;

 private:
  struct State;
  std::shared_ptr<State> state_;  // shared with the signal thread, which outlives the handle
};

}  // namespace fabric::launcher::cli
