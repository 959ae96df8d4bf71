// The rank environment (launcher/ranks/rank_environment.h): the node half the coordinator
// computes, the per-process half the agent adds, and torchrun's names for the same facts.

#include "ranks/rank_environment.h"

#include <gtest/gtest.h>
#include <stdlib.h>

#include <string>

namespace {

using fabric::launcher::add_process_variables;
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

}  // namespace
