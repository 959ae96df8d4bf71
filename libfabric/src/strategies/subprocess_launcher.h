// Starting the other local ranks of a job as copies of this program, as Lightning's
// _SubprocessScriptLauncher does: each child re-executes /proc/self/exe with the same
// arguments and RANK/LOCAL_RANK/WORLD_SIZE/MASTER_ADDR/MASTER_PORT set, and dies with its
// parent (PR_SET_PDEATHSIG) so that no rank outlives the job. The object owns the children:
// its destructor waits for them, or terminates them when it runs during exception unwinding.
#pragma once

#include <sys/types.h>

#include <string>
#include <vector>

namespace fabric::strategies {

class SubprocessLauncher {
 public:
  // Starts local ranks 1..num_processes-1 and makes this process local rank 0 (in its own
  // environment too). Picks a free MASTER_PORT on 127.0.0.1 unless one is set, and
  // OMP_NUM_THREADS (CPUs / num_processes, here and in the children) unless one is set.
  SubprocessLauncher(int num_processes, int num_nodes, int node_rank);
  ~SubprocessLauncher();
  SubprocessLauncher(const SubprocessLauncher&) = delete;
  SubprocessLauncher& operator=(const SubprocessLauncher&) = delete;

 private:
  std::vector<pid_t> children_;
};

}  // namespace fabric::strategies
