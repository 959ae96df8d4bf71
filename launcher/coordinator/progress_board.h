// ProgressBoard: the coordinator's view of its running jobs' progress, from the rank reports
// the agents attach to their heartbeats (agent.proto's RankReport). Each node sees only its
// own ranks; here every rank of a job meets, so the step arrivals of ranks on different
// nodes are compared, and a straggler that no single agent can see is named.
//
// Memory only, and per generation: a report of a newer generation replaces the job's
// board, one of an older generation is ignored. Not thread-safe: the coordinator calls it
// under its mutex. The clock is passed in.
#pragma once

#include <chrono>
#include <cstdint>
#include <map>
#include <optional>
#include <string>

#include "fabric/v1/agent.pb.h"
#include "ranks/straggler_watch.h"

namespace fabric::launcher {

class ProgressBoard {
 public:
  using TimePoint = std::chrono::steady_clock::time_point;

  // A rank's report of `generation` of `job_id`, from `node`, heard at `now`.
  void record(const std::string& job_id, std::int32_t generation, const std::string& node,
              const fabric::v1::RankReport& report, TimePoint now);
  // Compares the arrivals of the job's world_size ranks, at most once per
  // kStragglerCheckInterval; the straggler to name now (StragglerWatch::check), with its
  // description, when there is a new one.
  std::optional<std::string> check_stragglers(const std::string& job_id, std::int32_t world_size, TimePoint now);
  // The job's progress in `generation`, each rank's heartbeat age grown by the time since
  // its report; nullopt when no rank of that generation reported.
  std::optional<fabric::v1::JobProgress> progress(const std::string& job_id, std::int32_t generation, TimePoint now,
                                                  std::chrono::system_clock::time_point wall_now) const;
  void forget(const std::string& job_id) { jobs_.erase(job_id); }

 private:
  struct Heard {
    fabric::v1::RankProgress progress;
    TimePoint at;
  };
  struct Job {
    std::int32_t generation = 0;
    std::map<std::int32_t, Heard> ranks;
    StragglerWatch stragglers{StragglerOptions{}};
    TimePoint next_check{};
  };
  std::map<std::string, Job> jobs_;
};

}  // namespace fabric::launcher
