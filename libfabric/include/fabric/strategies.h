// The built-in strategies, as instances for FabricOptions::strategy (the strings "auto",
// "single_device", "ddp" and "ddp_find_unused_parameters_true" name the same classes):
//   fabric::Fabric fabric({.strategy = std::make_shared<fabric::DDPStrategy>(
//                              fabric::DDPOptions{.bucket_cap_mb = 50, .static_graph = true})});
// Derive from them to change one step (backward, setup_module, ...) without editing libfabric.
#pragma once

#include <chrono>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "fabric/strategy.h"

namespace c10d {
class Reducer;
}

namespace fabric {

namespace strategies {
class SubprocessLauncher;
}

// One process on one device: no communication, no sharding, no launch.
class SingleDeviceStrategy : public Strategy {
 public:
  explicit SingleDeviceStrategy(torch::Device device = torch::kCPU) : device_(device) {}

  std::string_view name() const override { return "single_device"; }
  torch::Device root_device() const override { return device_; }

 private:
  torch::Device device_;
};

// torch.nn.parallel.DistributedDataParallel's options, as Lightning's DDPStrategy passes them on.
struct DDPOptions {
  // "gloo" or "nccl"; empty: the device's default (gloo for the CPU, nccl for CUDA).
  std::string process_group_backend = {};
  // How long the rendezvous and any one collective may take; nullopt: FabricOptions::timeout.
  std::optional<std::chrono::milliseconds> timeout = std::nullopt;
  // Gradients are all-reduced in buckets of about this size, each as soon as it is full.
  double bucket_cap_mb = 25.0;
  // Parameters that take no part in a forward are found (by walking the graph from its
  // outputs) and reduced as zeros, instead of being an error at the next step.
  bool find_unused_parameters = false;
  // The set of used parameters and the order of their gradients are the same every step:
  // learned in the first step, after which unused parameters need no graph walk.
  bool static_graph = false;
  // Gradients are views into the reducer's buckets: one copy less, and less memory.
  bool gradient_as_bucket_view = false;
  // Rank zero's buffers (BatchNorm statistics) replace every rank's before each forward.
  bool broadcast_buffers = true;
};

// "ddp": one process per device, gradients averaged across processes by LibTorch's own DDP
// engine (c10d::Reducer): buckets filled in reverse parameter order, each all-reduced
// asynchronously from autograd hooks as soon as its gradients are ready, so communication
// overlaps the rest of backward; the optimizer step finds them done.
class DDPStrategy : public ParallelStrategy {
 public:
  explicit DDPStrategy(DDPOptions options = {});
  ~DDPStrategy() override;

  std::string_view name() const override { return "ddp"; }
  const DDPOptions& options() const { return options_; }
  void configure(ParallelConfig config) override;
  std::chrono::milliseconds timeout() const override { return *options_.timeout; }

  torch::Device root_device() const override;
  int global_rank() const override { return global_rank_; }
  int local_rank() const override { return local_rank_; }
  int node_rank() const override { return node_rank_; }
  int world_size() const override { return world_size_; }
  bool requires_launch() const override;
  std::optional<ShardingOptions> sharding() const override { return ShardingOptions{world_size_, global_rank_}; }

  void launch() override;
  void setup_environment() override;
  void setup_module(torch::nn::Module& module) override;
  void before_forward(torch::nn::Module& module) override;
  void after_forward(torch::nn::Module& module, const std::vector<torch::Tensor>& outputs) override;
  Scope no_backward_sync(torch::nn::Module& module, bool enabled) override;

  void barrier(std::string_view name = {}) override;
  void broadcast(torch::Tensor& tensor, int src) override;
  void all_reduce(torch::Tensor& tensor, ReduceOp op) override;
  std::vector<torch::Tensor> all_gather(const torch::Tensor& tensor) override;

  // What the collectives run on once set up, the backend's own name: "shm" (CPU, every rank
  // on this node), "shm+gloo" (CPU, shared memory within each node and Gloo between them),
  // "gloo" or "nccl"; before that, what DDPOptions asked for (Lightning's
  // process_group_backend).
  std::string process_group_backend() const;

  // The reducer's buckets for a set-up module, each as the names of its parameters: what
  // bucket_cap_mb decided (after the first step, rebuilt in the order gradients arrived).
  std::vector<std::vector<std::string>> buckets(const torch::nn::Module& module) const;

 private:
  struct Replica;  // per set-up module: its reducer and whether to synchronise
  Collective& collective();
  Replica& replica_of(const torch::nn::Module& module) const;

  DDPOptions options_;
  std::vector<torch::Device> parallel_devices_;
  int num_nodes_ = 1;
  std::shared_ptr<ClusterEnvironment> environment_;
  bool environment_is_plugin_ = false;  // a user's ClusterEnvironment is never re-detected
  int global_rank_ = 0, local_rank_ = 0, node_rank_ = 0, world_size_ = 1;
  std::unique_ptr<strategies::SubprocessLauncher> launcher_;
  std::unique_ptr<Collective> collective_;
  std::map<const torch::nn::Module*, std::unique_ptr<Replica>> replicas_;
};

}  // namespace fabric
