// HealthWatch: the hang and rendezvous policy, judged at fabricated steady_clock time
// points (the policy takes the time as an argument, so nothing here sleeps).

#include "ranks/health_watch.h"

#include <gtest/gtest.h>

#include <chrono>
#include <cstdint>
#include <map>
#include <vector>

namespace {

using fabric::launcher::format_seconds;
using fabric::launcher::HealthVerdict;
using fabric::launcher::HealthWatch;
using fabric::launcher::RankHeartbeat;
using namespace std::chrono_literals;
using TimePoint = std::chrono::steady_clock::time_point;

// An arbitrary, fixed origin: nothing here reads the real clock.
const TimePoint kT0 = TimePoint{} + std::chrono::hours(1000);

RankHeartbeat beat(TimePoint received_at, TimePoint last_progress, std::string phase = "train",
                   std::optional<std::int64_t> step = std::nullopt) {
  RankHeartbeat heartbeat;
  heartbeat.received_at = received_at;
  heartbeat.last_progress = last_progress;
  heartbeat.phase = std::move(phase);
  heartbeat.step = step;
  return heartbeat;
}

TEST(HealthWatch, HungRank_IsTimedFromItsLastProgress_NotFromItsLastHeartbeat) {
  const HealthWatch watch(2s, 30min);
  // The rank heartbeats right now, but says it last made progress 2.1 s ago.
  const std::map<std::int32_t, RankHeartbeat> beats = {{0, beat(kT0 + 2100ms, kT0, "train", 5)}};
  const auto verdict = watch.find_hung(kT0 + 2100ms, {0}, beats);
  ASSERT_TRUE(verdict.has_value());
  EXPECT_EQ(verdict->kind, HealthVerdict::Kind::kHung);
  EXPECT_EQ(verdict->rank, 0);
  EXPECT_EQ(verdict->detail, "hung: no progress for 2.1 s (timeout 2.0 s), last seen in train at step 5");
}

TEST(HealthWatch, RankThatProgressedRecently_IsNotHung_EvenIfItsHeartbeatIsOld) {
  const HealthWatch watch(2s, 30min);
  const std::map<std::int32_t, RankHeartbeat> beats = {{0, beat(kT0, kT0)}};
  EXPECT_FALSE(watch.find_hung(kT0 + 1999ms, {0}, beats).has_value());
  // Exactly the timeout counts as hung (silence >= timeout).
  EXPECT_TRUE(watch.find_hung(kT0 + 2000ms, {0}, beats).has_value());
}

TEST(HealthWatch, RankThatNeverHeartbeated_IsSupervisedByItsExitAlone) {
  const HealthWatch watch(1s, 30min);
  const std::map<std::int32_t, RankHeartbeat> beats = {{1, beat(kT0, kT0)}};
  // Rank 0 never heartbeated: never hung, however long it runs.
  EXPECT_FALSE(watch.find_hung(kT0 + 24h, {0}, beats).has_value());
  const auto verdict = watch.find_hung(kT0 + 24h, {0, 1}, beats);
  ASSERT_TRUE(verdict.has_value());
  EXPECT_EQ(verdict->rank, 1);
}

TEST(HealthWatch, OnlyRunningRanksAreJudged) {
  const HealthWatch watch(1s, 30min);
  const std::map<std::int32_t, RankHeartbeat> beats = {{0, beat(kT0, kT0)}, {1, beat(kT0, kT0)}};
  // Both are silent, but rank 0 has exited and is not among the running ranks.
  const auto verdict = watch.find_hung(kT0 + 5s, {1}, beats);
  ASSERT_TRUE(verdict.has_value());
  EXPECT_EQ(verdict->rank, 1);
  EXPECT_FALSE(watch.find_hung(kT0 + 5s, {}, beats).has_value());
}

TEST(HealthWatch, FirstHungRankInTheGivenOrder_IsReported) {
  const HealthWatch watch(1s, 30min);
  const std::map<std::int32_t, RankHeartbeat> beats = {
      {0, beat(kT0, kT0 + 10s)}, {1, beat(kT0, kT0)}, {2, beat(kT0, kT0)}};
  const auto verdict = watch.find_hung(kT0 + 10s, {0, 2, 1}, beats);
  ASSERT_TRUE(verdict.has_value());
  EXPECT_EQ(verdict->rank, 2);
}

TEST(HealthWatch, ZeroHeartbeatTimeout_DisablesHangDetection) {
  const HealthWatch watch(0ms, 30min);
  const std::map<std::int32_t, RankHeartbeat> beats = {{0, beat(kT0, kT0)}};
  EXPECT_FALSE(watch.find_hung(kT0 + 1000h, {0}, beats).has_value());
}

TEST(HealthWatch, HungDetail_NamesAnUnnamedPhaseAndOmitsAnUnknownStep) {
  const HealthWatch watch(500ms, 30min);
  const std::map<std::int32_t, RankHeartbeat> beats = {{3, beat(kT0, kT0, "")}};
  const auto verdict = watch.find_hung(kT0 + 800ms, {3}, beats);
  ASSERT_TRUE(verdict.has_value());
  EXPECT_EQ(verdict->detail, "hung: no progress for 0.8 s (timeout 0.5 s), last seen in an unnamed phase");
}

TEST(HealthWatch, RendezvousTimeout_NamesEveryRankThatNeverJoined) {
  const HealthWatch watch(0ms, 10s);
  const std::map<std::int32_t, TimePoint> joined = {{0, kT0 + 1s}, {2, kT0}};
  EXPECT_FALSE(watch.find_rendezvous_timeout(kT0 + 9999ms, 4, joined).has_value());
  const auto verdict = watch.find_rendezvous_timeout(kT0 + 10s, 4, joined);
  ASSERT_TRUE(verdict.has_value());
  EXPECT_EQ(verdict->kind, HealthVerdict::Kind::kRendezvousTimeout);
  EXPECT_EQ(verdict->rank, 1);  // the first that never joined
  EXPECT_NE(verdict->detail.find("timed out after 10.0 s"), std::string::npos) << verdict->detail;
  EXPECT_NE(verdict->detail.find("rank(s) 1, 3 never joined"), std::string::npos) << verdict->detail;
}

TEST(HealthWatch, RendezvousTimeout_IsMeasuredFromTheFirstRankThatJoined) {
  const HealthWatch watch(0ms, 10s);
  // Rank 1 joined first (at kT0), rank 0 later; the timeout runs from kT0.
  const std::map<std::int32_t, TimePoint> joined = {{0, kT0 + 8s}, {1, kT0}};
  EXPECT_TRUE(watch.find_rendezvous_timeout(kT0 + 10s, 3, joined).has_value());
}

TEST(HealthWatch, RendezvousThatNobodyJoinedOrEverybodyJoined_NeverTimesOut) {
  const HealthWatch watch(0ms, 1s);
  EXPECT_FALSE(watch.find_rendezvous_timeout(kT0 + 1h, 2, {}).has_value());
  const std::map<std::int32_t, TimePoint> all = {{0, kT0}, {1, kT0}};
  EXPECT_FALSE(watch.find_rendezvous_timeout(kT0 + 1h, 2, all).has_value());
}

TEST(HealthWatch, ZeroRdzvTimeout_DisablesTheRendezvousWatch) {
  // A zero rdzv_timeout means "no timeout" everywhere else (validate(): "or zero to
  // disable"; RendezvousJobOptions: "Zero: no timeout").
  const HealthWatch watch(0ms, 0ms);
  const std::map<std::int32_t, TimePoint> joined = {{0, kT0}};
  EXPECT_FALSE(watch.find_rendezvous_timeout(kT0 + 1ms, 2, joined).has_value());
}

TEST(HealthWatch, HeartbeatInterval_IsAQuarterOfTheTimeout_Clamped) {
  EXPECT_EQ(HealthWatch(2s, 1s).heartbeat_interval(), 500ms);
  EXPECT_EQ(HealthWatch(100ms, 1s).heartbeat_interval(), 50ms);  // never faster than 50 ms
  EXPECT_EQ(HealthWatch(10min, 1s).heartbeat_interval(), 2s);    // never slower than 2 s: progress
  EXPECT_EQ(HealthWatch(0ms, 1s).heartbeat_interval(), 2s);      // nothing timed, progress still shown
}

TEST(HealthWatch, FormatSeconds_ShowsOneDecimal) {
  EXPECT_EQ(format_seconds(2100ms), "2.1 s");
  EXPECT_EQ(format_seconds(0ms), "0.0 s");
  EXPECT_EQ(format_seconds(90s), "90.0 s");
}

}  // namespace
