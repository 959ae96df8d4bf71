// Placement (launcher/coordinator/placement.h): deterministic by node name, by free slots,
// between min and max nodes, and what it says when it cannot place.

#include "coordinator/placement.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <string>
#include <vector>

namespace {

using fabric::launcher::NodeCapacity;
using fabric::launcher::place;
using fabric::launcher::PlacementRequest;

NodeCapacity node(const std::string& name, std::int32_t slots, std::int32_t used = 0) {
  return NodeCapacity{.agent_id = "agent-" + name, .node_name = name, .slots = slots, .used = used};
}

TEST(Placement, TakesNodesInNodeNameOrder_WhateverOrderTheyCameIn) {
  std::vector<NodeCapacity> nodes = {node("node-c", 4), node("node-a", 4), node("node-d", 4), node("node-b", 4)};
  std::string why_not;
  const auto first = place({.nproc_per_node = 2, .min_nodes = 3, .max_nodes = 3}, nodes, why_not);
  ASSERT_TRUE(first.has_value()) << why_not;
  EXPECT_EQ(first->agent_ids, (std::vector<std::string>{"agent-node-a", "agent-node-b", "agent-node-c"}));
  // Every permutation of the same cluster gives the same answer.
  std::sort(nodes.begin(), nodes.end(), [](const auto& a, const auto& b) { return a.node_name > b.node_name; });
  do {
    const auto again = place({.nproc_per_node = 2, .min_nodes = 3, .max_nodes = 3}, nodes, why_not);
    ASSERT_TRUE(again.has_value());
    EXPECT_EQ(again->agent_ids, first->agent_ids);
  } while (std::next_permutation(nodes.begin(), nodes.end(),
                                 [](const auto& a, const auto& b) { return a.node_name < b.node_name; }));
}

TEST(Placement, ANodeQualifiesByItsFreeSlots) {
  std::string why_not;
  // node-a has 2 of its 4 slots used: room for 2 ranks, not for 3.
  const std::vector<NodeCapacity> nodes = {node("node-a", 4, 2), node("node-b", 3)};
  const auto two = place({.nproc_per_node = 2, .min_nodes = 1, .max_nodes = 1}, nodes, why_not);
  ASSERT_TRUE(two.has_value());
  EXPECT_EQ(two->agent_ids, std::vector<std::string>{"agent-node-a"});
  const auto three = place({.nproc_per_node = 3, .min_nodes = 1, .max_nodes = 1}, nodes, why_not);
  ASSERT_TRUE(three.has_value());
  EXPECT_EQ(three->agent_ids, std::vector<std::string>{"agent-node-b"});  // node-a skipped
  const auto four = place({.nproc_per_node = 4, .min_nodes = 1, .max_nodes = 1}, nodes, why_not);
  EXPECT_FALSE(four.has_value());
}

TEST(Placement, ElasticJob_TakesAsManyAsAreFree_UpToMaxNodes) {
  std::string why_not;
  const std::vector<NodeCapacity> three = {node("n1", 1), node("n2", 1), node("n3", 1)};
  const auto capped = place({.nproc_per_node = 1, .min_nodes = 1, .max_nodes = 2}, three, why_not);
  ASSERT_TRUE(capped.has_value());
  EXPECT_EQ(capped->agent_ids, (std::vector<std::string>{"agent-n1", "agent-n2"}));
  const auto all = place({.nproc_per_node = 1, .min_nodes = 2, .max_nodes = 5}, three, why_not);
  ASSERT_TRUE(all.has_value());
  EXPECT_EQ(all->agent_ids.size(), 3u);
  const std::vector<NodeCapacity> one = {node("n1", 1)};
  const auto survivor = place({.nproc_per_node = 1, .min_nodes = 1, .max_nodes = 2}, one, why_not);
  ASSERT_TRUE(survivor.has_value());
  EXPECT_EQ(survivor->agent_ids, std::vector<std::string>{"agent-n1"});
}

TEST(Placement, TooFewNodes_SaysWhatItWaitsFor) {
  std::string why_not;
  const std::vector<NodeCapacity> nodes = {node("n1", 4), node("n2", 2), node("n3", 4, 1)};
  EXPECT_FALSE(place({.nproc_per_node = 4, .min_nodes = 2, .max_nodes = 2}, nodes, why_not).has_value());
  EXPECT_EQ(why_not, "waiting for 2 nodes with 4 free slots; 1 of the 3 connected have them");
  EXPECT_FALSE(place({.nproc_per_node = 8, .min_nodes = 1, .max_nodes = 1}, nodes, why_not).has_value());
  EXPECT_EQ(why_not, "waiting for 1 node with 8 free slots; 0 of the 3 connected have them");
}

TEST(Placement, EmptyCluster_WaitsForTheFirstNode) {
  std::string why_not;
  EXPECT_FALSE(place({.nproc_per_node = 1, .min_nodes = 1, .max_nodes = 1}, {}, why_not).has_value());
  EXPECT_EQ(why_not, "waiting for 1 node with 1 free slots; 0 of the 0 connected have them");
}

TEST(Placement, Success_LeavesWhyNotAlone) {
  std::string why_not = "earlier reason";
  ASSERT_TRUE(place({.nproc_per_node = 1, .min_nodes = 1, .max_nodes = 1}, {node("n1", 1)}, why_not).has_value());
  EXPECT_EQ(why_not, "earlier reason");
}

}  // namespace
