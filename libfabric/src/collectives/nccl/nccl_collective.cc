#include "collectives/nccl/nccl_collective.h"

#include <torch/csrc/distributed/c10d/ProcessGroupNCCL.hpp>

#include "collectives/c10d_collective.h"

namespace fabric::collectives {

std::unique_ptr<Collective> make_nccl_collective(const ClusterEnvironment& environment, CollectiveOptions options,
                                                 torch::Device device) {
  C10dBackendSpec spec{
      .name = "nccl",
      .device_type = torch::kCUDA,
      .backend_type = c10d::ProcessGroup::BackendType::NCCL,
      .create = [](const c10::intrusive_ptr<c10d::Store>& store, int rank, int world_size,
                   std::chrono::milliseconds timeout) -> c10::intrusive_ptr<c10d::Backend> {
        auto nccl_options = c10d::ProcessGroupNCCL::Options::create();
        nccl_options->timeout = timeout;
        return c10::make_intrusive<c10d::ProcessGroupNCCL>(store, rank, world_size, nccl_options);
      },
      .barrier_device_ids = {device.index()},
      .device = device};
  return std::make_unique<C10dCollective>(environment, options, std::move(spec));
}

}  // namespace fabric::collectives
