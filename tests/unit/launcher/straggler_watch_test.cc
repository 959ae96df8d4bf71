// StragglerWatch (launcher/ranks/straggler_watch.h): arrivals made up step by step, as the
// ranks' heartbeats would carry them; no clock and no process.
#include "ranks/straggler_watch.h"

#include <gtest/gtest.h>

#include <cstdint>
#include <map>
#include <vector>

namespace fabric::launcher {
namespace {

constexpr std::int64_t kMs = 1'000'000;  // nanoseconds

// Heartbeats of `ranks` for steps [first, last): step s starts at s × period; rank r arrives
// `late(r, s)` after that.
template <typename Late>
std::map<std::int32_t, RankHeartbeat> beats(const std::vector<std::int32_t>& ranks, std::int64_t first,
                                            std::int64_t last, std::int64_t period, Late late) {
  std::map<std::int32_t, RankHeartbeat> heartbeats;
  for (const std::int32_t rank : ranks) {
    for (std::int64_t step = first; step < last; ++step) {
      heartbeats[rank].arrivals.push_back({.step = step, .unix_nanos = 1'700'000'000'000'000'000 + step * period +
                                                                       late(rank, step)});
    }
  }
  return heartbeats;
}

TEST(StragglerWatch, ARankThatArrivesLateEveryStep_IsNamedWithItsLag) {
  StragglerWatch watch;
  // 250 ms steps; rank 2 arrives 100 ms after the others (which differ by a millisecond).
  watch.record(beats({0, 1, 2}, 0, 30, 250 * kMs, [](int rank, std::int64_t) { return rank == 2 ? 100 * kMs : rank * kMs; }));
  const auto skew = watch.assess({0, 1, 2});
  ASSERT_TRUE(skew);
  ASSERT_TRUE(skew->straggler);
  EXPECT_EQ(*skew->straggler, 2);
  EXPECT_NEAR(skew->lag_seconds.at(2), 0.099, 1e-9) << "100 ms late, less the median rank's 1 ms";
  EXPECT_NEAR(skew->lag_seconds.at(1), 0.0, 1e-9) << "the median rank lags itself by nothing";
  EXPECT_NEAR(skew->step_seconds, 0.25, 1e-9);
  EXPECT_EQ(skew->steps, 20u) << "the window";
  EXPECT_EQ(skew->describe(2), "rank 2 lags the median rank by 0.099 s per step (40% of a 0.250 s step)");
}

TEST(StragglerWatch, RanksWithinTheFraction_AreNotNamed) {
  StragglerWatch watch({.lag_fraction = 0.2});
  // Jitter of up to 40 ms in 250 ms steps, no rank consistently last.
  watch.record(beats({0, 1, 2, 3}, 0, 30, 250 * kMs,
                     [](int rank, std::int64_t step) { return ((rank + step) % 4) * 13 * kMs; }));
  const auto skew = watch.assess({0, 1, 2, 3});
  ASSERT_TRUE(skew);
  EXPECT_FALSE(skew->straggler) << skew->describe(0);
}

TEST(StragglerWatch, SaysNothingUntilEnoughStepsAreCommonToAllRanks) {
  StragglerWatch watch({.min_steps = 5});
  auto late = [](int rank, std::int64_t) { return rank == 1 ? 200 * kMs : 0; };
  watch.record(beats({0, 1}, 0, 4, 250 * kMs, late));
  EXPECT_FALSE(watch.assess({0, 1})) << "4 steps";
  watch.record(beats({0}, 4, 10, 250 * kMs, late));
  EXPECT_FALSE(watch.assess({0, 1})) << "rank 1 has not reported steps 4..9";
  EXPECT_FALSE(watch.assess({0, 1, 2})) << "rank 2 never reported";
  watch.record(beats({1}, 4, 10, 250 * kMs, late));
  ASSERT_TRUE(watch.assess({0, 1}));
  EXPECT_EQ(watch.assess({0, 1})->straggler, 1);
  EXPECT_FALSE(watch.assess({0})) << "one rank has nobody to lag behind";
}

TEST(StragglerWatch, RepeatedArrivalsCountOnce_AndStepTimeSpansSkippedSteps) {
  StragglerWatch watch;
  auto late = [](int, std::int64_t) { return std::int64_t{0}; };
  for (int i = 0; i < 3; ++i) watch.record(beats({0, 1}, 0, 10, 100 * kMs, late));  // each heartbeat repeats them
  watch.record(beats({0, 1}, 20, 30, 100 * kMs, late));                              // steps 10..19 never seen
  const auto skew = watch.assess({0, 1});
  ASSERT_TRUE(skew);
  EXPECT_EQ(skew->steps, 20u);
  EXPECT_NEAR(skew->step_seconds, 0.1, 1e-9) << "the gap of ten steps is ten step times, not one";
}

TEST(StragglerWatch, CheckNamesAStragglerOnce_AgainAfterItCaughtUp) {
  StragglerWatch watch;
  auto slow = [](int rank, std::int64_t) { return rank == 1 ? 150 * kMs : 0; };
  auto even = [](int, std::int64_t) { return std::int64_t{0}; };
  EXPECT_EQ(watch.check(beats({0, 1, 2}, 0, 20, 250 * kMs, slow), {0, 1, 2}), 1);
  EXPECT_EQ(watch.check(beats({0, 1, 2}, 20, 25, 250 * kMs, slow), {0, 1, 2}), std::nullopt) << "already named";
  EXPECT_EQ(watch.check(beats({0, 1, 2}, 25, 60, 250 * kMs, even), {0, 1, 2}), std::nullopt) << "caught up";
  EXPECT_FALSE(watch.skew()->straggler);
  EXPECT_EQ(watch.check(beats({0, 1, 2}, 60, 90, 250 * kMs, slow), {0, 1, 2}), 1) << "lagging again";
  watch.reset();
  EXPECT_FALSE(watch.skew());
  EXPECT_EQ(watch.check({}, {0, 1, 2}), std::nullopt);
}

TEST(StragglerWatch, AZeroFractionMeasuresButNeverNames) {
  StragglerWatch watch({.lag_fraction = 0});
  watch.record(beats({0, 1}, 0, 20, 250 * kMs, [](int rank, std::int64_t) { return rank == 1 ? 200 * kMs : 0; }));
  const auto skew = watch.assess({0, 1});
  ASSERT_TRUE(skew);
  EXPECT_FALSE(skew->straggler);
  EXPECT_GT(skew->lag_seconds.at(1), 0.09);
}

}  // namespace
}  // namespace fabric::launcher
