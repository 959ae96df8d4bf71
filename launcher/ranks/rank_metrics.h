// The Prometheus families every launcher of ranks exports (`fabricd run`, agents, and the
// coordinator for what agents report), made in one place so that their names, help and
// labels agree wherever they come from:
//   fabricd_rank_exits_total{cause}              rank processes that ended: success, error
//                                                (non-zero exit), signal, hung, spawn_failed,
//                                                node_lost, stopped
//   fabricd_job_restarts_total{cause}            generations restarted, by the first failure's
//                                                cause (error, signal, hung, node_lost, ...)
//   fabricd_rank_heartbeat_age_seconds{job,rank} since the rank's last heartbeat, at scrape time
//   fabricd_rank_step{job,rank}                  the step the rank last reported
//   fabricd_rank_steps_per_second{job,rank}      its steps/s and samples/s, as the rank measured
//   fabricd_rank_samples_per_second{job,rank}    them (job totals: ranks/job_progress.h)
//   fabricd_rank_step_lag_seconds{job,rank}      how much later than the median rank it reaches
//                                                each step's synchronization (straggler_watch.h)
//   fabricd_job_step_seconds{job}                the job's median step time
//   fabricd_straggler_warnings_total             times a rank was named a straggler
#pragma once

#include <chrono>
#include <cstdint>
#include <map>
#include <string>

#include "fabric/v1/agent.pb.h"
#include "observability/metrics.h"
#include "ranks/straggler_watch.h"
#include "rendezvous/rendezvous_service.h"

namespace fabric::launcher {

struct RankMetrics {
  explicit RankMetrics(MetricsRegistry& registry);
  CounterFamily& rank_exits;
  CounterFamily& restarts;
  CounterFamily& straggler_warnings;
};

// The cause of a rank that ended with `status` (its exit code, or 128 + a signal):
// "success", "error" or "signal".
const char* exit_cause(int status);

// The cause of an exit as an agent reports it (fabric.v1.RankExit).
const char* exit_cause(const fabric::v1::RankExit& exit);

// At scrape time: the step skew of `job_id`'s ranks.
void collect_step_skew(MetricsRegistry::Scrape& scrape, const std::string& job_id, const StepSkew& skew);

// At scrape time: the heartbeat age and last step of each rank of `job_id`.
void collect_heartbeats(MetricsRegistry::Scrape& scrape, const std::string& job_id,
                        const std::map<std::int32_t, RankHeartbeat>& heartbeats,
                        std::chrono::steady_clock::time_point now);

}  // namespace fabric::launcher
