// fabricd across nodes, end to end: a coordinator and two agents, each in a network
// namespace of its own (tests/support/network_lab.h), running real jobs submitted with
// `fabricd submit` and followed with `fabricd watch`:
//   * the digits example trains with 2 nodes x 2 ranks under DDP (Gloo across the
//     namespaces, the store on node rank 0's agent) to the accuracy of one node;
//   * every daemon runs with TLS from `fabricd certs` and clients with tokens; strangers
//     (no token, another user, an uncertified agent, another job's rank) are refused;
//   * an agent SIGKILLed mid-job, and a node whose link is cut, are declared lost within
//     the heartbeat timeout; the elastic job (1:2) restarts on the survivor and completes;
//   * the coordinator SIGKILLed and restarted mid-job keeps its history and re-adopts the
//     running job without restarting it.
// Skips, saying why, where namespaces cannot be made (not root).
#include <gtest/gtest.h>
#include <signal.h>

#include <chrono>
#include <iostream>
#include <regex>
#include <string>

#include "support/cluster_credentials.h"
#include "support/network_lab.h"
#include "support/processes.h"
#include "support/temp_dir.h"

namespace fabric {
namespace {

using std::chrono::milliseconds;
using std::chrono::seconds;
using testing::CommandResult;
using testing::Daemon;
using testing::ms_between;
using testing::NetworkLab;
using testing::run_command;

const std::string kFabricd = FABRICD;
const std::string kDigits = DIGITS;
constexpr double kHeartbeatTimeoutSeconds = 2;

// "final test accuracy 0.97..." from a digits run's output.
double final_accuracy(const std::string& output) {
  std::smatch match;
  if (!std::regex_search(output, match, std::regex("final test accuracy ([0-9.]+)"))) return -1;
  return std::stod(match[1]);
}

// A coordinator in node "c" and agents with 2 slots in "n1" and "n2".
class Cluster : public ::testing::Test {
 protected:
  void SetUp() override {
    if (const std::string why = NetworkLab::unavailable(); !why.empty()) GTEST_SKIP() << why;
    lab_ = std::make_unique<NetworkLab>(std::vector<std::string>{"c", "n1", "n2"});
    server_ = lab_->address("c") + ":7070";
    credentials_ = std::make_unique<testing::ClusterCredentials>(
        kFabricd, dir_.path(),
        std::vector<std::pair<std::string, std::string>>{
            {"c", lab_->address("c")}, {"n1", lab_->address("n1")}, {"n2", lab_->address("n2")}},
        std::vector<std::string>{"alice", "bob"});
    start_coordinator();
    for (const char* node : {"n1", "n2"}) start_agent(node);
  }

  void start_coordinator() {
    coordinator_ = std::make_unique<Daemon>(
        lab_->exec("c") + kFabricd + " serve --listen " + server_ + " --state " + dir_.path() +
            "/state --local-agent 0 --agent-heartbeat-interval 0.25 --agent-heartbeat-timeout " +
            std::to_string(kHeartbeatTimeoutSeconds) + credentials_->node_flags("c") + " --token-file " +
            credentials_->tokens(),
        dir_.path() + "/coordinator." + std::to_string(coordinator_starts_++) + ".log");
    ASSERT_TRUE(coordinator_->wait_for_output("listening on", seconds(20))) << coordinator_->output();
  }

  void start_agent(const std::string& node) {
    auto& agent = agents_[node];
    agent = std::make_unique<Daemon>(lab_->exec(node) + kFabricd + " agent --coordinator " + server_ +
                                         " --node-name " + node + " --advertise " + lab_->address(node) +
                                         " --slots 2" + credentials_->node_flags(node),
                                     dir_.path() + "/agent-" + node + ".log");
    ASSERT_TRUE(agent->wait_for_output("registered as", seconds(20))) << agent->output();
  }

  // A fabricd client command, run in the coordinator's namespace as `user`.
  CommandResult client(const std::string& arguments, const std::string& user = "alice") {
    return run_command(lab_->exec("c") + kFabricd + " " + arguments + " --server " + server_ + credentials_->client_flags(user));
  }

  std::string submit(const std::string& flags_and_program) {
    CommandResult submitted = run_command(lab_->exec("c") + kFabricd + " submit --server " + server_ + credentials_->client_flags("alice") +
                                          " " + flags_and_program);
    EXPECT_EQ(submitted.status, 0) << submitted.output;
    std::string id = submitted.output;
    while (!id.empty() && (id.back() == '\n' || id.back() == ' ')) id.pop_back();
    return id;
  }

  std::unique_ptr<Daemon> watch(const std::string& job) {
    return std::make_unique<Daemon>(lab_->exec("c") + kFabricd + " watch " + job + " --server " + server_ + credentials_->client_flags("alice"),
                                    dir_.path() + "/watch-" + job + "-" + std::to_string(watches_++) + ".log");
  }

