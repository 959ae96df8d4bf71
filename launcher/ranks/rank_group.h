// RankGroup: the processes of one generation of a job on this node, owned for their whole
// life. The constructor spawns them; the destructor kills whatever still runs (SIGKILL to
// each rank's process group; what a rank leaves in its group dies when it exits) and joins
// every thread, so no exit path can leak a process or a thread. A process a rank moved out
// of its group (setsid) and that holds its pipes open cannot hold up the destructor: the
// output gets a moment to drain, then the readers stop.
//
// Each rank is started as ranks/child_process.h says (its own process group, a parent-death
// signal), or is forked from a Zygote, or is a warm standby taken from a StandbyPool and given
// its environment. Its stdout and stderr are read line by line
// into a LineSink. When a rank exits, `on_exit` is called from that rank's waiter thread
// with its status; the group's own state is updated first, so all_exited() is already
// true there for the last one.
#pragma once

#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <sys/types.h>
#include <string>
#include <vector>

#include "ranks/child_process.h"
#include "ranks/output_router.h"

namespace fabric::launcher {

class StandbyPool;  // ranks/standby_pool.h
class Zygote;       // ranks/zygote.h

// One process of the group.
struct RankProcess {
  std::int32_t rank = 0;
  std::int32_t local_rank = 0;
  // Its whole environment (the launcher's own is not inherited implicitly).
  std::map<std::string, std::string> env;
};

struct RankGroupOptions {
  std::string program;  // an absolute path, or one relative to working_dir
  std::vector<std::string> args;
  std::string working_dir;  // "" = the launcher's
  std::int32_t generation = 0;
  std::vector<RankProcess> ranks;
  // Where ranks come from first, when set: warm standbys of the same program, arguments and
  // working directory, given each rank's environment; the rest are started. Must outlive
  // the constructor only.
  StandbyPool* standbys = nullptr;
  // Before the standbys, when set: ranks forked from this zygote of the program. Must
  // outlive the group (it reports the exits of the ranks it forked).
  Zygote* zygote = nullptr;
};

// How a rank ended: its exit code, or 128 + the signal that killed it (a shell's $?).
struct RankEnded {
  std::int32_t rank = 0;
  std::int32_t local_rank = 0;
  std::int32_t generation = 0;
  int status = 0;
  bool signaled() const { return status > 128; }
};

class RankGroup {
 public:
  using ExitCallback = std::function<void(const RankEnded&)>;

  // Spawns every rank; SpawnError when one cannot start (those already started are killed
  // and joined before it is thrown). `output` and `on_exit` must outlive the group.
  RankGroup(RankGroupOptions options, LineSink& output, ExitCallback on_exit);
  ~RankGroup();
  RankGroup(const RankGroup&) = delete;
  RankGroup& operator=(const RankGroup&) = delete;

  std::int32_t generation() const { return options_.generation; }
  const std::vector<RankProcess>& ranks() const { return options_.ranks; }

  // Sends `signal` to the process group of every rank still running (or of one rank).
  void signal_all(int signal);
  void signal_rank(std::int32_t rank, int signal);

  // SIGTERM to every rank still running, up to `grace` for them to exit, then SIGKILL;
  // returns once all have exited. kill() from another thread cuts the grace short.
  // Returns false when the grace ran out and SIGKILL was needed.
  bool stop(std::chrono::milliseconds grace);
  void kill();

  bool all_exited() const;
  // The global ranks still running.
  std::vector<std::int32_t> running() const;
  std::optional<int> status(std::int32_t rank) const;
  // The ranks that were warm standbys, and those forked from the zygote (the rest were
  // started for this generation).
  const std::vector<std::int32_t>& standby_ranks() const { return standby_ranks_; }
  const std::vector<std::int32_t>& forked_ranks() const { return forked_ranks_; }
  std::optional<pid_t> pid(std::int32_t rank) const;

 private:
  struct Process;

  // Starts the rank, or takes a standby for it.
  void spawn(const RankProcess& rank);
  // Reads its output and waits for its exit, on threads of its own.
  void watch(const RankProcess& rank, StartedProcess started, Zygote* forked_from = nullptr);
  void wait_for(Process& process);
  bool all_exited_locked() const;
  // kill(), wait for every exit, give the output a moment, join every thread.
  void tear_down();

  const RankGroupOptions options_;
  LineSink& output_;
  const ExitCallback on_exit_;

  mutable std::mutex mutex_;
  std::condition_variable exited_;
  bool kill_requested_ = false;                    // guarded by mutex_
  std::vector<std::unique_ptr<Process>> processes_;  // guarded by mutex_ (statuses)
  const int wake_fd_;  // an eventfd: readable once the readers must stop
  std::vector<std::int32_t> standby_ranks_, forked_ranks_;  // set by the constructor
};

}  // namespace fabric::launcher
