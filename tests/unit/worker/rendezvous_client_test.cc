// The rank side of the launcher protocol against a real in-process RendezvousService: the
// client's store verbs and their errors, heartbeats that follow progress (and say how old
// it is), Busy phases, and the description of an exception for ReportError.
#include <gtest/gtest.h>
#include <stdlib.h>

#include <thread>

#include "fabric/worker/error_reporter.h"
#include "fabric/worker/progress_reporter.h"
#include "fabric/worker/rendezvous_client.h"
#include "test_server.h"

namespace fabric::worker {
namespace {

using std::chrono::milliseconds;

class RendezvousClientTest : public ::testing::Test {
 protected:
  testing::TestRendezvousServer server{"job", 2};
  std::shared_ptr<RendezvousClient> client(int rank, int generation = 0) {
    return std::make_shared<RendezvousClient>(
        RankIdentity{.endpoint = server.endpoint(),
                     .job_id = "job",
                     .generation = generation,
                     .rank = rank,
                     .secret = testing::kTestJobSecret});
  }
};

TEST_F(RendezvousClientTest, StoreVerbsRoundTrip) {
  auto rank0 = client(0), rank1 = client(1);
  rank0->set("key", std::string("\0binary", 7));
  EXPECT_EQ(rank1->get("key"), std::string("\0binary", 7));
  EXPECT_EQ(rank0->add("counter", 2), 2);
  EXPECT_EQ(rank1->add("counter", 3), 5);
  EXPECT_EQ(rank1->get("counter"), "5");
  EXPECT_EQ(rank0->compare_set("cas", "", "first"), "first");
  EXPECT_EQ(rank0->compare_set("cas", "wrong", "second"), "first");
  EXPECT_TRUE(rank0->check({"key", "cas"}));
  EXPECT_FALSE(rank0->check({"key", "missing"}));
  EXPECT_EQ(rank0->num_keys(), 3);
  EXPECT_TRUE(rank0->delete_key("cas"));
  EXPECT_FALSE(rank0->delete_key("cas"));
}

TEST_F(RendezvousClientTest, GetBlocksUntilAnotherRankSetsTheKey) {
  auto rank0 = client(0), rank1 = client(1);
  std::thread setter([&] {
    std::this_thread::sleep_for(milliseconds(100));
    rank1->set("late", "value");
  });
  EXPECT_EQ(rank0->get("late", milliseconds(5000)), "value");
  setter.join();
}

TEST_F(RendezvousClientTest, TimeoutNamesTheMissingKeyAndIsATimeout) {
  try {
    client(0)->wait({"never"}, milliseconds(100));
    FAIL() << "wait returned";
  } catch (const RendezvousError& error) {
    EXPECT_EQ(error.kind(), RendezvousErrorKind::kTimeout);
    EXPECT_NE(std::string(error.what()).find("never"), std::string::npos) << error.what();
  }
}

TEST_F(RendezvousClientTest, BarrierPassesWhenEveryRankArrives) {
  auto rank0 = client(0), rank1 = client(1);
  std::thread other([&] { rank1->barrier("epoch_end", 0, 0, milliseconds(5000)); });
  rank0->barrier("epoch_end", 0, 0, milliseconds(5000));
  other.join();
  try {
    rank0->barrier("epoch_end", 1, 0, milliseconds(100));
    FAIL() << "a barrier rank 1 never reached passed";
  } catch (const RendezvousError& error) {
    EXPECT_EQ(error.kind(), RendezvousErrorKind::kTimeout);
    EXPECT_NE(std::string(error.what()).find("1"), std::string::npos) << error.what();
  }
}

TEST_F(RendezvousClientTest, RankOfAnOlderGenerationIsRefusedAsStale) {
  auto old_rank = client(0, 0);
  server.begin_generation(1);
  try {
    old_rank->set("key", "value");
    FAIL() << "a stale rank was served";
  } catch (const RendezvousError& error) {
    EXPECT_EQ(error.kind(), RendezvousErrorKind::kStaleGeneration);
  }
  client(0, 1)->set("key", "value");  // the new generation is served
}

TEST_F(RendezvousClientTest, IdentityComesFromFabricdsVariables) {
  ::unsetenv("FABRICD_ENDPOINT");
  EXPECT_FALSE(identity_from_environment().has_value());
  ::setenv("FABRICD_ENDPOINT", "127.0.0.1:1", 1);
  ::setenv("FABRICD_JOB_ID", "j", 1);
  ::setenv("FABRICD_RESTART_COUNT", "2", 1);
  ::setenv("RANK", "x", 1);
  EXPECT_THROW(identity_from_environment(), std::invalid_argument);
  ::setenv("RANK", "1", 1);
  ::unsetenv("FABRICD_JOB_SECRET");
  EXPECT_THROW(identity_from_environment(), std::invalid_argument) << "no FABRICD_JOB_SECRET";
  ::setenv("FABRICD_JOB_SECRET", "s3cret", 1);
  ::setenv("FABRICD_TLS_CA", "/etc/fabricd/ca.pem", 1);
  const auto identity = identity_from_environment();
  ASSERT_TRUE(identity.has_value());
  EXPECT_EQ(identity->generation, 2);
  EXPECT_EQ(identity->rank, 1);
  EXPECT_EQ(identity->secret, "s3cret");
  EXPECT_EQ(identity->tls_ca, "/etc/fabricd/ca.pem");
  for (const char* name : {"FABRICD_ENDPOINT", "FABRICD_JOB_ID", "FABRICD_RESTART_COUNT", "RANK", "FABRICD_JOB_SECRET",
                           "FABRICD_TLS_CA"}) {
    ::unsetenv(name);
  }
}

TEST_F(RendezvousClientTest, ARankWithoutTheJobsSecretIsUnauthenticated) {
  RendezvousClient stranger(RankIdentity{.endpoint = server.endpoint(), .job_id = "job", .rank = 0, .secret = "guess"});
  try {
    stranger.set("key", "value");
    FAIL() << "a client with the wrong secret wrote to the store";
  } catch (const RendezvousError& error) {
    EXPECT_EQ(error.kind(), RendezvousErrorKind::kUnauthenticated) << error.what();
  }
}

// Polls (bounded) until `done`; heartbeats are asynchronous by design.
template <typename Predicate>
bool eventually(Predicate done, milliseconds limit = milliseconds(3000)) {
  const auto deadline = std::chrono::steady_clock::now() + limit;
  while (!done()) {
    if (std::chrono::steady_clock::now() > deadline) return false;
    std::this_thread::sleep_for(milliseconds(10));
  }
  return true;
}

TEST_F(RendezvousClientTest, HeartbeatsStartWithProgressAndStopWithIt) {
  ProgressReporter reporter(client(1));
  std::this_thread::sleep_for(milliseconds(300));
  EXPECT_EQ(reporter.heartbeats_sent(), 0) << "no progress yet: nothing to vouch for";
  EXPECT_EQ(server.ms_since_progress(1), -1);

  reporter.step();
  ASSERT_TRUE(eventually([&] { return reporter.heartbeats_sent() >= 1; }));
  EXPECT_EQ(reporter.steps(), 1);
  // No more progress: at most the one heartbeat already in flight, then silence, and the
  // silence is measured from the progress itself.
  std::this_thread::sleep_for(milliseconds(300));
  const auto sent = reporter.heartbeats_sent();
  std::this_thread::sleep_for(milliseconds(300));
  EXPECT_EQ(reporter.heartbeats_sent(), sent);
  EXPECT_GE(server.ms_since_progress(1), 550);
}

TEST_F(RendezvousClientTest, BusyPhaseKeepsHeartbeatsGoingWithoutProgress) {
  ProgressReporter reporter(client(0));
  {
    auto waiting = reporter.busy("all_reduce");
    ASSERT_TRUE(eventually([&] { return reporter.heartbeats_sent() >= 3; }));
    EXPECT_LT(server.ms_since_progress(0), 200) << "a rank waiting on its peers is not silent";
  }
}

TEST_F(RendezvousClientTest, HeartbeatsCarryTheSamplesAndTheLatestLoggedScalars) {
  ProgressReporter reporter(client(0));
  reporter.samples(32);
  reporter.samples(32);
  reporter.metrics({{"loss", 2.5}, {"accuracy", 0.25}});
  reporter.metrics({{"loss", 1.5}});  // the latest value of each name
  reporter.step();
  ASSERT_TRUE(eventually([&] {
    const auto reported = server.reported(0);
    return reported && reported->samples == 64 && reported->metrics.size() == 2;
  }));
  const auto reported = server.reported(0);
  EXPECT_EQ(reported->metrics.at("loss"), 1.5);
  EXPECT_EQ(reported->metrics.at("accuracy"), 0.25);
}

TEST_F(RendezvousClientTest, KeepsAtMostSixteenMetricNamesOfBoundedLength) {
  ProgressReporter reporter(client(0));
  std::map<std::string, double> many;
  for (int i = 0; i < 40; ++i) many["metric_" + std::to_string(100 + i)] = i;
  many[std::string(200, 'x')] = 1;
  reporter.metrics(many);
  reporter.step();
  ASSERT_TRUE(eventually([&] { return server.reported(0).has_value(); }));
  const auto reported = server.reported(0);
  EXPECT_EQ(reported->metrics.size(), ProgressReporter::kMetricNames);
  for (const auto& [name, value] : reported->metrics) EXPECT_LE(name.size(), ProgressReporter::kMetricNameBytes);
}

TEST(ProgressRates, AreTheChangeBetweenTheFirstAndLastReadingPerSecond) {
  using Clock = std::chrono::steady_clock;
  const Clock::time_point start{};
  EXPECT_EQ(ProgressReporter::rates({}).steps_per_second, 0);
  EXPECT_EQ(ProgressReporter::rates({{.time = start, .steps = 3, .samples = 96}}).steps_per_second, 0)
      << "one reading has no rate";
  const auto rates = ProgressReporter::rates({{.time = start, .steps = 10, .samples = 320},
                                              {.time = start + std::chrono::seconds(1), .steps = 14, .samples = 448},
                                              {.time = start + std::chrono::seconds(4), .steps = 30, .samples = 960}});
  EXPECT_DOUBLE_EQ(rates.steps_per_second, 5.0);     // (30 - 10) / 4 s
  EXPECT_DOUBLE_EQ(rates.samples_per_second, 160.0);  // (960 - 320) / 4 s
  EXPECT_EQ(ProgressReporter::rates({{.time = start, .steps = 1}, {.time = start, .steps = 2}}).steps_per_second, 0)
      << "no time passed: no rate rather than infinity";
}

TEST(ErrorReport, DescribesTheExceptionsTypeMessageAndStep) {
  std::exception_ptr error;
  try {
    throw std::out_of_range("index 7 is past the end");
  } catch (...) {
    error = std::current_exception();
  }
  const ErrorReport report = describe_exception(error, 12, /*with_backtrace=*/true);
  EXPECT_EQ(report.error_type, "std::out_of_range");
  EXPECT_EQ(report.message, "index 7 is past the end");
  EXPECT_EQ(report.step, 12);
  EXPECT_FALSE(report.stack_trace.empty());
}

}  // namespace
}  // namespace fabric::worker
