#include "collectives/shm/node_map.h"

#include <algorithm>
#include <map>

namespace fabric::collectives::shm {

NodeMap NodeMap::exchange(Rendezvous& rendezvous, int rank, int size, const std::string& identity) {
  rendezvous.set("identity/" + std::to_string(rank), identity);
  NodeMap map;
  std::map<std::string, int> node_named;
  for (int r = 0; r < size; ++r) {
    const std::string theirs = r == rank ? identity : rendezvous.get("identity/" + std::to_string(r));
    const auto [at, is_new] = node_named.try_emplace(theirs, map.nodes());
    if (is_new) map.ranks_on.emplace_back();
    map.node_of.push_back(at->second);
    map.ranks_on[static_cast<std::size_t>(at->second)].push_back(r);
  }
  return map;
}

int NodeMap::local_size(int rank) const {
  return static_cast<int>(ranks_on[static_cast<std::size_t>(node_of[static_cast<std::size_t>(rank)])].size());
}

int NodeMap::local_rank(int rank) const {
  const auto& local = ranks_on[static_cast<std::size_t>(node_of[static_cast<std::size_t>(rank)])];
  return static_cast<int>(std::find(local.begin(), local.end(), rank) - local.begin());
}

}  // namespace fabric::collectives::shm
