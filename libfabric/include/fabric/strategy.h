// A strategy owns placement and communication: where the root device is, what this
// process's ranks are, what setup does to a module and optimizer, and how backward and the
// optimizer step run (through the precision). SingleDeviceStrategy and DDPStrategy
// (fabric/strategies.h) are the built-in ones; a user's subclass of either goes in
// FabricOptions::strategy. The connector completes an instance with what it was not given
// (accelerator, precision, checkpoint IO; devices and cluster environment for a
// ParallelStrategy). Fabric and its wrappers share ownership of one strategy.
#pragma once

#include <torch/nn/module.h>
#include <torch/optim/optimizer.h>
#include <torch/types.h>

#include <chrono>
#include <memory>
#include <optional>
#include <string_view>
#include <vector>

#include "fabric/accelerator.h"
#include "fabric/checkpoint_io.h"
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
  // Without arguments the connector supplies the accelerator and precision.
  explicit Strategy(std::shared_ptr<Accelerator> accelerator = nullptr, std::shared_ptr<Precision> precision = nullptr,
                    std::shared_ptr<CheckpointIO> checkpoint_io = nullptr)
      : accelerator_(std::move(accelerator)),
        precision_(std::move(precision)),
        checkpoint_io_(std::move(checkpoint_io)) {}
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

  // `module` is the model fabric.backward was given (nullptr when none was), for strategies
  // that need to know which model the loss came from.
  virtual void backward(const torch::Tensor& loss, torch::nn::Module* module, const BackwardOptions& options) {
    precision().backward(loss, options);
  }
  virtual StepOutcome optimizer_step(torch::optim::Optimizer& optimizer, const LossClosure& closure) {
    return precision().optimizer_step(optimizer, closure);
  }
  // Scales the optimizer's gradients so that their total norm is at most max_norm; returns
  // the norm before (torch.nn.utils.clip_grad_norm_). Sharded strategies take the norm of
  // the whole model's gradients, not of the local shard.
  virtual double clip_gradients_norm(torch::nn::Module& module, torch::optim::Optimizer& optimizer, double max_norm,
                                     double norm_type, bool error_if_nonfinite);
  // Default dtype (and, for sharded strategies, placement) for init_module/init_tensor.
  virtual Scope module_init_context() { return precision().init_context(); }

  // Around every FabricModule forward: DDP prepares gradient synchronisation here.
  // forward_failed instead of after_forward when the module's forward threw.
  virtual void before_forward(torch::nn::Module& module) {}
  virtual void after_forward(torch::nn::Module& module, const std::vector<torch::Tensor>& outputs) {}
  virtual void forward_failed(torch::nn::Module& module) {}
  // True when loss.backward() would bypass what the strategy's backward does (fsdp):
  // FabricModule outputs then refuse a backward that is not fabric.backward.
  virtual bool requires_fabric_backward() const { return false; }
  // FabricOptimizer::zero_grad, before it drops the gradients: for gradients the strategy
  // holds outside param.grad() (fsdp's, accumulated under no_backward_sync).
  virtual void before_zero_grad(torch::optim::Optimizer& optimizer) {}
  // While the returned scope lives, backward does not synchronise `module`'s gradients.
  virtual Scope no_backward_sync(torch::nn::Module& module, bool enabled) { return {}; }

  // Collectives; one process: barrier does nothing, the others return their input.
  virtual void barrier(std::string_view name = {}) {}
  virtual void broadcast(torch::Tensor& tensor, int src) {}
  virtual void all_reduce(torch::Tensor& tensor, ReduceOp op) {}
  virtual std::vector<torch::Tensor> all_gather(const torch::Tensor& tensor) { return {tensor}; }
  // Starts the other local ranks if this strategy needs them and no launcher did.
  virtual void launch() {}

  // What the strategy was given or the connector completed it with; a UsageError before that.
  Accelerator& accelerator() const;
  Precision& precision() const;
  CheckpointIO& checkpoint_io() const;
  bool has_accelerator() const { return accelerator_ != nullptr; }
  bool has_precision() const { return precision_ != nullptr; }
  bool has_checkpoint_io() const { return checkpoint_io_ != nullptr; }
  void set_accelerator(std::shared_ptr<Accelerator> accelerator) { accelerator_ = std::move(accelerator); }
  void set_precision(std::shared_ptr<Precision> precision) { precision_ = std::move(precision); }
  void set_checkpoint_io(std::shared_ptr<CheckpointIO> checkpoint_io) { checkpoint_io_ = std::move(checkpoint_io); }
  // The cluster environment's launcher services (ClusterEnvironment::launcher()), for
  // Fabric and its wrappers to report progress and use the launcher's barriers; nullptr
  // when the launcher offers none. Set once by the connector.
  LauncherServices* launcher() const { return launcher_; }
  void set_launcher(LauncherServices* launcher) { launcher_ = launcher; }

 private:
  std::shared_ptr<Accelerator> accelerator_;
  std::shared_ptr<Precision> precision_;
  std::shared_ptr<CheckpointIO> checkpoint_io_;
  LauncherServices* launcher_ = nullptr;
};

// What the connector resolved for a ParallelStrategy: the devices of this node's local
// ranks, the number of nodes, this process's environment, and the collectives' timeout.
struct ParallelConfig {
  std::vector<torch::Device> parallel_devices;
  int num_nodes = 1;
  std::shared_ptr<ClusterEnvironment> environment;
  bool environment_is_plugin = false;  // a user's ClusterEnvironment: kept as it is after launch()
  std::chrono::milliseconds timeout = std::chrono::minutes(30);  // FabricOptions::timeout
};

// A strategy over several processes (Lightning's ParallelStrategy), one device per local
// rank. The connector calls configure() once, before anything else.
class ParallelStrategy : public Strategy {
 public:
  using Strategy::Strategy;

  // ConfigurationError when the environment's world disagrees with devices x num_nodes.
  virtual void configure(ParallelConfig config) = 0;
  // How long a collective or the rendezvous may take (the strategy's own, or the config's).
  virtual std::chrono::milliseconds timeout() const = 0;
};

}  // namespace fabric
