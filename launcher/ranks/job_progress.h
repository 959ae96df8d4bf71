// A job's progress (job.proto's JobProgress) from its ranks' latest heartbeats: what the
// status page, `fabricd top` and GetJob show. The same assembly serves `fabricd run` (one
// node's heartbeats) and the coordinator (every node's, forwarded by the agents), so both
// report a job alike. Pure: the caller passes the clock's readings.
#pragma once

#include <chrono>
#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include "fabric/v1/agent.pb.h"
#include "fabric/v1/job.pb.h"
#include "observability/metrics.h"
#include "ranks/straggler_watch.h"
#include "rendezvous/rendezvous_service.h"

namespace fabric::launcher {

// One rank's heartbeat as RankProgress, its age taken at `now`.
fabric::v1::RankProgress rank_progress(std::int32_t rank, const RankHeartbeat& heartbeat, const std::string& node,
                                       std::chrono::steady_clock::time_point now);

// Each of `heartbeats` as RankProgress, by rank.
std::vector<fabric::v1::RankProgress> ranks_progress(const std::map<std::int32_t, RankHeartbeat>& heartbeats,
                                                     const std::string& node,
                                                     std::chrono::steady_clock::time_point now);

// The job's progress from its ranks' (any order) and the step skew of its straggler watch:
// the lowest step, the median steps/s, the summed samples/s, the lowest rank's metrics,
// each rank's lag and the straggler the skew names. `time` is when it was assembled.
fabric::v1::JobProgress job_progress(std::vector<fabric::v1::RankProgress> ranks, const std::optional<StepSkew>& skew,
                                     std::chrono::system_clock::time_point time);

// The RankHeartbeat a forwarded RankReport stands for (agent.proto), received `age` before
// `now`: what a StragglerWatch at the coordinator records.
RankHeartbeat heartbeat_of(const fabric::v1::RankReport& report, std::chrono::steady_clock::time_point now);

// At scrape time: the job's steps/s and samples/s
//   fabricd_job_steps_per_second{job}, fabricd_job_samples_per_second{job}
void collect_job_progress(MetricsRegistry::Scrape& scrape, const std::string& job_id,
                          const fabric::v1::JobProgress& progress);

}  // namespace fabric::launcher
