// Which ranks of a group share a node: every rank publishes its node identity (segment.h)
// through the rendezvous and reads everyone's, so every rank builds the same map. Nodes are
// numbered in the order of their lowest rank, and that rank leads its node: it is the one
// that talks to the other nodes' leaders when a group spans several (shm_backend.h).
// Torch-free.
#pragma once

#include <string>
#include <vector>

#include "collectives/shm/node_group.h"  // Rendezvous

namespace fabric::collectives::shm {

struct NodeMap {
  std::vector<int> node_of;                // per rank: its node
  std::vector<std::vector<int>> ranks_on;  // per node: its ranks, ascending; the first leads

  // Every rank of the group calls this with its own `identity`; keys go under "identity/".
  static NodeMap exchange(Rendezvous& rendezvous, int rank, int size, const std::string& identity);

  int nodes() const { return static_cast<int>(ranks_on.size()); }
  int leader(int node) const { return ranks_on[static_cast<std::size_t>(node)].front(); }
  int local_size(int rank) const;
  int local_rank(int rank) const;  // its place among its node's ranks
  bool every_rank_alone() const { return nodes() == static_cast<int>(node_of.size()); }
};

}  // namespace fabric::collectives::shm
