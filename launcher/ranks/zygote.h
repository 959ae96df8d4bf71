// Zygote: one process of a job's program, loaded once, that forks the job's ranks on this
// node (fabric/worker/standby.h has the protocol): at the first launch and at every restart,
// a rank is a fork of a process that has already loaded the program and LibTorch, so N ranks
// cost one load, not N (eight loads of LibTorch take 1.3 s on this machine's 2 cores).
//
// fork_rank() asks for one rank with its environment and gives its output pipes; the rank is
// the zygote's child, not ours, so its exit comes from the zygote (wait()). A zygote that
// cannot fork (a library started threads before main(), or it died) makes fork_rank() return
// nullopt, and the caller starts the rank itself. If the zygote dies, its ranks die with it
// (their death signal), wait() says SIGKILL and fabricd's stderr says why. The destructor
// closes our end: the zygote kills what is left of its ranks and exits, and is reaped.
//
// Only for programs linked with libfabric: has_standby_hook() tells them apart. Thread-safe.
#pragma once

#include <sys/types.h>

#include <condition_variable>
#include <deque>
#include <map>
#include <mutex>
#include <optional>
#include <string>
#include <thread>

#include "ranks/child_process.h"

namespace fabric::launcher {

class Zygote {
 public:
  // Starts it (spec.control_fd and the variable are set here): loaded with spec.env, which
  // should be what the ranks get less what each is given (see StandbyPool).
  explicit Zygote(ProcessSpec spec);
  ~Zygote();
  Zygote(const Zygote&) = delete;
  Zygote& operator=(const Zygote&) = delete;

  // A rank forked with `env` as its whole environment, its stdout and stderr on new pipes;
  // nullopt when the zygote does not fork (refused, or gone). Waits for the zygote to be
  // loaded the first time.
  std::optional<StartedProcess> fork_rank(const std::map<std::string, std::string>& env);
  // Blocks until the rank `pid` forked here has exited: its status as a shell's $?.
  int wait(pid_t pid);
  // Whether it forks: waits until it is loaded and says so, refuses, or is gone (at most
  // 120 s: one that has not loaded by then is SIGKILLed and refused).
  bool serving();
  // Why it does not fork, once it does not; "" while it does.
  std::string refusal();
  // Stops waiting for it (fabricd is told to stop): SIGKILL, and its ranks die with it.
  void abandon(const std::string& why);
  pid_t pid() const { return process_.pid; }

 private:
  void read_records();
  void forward_output();

  StartedProcess process_;
  std::thread reader_, output_;
  std::mutex mutex_;
  std::condition_variable changed_;
  bool ready_ = false, gone_ = false;  // guarded by mutex_; gone_: exited and reaped
  bool closing_ = false;               // the destructor let it go; guarded by mutex_
  std::string refusal_;                // why it does not fork; guarded by mutex_
  std::deque<std::pair<char, int>> fork_replies_;  // (kind, pid or errno); guarded by mutex_
  std::map<pid_t, int> exits_;                     // reported, not yet waited for; guarded by mutex_
};

// Whether the program at `path` (resolved) holds libfabric's standby hook, i.e. was linked
// with libfabric (statically, as it always is): only such a program waits as a standby or
// serves as a zygote. Any other would run main() with no rank.
bool has_standby_hook(const std::string& path);
// What fabricd says when --warm-standby meets such a program.
std::string without_standby_hook(const std::string& path);

}  // namespace fabric::launcher
