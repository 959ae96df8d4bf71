#include "ranks/rank_metrics.h"

namespace fabric::launcher {

RankMetrics::RankMetrics(MetricsRegistry& registry)
    : rank_exits(registry.counter("fabricd_rank_exits_total", "Rank processes that ended, by cause", {"cause"})),
      restarts(registry.counter("fabricd_job_restarts_total",
                                "Generations restarted after a failure, by the first failure's cause", {"cause"})) {}

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

void collect_heartbeats(MetricsRegistry::Scrape& scrape, const std::string& job_id,
                        const std::map<std::int32_t, RankHeartbeat>& heartbeats,
                        std::chrono::steady_clock::time_point now) {
  GaugeFamily& age = scrape.gauge("fabricd_rank_heartbeat_age_seconds", "Seconds since the rank's last heartbeat",
                                  {"job", "rank"});
  GaugeFamily& step = scrape.gauge("fabricd_rank_step", "The step the rank last reported with its heartbeat",
                                   {"job", "rank"});
  for (const auto& [rank, heartbeat] : heartbeats) {
    const std::vector<std::string> labels = {job_id, std::to_string(rank)};
    age.set(labels, std::chrono::duration<double>(now - heartbeat.received_at).count());
    if (heartbeat.step) step.set(labels, static_cast<double>(*heartbeat.step));
  }
}

}  // namespace fabric::launcher
