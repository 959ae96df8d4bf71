#include "collectives/gloo/gloo_collective.h"

#include <torch/csrc/distributed/c10d/ProcessGroupGloo.hpp>

#include <cstdlib>

#include "collectives/c10d_collective.h"

namespace fabric::collectives {

std::unique_ptr<Collective> make_gloo_collective(const ClusterEnvironment& environment, CollectiveOptions options) {
  C10dBackendSpec spec{
      .name = "gloo",
      .device_type = torch::kCPU,
      .backend_type = c10d::ProcessGroup::BackendType::GLOO,
      .create = [](const c10::intrusive_ptr<c10d::Store>& store, int rank, int world_size,
                   std::chrono::milliseconds timeout) -> c10::intrusive_ptr<c10d::Backend> {
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
      }};
  return std::make_unique<C10dCollective>(environment, options, std::move(spec));
}

}  // namespace fabric::collectives
