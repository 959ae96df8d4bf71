#include "ranks/job_progress.h"

#include <google/protobuf/util/time_util.h>

#include <algorithm>

namespace fabric::launcher {

namespace v1 = fabric::v1;
using google::protobuf::util::TimeUtil;

v1::RankProgress rank_progress(std::int32_t rank, const RankHeartbeat& heartbeat, const std::string& node,
                               std::chrono::steady_clock::time_point now) {
  v1::RankProgress progress;
  progress.set_rank(rank);
  progress.set_node(node);
  if (heartbeat.step) progress.set_step(*heartbeat.step);
  progress.set_phase(heartbeat.phase);
  const auto age = std::max(now - heartbeat.received_at, std::chrono::steady_clock::duration::zero());
  *progress.mutable_heartbeat_age() =
      TimeUtil::NanosecondsToDuration(std::chrono::duration_cast<std::chrono::nanoseconds>(age).count());
  progress.set_steps_per_second(heartbeat.steps_per_second);
  progress.set_samples_per_second(heartbeat.samples_per_second);
  progress.set_samples(heartbeat.samples);
  progress.mutable_metrics()->insert(heartbeat.metrics.begin(), heartbeat.metrics.end());
  return progress;
}

std::vector<v1::RankProgress> ranks_progress(const std::map<std::int32_t, RankHeartbeat>& heartbeats,
                                             const std::string& node, std::chrono::steady_clock::time_point now) {
  std::vector<v1::RankProgress> ranks;
  ranks.reserve(heartbeats.size());
  for (const auto& [rank, heartbeat] : heartbeats) ranks.push_back(rank_progress(rank, heartbeat, node, now));
  return ranks;
}

v1::JobProgress job_progress(std::vector<v1::RankProgress> ranks, const std::optional<StepSkew>& skew,
                             std::chrono::system_clock::time_point time) {
  std::sort(ranks.begin(), ranks.end(), [](const auto& a, const auto& b) { return a.rank() < b.rank(); });
  v1::JobProgress progress;
  *progress.mutable_time() = TimeUtil::NanosecondsToTimestamp(
      std::chrono::duration_cast<std::chrono::nanoseconds>(time.time_since_epoch()).count());
  std::vector<double> steps_per_second;
  double samples_per_second = 0;
  for (v1::RankProgress& rank : ranks) {
    if (rank.has_step() && (!progress.has_step() || rank.step() < progress.step())) progress.set_step(rank.step());
    steps_per_second.push_back(rank.steps_per_second());
    samples_per_second += rank.samples_per_second();
    if (skew) {
      const auto lag = skew->lag_seconds.find(rank.rank());
      if (lag != skew->lag_seconds.end()) rank.set_step_lag_seconds(lag->second);
    }
  }
  progress.set_steps_per_second(median(std::move(steps_per_second)));
  progress.set_samples_per_second(samples_per_second);
  if (!ranks.empty()) *progress.mutable_metrics() = ranks.front().metrics();
  if (skew) {
    progress.set_step_seconds(skew->step_seconds);
    if (skew->straggler) {
      progress.set_straggler(*skew->straggler);
      progress.set_straggler_message(skew->describe(*skew->straggler));
    }
  }
  for (v1::RankProgress& rank : ranks) *progress.add_ranks() = std::move(rank);
  return progress;
}

RankHeartbeat heartbeat_of(const v1::RankReport& report, std::chrono::steady_clock::time_point now) {
  // Clamped to a day, so that no report can move the clock past its range.
  const google::protobuf::Duration& reported = report.progress().heartbeat_age();
  const auto age = std::chrono::seconds(std::clamp<std::int64_t>(reported.seconds(), 0, 86400)) +
                   std::chrono::nanoseconds(std::clamp<std::int32_t>(reported.nanos(), 0, 999'999'999));
  RankHeartbeat heartbeat{.received_at = now - std::chrono::duration_cast<std::chrono::steady_clock::duration>(age)};
  heartbeat.last_progress = heartbeat.received_at;
  for (const v1::StepArrival& arrival : report.arrivals()) {
    heartbeat.arrivals.push_back({.step = arrival.step(), .unix_nanos = arrival.unix_nanos()});
  }
  return heartbeat;
}

void collect_job_progress(MetricsRegistry::Scrape& scrape, const std::string& job_id, const v1::JobProgress& progress) {
  scrape.gauge("fabricd_job_steps_per_second", "The median of the job's ranks' optimizer steps per second", {"job"})
      .set({job_id}, progress.steps_per_second());
  scrape.gauge("fabricd_job_samples_per_second",
               "Samples per second through the job's training forwards, summed over its ranks", {"job"})
      .set({job_id}, progress.samples_per_second());
}

}  // namespace fabric::launcher