  testing::ScopedTempDir dir_;
  std::unique_ptr<NetworkLab> lab_;
  std::unique_ptr<testing::ClusterCredentials> credentials_;
  std::string server_;
  std::unique_ptr<Daemon> coordinator_;
  std::map<std::string, std::unique_ptr<Daemon>> agents_;
  int coordinator_starts_ = 0, watches_ = 0;
};

TEST_F(Cluster, DigitsTrainsOnTwoNodesToTheAccuracyOfOneNode) {
  const std::string job = submit("--nnodes 2 --nproc-per-node 2 " + kDigits + " --accelerator cpu --require-accuracy 0.95");
  auto watcher = watch(job);
  const auto status = watcher->wait(milliseconds(300'000));
  ASSERT_TRUE(status) << "the job did not end within 5 minutes\n" << watcher->output();
  EXPECT_EQ(*status, 0) << watcher->output() << client("status " + job).output;
  // Every change after the watcher's first snapshot arrives on its own, in order.
  const std::string changes = watcher->output();
  ASSERT_NE(changes.find("RUNNING"), std::string::npos) << changes;
  EXPECT_LT(changes.find("RUNNING"), changes.find("SUCCEEDED")) << changes;

  const CommandResult logs = client("logs " + job + " --rank 0");
  EXPECT_NE(logs.output.find("world size 4"), std::string::npos) << logs.output;
  const double across_nodes = final_accuracy(logs.output);
  const CommandResult status_text = client("status " + job);
  EXPECT_NE(status_text.output.find("n1,n2"), std::string::npos) << status_text.output;

  // The same job on one node: DDP over 4 ranks is the same computation wherever they run.
  const CommandResult one_node =
      run_command(kFabricd + " run --nproc-per-node 4 " + kDigits + " --accelerator cpu --log-dir " + dir_.path() + "/one");
  ASSERT_EQ(one_node.status, 0) << one_node.output;
  const double on_one_node = final_accuracy(one_node.output);
  std::cout << "digits accuracy: " << across_nodes << " on 2 nodes x 2 ranks, " << on_one_node << " on 1 node x 4\n";
  EXPECT_GE(across_nodes, 0.95);
  EXPECT_NEAR(across_nodes, on_one_node, 0.005);
}

// --warm-standby across nodes: each agent forks its ranks from a zygote of the program, and
// the job trains as it does with every rank started anew.
TEST_F(Cluster, WarmStandbyForksTheRanksOfEachNodeFromItsZygoteAndTrainsAsUsual) {
  const std::string job =
      submit("--nnodes 2 --nproc-per-node 2 --warm-standby " + kDigits + " --accelerator cpu --require-accuracy 0.95");
  auto watcher = watch(job);
  const auto status = watcher->wait(milliseconds(300'000));
  ASSERT_TRUE(status) << "the job did not end within 5 minutes\n" << watcher->output();
  EXPECT_EQ(*status, 0) << watcher->output() << client("status " + job).output;
  for (const char* node : {"n1", "n2"}) {
    EXPECT_NE(agents_[node]->output().find("ranks of job " + job + " forked from a zygote"), std::string::npos)
        << agents_[node]->output();
  }
  const CommandResult logs = client("logs " + job + " --rank 0");
  EXPECT_NE(logs.output.find("world size 4"), std::string::npos) << logs.output;
  // The same computation as 4 ranks started anew on one node.
  const CommandResult one_node =
      run_command(kFabricd + " run --nproc-per-node 4 " + kDigits + " --accelerator cpu --log-dir " + dir_.path() + "/one");
  ASSERT_EQ(one_node.status, 0) << one_node.output;
  EXPECT_GE(final_accuracy(logs.output), 0.95) << logs.output;
  EXPECT_NEAR(final_accuracy(logs.output), final_accuracy(one_node.output), 0.005) << logs.output << one_node.output;
}

// The elastic job of the failure tests: long enough to be interrupted, and done in about
// the same time again on one node.
std::string elastic_job() {
  return "--nnodes 1:2 --nproc-per-node 2 --max-restarts 1 " + kDigits + " --accelerator cpu --epochs 150";
}

TEST_F(Cluster, KilledAgentIsLostWithinTheHeartbeatTimeoutAndTheJobFinishesOnTheSurvivor) {
  const std::string job = submit(elastic_job());
  auto watcher = watch(job);
  ASSERT_TRUE(agents_["n2"]->wait_for_output("starting ranks", seconds(30))) << agents_["n2"]->output();
  ASSERT_TRUE(watcher->wait_for_output("RUNNING", seconds(30))) << watcher->output();
  const auto killed = std::chrono::steady_clock::now();
  agents_["n2"]->kill(SIGKILL);
  const auto lost = coordinator_->wait_for_output("node n2 lost", seconds(30));
  ASSERT_TRUE(lost) << coordinator_->output();
  const auto restarted = watcher->wait_for_output("running generation 1 on 1 node", seconds(60));
  ASSERT_TRUE(restarted) << watcher->output();
  std::cout << "agent SIGKILLed: declared lost after " << ms_between(killed, *lost) << " ms (timeout "
            << kHeartbeatTimeoutSeconds * 1000 << " ms), generation 1 running after " << ms_between(killed, *restarted)
            << " ms\n";
  EXPECT_LE(ms_between(killed, *lost), kHeartbeatTimeoutSeconds * 1000 + 1500);

  const auto status = watcher->wait(milliseconds(300'000));
  ASSERT_TRUE(status) << watcher->output();
  EXPECT_EQ(*status, 0) << watcher->output() << client("status " + job).output;
  const CommandResult final_state = client("status " + job);
  EXPECT_NE(final_state.output.find("restarts:  1 of at most 1"), std::string::npos) << final_state.output;
  EXPECT_NE(final_state.output.find("nodes:     n1\n"), std::string::npos) << final_state.output;
}

TEST_F(Cluster, CutLinkIsDetectedTheJobRestartsOnTheSurvivorAndTheOldGenerationIsFenced) {
  const std::string job = submit(elastic_job());
  auto watcher = watch(job);
  ASSERT_TRUE(agents_["n1"]->wait_for_output("starting ranks", seconds(30))) << agents_["n1"]->output();
  ASSERT_TRUE(watcher->wait_for_output("RUNNING", seconds(30))) << watcher->output();
  // n1 holds node rank 0: the job's store. Its ranks keep running, cut off.
  const auto cut = std::chrono::steady_clock::now();
  lab_->set_link("n1", false);
  const auto lost = coordinator_->wait_for_output("node n1 lost", seconds(30));
  ASSERT_TRUE(lost) << coordinator_->output();
  const auto restarted = watcher->wait_for_output("running generation 1 on 1 node", seconds(60));
  ASSERT_TRUE(restarted) << watcher->output() << coordinator_->output();
  std::cout << "link cut: node declared lost after " << ms_between(cut, *lost) << " ms (timeout "
            << kHeartbeatTimeoutSeconds * 1000 << " ms), generation 1 running after " << ms_between(cut, *restarted)
            << " ms\n";
  EXPECT_LE(ms_between(cut, *lost), kHeartbeatTimeoutSeconds * 1000 + 1500);

  // The link returns: the agent learns its session is over, stops its stale ranks and
  // registers again; nothing of generation 0 changes the job.
  lab_->set_link("n1", true);
  ASSERT_TRUE(agents_["n1"]->wait_for_output("ended this session", seconds(30))) << agents_["n1"]->output();
  const auto status = watcher->wait(milliseconds(300'000));
  ASSERT_TRUE(status) << watcher->output();
  EXPECT_EQ(*status, 0) << watcher->output() << client("status " + job).output;
  const CommandResult final_state = client("status " + job);
  EXPECT_NE(final_state.output.find("restarts:  1 of at most 1"), std::string::npos) << final_state.output;
  EXPECT_NE(final_state.output.find("nodes:     n2\n"), std::string::npos) << final_state.output;
}

TEST_F(Cluster, RestartedCoordinatorKeepsTheHistoryAndReadoptsTheRunningJob) {
  const std::string first = submit("--nproc-per-node 1 /bin/true");
  auto first_watcher = watch(first);
  ASSERT_EQ(first_watcher->wait(milliseconds(60'000)), 0) << first_watcher->output();

  const std::string job = submit("--nnodes 2 --nproc-per-node 2 " + kDigits + " --accelerator cpu --epochs 60");
  auto watcher = watch(job);
  ASSERT_TRUE(watcher->wait_for_output("RUNNING", seconds(30))) << watcher->output();
  ASSERT_TRUE(agents_["n2"]->wait_for_output("starting ranks", seconds(30)));
  coordinator_->kill(SIGKILL);
  ASSERT_TRUE(coordinator_->wait(milliseconds(10'000)));
  start_coordinator();

  const CommandResult listed = client("list");
  EXPECT_NE(listed.output.find(first), std::string::npos) << listed.output;
  EXPECT_NE(listed.output.find(job), std::string::npos) << listed.output;
  // The watcher reconnects by itself and sees the job end well, never restarted.
  const auto status = watcher->wait(milliseconds(300'000));
  ASSERT_TRUE(status) << watcher->output();
  EXPECT_EQ(*status, 0) << watcher->output() << coordinator_->output();
  const CommandResult final_state = client("status " + job);
  EXPECT_NE(final_state.output.find("state:     SUCCEEDED"), std::string::npos) << final_state.output;
  EXPECT_NE(final_state.output.find("restarts:  0 of at most 0"), std::string::npos) << final_state.output;
  EXPECT_EQ(agents_["n1"]->output().find("ended this session"), std::string::npos) << agents_["n1"]->output();
}

TEST_F(Cluster, BadSubmissionsGetThePreciseStatusAndTheCoordinatorLivesOn) {
  const CommandResult empty = client("submit --nproc-per-node 2 --spec /dev/null");
  EXPECT_EQ(empty.status, 2) << empty.output;
  const std::string spec = dir_.path() + "/bad.json";
  run_command("printf '{\"program\": \"/bin/true\", \"nprocPerNode\": 1, \"colour\": \"red\"}' > " + spec);
  const CommandResult unknown = client("submit --spec " + spec);
  EXPECT_EQ(unknown.status, 2) << unknown.output;
  EXPECT_NE(unknown.output.find("colour"), std::string::npos) << unknown.output;
  run_command("printf '{\"program\": \"/bin/true\", \"nprocPerNode\": -1}' > " + spec);
  const CommandResult negative = client("submit --spec " + spec);
  EXPECT_EQ(negative.status, 4) << negative.output;
  EXPECT_NE(negative.output.find("INVALID_ARGUMENT"), std::string::npos) << negative.output;
  EXPECT_NE(negative.output.find("nproc_per_node"), std::string::npos) << negative.output;
  const CommandResult missing = client("status no-such-job");
  EXPECT_EQ(missing.status, 4) << missing.output;
  EXPECT_NE(missing.output.find("NOT_FOUND"), std::string::npos) << missing.output;
  // A job no node can hold waits, saying for what.
  const std::string big = submit("--nproc-per-node 8 /bin/true");
  const CommandResult waiting = client("status " + big);
  EXPECT_NE(waiting.output.find("waiting for 1 node with 8 free slots"), std::string::npos) << waiting.output;
  EXPECT_EQ(client("cancel " + big).status, 0);
  EXPECT_EQ(client("list").status, 0) << "the coordinator died on bad input";
}

// Across nodes, nobody gets in without credentials: a client without a token, another
// user, an agent without a certificate, and a rank of one job posing as another's.
TEST_F(Cluster, StrangersAreRefusedAndJobsCannotReadEachOthersStores) {
  const CommandResult anonymous =
      run_command(lab_->exec("c") + kFabricd + " list --server " + server_ + credentials_->ca_flag());
  EXPECT_EQ(anonymous.status, 4) << anonymous.output;
  EXPECT_NE(anonymous.output.find("UNAUTHENTICATED"), std::string::npos) << anonymous.output;
  const CommandResult plain = run_command(lab_->exec("c") + kFabricd + " list --insecure --server " + server_);
  EXPECT_EQ(plain.status, 4) << "a plain-text client reached a TLS coordinator\n" << plain.output;
  const CommandResult uncertified = run_command(lab_->exec("n2") + kFabricd + " agent --coordinator " + server_ +
                                                " --advertise " + lab_->address("n2"));
  EXPECT_EQ(uncertified.status, 2) << uncertified.output;
  EXPECT_NE(uncertified.output.find("node certificate"), std::string::npos) << uncertified.output;

  // Job B: one rank on each node, so that every agent serves its store's secret.
  const std::string b = submit("--nnodes 2 --nproc-per-node 1 /bin/sh -c 'echo B up; exec sleep 300'");
  auto b_watcher = watch(b);
  ASSERT_TRUE(b_watcher->wait_for_output("RUNNING", seconds(30))) << b_watcher->output();
  EXPECT_EQ(client("status " + b, "bob").status, 4);
  EXPECT_NE(client("status " + b, "bob").output.find("PERMISSION_DENIED"), std::string::npos);
  EXPECT_NE(client("cancel " + b, "bob").output.find("PERMISSION_DENIED"), std::string::npos);
  EXPECT_EQ(client("list", "bob").output.find(b), std::string::npos) << "bob lists alice's job";

  // Job A's rank asks its agent for job B's store, with job A's secret.
  const std::string a = submit("--nproc-per-node 1 " + std::string(STORE_PROBE) + " --job " + b);
  auto a_watcher = watch(a);
  const auto a_status = a_watcher->wait(milliseconds(60'000));
  ASSERT_TRUE(a_status) << a_watcher->output();
  EXPECT_EQ(*a_status, 1) << "job A's probe was not refused\n" << a_watcher->output();
  const CommandResult probe = client("logs " + a);
  EXPECT_NE(probe.output.find("refused UNAUTHENTICATED"), std::string::npos) << probe.output;
  const CommandResult cancelled = client("cancel " + b);
  EXPECT_EQ(cancelled.status, 0) << cancelled.output;
}

}  // namespace
}  // namespace fabric
