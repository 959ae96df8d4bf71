// LocalJob: one job on this node, to its end — `fabricd run`. It serves the job's
// RendezvousService on a loopback port of its own (so any number of jobs run side by
// side), starts a RankGroup per generation, watches it with a HealthWatch, and on a
// failure stops the group (SIGTERM, grace period, SIGKILL) and starts generation + 1, up
// to spec.max_restarts. Then run() returns the failing rank's status and prints which
// rank failed first, how, its last stderr lines and the error it reported.
//
// One LocalJob per job; run() blocks; request_stop() may be called from any thread.
#pragma once

#include <functional>
#include <memory>
#include <ostream>
#include <string>

#include "fabric/v1/job.pb.h"
#include "observability/metrics.h"
#include "ranks/output_router.h"

namespace fabric::launcher {

// run()'s status when the ranks' rendezvous timed out (distinct from any rank's status
// that fabricd passes on, except a program's own exit(3)).
inline constexpr int kRendezvousTimeout = 3;
// run()'s status when fabricd could not start a rank or serve the rendezvous.
inline constexpr int kCannotStart = 126;

// What a LocalJob tells whoever serves it (`fabricd run --serve`): every rank line, and
// each change of its state in job.proto's terms (RUNNING with the generation, RESTARTING,
// and the terminal state run() ends in).
struct LocalJobHooks {
  std::shared_ptr<LineSink> lines;
  std::function<void(fabric::v1::JobState state, std::int32_t generation, const std::string& message)> on_state;
  // Each failed generation, before the RESTARTING or FAILED it leads to.
  std::function<void(const fabric::v1::FailureSummary& failure)> on_failure;
  // The running generation's progress (ranks/job_progress.h), about once a second.
  std::function<void(const fabric::v1::JobProgress& progress)> on_progress;
  // Prometheus families (ranks/rank_metrics.h, and the rendezvous' RPCs) go here when set;
  // it must outlive the job.
  MetricsRegistry* metrics = nullptr;
};

// A job id unique on this machine: "local-<pid>-<random>".
std::string unique_local_job_id();

class LocalJob {
 public:
  // spec: validated, defaults filled in (jobs/job_spec.h); spec.program resolved.
  // Rank lines go to out/err ("[rank N] ..."), fabricd's own messages to err.
  // job_id: FABRICD_JOB_ID of the ranks ("" = one made unique per run, "local-PID-...").
  LocalJob(fabric::v1::JobSpec spec, std::ostream& out, std::ostream& err, LocalJobHooks hooks = {},
           std::string job_id = "");
  const std::string& job_id() const;
  ~LocalJob();
  LocalJob(const LocalJob&) = delete;
  LocalJob& operator=(const LocalJob&) = delete;

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
