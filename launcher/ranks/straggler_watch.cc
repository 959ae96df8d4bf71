#include "ranks/straggler_watch.h"

#include <algorithm>
#include <cstdio>

namespace fabric::launcher {
namespace {

constexpr std::size_t kKeptSteps = 128;  // per rank; older arrivals are forgotten

}  // namespace

double median(std::vector<double> values) {
  if (values.empty()) return 0;
  std::sort(values.begin(), values.end());
  const std::size_t n = values.size();
  return n % 2 == 1 ? values[n / 2] : (values[n / 2 - 1] + values[n / 2]) / 2;
}

void StragglerWatch::record(const std::map<std::int32_t, RankHeartbeat>& heartbeats) {
  for (const auto& [rank, heartbeat] : heartbeats) {
    auto& steps = arrivals_[rank];
    for (const auto& arrival : heartbeat.arrivals) steps.emplace(arrival.step, arrival.unix_nanos);
    while (steps.size() > kKeptSteps) steps.erase(steps.begin());
  }
}

std::optional<StepSkew> StragglerWatch::assess(const std::vector<std::int32_t>& ranks) const {
  if (ranks.size() < 2) return std::nullopt;
  // The most recent steps that every rank reported, newest first.
  std::vector<std::int64_t> common;
  const auto first = arrivals_.find(ranks.front());
  if (first == arrivals_.end()) return std::nullopt;
  for (auto step = first->second.rbegin(); step != first->second.rend() && common.size() < options_.window_steps;
       ++step) {
    const bool everyone = std::all_of(ranks.begin(), ranks.end(), [&](std::int32_t rank) {
      const auto it = arrivals_.find(rank);
      return it != arrivals_.end() && it->second.contains(step->first);
    });
    if (everyone) common.push_back(step->first);
  }
  if (common.size() < std::max<std::size_t>(options_.min_steps, 2)) return std::nullopt;
  std::reverse(common.begin(), common.end());

  std::map<std::int32_t, std::vector<double>> lateness;  // seconds after the first arrival, per step
  std::vector<std::int64_t> first_arrival;
  for (const std::int64_t step : common) {
    std::int64_t earliest = INT64_MAX;
    for (const std::int32_t rank : ranks) earliest = std::min(earliest, arrivals_.at(rank).at(step));
    for (const std::int32_t rank : ranks) lateness[rank].push_back((arrivals_.at(rank).at(step) - earliest) / 1e9);
    first_arrival.push_back(earliest);
  }
  std::vector<double> periods;
  for (std::size_t i = 1; i < common.size(); ++i) {
    periods.push_back((first_arrival[i] - first_arrival[i - 1]) / 1e9 / static_cast<double>(common[i] - common[i - 1]));
  }

  StepSkew skew{.step_seconds = median(periods), .steps = common.size()};
  std::map<std::int32_t, double> typical;
  std::vector<double> all;
  for (const auto& [rank, values] : lateness) all.push_back(typical[rank] = median(values));
  const double median_rank = median(all);
  std::int32_t slowest = ranks.front();
  for (const auto& [rank, value] : typical) {
    skew.lag_seconds[rank] = value - median_rank;
    if (skew.lag_seconds[rank] > skew.lag_seconds[slowest]) slowest = rank;
  }
  if (options_.lag_fraction > 0 && skew.step_seconds > 0 &&
      skew.lag_seconds[slowest] > options_.lag_fraction * skew.step_seconds) {
    skew.straggler = slowest;
  }
  return skew;
}

std::optional<std::int32_t> StragglerWatch::check(const std::map<std::int32_t, RankHeartbeat>& heartbeats,
                                                  const std::vector<std::int32_t>& ranks) {
  record(heartbeats);
  skew_ = assess(ranks);
  if (!skew_ || !skew_->straggler) {
    named_.reset();
    return std::nullopt;
  }
  if (named_ == skew_->straggler) return std::nullopt;
  named_ = skew_->straggler;
  return named_;
}

std::string StepSkew::describe(std::int32_t rank) const {
  const double lag = lag_seconds.count(rank) ? lag_seconds.at(rank) : 0;
  char text[160];
  std::snprintf(text, sizeof(text), "rank %d lags the median rank by %.3f s per step (%.0f%% of a %.3f s step)", rank,
                lag, step_seconds > 0 ? 100 * lag / step_seconds : 0.0, step_seconds);
  return text;
}

}  // namespace fabric::launcher
