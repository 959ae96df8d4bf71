#include "ranks/rank_metrics.h"

namespace fabric::launcher {

RankMetrics::RankMetrics(MetricsRegistry& registry)
    : rank_exits(registry.counter("fabricd_rank_exits_total", "Rank processes that ended, by cause", {"cause"})),
      restarts(registry.counter("fabricd_job_restarts_total",
                                "Generations restarted after a failure, by the first failure's cause", {"cause"})),
      straggler_warnings(registry.counter("fabricd_straggler_warnings_total",
                                          "Times a rank was named a straggler (it lagged the median rank by more "
                                          "than the set fraction of a step)")) {}

const char* exit_cause(int status) {
  if (status == 0) return "success";
  return status > 128 ? "signal" : "error";
}

const char* exit_cause(const fabric::v1::RankExit& exit) {
  switch (exit.cause()) {
    case fabric::v1::RankExit::CAUSE_EXITED: return exit.exit_code() == 0 ? "success" : "error";
    case fabric::v1::RankExit::CAUSE_SIGNALED: return "signal";
    case fabric::v1::RankExit::CAUSE_HEARTBEAT_TIMEOUT: return "hung";
    case fabric::v1::RankExit::CAUSE_SPAWN_FAILED: return "spawn_failed";
    case fabric::v1::RankExit::CAUSE_NODE_LOST: return "node_lost";
    case fabric::v1::RankExit::CAUSE_STOPPED: return "stopped";
    default: return "unknown";
  }
}

void collect_step_skew(MetricsRegistry::Scrape& scrape, const std::string& job_id, const StepSkew& skew) {
  GaugeFamily& lag = scrape.gauge("fabricd_rank_step_lag_seconds",
                                  "How much later than the median rank the rank reaches each step's gradient "
                                  "synchronization (median over the recent steps)",
                                  {"job", "rank"});
  GaugeFamily& step = scrape.gauge("fabricd_job_step_seconds", "The job's median step time", {"job"});
  for (const auto& [rank, seconds] : skew.lag_seconds) lag.set({job_id, std::to_string(rank)}, seconds);
  step.set({job_id}, skew.step_seconds);
}

void collect_heartbeats(MetricsRegistry::Scrape& scrape, const std::string& job_id,
                        const std::map<std::int32_t, RankHeartbeat>& heartbeats,
                        std::chrono::steady_clock::time_point now) {
  GaugeFamily& age = scrape.gauge("fabricd_rank_heartbeat_age_seconds", "Seconds since the rank's last heartbeat",
                                  {"job", "rank"});
  GaugeFamily& step = scrape.gauge("fabricd_rank_step", "The step the rank last reported with its heartbeat",
                                   {"job", "rank"});
  GaugeFamily& steps_per_second = scrape.gauge(
      "fabricd_rank_steps_per_second", "The rank's optimizer steps per second, as it measured them", {"job", "rank"});
  GaugeFamily& samples_per_second =
      scrape.gauge("fabricd_rank_samples_per_second",
                   "Samples per second through the rank's training forwards, as it measured them", {"job", "rank"});
  for (const auto& [rank, heartbeat] : heartbeats) {
    const std::vector<std::string> labels = {job_id, std::to_string(rank)};
    age.set(labels, std::chrono::duration<double>(now - heartbeat.received_at).count());
    if (heartbeat.step) step.set(labels, static_cast<double>(*heartbeat.step));
    steps_per_second.set(labels, heartbeat.steps_per_second);
    samples_per_second.set(labels, heartbeat.samples_per_second);
  }
}

}  // namespace fabric::launcher
