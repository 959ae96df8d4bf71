// The operations every LibTorch c10d backend shares (Gloo, NCCL): rendezvous over a
// c10d::TCPStore, then barrier / broadcast / all_reduce / all_gather on a c10d::Backend,
// each bounded by the timeout and turned into a CollectiveError naming operation and rank.
// A backend folder (gloo/, nccl/) only says how to create its c10d::Backend.
#pragma once

#include <torch/csrc/distributed/c10d/Backend.hpp>
#include <torch/csrc/distributed/c10d/ProcessGroup.hpp>
#include <torch/csrc/distributed/c10d/Store.hpp>

#include <functional>
#include <string>

#include "collectives/process_group.h"
#include "fabric/collective.h"

namespace fabric::collectives {

struct C10dBackendSpec {
  std::string name;                                    // "gloo", "nccl"
  torch::DeviceType device_type;                       // whose tensors it reduces
  c10d::ProcessGroup::BackendType backend_type;
  std::function<c10::intrusive_ptr<c10d::Backend>(const c10::intrusive_ptr<c10d::Store>& store, int rank,
                                                  int world_size, std::chrono::milliseconds timeout)>
      create;
  std::vector<std::int64_t> barrier_device_ids = {};  // NCCL's barrier runs on this rank's device
  torch::Device device = torch::kCPU;                  // where its tensors live
};

class C10dCollective final : public Collective, public HasProcessGroup {
 public:
  C10dCollective(const ClusterEnvironment& environment, CollectiveOptions options, C10dBackendSpec spec);

  std::string_view backend() const override { return backend_name_; }
  int rank() const override { return rank_; }
  int world_size() const override { return world_size_; }
  torch::Device device() const override { return spec_.device; }
  void barrier() override;
  void broadcast(torch::Tensor& tensor, int src) override;
  void all_reduce(torch::Tensor& tensor, ReduceOp op) override;
  std::vector<torch::Tensor> all_gather(const torch::Tensor& tensor) override;
  c10::intrusive_ptr<c10d::ProcessGroup> process_group() override { return process_group_; }

 private:
  c10::intrusive_ptr<c10d::Store> connect_store(const ClusterEnvironment& environment) const;
  std::vector<torch::Tensor> gather(const torch::Tensor& tensor);
  void guarded(const char* operation, const std::function<void()>& action);

  C10dBackendSpec spec_;
  int rank_;
  int world_size_;
  std::chrono::milliseconds timeout_;
  c10::intrusive_ptr<c10d::Backend> backend_;
  std::string backend_name_;  // the backend's own: "gloo", "shm" / "shm+gloo" (Gloo's spec, shared memory), "nccl"
  c10::intrusive_ptr<c10d::ProcessGroup> process_group_;  // the same backend, for c10d::Reducer
};

}  // namespace fabric::collectives
