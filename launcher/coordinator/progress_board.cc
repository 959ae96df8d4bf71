#include "coordinator/progress_board.h"

#include <google/protobuf/util/time_util.h>

#include <vector>

#include "ranks/job_progress.h"

namespace fabric::launcher {

namespace v1 = fabric::v1;
using google::protobuf::util::TimeUtil;

void ProgressBoard::record(const std::string& job_id, std::int32_t generation, const std::string& node,
                           const v1::RankReport& report, TimePoint now) {
  auto [it, fresh] = jobs_.try_emplace(job_id);
  Job& job = it->second;
  if (!fresh && generation < job.generation) return;  // a late report of a replaced generation
  if (fresh || generation > job.generation) {
    job = Job{};
    job.generation = generation;
  }
  const std::int32_t rank = report.progress().rank();
  Heard& heard = job.ranks[rank];
  heard.progress = report.progress();
  heard.progress.set_node(node);  // the session's, not what the report claims
  heard.at = now;
  job.stragglers.record({{rank, heartbeat_of(report, now)}});
}

std::optional<std::string> ProgressBoard::check_stragglers(const std::string& job_id, std::int32_t world_size,
                                                           TimePoint now) {
  const auto it = jobs_.find(job_id);
  if (it == jobs_.end() || now < it->second.next_check) return std::nullopt;
  Job& job = it->second;
  job.next_check = now + kStragglerCheckInterval;
  std::vector<std::int32_t> ranks;
  for (std::int32_t rank = 0; rank < world_size; ++rank) ranks.push_back(rank);
  const auto named = job.stragglers.check({}, ranks);
  if (!named) return std::nullopt;
  return job.stragglers.skew()->describe(*named) + " over the last " + std::to_string(job.stragglers.skew()->steps) +
         " steps";
}

std::optional<v1::JobProgress> ProgressBoard::progress(const std::string& job_id, std::int32_t generation,
                                                       TimePoint now,
                                                       std::chrono::system_clock::time_point wall_now) const {
  const auto it = jobs_.find(job_id);
  if (it == jobs_.end() || it->second.generation != generation || it->second.ranks.empty()) return std::nullopt;
  std::vector<v1::RankProgress> ranks;
  for (const auto& [rank, heard] : it->second.ranks) {
    v1::RankProgress progress = heard.progress;
    const auto since_report = std::chrono::duration_cast<std::chrono::nanoseconds>(now - heard.at);
    *progress.mutable_heartbeat_age() = TimeUtil::NanosecondsToDuration(
        TimeUtil::DurationToNanoseconds(progress.heartbeat_age()) + std::max<std::int64_t>(since_report.count(), 0));
    ranks.push_back(std::move(progress));
  }
  return job_progress(std::move(ranks), it->second.stragglers.skew(), wall_now);
}

}  // namespace fabric::launcher
