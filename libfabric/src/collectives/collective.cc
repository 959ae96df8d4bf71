#include "fabric/collective.h"

#include <cstring>

#include "collectives/gloo/gloo_collective.h"
#ifdef FABRIC_WITH_NCCL
#include "collectives/nccl/nccl_collective.h"
#endif
#include "fabric/errors.h"

namespace fabric {

ReduceOp parse_reduce_op(std::string_view name) {
  if (name == "sum") return ReduceOp::kSum;
  if (name == "mean" || name == "avg") return ReduceOp::kMean;
  if (name == "max") return ReduceOp::kMax;
  if (name == "min") return ReduceOp::kMin;
  throw ConfigurationError("reduce_op=\"" + std::string(name) + "\" is not supported. Use one of \"sum\", \"mean\", "
                           "\"max\", \"min\".");
}

std::string Collective::broadcast_bytes(const std::string& bytes, int src) {
  torch::Tensor size = torch::tensor(static_cast<std::int64_t>(bytes.size())).to(device());
  broadcast(size, src);
  torch::Tensor data = torch::empty({size.item<std::int64_t>()}, torch::kUInt8);
  if (rank() == src) std::memcpy(data.data_ptr(), bytes.data(), bytes.size());
  data = data.to(device());
  broadcast(data, src);
  data = data.cpu();
  return std::string(static_cast<const char*>(data.data_ptr()), static_cast<std::size_t>(data.numel()));
}

void check_collective_backend(const std::string& backend, torch::Device device) {
  if (!backend.empty() && backend != "gloo" && backend != "nccl") {
    throw ConfigurationError("process_group_backend=\"" + backend + "\" is not a backend Fabric for C++ has. Use " +
                             "\"gloo\" (CPU tensors), \"nccl\" (CUDA tensors), or leave it empty for the device's own.");
  }
  if (device.is_cpu() && backend == "nccl") {
    throw ConfigurationError("process_group_backend=\"nccl\" carries CUDA tensors only, but this process trains on " +
                             device.str() + ". Use \"gloo\" (or leave it empty) with the cpu accelerator.");
  }
  if (device.is_cuda() && backend == "gloo") {
    throw ConfigurationError("process_group_backend=\"gloo\" on CUDA devices is not supported by Fabric for C++: its Gloo "
                             "backend carries CPU tensors. Use \"nccl\" (or leave it empty) with CUDA.");
  }
}

std::unique_ptr<Collective> make_collective(const ClusterEnvironment& environment, torch::Device device,
                                            CollectiveOptions options) {
  check_collective_backend(options.backend, device);
  if (device.is_cpu()) return collectives::make_gloo_collective(environment, options);
#ifdef FABRIC_WITH_NCCL
  if (device.is_cuda()) return collectives::make_nccl_collective(environment, options, device);
#endif
  throw ConfigurationError("No collective backend for " + device.str() +
                           " tensors in this build (NCCL needs a LibTorch with CUDA); use the cpu accelerator.");
}

}  // namespace fabric
