// Placement: which nodes run a job's next generation. Pure and deterministic (the same
// cluster and job always give the same answer), so it is unit-tested on its own.
//
// A node qualifies when its free slots (slots minus the ranks of generations still alive
// there) hold nproc_per_node. The job takes up to num_nodes qualifying nodes, in node-name
// order, and needs at least min_nodes of them.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

namespace fabric::launcher {

struct NodeCapacity {
  std::string agent_id;
  std::string node_name;
  std::int32_t slots = 0;
  std::int32_t used = 0;  // ranks of live generations placed here
};

struct PlacementRequest {
  std::int32_t nproc_per_node = 1;
  std::int32_t min_nodes = 1;
  std::int32_t max_nodes = 1;
};

struct Placement {
  std::vector<std::string> agent_ids;  // by node rank
};

// The nodes for the job, or nullopt with `why_not` saying what it waits for ("waiting for
// 2 nodes with 4 free slots; 1 has them").
std::optional<Placement> place(const PlacementRequest& request, const std::vector<NodeCapacity>& nodes,
                               std::string& why_not);

}  // namespace fabric::launcher
