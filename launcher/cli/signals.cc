#include "cli/signals.h"

#include <pthread.h>
#include <signal.h>

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

void handle_stop_signals(std::function<void(int signal, bool repeated)> on_signal) {
  std::thread([on_signal = std::move(on_signal)] {
    const sigset_t signals = stop_signals();
    bool repeated = false;
    for (int signal = 0;;) {
      if (sigwait(&signals, &signal) != 0) continue;
      on_signal(signal, repeated);
      repeated = true;
    }
  }).detach();
}

}  // namespace fabric::launcher::cli
