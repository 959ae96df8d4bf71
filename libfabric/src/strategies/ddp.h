// "ddp": one process per device, gradients averaged across processes by LibTorch's own DDP
// engine (c10d::Reducer): buckets of ~25 MB filled in reverse parameter order, each
// all-reduced asynchronously from autograd hooks as soon as its gradients are ready, so
// communication overlaps the rest of backward; the optimizer step finds them done.
#pragma once

#include <map>
#include <memory>

#include "fabric/collective.h"
#include "fabric/environment.h"
#include "fabric/strategy.h"

namespace c10d {
class Reducer;
}

namespace fabric::strategies {

class SubprocessLauncher;

struct DDPOptions {
  bool find_unused_parameters = false;
  double bucket_cap_mb = 25.0;
  std::chrono::milliseconds timeout = std::chrono::minutes(30);
};

class DDPStrategy final : public Strategy {
 public:
  DDPStrategy(std::vector<torch::Device> parallel_devices, int num_nodes,
              std::unique_ptr<ClusterEnvironment> environment, std::shared_ptr<Accelerator> accelerator,
              std::unique_ptr<Precision> precision, DDPOptions options);
  ~DDPStrategy() override;

  std::string_view name() const override { return "ddp"; }
  torch::Device root_device() const override;
  int global_rank() const override { return global_rank_; }
  int local_rank() const override { return local_rank_; }
  int node_rank() const override { return node_rank_; }
  int world_size() const override { return world_size_; }
  bool requires_launch() const override { return !environment_->creates_processes_externally(); }
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

 private:
  struct Replica;  // per set-up module: its reducer and whether to synchronise
  Collective& collective();
  Replica& replica_of(torch::nn::Module& module);

  std::vector<torch::Device> parallel_devices_;
  int num_nodes_;
  std::unique_ptr<ClusterEnvironment> environment_;
  DDPOptions options_;
  int global_rank_ = 0, local_rank_ = 0, node_rank_ = 0, world_size_ = 1;
  std::unique_ptr<SubprocessLauncher> launcher_;
  std::unique_ptr<Collective> collective_;
  std::map<const torch::nn::Module*, std::unique_ptr<Replica>> replicas_;
};

}  // namespace fabric::strategies
