// SIGINT and SIGTERM are handled on one thread of fabricd's (sigwait), never by a signal
// handler: block_stop_signals() must run before any other thread starts (gRPC's among
// them), so that every thread inherits the mask and no signal is delivered anywhere else.
// The ranks unblock them again (ranks/rank_group.cc).
#pragma once

#include <functional>

namespace fabric::launcher::cli {

void block_stop_signals();

// Calls on_signal(signal, repeated) on a detached thread for every SIGINT/SIGTERM;
// `repeated` is true from the second one on.
void handle_stop_signals(std::function<void(int signal, bool repeated)> on_signal);

}  // namespace fabric::launcher::cli
