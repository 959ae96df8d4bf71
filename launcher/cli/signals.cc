#include "cli/signals.h"

#include <pthread.h>
#include <signal.h>

#include <mutex>
#include <thread>

namespace fabric::launcher::cli {
namespace {

sigset_t stop_signals() {
  sigset_t signals;
  sigemptyset(&signals);
  sigaddset(&signals, SIGINT);
  sigaddset(&signals, SIGTERM);
  return signals;
}

}  // namespace

void block_stop_signals() {
  const sigset_t signals = stop_signals();
  pthread_sigmask(SIG_BLOCK, &signals, nullptr);
}

struct StopSignalHandler::State {
  std::mutex mutex;
  std::function<void(int, bool)> on_signal;  // empty once the handle is gone; guarded by mutex
};

StopSignalHandler::StopSignalHandler(std::function<void(int signal, bool repeated)> on_signal)
    : state_(std::make_shared<State>()) {
  state_->on_signal = std::move(on_signal);
  // Detached: sigwait cannot be interrupted, and the thread ends with the process.
  std::thread([state = state_] {
    const sigset_t signals = stop_signals();
    bool repeated = false;
    for (int signal = 0;;) {
      if (sigwait(&signals, &signal) != 0) continue;
      std::lock_guard lock(state->mutex);
      if (state->on_signal) state->on_signal(signal, repeated);
      repeated = true;
    }
  }).detach();
}

StopSignalHandler::~StopSignalHandler() {
  std::lock_guard lock(state_->mutex);
  state_->on_signal = nullptr;
}

}  // namespace fabric::launcher::cli
