// The status page's data (status/status_page.h), from a fake source and a fake clock:
// who may read status.json and as whom the source is asked, the history the sampling keeps
// (and forgets), and that whatever bytes users put in job names come out as valid JSON.
#include "status/status_page.h"

#include <gtest/gtest.h>

#include <nlohmann/json.hpp>

namespace fabric::launcher {
namespace {

namespace v1 = fabric::v1;
using nlohmann::json;

constexpr const char* kAliceToken = "alice-0123456789abcdef";
const std::string kTokens = std::string(kAliceToken) + " alice\n";

v1::Job running_job(const std::string& id, std::int64_t step, double loss) {
  v1::Job job;
  job.set_job_id(id);
  job.set_owner("alice");
  job.set_state(v1::JOB_STATE_RUNNING);
  job.mutable_spec()->set_name("digits");
  job.mutable_spec()->set_max_restarts(3);
  job.set_restart_count(1);
  v1::JobProgress& progress = *job.mutable_progress();
  progress.set_step(step);
  progress.set_steps_per_second(4);
  (*progress.mutable_metrics())["loss"] = loss;
  progress.set_straggler(1);
  progress.set_straggler_message("rank 1 lags the median rank by 0.100 s per step (40% of a 0.250 s step)");
  for (int rank = 0; rank < 2; ++rank) {
    v1::RankProgress& ranks = *progress.add_ranks();
    ranks.set_rank(rank);
    ranks.set_node("node-a");
    ranks.set_step(step);
  }
  v1::FailureSummary& failure = *job.add_failures();
  failure.set_generation(0);
  failure.set_node("node-b");
  failure.set_message("rank 1 on node-b exited with code 7");
  failure.mutable_first_failure()->set_rank(1);
  failure.mutable_first_failure()->set_cause(v1::RankExit::CAUSE_EXITED);
  failure.mutable_first_failure()->set_exit_code(7);
  return job;
}

class StatusPageTest : public ::testing::Test {
 protected:
  std::chrono::system_clock::time_point now{std::chrono::seconds(1'800'000'000)};
  std::vector<v1::Job> jobs = {running_job("job-1", 10, 2.0)};
  std::vector<std::string> asked_as;

  StatusPage page(AuthenticatorOptions options) {
    return StatusPage(
        "coordinator", std::make_shared<const Authenticator>(std::move(options)),
        [this](const Caller& caller) {
          asked_as.push_back(caller.user);
          return StatusSnapshot{.jobs = jobs, .nodes = {{.name = "node-a", .slots = 2, .used_slots = 2}}};
        },
        std::chrono::milliseconds(0), [this] { return now; });
  }
};

TEST_F(StatusPageTest, AServerWithTokensAnswers401WithoutOneAndAsksTheSourceAsTheTokensUser) {
  StatusPage status = page({.tokens = TokenTable::parse(kTokens, "tokens"), .tls = false, .open = false});
  const HttpReply refused = status.status_json("");
  EXPECT_EQ(refused.status, 401);
  EXPECT_FALSE(json::parse(refused.body).at("error").get<std::string>().empty());
  EXPECT_EQ(status.status_json("Bearer wrong-token-0123456789").status, 401);
  EXPECT_TRUE(asked_as.empty()) << "nothing is read for a caller who was refused";

  const HttpReply reply = status.status_json(std::string("Bearer ") + kAliceToken);
  ASSERT_EQ(reply.status, 200) << reply.body;
  EXPECT_EQ(asked_as, std::vector<std::string>{"alice"});
  EXPECT_EQ(json::parse(reply.body).at("caller"), "alice");
}

TEST_F(StatusPageTest, ShowsJobsRanksStragglerRestartsAndNodes) {
  StatusPage status = page({.tls = false, .open = true});
  const json body = json::parse(status.status_json("").body);
  EXPECT_EQ(body.at("server"), "coordinator");
  EXPECT_EQ(body.at("time").get<double>(), 1'800'000'000.0);
  const json& job = body.at("jobs").at(0);
  EXPECT_EQ(job.at("id"), "job-1");
  EXPECT_EQ(job.at("state"), "RUNNING");
  EXPECT_EQ(job.at("restart_count"), 1);
  EXPECT_EQ(job.at("max_restarts"), 3);
  EXPECT_EQ(job.at("progress").at("step"), 10);
  EXPECT_EQ(job.at("progress").at("metrics").at("loss"), 2.0);
  EXPECT_EQ(job.at("progress").at("straggler").at("rank"), 1);
  EXPECT_EQ(job.at("progress").at("ranks").size(), 2u);
  EXPECT_EQ(job.at("progress").at("ranks").at(1).at("straggler"), true);
  EXPECT_EQ(job.at("progress").at("ranks").at(0).at("straggler"), false);
  EXPECT_EQ(job.at("restarts").at(0).at("cause"), "error");
  EXPECT_EQ(job.at("restarts").at(0).at("message"), "rank 1 on node-b exited with code 7");
  EXPECT_TRUE(job.at("end_time").is_null());
  EXPECT_EQ(body.at("nodes").at(0).at("name"), "node-a");
  EXPECT_EQ(body.at("nodes").at(0).at("used_slots"), 2);
}

TEST_F(StatusPageTest, SamplingKeepsEachRunningJobsHistoryAndForgetsJobsThatAreGone) {
  StatusPage status = page({.tls = false, .open = true});
  for (int second = 0; second < 3; ++second) {
    jobs = {running_job("job-1", 10 * (second + 1), 2.0 - second * 0.5)};
    status.sample();
    now += std::chrono::seconds(1);
  }
  json history = json::parse(status.status_json("").body).at("jobs").at(0).at("history");
  ASSERT_EQ(history.size(), 3u);
  EXPECT_EQ(history.at(0).at("step"), 10);
  EXPECT_EQ(history.at(2).at("step"), 30);
  EXPECT_EQ(history.at(2).at("metrics").at("loss"), 1.0);
  EXPECT_EQ(history.at(2).at("time").get<double>() - history.at(0).at("time").get<double>(), 2.0);

  jobs.clear();
  status.sample();
  jobs = {running_job("job-1", 40, 0.5)};
  history = json::parse(status.status_json("").body).at("jobs").at(0).at("history");
  EXPECT_TRUE(history.empty()) << "a job the source no longer lists is forgotten";
}

TEST_F(StatusPageTest, KeepsAtMostTheLastHistoryPoints) {
  StatusPage status = page({.tls = false, .open = true});
  for (std::size_t i = 0; i < StatusPage::kHistoryPoints + 5; ++i) {
    jobs = {running_job("job-1", static_cast<std::int64_t>(i), 1.0)};
    status.sample();
  }
  const json history = json::parse(status.status_json("").body).at("jobs").at(0).at("history");
  ASSERT_EQ(history.size(), StatusPage::kHistoryPoints);
  EXPECT_EQ(history.at(0).at("step"), 5);
}

TEST_F(StatusPageTest, BytesThatAreNotUtf8AndNonFiniteLossesStillMakeValidJson) {
  jobs = {running_job("job-1", 1, std::nan(""))};
  jobs[0].mutable_spec()->set_name("bad \xff\xfe name");
  StatusPage status = page({.tls = false, .open = true});
  const HttpReply reply = status.status_json("");
  ASSERT_EQ(reply.status, 200);
  const json body = json::parse(reply.body);
  EXPECT_NE(body.at("jobs").at(0).at("name").get<std::string>().find("name"), std::string::npos);
  EXPECT_TRUE(body.at("jobs").at(0).at("progress").at("metrics").at("loss").is_null());
}

TEST_F(StatusPageTest, ServesThePageAtTheRootAndTheDataBesideIt) {
  StatusPage status = page({.tls = false, .open = true});
  auto routes = status.routes();
  ASSERT_TRUE(routes.contains("/"));
  ASSERT_TRUE(routes.contains("/status.json"));
  const HttpReply html = routes.at("/")("");
  EXPECT_EQ(html.content_type, "text/html; charset=utf-8");
  EXPECT_NE(html.body.find("status.json"), std::string::npos) << "the page polls the data route";
  EXPECT_EQ(routes.at("/status.json")("").content_type, "application/json");
}

}  // namespace
}  // namespace fabric::launcher
