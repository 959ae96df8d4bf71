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
        // GLOO_SOCKET_IFNAME picks the network interface, as in PyTorch.
        const char* interface = std::getenv("GLOO_SOCKET_IFNAME");
        gloo_options->devices.push_back(interface ? c10d::ProcessGroupGloo::createDeviceForInterface(interface)
                                                  : c10d::ProcessGroupGloo::createDefaultDevice());
        return c10::make_intrusive<c10d::ProcessGroupGloo>(store, rank, world_size, gloo_options);
      }};
  return std::make_unique<C10dCollective>(environment, options, std::move(spec));
}

}  // namespace fabric::collectives
