// Runs the ranks of one job on this node and watches them (fabricd run).
//
// Each rank is a process of its own process group, started with the rank environment of
// DESIGN.md, that dies with fabricd (parent-death signal). The supervisor serves the job's
// RendezvousService on a loopback port it picks (FABRICD_ENDPOINT), so any number of jobs
// run side by side. Output reaches the console line by line with a rank prefix (never
// interleaved mid-line) and/or a file per rank and stream.
//
// A rank fails when it exits non-zero or by a signal, or when it stops heartbeating for
// heartbeat_timeout (it is then killed: a hung rank cannot be asked to leave). The others
// are stopped (SIGTERM to each group, a grace period, SIGKILL) and the whole group restarts
// with generation + 1, up to max_restarts; after that, run() returns the failing rank's
// status and prints which rank failed first, how, its last stderr lines and the error it
// reported. A rendezvous that does not complete (some ranks joined, others never did
// within rdzv_timeout) ends the job with kRendezvousTimeout and no restart.
// One Supervisor per job; run() blocks; request_stop() may be called from any thread.
#pragma once

#include <chrono>
#include <map>
#include <memory>
#include <string>
#include <vector>

namespace fabric::launcher {

// run()'s status when the ranks' rendezvous timed out (distinct from any rank's status
// that fabricd passes on, except a program's own exit(3)).
inline constexpr int kRendezvousTimeout = 3;
// run()'s status when fabricd could not start a rank or serve the rendezvous.
inline constexpr int kCannotStart = 126;

// Where one of a rank's output streams goes.
struct StreamRouting {
  bool console = true;
  bool file = false;  // <log_dir>/rank_N.stdout.log / .stderr.log
};

struct JobOptions {
  std::string program;
  std::vector<std::string> args;
  int nproc_per_node = 1;
  int max_restarts = 0;
  std::string log_dir;                            // needed when a routing has file = true
  StreamRouting stdout_routing, stderr_routing;
  std::map<std::string, std::string> env;         // added to every rank's environment
  std::vector<int> console_ranks;                 // empty = all ranks print to the console
  std::chrono::milliseconds grace_period{5000};   // between SIGTERM and SIGKILL
  // A rank that heartbeated once and then stays silent this long is hung. Zero: never.
  std::chrono::milliseconds heartbeat_timeout{std::chrono::minutes(5)};
  // From the first rank's first request, how long the others have to make theirs; also the
  // default timeout of the store's blocking calls.
  std::chrono::milliseconds rdzv_timeout{std::chrono::minutes(30)};
  std::string job_id;                             // "" = one made unique per run
};

class Supervisor {
 public:
  explicit Supervisor(JobOptions options);
  ~Supervisor();
  Supervisor(const Supervisor&) = delete;
  Supervisor& operator=(const Supervisor&) = delete;

  // Runs the job to its end: 0 when every rank of a generation exits 0, else the exit status
  // of the first rank that failed in the last generation (128 + signal for a signal),
  // kRendezvousTimeout, kCannotStart, or 128 + the signal that stopped fabricd.
  int run();
  // Stops the job (forwarding SIGTERM to the ranks); with immediately, SIGKILL at once.
  void request_stop(int signal, bool immediately);

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace fabric::launcher
