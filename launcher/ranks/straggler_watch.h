// StragglerWatch: which rank the others wait for. The ranks of a synchronous job meet at
// every step's gradient synchronization, and each says when it got there (the arrivals of
// its heartbeats, rendezvous.proto's StepArrival). For each step every rank reported, a
// rank's lateness is how long after the first one it arrived; a rank lags by its median
// lateness over the recent steps minus the median rank's. The slowest rank is a straggler
// when it lags by more than `lag_fraction` of the median step time: a rank that sleeps
// 100 ms in each 250 ms step lags by 40%. Slowness anywhere in the step (data loading,
// forward, an overloaded host) shows, since it delays the next arrival.
//
// Pure: it holds no thread and no clock. Feed it heartbeats; ask it; reset it per generation.
#pragma once

#include <chrono>
#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include "rendezvous/rendezvous_service.h"

namespace fabric::launcher {

// How often launchers call check(): arrivals come with heartbeats, at most a few per second.
inline constexpr std::chrono::milliseconds kStragglerCheckInterval{1000};

// The median of `values`; 0 when there are none.
double median(std::vector<double> values);

struct StragglerOptions {
  double lag_fraction = 0.2;      // 0 disables the warning (the skew is still measured)
  std::size_t window_steps = 20;  // the most recent steps compared
  std::size_t min_steps = 5;      // fewer common steps say nothing yet
};

struct StepSkew {
  std::map<std::int32_t, double> lag_seconds;  // each rank's median lateness minus the median rank's
  double step_seconds = 0;                     // the median time between consecutive steps
  std::size_t steps = 0;                       // how many steps were compared
  std::optional<std::int32_t> straggler;       // the slowest rank, when it lags too much
  // "rank 2 lags the median rank by 0.101 s per step (40% of a 0.252 s step)"
  std::string describe(std::int32_t rank) const;
};

class StragglerWatch {
 public:
  explicit StragglerWatch(StragglerOptions options = {}) : options_(options) {}

  // Takes the arrivals in the ranks' latest heartbeats; steps seen before are ignored.
  void record(const std::map<std::int32_t, RankHeartbeat>& heartbeats);
  // Over `ranks` (those that synchronize together); nullopt until min_steps steps have an
  // arrival from each of them.
  std::optional<StepSkew> assess(const std::vector<std::int32_t>& ranks) const;
  // record() then assess(), keeping the result (skew()); returns the straggler to name now:
  // one that was not named already, or one that caught up in between. What launchers call
  // every second or so.
  std::optional<std::int32_t> check(const std::map<std::int32_t, RankHeartbeat>& heartbeats,
                                    const std::vector<std::int32_t>& ranks);
  const std::optional<StepSkew>& skew() const { return skew_; }
  // A new generation: its steps are not comparable with the last one's.
  void reset() {
    arrivals_.clear();
    skew_.reset();
    named_.reset();
  }

 private:
  StragglerOptions options_;
  std::optional<StepSkew> skew_;
  std::optional<std::int32_t> named_;
  std::map<std::int32_t, std::map<std::int64_t, std::int64_t>> arrivals_;  // rank -> step -> unix ns
};

}  // namespace fabric::launcher
