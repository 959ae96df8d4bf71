// A job's progress from its ranks' heartbeats (ranks/job_progress.h), against values worked
// out by hand: the lowest step, the median steps/s, the summed samples/s, rank 0's metrics,
// and the lag and straggler of a step skew.
#include "ranks/job_progress.h"

#include <gtest/gtest.h>

namespace fabric::launcher {
namespace {

namespace v1 = fabric::v1;
using Clock = std::chrono::steady_clock;
using namespace std::chrono_literals;

RankHeartbeat beat(Clock::time_point received, std::optional<std::int64_t> step, double steps_per_second,
                   double samples_per_second, double loss) {
  RankHeartbeat heartbeat{.received_at = received, .last_progress = received, .step = step, .phase = "train"};
  heartbeat.steps_per_second = steps_per_second;
  heartbeat.samples_per_second = samples_per_second;
  heartbeat.samples = 640;
  heartbeat.metrics = {{"loss", loss}};
  return heartbeat;
}

TEST(JobProgress, SumsSamplesTakesTheMedianRateTheLowestStepAndRankZerosMetrics) {
  const Clock::time_point now{};
  const std::map<std::int32_t, RankHeartbeat> heartbeats = {
      {2, beat(now - 300ms, 41, 3.0, 96, 0.9)},
      {0, beat(now - 100ms, 42, 4.0, 128, 0.5)},
      {1, beat(now - 200ms, 40, 10.0, 64, 0.7)},
  };
  const v1::JobProgress progress =
      job_progress(ranks_progress(heartbeats, "node-a", now), std::nullopt, std::chrono::system_clock::time_point{});
  EXPECT_EQ(progress.step(), 40);
  EXPECT_DOUBLE_EQ(progress.steps_per_second(), 4.0);  // the median of 3, 4 and 10: one fast rank does not count
  EXPECT_DOUBLE_EQ(progress.samples_per_second(), 288.0);
  EXPECT_DOUBLE_EQ(progress.metrics().at("loss"), 0.5);  // rank 0's
  ASSERT_EQ(progress.ranks_size(), 3);
  EXPECT_EQ(progress.ranks(0).rank(), 0);
  EXPECT_EQ(progress.ranks(2).rank(), 2);
  EXPECT_EQ(progress.ranks(1).node(), "node-a");
  EXPECT_EQ(progress.ranks(2).heartbeat_age().nanos(), 300'000'000);
  EXPECT_EQ(progress.ranks(0).samples(), 640);
  EXPECT_FALSE(progress.has_straggler());
}

TEST(JobProgress, HasNoStepUntilARankReportsOne) {
  const Clock::time_point now{};
  const v1::JobProgress progress = job_progress(ranks_progress({{0, beat(now, std::nullopt, 0, 0, 1)}}, "n", now),
                                                std::nullopt, std::chrono::system_clock::time_point{});
  EXPECT_FALSE(progress.has_step());
  EXPECT_TRUE(job_progress({}, std::nullopt, {}).ranks().empty());
}

TEST(JobProgress, CarriesEachRanksLagAndNamesTheStraggler) {
  const Clock::time_point now{};
  StepSkew skew{.lag_seconds = {{0, 0.0}, {1, 0.1}}, .step_seconds = 0.25, .steps = 20, .straggler = 1};
  const v1::JobProgress progress = job_progress(
      ranks_progress({{0, beat(now, 20, 4, 128, 1)}, {1, beat(now, 20, 4, 128, 1)}}, "n", now), skew, {});
  EXPECT_DOUBLE_EQ(progress.ranks(1).step_lag_seconds(), 0.1);
  EXPECT_DOUBLE_EQ(progress.step_seconds(), 0.25);
  ASSERT_TRUE(progress.has_straggler());
  EXPECT_EQ(progress.straggler(), 1);
  EXPECT_EQ(progress.straggler_message(), skew.describe(1));
  EXPECT_NE(progress.straggler_message().find("rank 1"), std::string::npos);
}

TEST(JobProgress, AForwardedReportKeepsItsArrivalsAndItsAge) {
  v1::RankReport report;
  report.mutable_progress()->set_rank(3);
  report.mutable_progress()->mutable_heartbeat_age()->set_nanos(250'000'000);
  auto* arrival = report.add_arrivals();
  arrival->set_step(7);
  arrival->set_unix_nanos(123);
  const Clock::time_point now = Clock::time_point{} + 10s;
  const RankHeartbeat heartbeat = heartbeat_of(report, now);
  EXPECT_EQ(heartbeat.received_at, now - 250ms);
  ASSERT_EQ(heartbeat.arrivals.size(), 1u);
  EXPECT_EQ(heartbeat.arrivals[0].step, 7);
  EXPECT_EQ(heartbeat.arrivals[0].unix_nanos, 123);
  report.mutable_progress()->mutable_heartbeat_age()->set_seconds(std::numeric_limits<std::int64_t>::max());
  EXPECT_EQ(heartbeat_of(report, now).received_at, now - 86400s - 250ms) << "an absurd age is clamped, not overflowed";
}

}  // namespace
}  // namespace fabric::launcher
