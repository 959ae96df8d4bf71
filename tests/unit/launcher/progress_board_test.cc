// The coordinator's view of progress (coordinator/progress_board.h): reports of ranks on
// different nodes meet there, so a straggler no single node sees is named; generations
// replace one another; ages grow between reports. The clock is passed in.
#include "coordinator/progress_board.h"

#include <gtest/gtest.h>

namespace fabric::launcher {
namespace {

namespace v1 = fabric::v1;
using Clock = std::chrono::steady_clock;
using namespace std::chrono_literals;

// A report of `rank` at step `steps`, arriving at every step's synchronization `late_ms`
// after the others (steps 250 ms apart).
v1::RankReport report(std::int32_t rank, std::int64_t steps, std::int64_t late_ms, const std::string& claimed_node = "") {
  v1::RankReport report;
  report.mutable_progress()->set_rank(rank);
  report.mutable_progress()->set_step(steps);
  report.mutable_progress()->set_node(claimed_node);
  report.mutable_progress()->set_steps_per_second(4);
  for (std::int64_t step = 0; step < steps; ++step) {
    auto* arrival = report.add_arrivals();
    arrival->set_step(step);
    arrival->set_unix_nanos((step * 250 + late_ms) * 1'000'000);
  }
  return report;
}

TEST(ProgressBoard, NamesAStragglerOnAnotherNodeThanTheRanksItHoldsUp) {
  ProgressBoard board;
  const Clock::time_point now{};
  board.record("job", 0, "node-a", report(0, 20, 0), now);
  board.record("job", 0, "node-a", report(1, 20, 2), now);
  board.record("job", 0, "node-b", report(2, 20, 1), now);
  board.record("job", 0, "node-b", report(3, 20, 100), now);  // 100 ms late each 250 ms step: 40%
  const auto named = board.check_stragglers("job", 4, now);
  ASSERT_TRUE(named.has_value());
  EXPECT_EQ(named->rfind("rank 3 lags", 0), 0u) << *named;
  EXPECT_FALSE(board.check_stragglers("job", 4, now + 1ms)) << "at most one check per interval";
  EXPECT_FALSE(board.check_stragglers("job", 4, now + kStragglerCheckInterval)) << "named once, not every check";

  const auto progress = board.progress("job", 0, now, {});
  ASSERT_TRUE(progress.has_value());
  ASSERT_EQ(progress->ranks_size(), 4);
  EXPECT_EQ(progress->straggler(), 3);
  EXPECT_EQ(progress->ranks(3).node(), "node-b");
  EXPECT_GT(progress->ranks(3).step_lag_seconds(), 0.09);
}

TEST(ProgressBoard, TakesTheNodeFromTheSessionNotTheReport) {
  ProgressBoard board;
  board.record("job", 0, "node-a", report(0, 1, 0, "node-z"), Clock::time_point{});
  EXPECT_EQ(board.progress("job", 0, Clock::time_point{}, {})->ranks(0).node(), "node-a");
}

TEST(ProgressBoard, ANewGenerationReplacesTheOldAndALateReportOfTheOldIsIgnored) {
  ProgressBoard board;
  const Clock::time_point now{};
  board.record("job", 0, "node-a", report(0, 5, 0), now);
  board.record("job", 0, "node-a", report(1, 5, 0), now);
  board.record("job", 1, "node-a", report(0, 2, 0), now);
  board.record("job", 0, "node-a", report(1, 6, 0), now);  // late, of the replaced generation
  EXPECT_FALSE(board.progress("job", 0, now, {}).has_value());
  const auto progress = board.progress("job", 1, now, {});
  ASSERT_TRUE(progress.has_value());
  ASSERT_EQ(progress->ranks_size(), 1);
  EXPECT_EQ(progress->step(), 2);
  board.forget("job");
  EXPECT_FALSE(board.progress("job", 1, now, {}).has_value());
}

TEST(ProgressBoard, AgesGrowBetweenReports) {
  ProgressBoard board;
  v1::RankReport beat = report(0, 1, 0);
  beat.mutable_progress()->mutable_heartbeat_age()->set_nanos(200'000'000);
  const Clock::time_point heard{};
  board.record("job", 0, "node-a", beat, heard);
  const auto progress = board.progress("job", 0, heard + 1500ms, {});
  EXPECT_EQ(progress->ranks(0).heartbeat_age().seconds(), 1);
  EXPECT_EQ(progress->ranks(0).heartbeat_age().nanos(), 700'000'000);
}

}  // namespace
}  // namespace fabric::launcher
