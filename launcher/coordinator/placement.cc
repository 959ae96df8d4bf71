#include "coordinator/placement.h"

#include <algorithm>

namespace fabric::launcher {

std::optional<Placement> place(const PlacementRequest& request, const std::vector<NodeCapacity>& nodes,
                               std::string& why_not) {
  std::vector<const NodeCapacity*> fitting;
  for (const NodeCapacity& node : nodes) {
    if (node.slots - node.used >= request.nproc_per_node) fitting.push_back(&node);
  }
  std::sort(fitting.begin(), fitting.end(),
            [](const NodeCapacity* a, const NodeCapacity* b) { return a->node_name < b->node_name; });
  if (static_cast<std::int32_t>(fitting.size()) < request.min_nodes) {
    why_not = "waiting for " + std::to_string(request.min_nodes) + (request.min_nodes == 1 ? " node" : " nodes") +
              " with " + std::to_string(request.nproc_per_node) + " free slots; " + std::to_string(fitting.size()) +
              " of the " + std::to_string(nodes.size()) + " connected have them";
    return std::nullopt;
  }
  Placement placement;
  for (std::size_t i = 0; i < fitting.size() && static_cast<std::int32_t>(i) < request.max_nodes; ++i) {
    placement.agent_ids.push_back(fitting[i]->agent_id);
  }
  return placement;
}

}  // namespace fabric::launcher
