#include "collectives/gloo/gloo_collective.h"

#include <torch/csrc/distributed/c10d/ProcessGroupGloo.hpp>

#include <cstdlib>
#include <string>

#include "collectives/c10d_collective.h"
#include "collectives/shm/shm_backend.h"

namespace fabric::collectives {

namespace {

// Shared memory carries the collectives within each node that holds several ranks, unless
// the user asked for Gloo itself (process_group_backend="gloo") or set FABRIC_SHARED_MEMORY=0.
bool shared_memory_wanted(const CollectiveOptions& options) {
  const char* switch_value = std::getenv("FABRIC_SHARED_MEMORY");
  return options.backend.empty() && !(switch_value != nullptr && std::string(switch_value) == "0");
}

// LibTorch's Gloo backend of `world_size` ranks meeting through `store`.
c10::intrusive_ptr<c10d::Backend> make_gloo(const c10::intrusive_ptr<c10d::Store>& store, int rank, int world_size,
                                            std::chrono::milliseconds timeout) {
  auto gloo_options = c10d::ProcessGroupGloo::Options::create();
  gloo_options->timeout = timeout;
  // GLOO_SOCKET_IFNAME picks the network interface, as in PyTorch. Without it, a rank
  // fabricd started binds to the address its node is reached at; else the host name's
  // address (PyTorch's default, which is 127.0.0.1 on many hosts: fine on one node only).
  const char* interface = std::getenv("GLOO_SOCKET_IFNAME");
  const char* node_address = std::getenv("FABRICD_NODE_ADDRESS");
  if (interface != nullptr && *interface != '\0') {
    gloo_options->devices.push_back(c10d::ProcessGroupGloo::createDeviceForInterface(interface));
  } else if (node_address != nullptr && *node_address != '\0') {
    gloo_options->devices.push_back(c10d::ProcessGroupGloo::createDeviceForHostname(node_address));
  } else {
    gloo_options->devices.push_back(c10d::ProcessGroupGloo::createDefaultDevice());
  }
  return c10::make_intrusive<c10d::ProcessGroupGloo>(store, rank, world_size, gloo_options);
}

}  // namespace

std::unique_ptr<Collective> make_gloo_collective(const ClusterEnvironment& environment, CollectiveOptions options) {
  const bool try_shared_memory = shared_memory_wanted(options);
  C10dBackendSpec spec{
      .name = "gloo",
      .device_type = torch::kCPU,
      .backend_type = c10d::ProcessGroup::BackendType::GLOO,
      .create = [try_shared_memory](const c10::intrusive_ptr<c10d::Store>& store, int rank, int world_size,
                   std::chrono::milliseconds timeout) -> c10::intrusive_ptr<c10d::Backend> {
        auto gloo = make_gloo(store, rank, world_size, timeout);
        if (!try_shared_memory) return gloo;
        // Gloo stays underneath: for the operations shared memory does not carry, and
        // between the nodes' leaders when the ranks span several.
        auto shared = SharedMemoryBackend::create(
            store, rank, world_size, timeout, gloo,
            [timeout](const c10::intrusive_ptr<c10d::Store>& leaders_store, int leader, int leaders) {
              return make_gloo(leaders_store, leader, leaders, timeout);
            });
        return shared ? c10::intrusive_ptr<c10d::Backend>(shared) : gloo;
      }};
  return std::make_unique<C10dCollective>(environment, options, std::move(spec));
}

}  // namespace fabric::collectives
