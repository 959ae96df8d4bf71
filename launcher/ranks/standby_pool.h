// StandbyPool: warm standbys of one job on this node (fabric/worker/standby.h), started
// ahead of a restart so that the next generation's ranks do not load the program and
// LibTorch again: the costly part of a restart (a rank of an 8-rank job on 2 cores waits
// over a second for the CPU to load its libraries). Used where the job's Zygote cannot
// fork (ranks/zygote.h): one process per rank instead of one per node.
//
// fill() starts processes of the job's program, each waiting before main() with a control
// socket; take() hands one over to become a rank, given its environment (RankGroup adopts
// it: its pipes, its exit). A standby that died while it waited (a crash in a static
// initializer, the OOM killer) is reaped and skipped. The destructor releases the rest:
// each is told to go (its socket closed: it exits 0 before main()), then SIGKILLed with
// whatever it started, and reaped.
//
// Only for programs linked with libfabric: another program would not wait, and would run
// as a standby with no rank (hence JobSpec.warm_standby, off unless asked for, and
// has_standby_hook). A standby's
// output before it is taken stays in its pipes and is read, as its rank's, once it is.
//
// Thread-safe.
#pragma once

#include <cstddef>
#include <mutex>
#include <optional>
#include <string>
#include <vector>

#include "ranks/child_process.h"

namespace fabric::launcher {

class StandbyPool {
 public:
  // `spec`: the program, its arguments, working directory and the environment it is loaded
  // with (control_fd is set here). What the dynamic loader and the libraries' static
  // initializers read (LD_*, OMP_NUM_THREADS) should be what the ranks get.
  explicit StandbyPool(ProcessSpec spec);
  ~StandbyPool();
  StandbyPool(const StandbyPool&) = delete;
  StandbyPool& operator=(const StandbyPool&) = delete;

  // Starts standbys until `count` wait. Throws SpawnError when the program cannot start.
  void fill(std::size_t count);
  // A standby turned into a process with `env` as its whole environment, or nullopt when
  // none is left alive. The caller owns it from here (waitpid, close_descriptors).
  std::optional<StartedProcess> take(const std::map<std::string, std::string>& env);
  // Standbys waiting (some may have died since and not been noticed yet).
  std::size_t size() const;
  // Standbys that have said they are loaded and wait (reads what they sent, without blocking).
  std::size_t ready();
  // The waiting standbys' process ids, oldest (the next taken) first.
  std::vector<pid_t> pids() const;

 private:
  struct Standby {
    StartedProcess process;
    bool ready = false;
  };
  static bool poll_ready(Standby& standby);
  static void release(Standby& standby);

  ProcessSpec spec_;
  mutable std::mutex mutex_;
  std::vector<Standby> waiting_;  // guarded by mutex_; oldest first
};

}  // namespace fabric::launcher
