// A strategy owns placement and communication: where the root device is, what this
// process's ranks are, what setup does to a module and optimizer, and how backward and the
// optimizer step run (through the precision). single_device now; ddp and friends plug in
// behind the same interface. Fabric and its wrappers share ownership of one strategy.
#pragma once

#include <torch/nn/module.h>
#include <torch/optim/optimizer.h>
#include <torch/types.h>

#include <memory>
#include <optional>
#include <string_view>
#include <vector>

#include "fabric/accelerator.h"
#include "fabric/collective.h"
#include "fabric/environment.h"
#include "fabric/precision.h"
#include "fabric/scope.h"

namespace fabric {

// How a distributed strategy wants data sharded: each rank reads 1/num_replicas of it.
struct ShardingOptions {
  int num_replicas = 1;
  int rank = 0;
};

class Strategy {
 public:
  Strategy(std::shared_ptr<Accelerator> accelerator, std::unique_ptr<Precision> precision)
      : accelerator_(std::move(accelerator)), precision_(std::move(precision)) {}
  virtual ~Strategy() = default;

  virtual std::string_view name() const = 0;
  virtual torch::Device root_device() const = 0;
  virtual int global_rank() const { return 0; }
  virtual int local_rank() const { return 0; }
  virtual int node_rank() const { return 0; }
  virtual int world_size() const { return 1; }
  bool is_global_zero() const { return global_rank() == 0; }

  // Whether more than one process must be started (launch() or an external launcher).
  virtual bool requires_launch() const { return false; }
  // Data sharding for setup_dataloader; nullopt means every process reads everything.
  virtual std::optional<ShardingOptions> sharding() const { return std::nullopt; }

  virtual void setup_environment() { accelerator_->setup_device(root_device()); }
  virtual void module_to_device(torch::nn::Module& module) { module.to(root_device()); }
  // What the strategy does to a module (after conversion and placement) and to an optimizer.
  virtual void setup_module(torch::nn::Module& module) {}
  virtual void setup_optimizer(torch::optim::Optimizer& optimizer) {}

  virtual void backward(const torch::Tensor& loss) { precision_->backward(loss); }
  virtual bool optimizer_step(torch::optim::Optimizer& optimizer) {
    return precision_->optimizer_step(optimizer);
  }
  // Default dtype (and, for sharded strategies, placement) for init_module/init_tensor.
  virtual Scope module_init_context() { return precision_->init_context(); }

  // Around every FabricModule forward: DDP prepares gradient synchronisation here.
  virtual void before_forward(torch::nn::Module& module) {}
  virtual void after_forward(torch::nn::Module& module, const std::vector<torch::Tensor>& outputs) {}
  // While the returned scope lives, backward does not synchronise `module`'s gradients.
  virtual Scope no_backward_sync(torch::nn::Module& module, bool enabled) { return {}; }

  // Collectives; one process: barrier does nothing, the others return their input.
  virtual void barrier(std::string_view name = {}) {}
  virtual void broadcast(torch::Tensor& tensor, int src) {}
  virtual void all_reduce(torch::Tensor& tensor, ReduceOp op) {}
  virtual std::vector<torch::Tensor> all_gather(const torch::Tensor& tensor) { return {tensor}; }
  // Starts the other local ranks if this strategy needs them and no launcher did.
  virtual void launch() {}

  Accelerator& accelerator() { return *accelerator_; }
  Precision& precision() { return *precision_; }
  // The cluster environment's launcher services (ClusterEnvironment::launcher()), for
  // Fabric and its wrappers to report progress and use the launcher's barriers; nullptr
  // when the launcher offers none. Set once by the connector.
  LauncherServices* launcher() const { return launcher_; }
  void set_launcher(LauncherServices* launcher) { launcher_ = launcher; }

 private:
  std::shared_ptr<Accelerator> accelerator_;
  std::unique_ptr<Precision> precision_;
  LauncherServices* launcher_ = nullptr;
};

}  // namespace fabric
