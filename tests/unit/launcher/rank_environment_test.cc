// The rank environment (launcher/ranks/rank_environment.h): the node half the coordinator
// computes, the per-process half the agent adds, and torchrun's names for the same facts.

#include "ranks/rank_environment.h"

#include <gtest/gtest.h>
#include <sched.h>
#include <stdlib.h>

#include <string>

namespace {

using fabric::launcher::add_process_variables;
using fabric::launcher::add_thread_limit;
using fabric::launcher::available_cpus;
using fabric::launcher::cpus_of_quota;
using fabric::launcher::Environment;
using fabric::launcher::inherited_environment;
using fabric::launcher::node_environment;
using fabric::launcher::NodePlacement;

NodePlacement placement() {
  return NodePlacement{.job_id = "train-1a2b",
                       .generation = 2,
                       .max_restarts = 3,
                       .node_rank = 1,
                       .num_nodes = 4,
                       .nproc_per_node = 8,
                       .master_addr = "10.0.0.7",
                       .master_port = 29500,
                       .store_endpoint = "10.0.0.7:7000"};
}

TEST(NodeEnvironment, CarriesTheNodesPlaceInTheJob) {
  const Environment env = node_environment(placement());
  EXPECT_EQ(env.at("WORLD_SIZE"), "32");
  EXPECT_EQ(env.at("LOCAL_WORLD_SIZE"), "8");
  EXPECT_EQ(env.at("GROUP_RANK"), "1");
  EXPECT_EQ(env.at("NODE_RANK"), "1");
  EXPECT_EQ(env.at("MASTER_ADDR"), "10.0.0.7");
  EXPECT_EQ(env.at("MASTER_PORT"), "29500");
  EXPECT_EQ(env.at("FABRICD_STORE_ENDPOINT"), "10.0.0.7:7000");
  EXPECT_EQ(env.at("FABRICD_JOB_ID"), "train-1a2b");
  EXPECT_EQ(env.at("FABRICD_RESTART_COUNT"), "2");
  EXPECT_EQ(env.at("FABRICD_MAX_RESTARTS"), "3");
  // Per-process variables are the agent's to add.
  EXPECT_FALSE(env.contains("RANK"));
  EXPECT_FALSE(env.contains("LOCAL_RANK"));
  EXPECT_FALSE(env.contains("FABRICD_ENDPOINT"));
  EXPECT_FALSE(env.contains("FABRICD_NODE_ADDRESS"));
}

TEST(NodeEnvironment, CarriesTorchrunsNamesForTheSameFacts) {
  const Environment env = node_environment(placement());
  EXPECT_EQ(env.at("TORCHELASTIC_RUN_ID"), "train-1a2b");
  EXPECT_EQ(env.at("TORCHELASTIC_RESTART_COUNT"), "2");
  EXPECT_EQ(env.at("TORCHELASTIC_MAX_RESTARTS"), "3");
  EXPECT_EQ(env.at("GROUP_WORLD_SIZE"), "4");   // nodes
  EXPECT_EQ(env.at("ROLE_WORLD_SIZE"), "32");   // ranks
  EXPECT_EQ(env.at("ROLE_NAME"), "default");
}

TEST(NodeEnvironment, LauncherVariablesWinOverTheUsersEnv) {
  const Environment user = {{"WORLD_SIZE", "1"},
                            {"MASTER_ADDR", "stale-host"},
                            {"FABRICD_RESTART_COUNT", "99"},
                            {"TORCHELASTIC_RUN_ID", "old-run"},
                            {"MY_SETTING", "kept"}};
  const Environment env = node_environment(placement(), user);
  EXPECT_EQ(env.at("WORLD_SIZE"), "32");
  EXPECT_EQ(env.at("MASTER_ADDR"), "10.0.0.7");
  EXPECT_EQ(env.at("FABRICD_RESTART_COUNT"), "2");
  EXPECT_EQ(env.at("TORCHELASTIC_RUN_ID"), "train-1a2b");
  EXPECT_EQ(env.at("MY_SETTING"), "kept");
}

TEST(NodeEnvironment, EveryNodeAgreesOnTheSharedValues) {
  NodePlacement zero = placement();
  zero.node_rank = 0;
  Environment a = node_environment(zero);
  Environment b = node_environment(placement());
  for (const char* name : {"GROUP_RANK", "NODE_RANK"}) {
    a.erase(name);
    b.erase(name);
  }
  EXPECT_EQ(a, b);
}

TEST(AddProcessVariables, AddsTheRanksOwnVariables) {
  Environment env = node_environment(placement());
  add_process_variables(env, 13, 5, "127.0.0.1:41000", "10.0.0.8");
  EXPECT_EQ(env.at("RANK"), "13");
  EXPECT_EQ(env.at("ROLE_RANK"), "13");
  EXPECT_EQ(env.at("LOCAL_RANK"), "5");
  EXPECT_EQ(env.at("FABRICD_ENDPOINT"), "127.0.0.1:41000");
  EXPECT_EQ(env.at("FABRICD_NODE_ADDRESS"), "10.0.0.8");
  EXPECT_EQ(env.at("WORLD_SIZE"), "32");  // the node half is untouched
}

TEST(AddProcessVariables, AStaleRankFromTheUsersEnv_CannotMisnumberTheRanks) {
  Environment env = node_environment(placement(), {{"RANK", "0"}, {"LOCAL_RANK", "0"}, {"FABRICD_ENDPOINT", "x:1"},
                                                     {"FABRICD_NODE_ADDRESS", "stale"}});
  add_process_variables(env, 9, 1, "127.0.0.1:5", "10.0.0.9");
  EXPECT_EQ(env.at("RANK"), "9");
  EXPECT_EQ(env.at("LOCAL_RANK"), "1");
  EXPECT_EQ(env.at("FABRICD_ENDPOINT"), "127.0.0.1:5");
  EXPECT_EQ(env.at("FABRICD_NODE_ADDRESS"), "10.0.0.9");
}

TEST(InheritedEnvironment, IsThisProcesssEnvironment_SplitAtTheFirstEquals) {
  ASSERT_EQ(::setenv("FABRIC_TEST_INHERITED", "a=b=c", 1), 0);
  const Environment env = inherited_environment();
  ::unsetenv("FABRIC_TEST_INHERITED");
  ASSERT_TRUE(env.contains("FABRIC_TEST_INHERITED"));
  EXPECT_EQ(env.at("FABRIC_TEST_INHERITED"), "a=b=c");
  EXPECT_FALSE(inherited_environment().contains("FABRIC_TEST_INHERITED"));
}

TEST(AddThreadLimit, DividesTheCpusAmongTheNodesRanks_AtLeastOneEach) {
  const auto threads = [](std::int32_t ranks, int cpus) {
    Environment env;
    add_thread_limit(env, ranks, cpus);
    return env.at("OMP_NUM_THREADS");
  };
  EXPECT_EQ(threads(2, 16), "8");
  EXPECT_EQ(threads(3, 16), "5") << "rounded down: never more threads than cores";
  EXPECT_EQ(threads(1, 16), "16");
  EXPECT_EQ(threads(8, 2), "1");
  EXPECT_EQ(threads(0, 4), "4") << "a node without ranks cannot divide by zero";
}

TEST(AddThreadLimit, KeepsAValueTheUserSet_EvenAnEmptyOne) {
  Environment env{{"OMP_NUM_THREADS", "6"}};
  add_thread_limit(env, 2, 16);
  EXPECT_EQ(env.at("OMP_NUM_THREADS"), "6");
  Environment empty{{"OMP_NUM_THREADS", ""}};
  add_thread_limit(empty, 2, 16);
  EXPECT_EQ(empty.at("OMP_NUM_THREADS"), "");
}

TEST(CpusOfQuota, ReadsCgroupV2CpuMax_RoundingUp) {
  EXPECT_EQ(cpus_of_quota("max 100000"), std::nullopt);
  EXPECT_EQ(cpus_of_quota("200000 100000"), 2);
  EXPECT_EQ(cpus_of_quota("150000 100000\n"), 2) << "1.5 CPUs of quota keep two threads busy";
  EXPECT_EQ(cpus_of_quota("50000 100000"), 1);
  EXPECT_EQ(cpus_of_quota(""), std::nullopt);
  EXPECT_EQ(cpus_of_quota("garbage"), std::nullopt);
  EXPECT_EQ(cpus_of_quota("100000 0"), std::nullopt);
  EXPECT_EQ(cpus_of_quota("-5 100000"), std::nullopt);
}

TEST(AvailableCpus, FollowsThisProcesssAffinityMask) {
  cpu_set_t all;
  CPU_ZERO(&all);
  ASSERT_EQ(::sched_getaffinity(0, sizeof(all), &all), 0);
  cpu_set_t first;  // the lowest CPU the test may run on, alone
  CPU_ZERO(&first);
  for (int cpu = 0; cpu < CPU_SETSIZE; ++cpu) {
    if (CPU_ISSET(cpu, &all)) {
      CPU_SET(cpu, &first);
      break;
    }
  }
  ASSERT_EQ(::sched_setaffinity(0, sizeof(first), &first), 0);
  const int on_one = available_cpus();
  ASSERT_EQ(::sched_setaffinity(0, sizeof(all), &all), 0);
  EXPECT_EQ(on_one, 1);
  EXPECT_LE(available_cpus(), CPU_COUNT(&all));
}

}  // namespace
