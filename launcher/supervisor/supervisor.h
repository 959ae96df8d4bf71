// Runs the ranks of one job on this node and watches them (fabricd run): each rank is a
// process of its own process group, started with the rank environment of DESIGN.md, that
// dies with fabricd (parent-death signal). Its output reaches the console line by line with
// a rank prefix (never interleaved mid-line) and a file per rank. When a rank exits non-zero
// or by a signal, the others are stopped (SIGTERM to each group, a grace period, SIGKILL)
// and the whole group restarts with generation + 1, up to max_restarts; after that, run()
// returns the failing rank's status and prints which rank failed first and why.
// One Supervisor per job; run() blocks; request_stop() may be called from any thread.
#pragma once

#include <chrono>
#include <map>
#include <memory>
#include <string>
#include <vector>

namespace fabric::launcher {

struct JobOptions {
  std::string program;
  std::vector<std::string> args;
  int nproc_per_node = 1;
  int max_restarts = 0;
  std::string log_dir;                            // "" = no log files
  std::map<std::string, std::string> env;         // added to every rank's environment
  std::vector<int> console_ranks;                 // empty = all ranks print to the console
  std::chrono::milliseconds grace_period{5000};   // between SIGTERM and SIGKILL
  std::string job_id = "local";
};

class Supervisor {
 public:
  explicit Supervisor(JobOptions options);
  ~Supervisor();
  Supervisor(const Supervisor&) = delete;
  Supervisor& operator=(const Supervisor&) = delete;

  // Runs the job to its end: 0 when every rank of a generation exits 0, else the exit status
  // of the first rank that failed in the last generation (128 + signal for a signal), or
  // 128 + the signal that stopped fabricd.
  int run();
  // Stops the job (forwarding SIGTERM to the ranks); with immediately, SIGKILL at once.
  void request_stop(int signal, bool immediately);

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace fabric::launcher
